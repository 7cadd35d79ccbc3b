"""The driven benchmark (SVI-Talk / SVI-Dance): tiny adapters, 2 scenes x 2 clips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from svi.bench import drift, driven, runner
from svi.cli import main
from svi.config import load_recipe
from svi.errors import SviError
from svi.train import train
from world_fixtures import build_tiny_world_model

BASE_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "world-tiny-lora-anchor-base.toml"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny base model and a talk / dance adapter trained on it for 2 steps."""
    root = tmp_path_factory.mktemp("driven")
    model = build_tiny_world_model(root / "model")
    out = {"model": str(model), "root": root}
    for condition, kind in (("audio", "talking"), ("pose", "dancing")):
        recipe = root / f"{condition}.toml"
        recipe.write_text(
            f'extends = "{BASE_RECIPE}"\ninit = "{model}"\nsteps = 2\nbatch_size = 2\n'
            "checkpoint_every = 2\nlog_every = 1\nlora_rank = 4\nlora_alpha = 4\n"
            f'[data]\nkinds = ["{kind}"]\npool_size = 2\nepisode_frames = 16\n'
            f'condition = "{condition}"\n',
            encoding="utf-8",
        )
        final = train(load_recipe(recipe), root / f"run-{condition}", progress=False)
        out[condition] = final / "svi_lora.safetensors"
        out[f"{condition}_wan"] = final / "svi_lora_wan.safetensors"
    return out


def _bench(setup: dict, condition: str, out: Path, *extra: str) -> tuple[int, dict | None]:
    args = ["bench", "driven", "--condition", condition, "--model", setup["model"],
            "--lora", f"one={setup[condition]}", "--lora", f"wan={setup[condition + '_wan']}",
            "--scenes", "2", "--clips", "2", "--cache", str(setup["root"] / "cache"),
            "--out", str(out), "--no-progress", *extra]  # fmt: skip
    code = main(args)
    path = out.with_suffix(".json")
    return code, json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _numbers(report: dict) -> str:
    return json.dumps([report[k] for k in ("summary", "paired", "per_scene", "curves")])


def _record_jobs(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict]]:
    """Record what every (contender, scene) job returned - its raw per-clip rows and
    generation seconds - per contender name, in scene order."""
    seen: dict[str, list[dict]] = {}
    real = driven.run_driven_job

    def recording(job: driven.DrivenJob, **kwargs) -> dict:
        out = real(job, **kwargs)
        seen.setdefault(job.contender.name, []).append(out)
        return out

    monkeypatch.setattr(driven, "run_driven_job", recording)
    return seen


def _expected_mean(scenes: list[dict], metric: str, h: int) -> float:
    """The summary mean at horizon ``h`` of a 2-clip run, recomputed from the raw rows:
    per scene the mean of clip 1 alone (h = 1) or of both clips (h = 2: the window of
    max(5, h // 5) clips reaches back to clip 1), NaN clips left out; then the mean over
    the scenes that have a value."""
    per_scene = []
    for scene in scenes:
        values = [r[metric] for r in scene["rows"][:h] if math.isfinite(r[metric])]
        if values:
            per_scene.append(sum(values) / len(values))
    return sum(per_scene) / len(per_scene) if per_scene else math.nan


