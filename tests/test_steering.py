"""Directing a long video (issue 27): LoRA strengths per prompt-stream segment, applied
between clips without reloading weights, and a prompt stream changed while the video is
generated (Python and the app's callbacks); the manifest records both, and resume and
branch reproduce the directed video exactly."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from svi.branch import branch
from svi.errors import SviError
from svi.interrupts import Interrupted
from svi.manifest import manifest_path
from svi.models.bundle import load_bundle
from svi.plan import GenerationConfig
from svi.request import GenerateRequest, prepare_generation, run_generate
from svi.session import Hooks, generate_to_file
from svi.steering import PromptSource, Stream
from svi.ui.app import Callbacks
from svi.ui.forms import Form
from svi.ui.jobs import DONE, JobQueue
from svi.ui.sessions import Sessions
from svi.video import read_video
from world_fixtures import build_tiny_world_model, random_lora

STORY = """\
- prompt: a red disc bounces over a green checkerboard
  clips: 2
  loras: {style: 0.0}
- prompt: the red disc turns yellow
  clips: 2
  loras: {style: 2.0, motion: 0.5}
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def files(model: Path, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("files")
    dit = load_bundle(str(model), device="cpu").transformer
    torch.manual_seed(0)
    out = {"prompts": folder / "story.yaml"}
    for name, suffix in (("style", "attn1.to_q"), ("motion", "ffn.net.2")):
        sd = {k: v * 0.5 for k, v in random_lora(dit, suffix).items()}
        save_file(sd, folder / f"{name}.safetensors")
        out[name] = folder / f"{name}.safetensors"
    out["prompts"].write_text(STORY, encoding="utf-8")
    return out


def _request(model: Path, files: dict, out: Path, **kw) -> GenerateRequest:
    return GenerateRequest(out=out, model=str(model), progress=False, lossless=True,
                           lora=[files["style"], files["motion"]], prompts=files["prompts"],
                           config=GenerationConfig(steps=2, seed=4), **kw)  # fmt: skip


@pytest.fixture(scope="module")
def story(model: Path, files: dict, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("story") / "story.mp4"
    run_generate(_request(model, files, out), Hooks(keep_states=True))
    return out


def _manifest(out: Path) -> dict:
    return json.loads(manifest_path(out).read_text())


# ---------------------------------------------------------------- LoRAs per segment


def test_each_segment_sets_its_lora_strengths_and_the_manifest_records_them(story) -> None:
    m = _manifest(story)
    assert [c["loras"] for c in m["clips"]] == [{"style": 0.0, "motion": 1.0}] * 2 + [
        {"style": 2.0, "motion": 0.5}] * 2  # fmt: skip
    assert [c["prompt_index"] for c in m["clips"]] == [0, 0, 1, 1]
    assert [lora["adapter"] for lora in m["inputs"]["loras"]] == ["style", "motion"]
    assert m["inputs"]["prompt_loras"][2] == {"style": 2.0, "motion": 0.5}
    assert len(read_video(story)) == 4 * 3 + 2


def test_strengths_change_without_reloading_and_change_the_frames(
    model, files, story, tmp_path, monkeypatch
) -> None:
    import svi.lora

    loads = []
    real = svi.lora.apply_lora
    monkeypatch.setattr(svi.lora, "apply_lora", lambda *a, **k: loads.append(a) or real(*a, **k))
    flat = tmp_path / "flat.yaml"  # the same story, every LoRA at its loaded strength
    flat.write_text(STORY.replace("{style: 0.0}", "{style: 1.0}").replace(
        "{style: 2.0, motion: 0.5}", "{style: 1.0}"), encoding="utf-8")  # fmt: skip
    out = tmp_path / "flat.mp4"
    run_generate(replace(_request(model, files, out), prompts=flat))
    assert len(loads) == 2  # each file loaded once for four clips
    assert not np.array_equal(read_video(out), read_video(story))


def test_resume_and_branch_reproduce_the_segments(model, files, story, tmp_path) -> None:
    out, done = tmp_path / "r.mp4", []
    hooks = Hooks(on_clip=lambda rec, clip: done.append(rec["index"]),
                  should_stop=lambda: len(done) >= 1)  # fmt: skip
    with pytest.raises(Interrupted):
        run_generate(_request(model, files, out), hooks)
    run_generate(_request(model, files, out, resume=True))
    assert np.array_equal(read_video(out), read_video(story))
    same = tmp_path / "b.mp4"
    branch(story, 1, _request(model, files, same))
    assert np.array_equal(read_video(same), read_video(story))
    assert [c.get("loras") for c in _manifest(same)["clips"]] == [
        c["loras"] for c in _manifest(story)["clips"]]  # fmt: skip


def test_a_segment_naming_a_lora_not_loaded_is_refused_before_any_file(
    model, files, tmp_path
) -> None:
    out = tmp_path / "x.mp4"
    with pytest.raises(SviError, match="sets LoRA 'style', which is not loaded"):
        prepare_generation(replace(_request(model, files, out), lora=[files["motion"]]))
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- steering


def _steered(model: Path, files: dict, out: Path, stop_after: int | None = None) -> dict:
    """Four clips from the story; after clip 0 the caller changes the stream."""
    req = _request(model, files, out)
    p = prepare_generation(req)
    source = PromptSource(p.prompts)
    done = []

    def on_clip(record, clip):
        done.append(clip.index)
        if clip.index == 0:  # between clips 0 and 1, as another thread may
            source.set(["a purple square enters"], [{"motion": 2.0}])

    hooks = Hooks(
        on_clip=on_clip,
        keep_states=True,
        should_stop=lambda: stop_after is not None and len(done) >= stop_after,
    )
    return generate_to_file(p.pipe, p.start, source, p.plan, out, lossless=True,
                            progress=False, hooks=hooks)  # fmt: skip


def test_a_prompt_source_changed_between_clips_steers_the_next_clips(
    model, files, story, tmp_path
) -> None:
    out = tmp_path / "steer.mp4"
    m = _steered(model, files, out)
    assert [c.get("prompt") for c in m["clips"]][1:] == ["a purple square enters"] * 3
    assert m["clips"][0]["prompt_index"] == 0 and m["clips"][1]["loras"] == {
        "style": 1.0, "motion": 2.0}  # fmt: skip
    (edit,) = m["edits"]
    assert edit["from_clip"] == 1 and edit["prompt_texts"] == ["a purple square enters"]
    assert edit["at"] >= m["started"]
    old, new = read_video(story), read_video(out)
    assert np.array_equal(new[:3], old[:3]) and not np.array_equal(new[3:], old[3:])

    resumed = tmp_path / "resumed.mp4"  # stopped after clip 1, resumed with the plain request
    with pytest.raises(Interrupted):
        _steered(model, files, resumed, stop_after=2)
    run_generate(_request(model, files, resumed, resume=True))
    assert np.array_equal(read_video(resumed), new)

    def untimed(edits):
        return [{k: v for k, v in e.items() if k != "at"} for e in edits]

    assert untimed(_manifest(resumed)["edits"]) == untimed(m["edits"])

    same = tmp_path / "branch.mp4"  # a branch with the source's settings follows its edits
    branch(out, 1, _request(model, files, same))
    assert np.array_equal(read_video(same), new)


def test_a_steer_naming_a_lora_not_loaded_changes_nothing() -> None:
    source = PromptSource(["a"])
    source.check = lambda stream: (_ for _ in ()).throw(SviError("not loaded"))
    with pytest.raises(SviError, match="not loaded"):
        source.set(["b"], [{"nope": 1.0}])
    assert source.stream_for(5) == Stream.of(["a"])
    with pytest.raises(SviError, match="finite"):
        Stream.of(["a"], [{"x": float("nan")}])


def test_the_app_steers_a_running_job_and_its_branch_reproduces_it(
    model: Path, files, tmp_path: Path
) -> None:
    queue = JobQueue(max_jobs=1)
    app = Callbacks(queue, Sessions(tmp_path / "sessions"))
    try:
        form = Form(prompts="a red disc bounces", model=str(model), length="clips", amount=5,
                    seed=2, steps=6, loras=f"{files['style']}\n{files['motion']}")  # fmt: skip
        values = [getattr(form, f) for f in __import__("svi.ui.app").ui.app.FIELDS]
        assert app.steer(None, "x").startswith("no running generation")
        job_id, message = app.generate(*values)
        assert job_id is not None, message
        job = queue.get(job_id)
        deadline = time.monotonic() + 60
        while (job.source is None or job.clip < 1) and time.monotonic() < deadline:
            time.sleep(0.005)  # clip 0 finished, clip 1 sampling
        said = app.steer(job_id, '[{"prompt": "the disc turns yellow", "loras": {"nope": 1}}]')
        assert said.startswith("error: ") and "not loaded" in said
        said = app.steer(job_id, '[{"prompt": "the disc turns yellow", "loras": {"style": 0}}]')
        assert "follow the edited prompt stream" in said, said
        assert queue.wait(job_id, 120).state == DONE, job.error
        m = _manifest(job.out)
        (edit,) = m["edits"]
        k = edit["from_clip"]
        assert 1 <= k <= 4 and len(m["clips"]) == 5
        assert all(c["prompt_index"] == 0 for c in m["clips"][:k])
        assert all(c["prompt"] == "the disc turns yellow" for c in m["clips"][k:])
        assert all(c["loras"]["style"] == 0 for c in m["clips"][k:])
        again, message = app.branch(job.out.stem, 1, None, "", None)
        assert again is not None, message
        branched = queue.wait(again, 120)
        assert branched.state == DONE, branched.error
        assert np.array_equal(read_video(branched.out), read_video(job.out))
    finally:
        queue.close()


def test_the_cli_follows_the_segments(model, files, story, tmp_path) -> None:
    from typer.testing import CliRunner

    from svi.cli import app

    out = tmp_path / "cli.mp4"
    args = ["generate", "--model", str(model), "--out", str(out), "--prompts",
            str(files["prompts"]), "--lora", str(files["style"]), "--lora", str(files["motion"]),
            "--steps", "2", "--seed", "4", "--lossless", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert np.array_equal(read_video(out), read_video(story))  # 4 clips: one per entry repeat
    assert [c["loras"] for c in _manifest(out)["clips"]] == [
        c["loras"] for c in _manifest(story)["clips"]]  # fmt: skip
