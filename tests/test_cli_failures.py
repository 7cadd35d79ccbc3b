"""Hostile and careless use of the real CLI: one ``error:`` line, the right exit code,
no traceback and nothing left behind (the table of :mod:`bad_inputs`, every command);
locks between concurrent runs; signals.

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
from pathlib import Path

import numpy as np
import pytest

from bad_inputs import CASES, CRASHED, Case, _gen, gen, release_ports
from cli_server import CliServer, Run
from svi.checkpoint import list_checkpoints
from svi.manifest import manifest_path, state_dir, state_path
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
    crashed = root / "crashed"
    crashed.mkdir()
    _crash_after_two_clips(_gen(model, crashed / "out.mp4", *CRASHED, clips=None))
    return {"model": model, "lora": lora, "recipe": recipe, "crashed": crashed}


def _crash_after_two_clips(argv: list) -> None:
    """Run ``argv`` in this process until the manifest write of clip 3 fails: the files
    of a crash after clip 2 (manifest of 2 clips, the video one clip ahead, states)."""
    from svi import session
    from svi.cli import main

    real, writes = session.write_atomic, []

    def crash(path: Path, data: bytes) -> None:
        writes.extend([path] if Path(path).name.endswith(".svi.json") else [])
        if len(writes) == 4:  # the run's first manifest, then one per clip
            raise RuntimeError("simulated crash")
        real(path, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(session, "write_atomic", crash)
        assert main([str(a) for a in argv]) == 1


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


RUNNING_AT_ONCE = 4


def _start(case: Case, cli: CliServer, assets: dict, tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp(case.name)
    if case.setup is not None:
        case.setup(folder, assets, cli)
    before = _listing(folder)
    return folder, before, cli.start(case.argv(assets, folder), folder, case.env, case.ulimit_v)


@pytest.fixture(scope="module")
def table(cli: CliServer, assets: dict, python_m: subprocess.Popen, tmp_path_factory) -> dict:
    """Run every fast case once (a few at a time): name -> (run, folder, listing before,
    after). A slow case (a real generation) runs when its test does."""
    results, running = {}, []
    for case in (c for c in CASES if not c.marks):
        running.append((case, *_start(case, cli, assets, tmp_path_factory)))
        if len(running) == RUNNING_AT_ONCE:
            case, folder, before, run = running.pop(0)
            results[case.name] = (run.wait(120), folder, before, _listing(folder))
    for case, folder, before, run in running:
        results[case.name] = (run.wait(120), folder, before, _listing(folder))
    release_ports()
    return results


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(
    case: Case, table: dict, cli: CliServer, assets: dict, tmp_path_factory
) -> None:
    if case.name not in table:  # a slow case
        folder, before, run = _start(case, cli, assets, tmp_path_factory)
        table[case.name] = (run.wait(300), folder, before, _listing(folder))
    run, folder, before, after = table[case.name]
    err = run.stderr
    assert "Traceback" not in err, err
    lines = err.splitlines() + ([] if case.code else [""])  # a success ends in no error
    *warnings, last = lines or [""]
    assert len(warnings) == len(case.warns), err  # no raw library line, no other warning
    for line, word in zip(warnings, case.warns, strict=True):
        assert line.startswith("WARNING svi.") and word in line, err
    assert run.code == case.code, err
    says = (case.says,) if isinstance(case.says, str) else case.says
    if case.code == 0:
        assert any(word in run.stdout for word in says), run.stdout
        assert not [name for name in case.absent if (folder / name).exists()], after
        return
    assert last.startswith("error: "), err
    assert any(word.lower() in last.lower() for word in says), last
    assert "\x1b" not in last
    assert after == before, last  # nothing created, changed or removed beside the output


def test_the_table_has_rows_for_every_command() -> None:
    """Issue 28: at least 200 rows, and each command of ``svi --help`` among them."""
    import typer.main

    from svi.cli import app

    commands = set()
    for name, command in typer.main.get_command(app).commands.items():
        subcommands = getattr(command, "commands", None)
        commands |= {f"{name} {sub}" for sub in subcommands} if subcommands else {name}
    fake = {"model": "M", "recipe": "R", "lora": "L", "crashed": "C"}
    rows = [" ".join(map(str, c.argv(fake, Path("/nowhere"))[:2])) for c in CASES]
    assert len(CASES) >= 200 and len({c.name for c in CASES}) == len(CASES)
    assert not {c for c in commands if not any(f"{r} ".startswith(f"{c} ") for r in rows)}
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"{len(CASES)} bad inputs to every command" in " ".join(readme.split())


def test_control_characters_are_escaped_in_messages(table: dict) -> None:
    run, *_ = table["prompt-file-with-escapes"]
    assert "\x1b" not in run.stderr and "\\x1b[31mred.txt" in run.stderr


def test_python_m_svi_cli_reports_the_same(python_m: subprocess.Popen, table: dict) -> None:
    """The table's shortcut (forked children) against a real ``python -m svi.cli``."""
    _, stderr = python_m.communicate(timeout=120)
    forked, *_ = table["out-is-a-directory"]
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


def test_an_openmp_setting_libgomp_rejects_is_one_line_of_ours(tmp_path: Path) -> None:
    """``OMP_NUM_THREADS=0`` made libgomp print a raw ``libgomp: Invalid value ...`` line
    when torch loaded (and then ignore the setting): now refused before torch loads."""
    env = {**os.environ, "OMP_NUM_THREADS": "0"}
    argv = [sys.executable, "-m", "svi.cli", "generate", "--clips", "1", "--out",
            str(tmp_path / "o.mp4")]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("error: OMP_NUM_THREADS='0' is not a thread count: give a positive "
                           "integer (e.g. OMP_NUM_THREADS=2) or unset it\n")  # fmt: skip
    assert list(tmp_path.iterdir()) == []
