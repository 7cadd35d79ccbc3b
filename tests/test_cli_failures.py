"""Hostile and careless use of the real CLI: one ``error:`` line, the right exit code,
no traceback and nothing left behind; locks between concurrent runs; signals.

Every command runs in its own process (``svi.cli.main`` with real argv, stderr, exit
status, signals and locks) forked from a server that imported the CLI once
(:mod:`cli_server`): the same as ``python -m svi.cli ...`` minus ~7 s of imports per
case on a busy machine. One case runs through ``python -m svi.cli`` to show that.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from cli_server import CliServer, Run
from svi.checkpoint import list_checkpoints
from svi.session import manifest_path, state_dir, state_path
from svi.video import VideoWriter, read_video
from world_fixtures import build_tiny_world_model, random_lora

NEW_FRAMES, TAIL = 3, 2  # per clip of the tiny world model, and the last clip's tail


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from svi.lora import save_lora
    from svi.models.bundle import load_bundle

    root = tmp_path_factory.mktemp("assets")
    model = build_tiny_world_model(root / "tiny")
    weights = random_lora(load_bundle(str(model)).transformer)
    lora = save_lora(root / "lora.safetensors", weights, form="diffusers")
    recipe = root / "train.toml"
    recipe.write_text(
        f'init = "{model}"\nsteps = 200\nbatch_size = 1\nlora_rank = 2\n'
        "checkpoint_every = 1000\nlog_every = 1\n[data]\npool_size = 2\nepisode_frames = 12\n",
        encoding="utf-8",
    )
    return {"model": model, "lora": lora, "recipe": recipe}


@pytest.fixture(scope="module")
def python_m(assets: dict, tmp_path_factory: pytest.TempPathFactory):
    """One table case through a real ``python -m svi.cli``, started early: it imports
    for seconds, alongside the server (started first, by the ``table`` fixture)."""
    folder = tmp_path_factory.mktemp("python-m")
    (folder / "out.mp4").mkdir()
    argv = [sys.executable, "-m", "svi.cli", *map(str, gen()(assets, folder))]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    yield proc
    proc.kill()
    proc.communicate()


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory):
    server = CliServer(tmp_path_factory.mktemp("cli-logs"), {"OMP_WAIT_POLICY": "PASSIVE"})
    yield server
    server.close()


def _gen(model: Path, out: Path, *args: str, clips: str | None = "1", steps: str = "1") -> list:
    length = ["--clips", clips] if clips is not None else []
    return ["generate", "--model", model, "--out", out, "--no-progress", "--steps", steps,
            *length, *args]  # fmt: skip


def _listing(folder: Path) -> dict[str, int]:
    """Every path under ``folder`` with its size (-1: a folder)."""
    return {str(p.relative_to(folder)): -1 if p.is_dir() else p.stat().st_size
            for p in sorted(folder.rglob("*"))}  # fmt: skip


def _one_error_line(run: Run) -> str:
    err = run.stderr
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---------------------------------------------------------------- the table of bad inputs


@dataclass(frozen=True)
class Case:
    """A bad command: ``argv(assets, folder)``, its exit code and a word of its message
    (any of ``says``, in any case)."""

    name: str
    argv: Callable[[dict, Path], list]
    says: str | tuple[str, ...]
    code: int = 2
    setup: Callable[[Path, dict, CliServer], None] | None = None
    marks: tuple = field(default=())


def gen(*args: str, clips: str | None = "1", steps: str = "1") -> Callable[[dict, Path], list]:
    """A generate command into ``folder/out.mp4``; ``{lora}``/``{dir}`` are filled in."""

    def argv(assets: dict, folder: Path) -> list:
        filled = [a.format(lora=assets["lora"], dir=folder) for a in args]
        return _gen(assets["model"], folder / "out.mp4", *filled, clips=clips, steps=steps)

    return argv


def cmd(*args: str) -> Callable[[dict, Path], list]:
    def argv(assets: dict, folder: Path) -> list:
        return [a.format(model=assets["model"], recipe=assets["recipe"], dir=folder) for a in args]

    return argv


def _file(name: str, data: bytes = b"junk") -> Callable:
    return lambda folder, assets, cli: (folder / name).write_bytes(data)


def _dir(name: str) -> Callable:
    return lambda folder, assets, cli: (folder / name).mkdir()


def _damaged_manifest(text: bytes) -> Callable:
    """A partial video with a damaged manifest beside it."""

    def setup(folder: Path, assets: dict, cli: CliServer) -> None:
        out = folder / "out.mp4"
        VideoWriter.partial_path_for(out).write_bytes(b"\0\0\0\x08free")
        manifest_path(out).write_bytes(text)

    return setup


def _truncated_state(folder: Path, assets: dict, cli: CliServer) -> None:
    """The files of a run of ``gen()`` that crashed after clip 2 of 3 (state cut short)."""
    out = folder / "out.mp4"
    assert cli.start(gen(clips="2")(assets, folder), folder).wait().code == 0
    manifest = json.loads(manifest_path(out).read_text(encoding="utf-8"))
    manifest["status"] = "running"
    manifest_path(out).write_text(json.dumps(manifest), encoding="utf-8")
    out.rename(VideoWriter.partial_path_for(out))
    state_path(out, 1).parent.mkdir()
    state_path(out, 1).write_bytes(b'\x40\0\0\0\0\0\0\0{"carry')


TRAIN = ("train", "--recipe", "{recipe}", "--out", "{dir}/run", "--no-progress")
ESC = "\x1b[31mred"
# fmt: off
CASES = [
    Case("cfg-nan", gen("--cfg", "nan"), "cfg"),
    Case("cfg-inf", gen("--cfg", "inf"), "cfg"),
    Case("lora-scale-nan", gen("--lora", "{lora}", "--lora-scale", "nan"), ("scale", "strength")),
    Case("seconds-nan", gen("--seconds", "nan", clips=None), "seconds"),
    Case("seconds-inf", gen("--seconds", "inf", clips=None), "seconds"),
    Case("steps-negative", gen(steps="-2"), "steps"),
    Case("steps-zero", gen(steps="0"), "steps"),
    Case("fps-zero", gen("--fps", "0"), "fps"),
    Case("motion-frames-zero", gen("--motion-frames", "0"), "motion"),
    Case("frames-negative", gen("--frames", "-5", clips=None), "frames"),
    Case("handoff-bogus", gen("--handoff", "bogus"), ("handoff", "hand-off")),
    Case("padding-bogus", gen("--padding", "bogus"), "padding"),
    Case("clips-dir-is-a-file", gen("--clips-dir", "{dir}/clips"), "is a file",
         setup=_file("clips")),
    Case("image-is-a-directory", gen("--image", "{dir}/pic.png", "--prompt", "a"),
         "is a directory", setup=_dir("pic.png")),
    Case("out-is-a-directory", gen(), "is a directory", setup=_dir("out.mp4")),
    Case("out-folder-missing", cmd("generate", "--model", "{model}", "--clips", "1",
                                   "--out", "{dir}/no/out.mp4"), "does not exist"),
    Case("out-not-mp4", cmd("generate", "--model", "{model}", "--clips", "1",
                            "--out", "{dir}/out.avi"), ".mp4"),
    Case("resume-manifest-not-json", gen("--resume"), "damaged",
         setup=_damaged_manifest(b'{"clips": [')),
    Case("resume-manifest-not-a-manifest", gen("--resume"), "not a manifest",
         setup=_damaged_manifest(b"[1, 2]")),
    Case("resume-manifest-not-utf8", gen("--resume"), "damaged",
         setup=_damaged_manifest(b'{"a": "\xff\xfe"}')),
    Case("resume-a-file-without-manifest", gen("--resume"), "no manifest",
         setup=_file("out.mp4")),
    Case("resume-state-truncated", gen("--resume", clips="2"), "damaged",
         setup=_truncated_state),
    Case("lora-not-safetensors", gen("--lora", "{dir}/l.safetensors"), "l.safetensors",
         setup=_file("l.safetensors", b"\x80\x04pickle")),
    Case("prompt-file-with-escapes", gen("--prompts", "{dir}/" + ESC + ".txt"), "no prompts",
         setup=_file(ESC + ".txt", f"# {ESC} only a comment\n".encode())),
    Case("prompt-file-not-utf8", gen("--prompts", "{dir}/p.txt"), "p.txt",
         setup=_file("p.txt", b"a red disc \xff\xfe\n")),
    Case("train-steps-negative", cmd(*TRAIN, "--steps", "-1"), "steps"),
    Case("train-batch-size-zero", cmd(*TRAIN, "--batch-size", "0"), "batch"),
    Case("train-out-is-a-file", cmd(*TRAIN), "is a file", setup=_file("run")),
    Case("train-lr-nan", cmd(*TRAIN, "--lr", "nan"), "optim.lr"),
    Case("train-world-clip-size-is-fixed", cmd(*TRAIN, "--num-frames", "9"), "fixed"),
    Case("train-data-folder-missing", cmd(*TRAIN, "--data", "{dir}/nope"), "not found"),
    Case("train-recipe-not-toml", cmd("train", "--recipe", "{dir}/r.toml", "--out", "{dir}/run"),
         "r.toml", setup=_file("r.toml", b"steps = = 3\n")),
    Case("train-recipe-not-utf8", cmd("train", "--recipe", "{dir}/r.toml", "--out", "{dir}/run"),
         "r.toml", setup=_file("r.toml", b"steps = 3 # \xff\n")),
    Case("bench-first-clip-no-scenes", cmd("bench", "first-clip", "--model", "{model}",
                                           "--scenes", "0"), "scenes"),
    # issue 28's escapes (exit 1 before): seeds past the generator's range, a duration
    # that overflows, a port past 65535
    Case("seed-past-64-bits", gen("--seed", "1180591620717411303424"), "--seed"),
    Case("seed-whose-clip-2-overflows", gen("--seed", "18446744073709551600", clips="2"),
         "--seed"),
    Case("seed-stride-past-32-bits", gen("--seed-stride", str(2**40)), "--seed-stride"),
    Case("prompt-file-seconds-overflow", gen("--prompts", "{dir}/p.json", clips=None),
         "limit", setup=_file("p.json", b'[{"prompt": "a red disc", "seconds": 1e308}]')),
    Case("same-lora-file-twice", gen("--lora", "{lora}", "--lora", "{dir}/copy.safetensors"),
         "same file", setup=lambda folder, assets, cli: (folder / "copy.safetensors").write_bytes(
             Path(assets["lora"]).read_bytes())),
    Case("frames-past-the-limit", gen("--frames", str(10**10), clips=None), "--frames"),
    Case("out-named-only-mp4", cmd("generate", "--model", "{model}", "--clips", "1",
                                   "--out", "{dir}/.mp4"), "no name before .mp4"),
    Case("ui-port-past-65535", cmd("ui", "--model", "{model}", "--port", "99999",
                                   "--sessions", "{dir}/sessions"), "--port"),
]
# fmt: on


@pytest.fixture(scope="module")
def table(cli: CliServer, assets: dict, python_m: subprocess.Popen, tmp_path_factory) -> dict:
    """Run every case once (three at a time): name -> (run, folder listing before, after)."""
    results, running = {}, []
    for case in CASES:
        folder = tmp_path_factory.mktemp(case.name)
        if case.setup is not None:
            case.setup(folder, assets, cli)
        before = _listing(folder)
        running.append((case, folder, before, cli.start(case.argv(assets, folder), folder)))
        if len(running) == 3:
            case, folder, before, run = running.pop(0)
            results[case.name] = (run.wait(120), before, _listing(folder))
    for case, folder, before, run in running:
        results[case.name] = (run.wait(120), before, _listing(folder))
    return results


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(case: Case, table: dict) -> None:
    run, before, after = table[case.name]
    line = _one_error_line(run)
    assert run.code == case.code, line
    says = (case.says,) if isinstance(case.says, str) else case.says
    assert any(word.lower() in line.lower() for word in says), line
    assert "\x1b" not in line
    assert after == before, line  # nothing created, changed or removed beside the output


def test_control_characters_are_escaped_in_messages(table: dict) -> None:
    run, _, _ = table["prompt-file-with-escapes"]
    assert "\x1b" not in run.stderr and "\\x1b[31mred.txt" in run.stderr


def test_python_m_svi_cli_reports_the_same(python_m: subprocess.Popen, table: dict) -> None:
    """The table's shortcut (forked children) against a real ``python -m svi.cli``."""
    _, stderr = python_m.communicate(timeout=120)
    forked, _, _ = table["out-is-a-directory"]
    assert python_m.returncode == forked.code == 2
    assert stderr.replace("python-m0", "out-is-a-directory0") == forked.stderr


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "M"), 2,
         f"{os.strerror(errno.ENOSPC)}: M"),
        (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "M"), 2,
         f"{os.strerror(errno.EACCES)}: M"),
        (ZeroDivisionError("boom \x1b[2J"), 1, "internal error (ZeroDivisionError: boom "
         "\\x1b[2J); please report it with --verbose output"),
    ],
    ids=["disk-full", "permission", "bug"],
)  # fmt: skip
def test_environment_errors_exit_2_bugs_exit_1_in_one_line(
    assets: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, error, code, message
) -> None:
    """The manifest write fails (in-process, the failure injected): one line, no debris."""
    from svi import session
    from svi.cli import main

    def failing(path: Path, data: bytes) -> None:
        raise error

    monkeypatch.setattr(session, "write_atomic", failing)
    argv = [str(a) for a in _gen(assets["model"], tmp_path / "out.mp4")]
    assert main(argv) == code
    assert capsys.readouterr().err == f"error: {message}\n"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(type(error)):
        main(["--verbose", *argv])  # --verbose: the traceback


