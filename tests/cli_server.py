"""Run the real ``svi`` CLI in fresh processes, fast: a server imports it once, then forks.

Starting Python and importing torch, diffusers and svi takes ~7 s on a busy 2-core
machine, so a table of 40 CLI cases would take minutes. This server pays that once:
it imports :mod:`svi.cli` and the modules its commands load (running no torch op, so
forking is safe), then forks one child per command. Each child is a new process with
its own argv, working directory, stdout/stderr files, default signal handlers, locks
and exit status, and runs exactly what ``python -m svi.cli ARGS`` runs after its
imports: ``sys.exit(svi.cli.main(ARGS))`` (an uncaught exception prints its traceback
and exits 1, as the interpreter does).

Protocol (JSON lines on stdin/stdout): ``{"op": "start", "argv", "cwd", "stdout",
"stderr", "env", "ulimit_v"}`` -> ``{"pid"}`` (``env``: variables set in the child;
``ulimit_v``: its address-space limit in KiB, as the shell's ``ulimit -v``); ``{"op": "wait",
"pid", "timeout"}`` -> ``{"code"}`` (the exit code, ``-N`` for death by signal N,
``null`` if still running at the timeout).

:class:`CliServer` is the test-side handle.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

# what the commands import; typer._adapters: typer imports it (and pydantic, ~0.1 s) on
# every command run
PRELOAD = ("svi.cli", "svi.session", "svi.train", "svi.plan", "svi.bench.first_clip",
           "svi.bench.drift", "svi.bench.report", "svi.prompt_stream", "svi.ui.app",
           "typer._adapters")  # fmt: skip


def _child(request: dict) -> None:
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.update(request.get("env") or {})
        if request.get("ulimit_v"):
            hard = resource.getrlimit(resource.RLIMIT_AS)[1]
            resource.setrlimit(resource.RLIMIT_AS, (request["ulimit_v"] * 1024, hard))
        write = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], write),
                                (2, request["stderr"], write)):  # fmt: skip
            new = os.open(path, flags, 0o644)
            os.dup2(new, fd)
            os.close(new)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.argv = ["svi", *request["argv"]]
        from svi.cli import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # what the interpreter does with an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def serve() -> None:
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(ImportError):  # typer's private module may move: slower
            importlib.import_module(name)
    gc.freeze()  # a child's garbage collections leave the imported objects' pages shared
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "start":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request)
            reply: dict = {"pid": pid}
        else:
            reply = {"code": _wait(request["pid"], request["timeout"])}
        print(json.dumps(reply), flush=True)


class Run:
    """One CLI process: its pid, and once finished its exit code and output."""

    def __init__(self, server: CliServer, pid: int, stdout: Path, stderr: Path) -> None:
        self.server, self.pid, self._stdout, self._stderr = server, pid, stdout, stderr
        self.code: int | None = None

    def wait(self, timeout: float = 300) -> Run:
        if self.code is None:
            self.code = self.server.request({"op": "wait", "pid": self.pid, "timeout": timeout})[
                "code"
            ]
            if self.code is None:
                raise TimeoutError(f"svi process {self.pid} still runs after {timeout} s")
        return self

    def poll(self) -> int | None:
        if self.code is None:
            self.code = self.server.request({"op": "wait", "pid": self.pid, "timeout": 0})["code"]
        return self.code

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    @property
    def stdout(self) -> str:
        return self._stdout.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self._stderr.read_text(encoding="utf-8", errors="replace")


class CliServer:
    """Test-side handle: ``start(argv, cwd)`` returns a :class:`Run` (``.wait()`` it)."""

    def __init__(self, logs: Path, env: dict[str, str] | None = None) -> None:
        self.logs = logs
        self._runs: list[Run] = []
        tests = str(Path(__file__).parent)
        env = {**os.environ, **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "import cli_server; cli_server.serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self._ready = False  # it imports while the caller does other things

    def _wait_ready(self) -> None:
        if not self._ready:
            assert json.loads(self._read()) == {"ready": True}
            self._ready = True

    def _read(self) -> str:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the CLI server died")
        return line

    def request(self, payload: dict) -> dict:
        assert self._proc.stdin is not None
        self._wait_ready()
        self._proc.stdin.write(json.dumps(payload) + "\n")
        self._proc.stdin.flush()
        return json.loads(self._read())

    def start(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        ulimit_v: int | None = None,
    ) -> Run:
        n = len(self._runs) + 1
        out, err = self.logs / f"{n}.out", self.logs / f"{n}.err"
        reply = self.request({"op": "start", "argv": [str(a) for a in argv], "cwd": str(cwd),
                              "stdout": str(out), "stderr": str(err), "env": env or {},
                              "ulimit_v": ulimit_v})  # fmt: skip
        self._runs.append(Run(self, reply["pid"], out, err))
        return self._runs[-1]

    def close(self) -> None:
        """Kill what still runs (a failed test's ``--forever``), then the server."""
        for run in self._runs:
            if run.poll() is None:
                run.signal(signal.SIGKILL)
                run.wait(30)
        self._proc.kill()
        self._proc.wait(timeout=30)