def test_audio_report_layout_and_cached_rerun(setup, tmp_path: Path, capsys, monkeypatch) -> None:
    scored = _record_jobs(monkeypatch)
    code, report = _bench(setup, "audio", tmp_path / "talk")
    assert code == 0 and report is not None
    p, prov = report["protocol"], report["provenance"]
    assert p["condition"] == "audio" and p["kind"] == "talking" and p["split"] == "test"
    assert p["scenes"] == 2 and p["clips"] == 2 and p["horizons"] == [1, 2]
    assert p["publishable"] is False and "2 scenes < 32" in p["not_publishable_because"]
    assert set(p["clip_metrics"]) == {"sync", "psnr", "ssim"}
    # the truth on top, the frozen pictures at the bottom; only the models are paired
    assert list(report["summary"]) == ["truth", "one", "wan", "freeze", "hold-last"]
    assert list(report["paired"]) == ["one vs wan"]
    assert prov["clips_generated"]["truth"] == 0 and report["summary"]["truth"]["ssim"]["2"][
        "mean"] == 1.0  # fmt: skip
    for ref in ("freeze", "hold-last"):  # a frozen mouth scores 0 where the audio moves
        for scene in scored[ref]:
            assert all(row["sync"] == 0.0 or (row["sync_degenerate"] and math.isnan(row["sync"]))
                       for row in scene["rows"])  # fmt: skip
    assert set(report["summary"]["one"]["psnr"]) == {"1", "2"}
    assert report["summary"]["one"]["psnr"]["2"]["n"] == 2
    pair = report["paired"]["one vs wan"]["ssim"]["1"]
    assert {"diff", "wins", "losses", "significant"} <= set(pair)
    assert set(report["video_summary"]["one"]) == {"sync_overall", "sync_lag", "sync_lag_r"}
    # the aggregates are the raw per-clip scores the jobs returned, counted and averaged
    one = scored["one"]
    assert len(one) == 2 and all(len(scene["rows"]) == 2 for scene in one)
    flags = [[row["sync_degenerate"] for row in scene["rows"]] for scene in one]
    assert all(math.isnan(row["sync"]) == row["sync_degenerate"]
               for scene in one for row in scene["rows"])  # fmt: skip
    assert report["degenerate_clips"]["one"] == {
        "1": {"degenerate": sum(f[0] for f in flags), "clips": 2},  # clip 1 of each scene
        "2": {"degenerate": sum(map(sum, flags)), "clips": 4},  # both clips of each scene
    }
    for metric in ("sync", "psnr", "ssim"):
        for h in (1, 2):
            expected = _expected_mean(one, metric, h)
            assert report["summary"]["one"][metric][str(h)]["mean"] == pytest.approx(
                expected, rel=1e-9, nan_ok=True
            ), (metric, h)
    assert len(report["curves"]["one"]["psnr"]["mean"]) == 2
    assert prov["command"].startswith("svi bench driven --condition audio")
    assert prov["model_hash"] and prov["commit"] and prov["clips_generated"]["one"] == 4
    seconds = [t for scene in one for t in scene["generated_seconds"]]
    assert len(seconds) == 4  # 2 scenes x 2 clips, each timed
    assert prov["seconds_per_clip"]["one"] == pytest.approx(sum(seconds) / 4, rel=1e-9)
    md = (tmp_path / "talk.md").read_text(encoding="utf-8")
    assert f"Command: `{prov['command']}`" in md and "NOT publishable" in md
    assert (tmp_path / "talk.png").stat().st_size > 0
    capsys.readouterr()

    def refuse(*_a, **_k):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(runner, "load_pipeline", refuse)
    monkeypatch.setattr(runner, "_WORKER", {})
    code, again = _bench(setup, "audio", tmp_path / "again")
    assert code == 0 and again is not None
    assert _numbers(again) == _numbers(report)
    assert again["provenance"]["clips_generated"] == {n: 0 for n in again["summary"]}


def test_pose_report_and_publishable_flag(setup, tmp_path: Path, monkeypatch) -> None:
    scored = _record_jobs(monkeypatch)
    code, report = _bench(setup, "pose", tmp_path / "dance", "--split", "val")
    assert code == 0 and report is not None
    p = report["protocol"]
    assert p["kind"] == "dancing" and p["split"] == "val" and not p["publishable"]
    assert set(p["clip_metrics"]) == {"joint_error", "chamfer", "iou", "psnr", "ssim"}
    assert "degenerate_clips" not in report
    one = report["summary"]["one"]
    assert all(one[m]["1"]["n"] == 2 for m in p["clip_metrics"])
    for metric in p["clip_metrics"]:  # each the mean of the raw per-clip scores
        for h in (1, 2):
            expected = _expected_mean(scored["one"], metric, h)
            assert one[metric][str(h)]["mean"] == pytest.approx(expected, rel=1e-9), (metric, h)
    ious = [row["iou"] for scene in scored["one"] for row in scene["rows"]]
    assert all(0 <= x <= 1 for x in ious)
    # enough scenes on the test split: publishable (the threshold lowered to 2)
    monkeypatch.setattr(drift, "MIN_PUBLISHED_SCENES", 2)
    monkeypatch.setattr(driven, "MIN_PUBLISHED_SCENES", 2)
    code, report = _bench(setup, "pose", tmp_path / "dance-test")
    assert code == 0 and report["protocol"]["publishable"] is True
    assert report["protocol"]["not_publishable_because"] == []


