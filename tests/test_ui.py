"""svi ui without a browser: the page's callbacks over the job queue, sessions and
drift monitor, on a tiny random world model."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from svi.manifest import manifest_path
from svi.ui.app import FIELDS, Callbacks, status_html
from svi.ui.forms import Form
from svi.ui.jobs import DONE, FAILED, STOPPED, JobQueue
from svi.ui.sessions import Sessions
from svi.video import read_video
from world_fixtures import build_tiny_world_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def app(tmp_path: Path):
    queue = JobQueue(max_jobs=1)
    yield Callbacks(queue, Sessions(tmp_path / "sessions"))
    queue.close()


def _form(model: Path, **kw) -> Form:
    base = Form(prompts="a red disc bounces\na blue square enters", model=str(model),
                length="clips", amount=3, seed=1, steps=2)  # fmt: skip
    return replace(base, **kw)


def _values(form: Form) -> list:
    return [getattr(form, name) for name in FIELDS]


def _run(app: Callbacks, form: Form, timeout: float = 60):
    job_id, message = app.generate(*_values(form))
    assert job_id is not None, message
    return app.queue.wait(job_id, timeout)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_queue_runs_jobs_in_order_one_at_a_time(tmp_path: Path) -> None:
    queue, log, running = JobQueue(max_jobs=1), [], []

    def work(name: str):
        def run(hooks):
            running.append(name)
            assert len(running) == 1, running  # never two at once
            log.append(name)
            time.sleep(0.05)
            running.remove(name)
            return {}

        return run

    jobs = [queue.submit(tmp_path / f"{n}.mp4", work(n)) for n in "abc"]
    assert queue.position(jobs[2]) in (1, 2)
    for job in jobs:
        assert queue.wait(job.id, 10).state == DONE
    assert log == ["a", "b", "c"]
    queue.close()


def test_max_jobs_lets_two_run_at_once(tmp_path: Path) -> None:
    queue, both = JobQueue(max_jobs=2), threading.Barrier(2, timeout=10)
    jobs = [queue.submit(tmp_path / f"{n}.mp4", lambda hooks: both.wait() and {}) for n in "ab"]
    assert all(queue.wait(j.id, 20).state == DONE for j in jobs)
    queue.close()


def test_a_second_job_on_the_same_output_is_refused(tmp_path: Path) -> None:
    queue, gate = JobQueue(), threading.Event()
    first = queue.submit(tmp_path / "x.mp4", lambda hooks: gate.wait(10) and {})
    with pytest.raises(Exception, match="already"):
        queue.submit(tmp_path / "x.mp4", lambda hooks: {})
    gate.set()
    queue.wait(first.id, 10)
    queue.close()


def test_two_jobs_write_two_sessions(app: Callbacks, model: Path) -> None:
    a, b = _run(app, _form(model)), _run(app, _form(model))
    assert a.state == b.state == DONE
    assert a.out != b.out and a.out.parent != b.out.parent
    assert read_video(a.out).shape == read_video(b.out).shape  # same settings, own files
    rows, ids = app.sessions_rows()
    assert sorted(ids) == sorted([a.out.stem, b.out.stem])
    assert all(r[1] == "complete" and r[2] == 3 for r in rows)


def test_monitor_rows_arrive_per_clip(app: Callbacks, model: Path) -> None:
    job = _run(app, _form(model, reroll=0.9, max_rerolls=1))
    rows = job.monitor.rows
    assert [r["clip"] for r in rows] == [0, 1, 2]
    assert rows[0]["seam"] is None and rows[1]["seam"] is not None
    assert rows[0]["colour_drift"] == 0.0 and all(r["motion"] >= 0 for r in rows)
    assert all(r["tries"] >= 1 for r in rows)
    html, preview, fig, table, version = app.poll(job.id, -1)
    assert 'data-state="done"' in html and "clips: 3 / 3" in html
    assert preview is not None and preview.is_file() and len(table) == 3 and fig is not None
    assert app.poll(job.id, version)[1:4] == (None, None, None)  # nothing new: nothing sent


def test_stop_finalises_a_valid_mp4_and_resume_completes_it(app: Callbacks, model: Path) -> None:
    job_id, _ = app.generate(*_values(_form(model, amount=40, steps=8)))
    job = app.queue.get(job_id)
    deadline = time.monotonic() + 60
    while job.clip < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert "stopping" in app.stop(job_id)
    assert app.queue.wait(job_id, 60).state == STOPPED
    manifest = json.loads(manifest_path(job.out).read_text())
    assert manifest["status"] == "interrupted" and 2 <= len(manifest["clips"]) < 40
    assert len(read_video(job.out)) == manifest["frames_written"]
    assert app.downloads(job.out.stem)[0] == [str(job.out), str(manifest_path(job.out))]

    info = app.sessions.info(job.out.stem)
    assert info.resumable and info.status == "interrupted"
    again, message = app.resume(job.out.stem)
    assert again is not None, message
    resumed = app.queue.wait(again, 120)
    assert resumed.state == DONE and resumed.out == job.out
    assert [r["clip"] for r in resumed.monitor.rows] == list(range(40))  # earlier rows seeded
    done = json.loads(manifest_path(job.out).read_text())
    assert done["status"] == "complete" and len(done["clips"]) == 40
    assert len(read_video(job.out)) == done["frames_written"] == 40 * 3 + 2
    assert not app.sessions.info(job.out.stem).resumable
    assert app.resume(job.out.stem)[1].startswith("error: ")


def test_branch_from_clip_2_is_a_new_session_and_leaves_the_old_one(
    app: Callbacks, model: Path
) -> None:
    source = _run(app, _form(model))
    before = (_digest(source.out), _digest(manifest_path(source.out)))
    job_id, message = app.branch(source.out.stem, 2, 77, "", 4)
    assert job_id is not None, message
    branched = app.queue.wait(job_id, 60)
    assert branched.state == DONE and branched.out.parent != source.out.parent
    assert (_digest(source.out), _digest(manifest_path(source.out))) == before
    manifest = json.loads(manifest_path(branched.out).read_text())
    assert manifest["branch"] == {"source": str(source.out), "clip": 2}
    assert [c["seed"] for c in manifest["clips"]][2:] == [77 + 84, 77 + 126]
    old, new = read_video(source.out), read_video(branched.out)
    assert len(new) == manifest["frames_written"] == 4 * 3 + 2
    assert (new[:6] == old[:6]).all()  # clips 0 and 1 kept
    assert [r["clip"] for r in branched.monitor.rows] == [0, 1, 2, 3]
    info = app.sessions.info(branched.out.stem)
    assert info.branch_of == f"{source.out.stem} @ clip 2" and info.clips == 4


def test_a_branch_past_the_finished_clips_fails_readably(app: Callbacks, model: Path) -> None:
    source = _run(app, _form(model))
    job_id, _ = app.branch(source.out.stem, 7, None, "", None)
    job = app.queue.wait(job_id, 60)
    assert job.state == FAILED and "branch from a clip in 1..3" in job.error
    assert "Traceback" not in status_html(job, app) and job.error in status_html(job, app)


@pytest.mark.parametrize(
    ("change", "says"),
    [({"prompts": "  \n", "image": __file__}, "enter a prompt for the start image"),
     ({"prompts": "# only a comment\n"}, "no prompts found"),
     ({"prompts": "prompts = ['a', f(x)]"}, "prompt stream"),
     ({"variant": "nope"}, "unknown variant 'nope'"),
     ({"loras": "x.safetensors, strong"}, "must be a number"),
     ({"amount": 0}, "must be positive"),
     ({"seed": 1.5}, "whole number"),
     ({"image": "/nonexistent/start.png"}, "does not exist")],
)  # fmt: skip
def test_bad_input_is_a_readable_message(app: Callbacks, model: Path, change, says) -> None:
    job_id, message = app.generate(*_values(_form(model, **change)))
    assert job_id is None and message.startswith("error: ") and says in message
    assert "\n" not in message and app.sessions_rows()[0] == []  # nothing written


def test_a_blank_prompt_makes_what_svi_generate_makes_without_one(
    app: Callbacks, model: Path, tmp_path: Path
) -> None:
    """One front door: the page with no prompt = `svi generate` with no prompt (the world
    scene's own prompt), frame for frame."""
    from svi.plan import GenerationConfig
    from svi.request import GenerateRequest, run_generate

    job = _run(app, _form(model, prompts="  \n"))
    assert job.state == DONE, job.error
    cli = run_generate(GenerateRequest(out=tmp_path / "cli.mp4", model=str(model), clips=3,
                                       config=GenerationConfig(seed=1, steps=2),
                                       world_kind="consistent", progress=False))  # fmt: skip
    page = json.loads(manifest_path(job.out).read_text())
    assert page["inputs"]["prompt_texts"] == cli["inputs"]["prompt_texts"]
    assert (read_video(job.out) == read_video(tmp_path / "cli.mp4")).all()


def test_a_python_list_of_prompts_is_a_stream(app: Callbacks, model: Path) -> None:
    job = _run(app, _form(model, prompts="prompts = [\n  \"first\",\n  'second',\n]\n"))
    manifest = json.loads(manifest_path(job.out).read_text())
    assert manifest["inputs"]["prompt_texts"] == ["first", "second"]


def test_a_failing_model_is_a_failed_job_with_one_line(app: Callbacks, tmp_path: Path) -> None:
    job = _run(app, _form(tmp_path / "no-such-model"))
    assert job.state == FAILED and job.error and "\n" not in job.error
    assert app.downloads(job.out.stem)[0] is None
    assert app.stop(job.id).endswith("already failed")


def test_blank_page_numbers_are_the_defaults() -> None:
    form = Form.from_values({"prompts": "a", "cfg": "", "steps": "4", "reroll": "0.2",
                             "world_seed": "", "seed": None, "amount": 3.0})  # fmt: skip
    assert (form.cfg, form.steps, form.reroll, form.world_seed, form.seed) == (None, 4, 0.2,
                                                                               None, 0)  # fmt: skip
    with pytest.raises(Exception, match="cfg must be a number"):
        Form.from_values({"cfg": "high"})


@pytest.mark.parametrize(("signum", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_svi_ui_stopped_by_a_signal_exits_as_stopped(model: Path, tmp_path: Path, signum: str,
                                                     code: int) -> None:  # fmt: skip
    """Ctrl-C / SIGTERM end the server with 130 / 143 and one error line (it said 0)."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "svi.cli", "ui", "--model", str(model), "--port", str(port),
            "--sessions", str(tmp_path / "sessions")]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(getattr(signal, signum))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: interrupted ({signum}): svi ui stopped; every session was "
                      "finalised"], err  # fmt: skip


def test_a_video_upload_is_a_start_to_continue(app: Callbacks, model: Path, tmp_path) -> None:
    """Issue 27: a video as the start - the session's video is the upload (fitted to the
    clip size) followed by the new frames; the manifest records the upload's hash."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (7, 24, 40, 3), np.uint8)  # noise, another aspect
    upload = tmp_path / "upload.gif"  # a GIF of 10 fps, written with Pillow
    first, *rest = [Image.fromarray(f) for f in frames]
    first.save(upload, save_all=True, append_images=rest, duration=100, loop=0)
    job = _run(app, _form(model, prompts="a red disc bounces", extend=str(upload), amount=2))
    assert job.state == DONE, job.error
    manifest = json.loads(manifest_path(job.out).read_text())
    assert manifest["inputs"]["extend"]["sha256"] == _digest(job.out.parent / "extend.gif")
    assert _digest(job.out.parent / "extend.gif") == _digest(upload)
    assert manifest["inputs"]["plan"]["fps"] == 10
    assert len(read_video(job.out)) == manifest["frames_written"] == 7 + 2 * 3
