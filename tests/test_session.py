"""svi generate end to end: files, manifest, resume after a crash, and bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from svi import session
from svi.cli import main
from svi.errors import SviError
from svi.manifest import manifest_path, state_dir
from svi.plan import GenerationConfig
from svi.request import GenerateRequest, run_generate
from svi.video import VideoWriter, read_video
from world_fixtures import build_tiny_world_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world_model(tmp_path_factory.mktemp("model") / "tiny")


def _split(kw: dict) -> dict:
    """Generation settings go into the request's GenerationConfig."""
    names = {f.name for f in fields(GenerationConfig)} - {"clips"}
    config = GenerationConfig(**{k: kw.pop(k) for k in list(kw) if k in names})
    return {**kw, "config": config}


def _request(model: Path, out: Path, **kw) -> GenerateRequest:
    return GenerateRequest(out=out, model=str(model), progress=False, lossless=True, **_split(kw))


def test_generate_writes_video_and_manifest(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.mp4"
    manifest = run_generate(_request(model, out, clips=4, seed=3))
    frames = read_video(out)
    assert frames.shape == (4 * 3 + 2, 32, 32, 3)
    assert manifest["status"] == "complete" and manifest["frames_written"] == 14
    saved = json.loads(manifest_path(out).read_text())
    assert [c["index"] for c in saved["clips"]] == [0, 1, 2, 3]
    assert [c["seed"] for c in saved["clips"]] == [3 + 42 * k for k in range(4)]
    assert not state_dir(out).exists()
    assert not VideoWriter.partial_path_for(out).exists()


def test_refuses_to_clobber_and_overwrites_on_request(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.mp4"
    run_generate(_request(model, out, clips=1))
    with pytest.raises(SviError, match="--resume or --overwrite"):
        run_generate(_request(model, out, clips=1))
    run_generate(_request(model, out, clips=2, overwrite=True))
    assert len(read_video(out)) == 2 * 3 + 2


def _crash_after(monkeypatch: pytest.MonkeyPatch, clips: int) -> None:
    """Make the manifest write of clip ``clips`` fail: the video is one clip ahead."""
    real = session.write_atomic
    calls = {"n": 0}

    def flaky(path: Path, data: bytes) -> None:
        if Path(path).name.endswith(".svi.json"):
            calls["n"] += 1  # manifest writes only (state files are written atomically too)
            if calls["n"] == clips + 1:  # call 1 is the initial manifest
                raise RuntimeError("simulated crash")
        real(path, data)

    monkeypatch.setattr(session, "write_atomic", flaky)


@pytest.mark.parametrize("crash_at", [1, 2, 4])
def test_resume_after_crash_is_frame_identical(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    ref = tmp_path / "ref.mp4"
    run_generate(_request(model, ref, clips=5, seed=1))
    out = tmp_path / "out.mp4"
    with monkeypatch.context() as m:
        _crash_after(m, crash_at)
        with pytest.raises(RuntimeError, match="simulated"):
            run_generate(_request(model, out, clips=5, seed=1))
    assert not out.exists()
    manifest = run_generate(_request(model, out, clips=5, seed=1, resume=True))
    assert manifest["status"] == "complete"
    assert np.array_equal(read_video(out), read_video(ref))
    ref_manifest = json.loads(manifest_path(ref).read_text())
    hashes = [c["frames_sha256"] for c in manifest["clips"]]
    assert hashes == [c["frames_sha256"] for c in ref_manifest["clips"]]


def test_resume_after_kill_9(model: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref.mp4"
    args = ["generate", "--model", str(model), "--clips", "8", "--seed", "2", "--no-progress",
            "--lossless"]  # fmt: skip
    assert main([*args, "--out", str(ref)]) == 0
    out = tmp_path / "out.mp4"
    cmd = [sys.executable, "-m", "svi.cli", *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        mpath = manifest_path(out)
        if mpath.exists() and len(json.loads(mpath.read_text()).get("clips", [])) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if out.exists():  # the child finished before the kill landed: nothing to resume
        pytest.skip("generation finished before it could be killed")
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert np.array_equal(read_video(out), read_video(ref))


def test_resume_refuses_other_arguments(model: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "o.mp4"
    with monkeypatch.context() as m:
        _crash_after(m, 2)
        with pytest.raises(RuntimeError):
            run_generate(_request(model, out, clips=4))
    cases = [({"seed": 9}, "changed: plan.seed$"), ({"clips": 6}, "plan.clips, plan.total_frames"),
             ({"steps": 1}, "plan.steps"), ({"prompt": "other"}, "changed: prompt_texts$"),
             ({"handoff": "latent"}, "plan.handoff")]  # fmt: skip
    for change, named in cases:
        with pytest.raises(SviError, match=named):
            run_generate(_request(model, out, **{"clips": 4, **change, "resume": True}))
    fresh = run_generate(_request(model, tmp_path / "none.mp4", clips=1, resume=True))
    assert fresh["status"] == "complete"  # nothing on disk to resume: --resume just starts


def _cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_no_lora_is_a_flag_without_a_negated_twin(capsys) -> None:
    from typer.testing import CliRunner

    from svi.cli import app

    result = CliRunner().invoke(app, ["generate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--no-lora" in result.output
    assert "--no-no-lora" not in result.output
    assert "--lossless" in result.output and "--no-lossless" in result.output  # others keep both
    assert main(["generate", "--no-no-lora"]) == 2  # unknown option: a usage error
    assert "--no-no-lora" in capsys.readouterr().err


def test_bad_inputs_give_one_line_and_exit_2(model: Path, tmp_path: Path, capsys) -> None:
    base = ["generate", "--model", str(model), "--clips", "1", "--no-progress"]
    out = ["--out", str(tmp_path / "x.mp4")]
    assert "does not exist" in _cli_error(
        capsys, [*base, *out, "--image", str(tmp_path / "no.png")]
    )
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    assert "junk.png" in _cli_error(capsys, [*base, *out, "--image", str(junk), "--prompt", "a"])
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n")
    assert "empty.txt" in _cli_error(capsys, [*base, *out, "--prompts", str(empty)])
    assert "does not exist" in _cli_error(
        capsys, [*base, "--out", str(tmp_path / "missing" / "x.mp4")]
    )
    assert "same arguments" not in _cli_error(
        capsys, [*base, *out, "--clips", "2", "--frames", "3"]
    )
    assert not list(tmp_path.glob("x*"))


def test_lora_for_another_model_is_an_error(model: Path, tmp_path: Path, capsys) -> None:
    import torch

    from svi.lora import save_lora

    sd = {
        "transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 999),
        "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(999, 2),
    }
    path = save_lora(tmp_path / "other.safetensors", sd, form="diffusers")
    out = tmp_path / "y.mp4"
    line = _cli_error(capsys, ["generate", "--model", str(model), "--clips", "1", "--no-progress",
                               "--out", str(out), "--lora", str(path)])  # fmt: skip
    assert "other.safetensors" in line or "to_q" in line
    assert not out.exists() and not VideoWriter.partial_path_for(out).exists()


def test_forever_stops_cleanly_on_ctrl_c(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "endless.mp4"
    cmd = [sys.executable, "-m", "svi.cli", "generate", "--model", str(model), "--forever",
           "--no-progress", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        mpath = manifest_path(out)
        if mpath.exists() and len(json.loads(mpath.read_text()).get("clips", [])) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr  # what shells expect after Ctrl-C
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["status"] == "interrupted"
    n = len(manifest["clips"])
    assert stderr == f"error: interrupted (SIGINT): wrote {n} clips to {out}; --resume continues\n"
    assert n >= 3 and len(read_video(out)) == n * 3 + 2 == manifest["frames_written"]
    assert not VideoWriter.partial_path_for(out).exists()
    assert [p.name for p in state_dir(out).iterdir()] == [f"after-clip-{n - 1:06d}.safetensors"]


def test_per_clip_files(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.mp4"
    run_generate(_request(model, out, clips=3, clips_dir=tmp_path / "clips"))
    files = sorted((tmp_path / "clips").glob("clip_*.mp4"))
    assert [f.name for f in files] == ["clip_00000.mp4", "clip_00001.mp4", "clip_00002.mp4"]
    assert all(len(read_video(f)) == 5 for f in files)


def test_embedded_model_runs_without_arguments(tmp_path: Path) -> None:
    """The README's main command path: the embedded world-tiny model and a world start."""
    out = tmp_path / "demo.mp4"
    manifest = run_generate(
        GenerateRequest(out=out, **_split({"clips": 2, "steps": 2}), progress=False)
    )
    assert manifest["inputs"]["preset"] == "world-tiny"
    assert len(read_video(out)) == 2 * 3 + 2
    (lora,) = manifest["inputs"]["loras"]  # the shipped ERFT LoRA, with its trained format
    assert lora["path"].endswith("svi_lora.safetensors") and lora["modules"] == 40
    assert lora["padding"] == "anchor" == manifest["inputs"]["plan"]["padding"]
    plain = run_generate(GenerateRequest(out=tmp_path / "p.mp4", **_split({"clips": 1, "steps": 2}),
                                         no_lora=True, progress=False))  # fmt: skip
    assert plain["inputs"]["loras"] == [] and plain["inputs"]["plan"]["padding"] == "last"


def test_a_model_folder_lora_is_loaded_by_default(tmp_path: Path) -> None:
    """A world model folder may ship its SVI LoRA as svi_lora.safetensors (--no-lora skips)."""
    from svi.lora import save_lora
    from svi.models.bundle import DEFAULT_LORA, load_bundle
    from world_fixtures import build_tiny_world_model, random_lora

    folder = build_tiny_world_model(tmp_path / "m")
    save_lora(folder / DEFAULT_LORA, random_lora(load_bundle(str(folder)).transformer))
    m = run_generate(_request(folder, tmp_path / "a.mp4", clips=1))
    assert [entry["path"] for entry in m["inputs"]["loras"]] == [str(folder / DEFAULT_LORA)]
    m = run_generate(_request(folder, tmp_path / "b.mp4", clips=1, no_lora=True))
    assert m["inputs"]["loras"] == []


def test_a_long_prompt_is_stored_once(model: Path, tmp_path: Path) -> None:
    """The manifest keeps distinct prompt texts once; clips refer to them by index."""
    long = "a red disc bounces " * 5000 + "END-OF-PROMPT"  # ~95 kB
    out = tmp_path / "long.mp4"
    run_generate(_request(model, out, clips=6, prompt=long, steps=1))
    text = manifest_path(out).read_text()
    assert text.count("END-OF-PROMPT") == 1 and len(text) < len(long) + 20_000
    saved = json.loads(text)
    assert [c["prompt_index"] for c in saved["clips"]] == [0] * 6


@pytest.mark.parametrize("fail_at", [3, 5])  # the 3rd / 5th atomic write of the run
def test_a_full_disk_names_the_output_and_resume_continues(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """The disk fills while clip 3's manifest is written: one error naming the output and
    --resume (the finished clips are kept), and the resumed video is the uninterrupted one."""
    import errno

    ref = tmp_path / "ref.mp4"
    run_generate(_request(model, ref, clips=4, seed=2))
    out = tmp_path / "out.mp4"
    real, calls = session.write_atomic, []

    def fills_up(path, data):
        calls.append(path)
        if len(calls) == fail_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data)

    with monkeypatch.context() as m:
        m.setattr(session, "write_atomic", fills_up)
        with pytest.raises(SviError) as err:
            run_generate(_request(model, out, clips=4, seed=2))
    message = str(err.value)
    assert str(out) in message and "--resume continues" in message, message
    recorded = len(json.loads(manifest_path(out).read_text())["clips"])
    assert f"{recorded} finished clip{'s' * (recorded != 1)} kept" in message
    manifest = run_generate(_request(model, out, clips=4, seed=2, resume=True))
    assert manifest["status"] == "complete"
    assert np.array_equal(read_video(out), read_video(ref))


def test_a_manifest_from_before_a_plan_field_existed_still_resumes(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fields added to the plan later (few_step, clip_preprocess) are compared with what
    the code did before them, so an older interrupted run resumes."""
    ref = tmp_path / "ref.mp4"
    run_generate(_request(model, ref, clips=4, seed=1))
    out = tmp_path / "out.mp4"
    with monkeypatch.context() as m:
        _crash_after(m, 2)
        with pytest.raises(RuntimeError, match="simulated"):
            run_generate(_request(model, out, clips=4, seed=1))
    path = manifest_path(out)
    manifest = json.loads(path.read_text())
    assert manifest["inputs"]["plan"]["clip_preprocess"] is None  # no CLIP on this model
    for field in ("few_step", "clip_preprocess"):
        del manifest["inputs"]["plan"][field]
    path.write_text(json.dumps(manifest))
    assert run_generate(_request(model, out, clips=4, seed=1, resume=True))["status"] == "complete"
    assert np.array_equal(read_video(out), read_video(ref))


def _interrupted_after(model: Path, out: Path, finished: int, **kw) -> dict:
    """A run stopped (as by Ctrl-C) after ``finished`` clips; its manifest."""
    from svi.interrupts import Interrupted
    from svi.session import Hooks

    done: list = []
    hooks = Hooks(on_clip=lambda record, clip: done.append(clip),
                  should_stop=lambda: len(done) >= finished)  # fmt: skip
    with pytest.raises(Interrupted):
        run_generate(_request(model, out, **kw), hooks)
    return json.loads(manifest_path(out).read_text())


def test_resume_after_an_interrupt_counts_clips_without_the_tail(
    model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    """An interrupted video ends in the last clip's tail (6 clips: 6 x 3 + 2 = 20 frames,
    7 writes): resuming cuts the tail and speaks of 6 clips and 18 frames (issue 28: it
    said "20 frames (7 clips)"), and the ordinary cut is no warning."""
    import logging

    out = tmp_path / "o.mp4"
    manifest = _interrupted_after(model, out, 6, clips=8, seed=1)
    assert (manifest["status"], len(manifest["clips"])) == ("interrupted", 6)
    assert (manifest["frames_written"], manifest["tail_frames"]) == (20, 2)
    monkeypatch.setattr(logging.getLogger("svi"), "propagate", True)  # main() may unset it
    caplog.set_level(logging.INFO, logger="svi")
    assert run_generate(_request(model, out, clips=8, seed=1, resume=True))["status"] == "complete"
    said = caplog.text
    assert f"resuming {out} after its 6 finished clips (18 frames)" in said
    assert "after 18 frames (6 clips)" in said and "(7 clips)" not in said
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(read_video(out)) == 8 * 3 + 2


def _files(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda m: m["inputs"]["plan"].update(steps=3), "inputs.plan.steps is 3, the run it "
         "records used 2"),
        (lambda m: m["clips"][1].update(seed=7), "clips[1].seed is 7"),
        (lambda m: m["clips"][0]["tries"][0].update(seed=99), "clips[0].tries"),
        (lambda m: [t.update(kept=True) for t in m["clips"][1]["tries"]], "clips[1].tries"),
        (lambda m: m.update(frames_written=11), "frames_written is 11, the run it records used 8"),
        (lambda m: m.pop("tail_frames"), "frames_written is 8, the run it records used 6"),
    ],
    ids=["plan-steps", "clip-seed", "try-seed", "two-kept-tries", "frames", "tail-removed"],
)  # fmt: skip
def test_a_manifest_edited_by_hand_is_refused_and_left_as_it_was(
    model: Path, tmp_path: Path, edit, named: str
) -> None:
    """A manifest is evidence, not input (issue 28): the resumed request's plan is compared
    with the recorded one field by field, each finished clip's seed (with re-roll: its
    tries) with the plan's; an edit is refused by name and nothing on disk changes. The
    same run untouched resumes into the uninterrupted video."""
    args = {"clips": 4, "seed": 5, "reroll": 0.001, "max_rerolls": 1}  # every clip re-rolled
    ref = tmp_path / "ref" / "o.mp4"
    ref.parent.mkdir()
    run_generate(_request(model, ref, **args))
    out = tmp_path / "run" / "o.mp4"
    out.parent.mkdir()
    manifest = _interrupted_after(model, out, 2, **args)
    assert [len(c["tries"]) for c in manifest["clips"]] == [2, 2]
    untouched = manifest_path(out).read_text()
    edit(manifest)
    manifest_path(out).write_text(json.dumps(manifest, indent=1))
    before = _files(out.parent)
    import re

    with pytest.raises(SviError, match=f"was edited: {re.escape(named)}"):
        run_generate(_request(model, out, **args, resume=True))
    assert _files(out.parent) == before  # the manifest is never rewritten by the refusal
    manifest_path(out).write_text(untouched)
    assert run_generate(_request(model, out, **args, resume=True))["status"] == "complete"
    assert np.array_equal(read_video(out), read_video(ref))