def test_wrong_adapter_and_bad_input_fail_with_one_line(setup, tmp_path: Path, capsys) -> None:
    cases = [
        (["--condition", "pose", "--lora", f"talk={setup['audio']}"], "needs an SVI-Dance"),
        (["--condition", "audio", "--lora", f"dance={setup['pose']}"], "needs an SVI-Talk"),
        (["--condition", "noise", "--lora", f"talk={setup['audio']}"], "audio or pose"),
        (["--condition", "audio", "--lora", f"talk={setup['audio']}", "--scenes", "0"],
         "--scenes"),
        (["--condition", "audio"], "no contenders"),
    ]  # fmt: skip
    for args, says in cases:
        capsys.readouterr()
        scenes = [] if "--scenes" in args else ["--scenes", "1"]
        code = main(["bench", "driven", *args, *scenes, "--clips", "1", "--model",
                     setup["model"], "--out", str(tmp_path / "x"), "--no-progress"])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error:") and says in err[0]
    assert not (tmp_path / "x.json").exists()


def test_the_pipeline_refuses_a_drive_its_adapter_was_not_trained_for(setup, tmp_path) -> None:
    """Past the file check too: the loaded model and the drive must agree."""
    from svi.bench.runner import Contender, benchmark_config

    talk = Contender("talk", loras=((str(setup["audio"]), 1.0),))
    job = driven.DrivenJob(setup["model"], talk, "pose", 9, 1, benchmark_config(),
                           tmp_path / "v.npz", 5, 2, 32, 1)  # fmt: skip
    with pytest.raises(SviError, match="--pose needs an adapter trained with the pose"):
        driven.run_driven_job(job)
    assert not (tmp_path / "v.npz").exists()


def test_reproduce_a_driven_result_at_its_length(setup, tmp_path: Path, capsys) -> None:
    """`svi bench reproduce` re-runs a driven result's first scene at the result's own
    length: every clip and whole-video value identical; a recorded video value off by more
    than its CI half-width fails (exit 1); another --clips is one error line (exit 2)."""
    code, report = _bench(setup, "audio", tmp_path / "talk")
    assert code == 0 and report is not None
    capsys.readouterr()
    result = tmp_path / "talk.json"
    args = ["bench", "reproduce", str(result), "--model", setup["model"], "--scenes", "1",
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| one | sync_lag_r (video) | 2 | 1/1 |" in out and "| wan | psnr | 2 | 1/1 |" in out
    assert "| NO |" not in out and "every value as recorded" in out

    # written in another checkout: the adapter the model ships is found by its name
    shipped = Path(setup["model"]) / "moved_lora.safetensors"
    shipped.write_bytes(Path(setup["audio"]).read_bytes())
    moved = json.loads(json.dumps(report))
    moved["provenance"]["contenders"]["one"]["loras"][0][0] = "/elsewhere/moved_lora.safetensors"
    (tmp_path / "moved.json").write_text(json.dumps(moved), encoding="utf-8")
    try:
        assert main(["bench", "reproduce", str(tmp_path / "moved.json"), *args[3:], "--only",
                     "one"]) == 0  # fmt: skip
    finally:
        shipped.unlink()
    assert "| one | psnr | 2 | 1/1 |" in capsys.readouterr().out

    iv = report["video_summary"]["one"]["sync_lag_r"]
    report["per_scene_video"]["one"]["sync_lag_r"][0] += iv["hi"] - iv["lo"] + 0.01
    result.write_text(json.dumps(report), encoding="utf-8")
    assert main([*args, "--only", "one"]) == 1
    out = capsys.readouterr().out
    assert "| one | sync_lag_r (video) | 2 | 0/1 |" in out and "| wan |" not in out

    for edit, extra, message in [(None, ["--clips", "1"], "re-run at its full length"),
                                 ("sync_overall", [], "over the video but no valid")]:  # fmt: skip
        if edit:
            del report["video_summary"]["one"][edit]
            result.write_text(json.dumps(report), encoding="utf-8")
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