# ---------------------------------------------------------------- resume without a run


def test_resume_with_nothing_on_disk_starts(cli: CliServer, assets: dict, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    run = cli.start(_gen(assets["model"], out, "--resume"), tmp_path).wait()
    assert run.code == 0, run.stderr
    assert "nothing to resume" in run.stderr and "Traceback" not in run.stderr
    assert len(read_video(out)) == NEW_FRAMES + TAIL


def test_resume_of_a_finished_run_touches_nothing(
    cli: CliServer, assets: dict, tmp_path: Path
) -> None:
    out = tmp_path / "out.mp4"
    assert cli.start(_gen(assets["model"], out), tmp_path).wait().code == 0
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    run = cli.start(_gen(assets["model"], out, "--resume"), tmp_path).wait()
    assert run.code == 0, run.stderr
    assert "already complete" in run.stderr and "complete" in run.stdout
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


# ---------------------------------------------------------------- concurrent runs


def _wait_for(condition: Callable[[], bool], run: Run, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert run.poll() is None, f"exited {run.code} too early: {run.stderr}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _clips_done(out: Path) -> int:
    try:
        return len(json.loads(manifest_path(out).read_text(encoding="utf-8"))["clips"])
    except (OSError, ValueError, KeyError):
        return 0


def test_second_writer_of_one_output_fails_and_the_first_finishes(
    cli: CliServer, assets: dict, tmp_path: Path
) -> None:
    out = tmp_path / "out.mp4"
    first = cli.start(_gen(assets["model"], out, "--seed", "1", "--lossless", clips="60"),
                      tmp_path)  # fmt: skip
    _wait_for(lambda: _clips_done(out) >= 1, first)
    others = [cli.start(_gen(assets["model"], out, "--seed", "2", *extra), tmp_path)
              for extra in (["--overwrite"], ["--resume"], [])]  # fmt: skip
    for second in others:
        line = _one_error_line(second.wait())
        assert second.code == 2
        assert line.startswith(f"error: {out} is being written by process {first.pid} (svi ")
        assert "generate" in line and "--seed 1" in line
    assert first.wait().code == 0, first.stderr
    manifest = json.loads(manifest_path(out).read_text(encoding="utf-8"))
    assert manifest["status"] == "complete" and manifest["clips"][0]["seed"] == 1
    assert len(read_video(out)) == 60 * NEW_FRAMES + TAIL == manifest["frames_written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "out.svi.json"]


def test_second_training_into_one_folder_fails_and_sigterm_checkpoints(
    cli: CliServer, assets: dict, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    argv = ["train", "--recipe", assets["recipe"], "--out", run_dir, "--no-progress"]
    first = cli.start(argv, tmp_path)
    log = run_dir / "log.jsonl"
    _wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, first)
    second = cli.start(argv, tmp_path).wait()
    assert second.code == 2
    line = _one_error_line(second)
    assert line.startswith(f"error: {run_dir} is being written by process {first.pid} (svi train")
    first.signal(signal.SIGTERM)
    assert first.wait().code == 143, first.stderr
    line = _one_error_line(first)
    (checkpoint,) = list_checkpoints(run_dir)
    step = int(checkpoint.name.split("-")[1])
    assert line == f"error: interrupted (SIGTERM): checkpoint at step {step} in {run_dir}; " \
                   "--resume continues"  # fmt: skip
    steps = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert steps == list(range(1, step + 1))
    assert not (run_dir / ".lock").exists() and not (run_dir / "final").exists()
    resumed = cli.start([*argv, "--resume"], tmp_path).wait()
    assert resumed.code == 0, resumed.stderr
    steps = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert steps == list(range(1, 201)) and (run_dir / "final").is_dir()


# ---------------------------------------------------------------- signals


def _interrupted(out: Path) -> dict:
    """The checks every signal-stopped generation passes; returns its manifest."""
    manifest = json.loads(manifest_path(out).read_text(encoding="utf-8"))
    n = len(manifest["clips"])
    assert manifest["status"] == "interrupted" and n >= 2
    assert len(read_video(out)) == n * NEW_FRAMES + TAIL == manifest["frames_written"]
    assert not VideoWriter.partial_path_for(out).exists()
    assert not out.with_name(out.name + ".lock").exists()
    assert [p.name for p in state_dir(out).iterdir()] == [state_path(out, n - 1).name]
    return manifest


def test_sigterm_finalises_a_valid_video_and_resume_completes(
    cli: CliServer, assets: dict, tmp_path: Path
) -> None:
    args = ("--seed", "4", "--lossless")
    ref, out = tmp_path / "ref.mp4", tmp_path / "out.mp4"
    reference = cli.start(_gen(assets["model"], ref, *args, clips="24"), tmp_path)
    run = cli.start(_gen(assets["model"], out, *args, clips="24"), tmp_path)
    _wait_for(lambda: _clips_done(out) >= 2, run)
    run.signal(signal.SIGTERM)
    assert run.wait().code == 143, run.stderr
    n = len(_interrupted(out)["clips"])
    assert _one_error_line(run) == (
        f"error: interrupted (SIGTERM): wrote {n} clips to {out}; --resume continues"
    )
    resumed = cli.start(_gen(assets["model"], out, *args, "--resume", clips="24"), tmp_path)
    assert resumed.wait().code == 0, resumed.stderr
    assert reference.wait().code == 0
    assert np.array_equal(read_video(out), read_video(ref))  # as if never stopped
    manifest = json.loads(manifest_path(out).read_text(encoding="utf-8"))
    assert manifest["status"] == "complete" and "tail_frames" not in manifest
    assert not state_dir(out).exists()


def test_sigint_twice_still_finalises(cli: CliServer, assets: dict, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    run = cli.start(_gen(assets["model"], out, "--forever", clips=None), tmp_path)
    _wait_for(lambda: _clips_done(out) >= 2, run)
    run.signal(signal.SIGINT)
    time.sleep(0.01)
    run.signal(signal.SIGINT)
    assert run.wait().code == 130, run.stderr
    n = len(_interrupted(out)["clips"])
    assert _one_error_line(run) == (
        f"error: interrupted (SIGINT): wrote {n} clips to {out}; --resume continues"
    )


def test_a_small_address_space_limit_fails_at_once(tmp_path: Path) -> None:
    """Under ``ulimit -v 800000`` svi used to hang in scipy's OpenBLAS import (one thread
    at 100 %, deaf to Ctrl-C): now one error line, exit 2, nothing written, in seconds."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (800_000 * 1024, resource.RLIM_INFINITY))

    out = tmp_path / "o.mp4"
    start = time.monotonic()
    argv = [sys.executable, "-m", "svi.cli", "generate", "--clips", "1", "--out", str(out)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(argv, preexec_fn=limit, capture_output=True, text=True, timeout=120,
                          env=env)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: the address-space limit (ulimit -v) is 781 MiB")
    assert list(tmp_path.iterdir()) == [] and time.monotonic() - start < 60
