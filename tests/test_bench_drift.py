"""The drift runner: contenders x scenes, cache and resume, report, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from svi.bench import drift, runner
from svi.bench import headline as headline_score
from svi.bench.drift import CLIP_METRICS, run_drift
from svi.bench.report import build_report, headline, markdown, write_report
from svi.bench.runner import Contender, load_contenders, parse_lora_option
from svi.cli import main
from svi.errors import SviError
from svi.lora import save_lora
from svi.pipeline import GenerationConfig, SVIPipeline
from svi.video import write_video
from world_fixtures import build_tiny_world_model, random_lora


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_world_model(tmp_path_factory.mktemp("m") / "m"))


@pytest.fixture(scope="module")
def lora(model, tmp_path_factory: pytest.TempPathFactory) -> str:
    pipe = SVIPipeline.from_pretrained(model)
    path = tmp_path_factory.mktemp("l") / "l.safetensors"
    return str(save_lora(path, random_lora(pipe.bundle.transformer), form="diffusers"))


def _run(model, contenders, tmp_path, clips=3, kind="creative", **kw):
    kw.setdefault("use_features", False)
    return run_drift(model, contenders, [9, 39], clips, kind=kind, split="val",
                     config=GenerationConfig(), cache_dir=tmp_path / "cache", progress=False,
                     **kw)  # fmt: skip


def test_one_row_per_clip_and_scene(model, lora, tmp_path: Path) -> None:
    run = _run(model, [Contender("base"), Contender("l", loras=((lora, 1.0),))], tmp_path)
    assert set(run.rows) == {"base", "l", "truth", "freeze", "hold-last"}
    assert run.references() == ["truth", "freeze", "hold-last"]
    assert list(run.model_groups()) == ["base", "l"]
    # the bounds: the truth is 1 on every clip, the start frame held 0 (or above 0 where
    # the truth stands still and the freeze's error is below the floor)
    assert (run.curve("truth", "headline") == 1.0).all()
    freeze_errors = run.curve("freeze", "headline_error")
    frozen = run.curve("freeze", "headline")
    assert (frozen[freeze_errors >= headline_score.ERROR_FLOOR] == 0.0).all()
    assert (frozen >= 0).all() and (run.curve("base", "headline") < 1.0).all()
    assert all(
        len(scenes) == 2 and all(len(r) == 3 for r in scenes) for scenes in run.rows.values()
    )
    row = run.rows["base"][0][1]
    assert set(CLIP_METRICS) <= set(row)
    assert np.isnan(run.rows["base"][0][0]["seam"]) and np.isfinite(row["seam"])
    assert run.curve("l", "motion").shape == (2, 3)
    assert not np.array_equal(run.curve("base", "motion"), run.curve("l", "motion"))
    assert not run.publishable and run.horizons() == [1, 3]


def test_cached_scenes_are_not_recomputed(model, tmp_path: Path, monkeypatch) -> None:
    first = _run(model, [Contender("base")], tmp_path, clips=4)

    def refuse(*_a, **_k):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(runner, "load_pipeline", refuse)
    monkeypatch.setattr(runner, "_WORKER", {})
    again = _run(model, [Contender("base")], tmp_path, clips=4)
    shorter = _run(model, [Contender("base")], tmp_path, clips=2)  # a prefix of the rollout
    monkeypatch.setattr(drift, "METRICS_VERSION", "changed")  # rescored from cached videos
    same = json.dumps  # rows hold NaN (undefined seams): compare their JSON text
    assert same(again.rows) == same(first.rows)
    assert same(shorter.rows["base"][1]) == same(first.rows["base"][1][:2])
    with pytest.raises(AssertionError):  # another sampler setting is another rollout
        run_drift(model, [Contender("base")], [9], 2, kind="creative", split="val",
                  config=GenerationConfig(steps=1), cache_dir=tmp_path / "cache",
                  progress=False, use_features=False)  # fmt: skip


def test_same_scene_same_noise_is_deterministic(model, tmp_path: Path) -> None:
    a = _run(model, [Contender("base")], tmp_path / "a", kind="consistent")
    b = _run(model, [Contender("base")], tmp_path / "b", kind="consistent")
    assert json.dumps(a.rows) == json.dumps(b.rows)


def test_report_has_cis_pairs_and_protocol(model, lora, tmp_path: Path, monkeypatch) -> None:
    contenders = [Contender("base"), Contender("l1", "l", ((lora, 1.0),)),
                  Contender("l2", "l", ((lora, 0.5),))]  # fmt: skip
    # the commit recorded is the code that rolled out (taken at the start), not the
    # checkout at the time the report is written
    monkeypatch.setattr(drift, "code_commit", lambda: "f00d" * 10)
    run = _run(model, contenders, tmp_path)
    monkeypatch.setattr(drift, "code_commit", lambda: "later")
    report = build_report(run, GenerationConfig())
    proto = report["protocol"]
    assert proto["publishable"] is False and len(proto["not_publishable_because"]) == 2
    # the truth on top, the frozen pictures at the bottom; references are not paired
    assert list(report["summary"]) == ["truth", "base", "l1", "l2", "l (pooled)", "freeze",
                                       "hold-last"]  # fmt: skip
    assert set(report["paired"]) == {"base vs l", "l vs base"}
    assert report["protocol"]["intervals"]["resamples"] == 4000
    iv = report["summary"]["base"]["motion"]["3"]
    assert iv["mean"] == pytest.approx(float(np.mean(run.at_horizon("base", "motion", 3))))
    # the pairing: A - B of the seed-averaged values on the same scenes, wins by scene
    a = np.nanmean(run.seeds_at_horizon("l", "background_error", 3), axis=0)  # per scene
    b = run.at_horizon("base", "background_error", 3)
    pair = report["paired"]["l vs base"]["background_error"]["3"]
    assert pair["diff"]["mean"] == pytest.approx(float(np.mean(a - b)))
    assert (pair["wins"], pair["losses"]) == (int((a < b).sum()), int((a > b).sum()))
    mirrored = report["paired"]["base vs l"]["background_error"]["3"]
    assert mirrored["diff"]["mean"] == pytest.approx(-pair["diff"]["mean"])
    assert (mirrored["wins"], mirrored["losses"]) == (pair["losses"], pair["wins"])
    assert report["provenance"]["model_hash"] and report["provenance"]["metrics_version"]
    assert report["provenance"]["commit"] == "f00d" * 10
    assert len(report["curves"]["l"]["motion"]["mean"]) == 3
    text = markdown(report, focus="l")
    assert "NOT publishable" in text and "| l vs base |" in text
    json.dumps(report, allow_nan=False)  # strict JSON: no NaN
    head = headline(report)
    assert "| base |" in head and "| l (pooled) |" in head and "| l1 |" not in head
    write_report(run, GenerationConfig(), tmp_path / "out" / "r")
    assert {p.suffix for p in (tmp_path / "out").iterdir()} == {".json", ".md", ".png"}


def test_contender_files(tmp_path: Path, lora) -> None:
    good = tmp_path / "c.toml"
    good.write_text(f'[contender.erft-s1]\ngroup = "erft"\nlora = "{lora}"\ntrain_seed = 1\n'
                    '[contender.base]\n')  # fmt: skip
    entries = load_contenders(good)
    assert [c.name for c in entries] == ["erft-s1", "base"]
    assert entries[0].loras == ((lora, 1.0),) and entries[1].group == "base"
    bad = tmp_path / "bad.toml"
    bad.write_text('[contender.x]\nloar = "a"\n')
    with pytest.raises(SviError, match="unknown keys"):
        load_contenders(bad)
    bad.write_text("x = 1\n")
    with pytest.raises(SviError, match="no \\[contender"):
        load_contenders(bad)
    assert parse_lora_option("a=F:0.5").loras == (("F", 0.5),)
    with pytest.raises(SviError, match="not a number"):
        parse_lora_option("a=F:abc")
    with pytest.raises(SviError, match="LABEL=PATH"):
        parse_lora_option("F")


def test_missing_lora_is_refused_before_work(model, tmp_path: Path) -> None:
    with pytest.raises(SviError, match="not found"):
        _run(model, [Contender("x", loras=(("/nope.safetensors", 1.0),))], tmp_path)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--split", "train"],
        ["--kind", "talking"],
        ["--scenes", "0"],
        ["--lora", "a=F:abc"],
        ["--lora", "a=/does/not/exist.safetensors"],
        ["--only", "nobody"],
    ],
)
def test_bench_drift_bad_input_is_one_line(args, capsys, tmp_path: Path) -> None:
    code = main(["bench", "drift", "--out", str(tmp_path / "d"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:")
    assert not (tmp_path / "d.json").exists()


def test_bench_video_on_any_video(tmp_path: Path, capsys) -> None:
    """A non-world video (a moving gradient, 64x48) with a seam every 6 frames."""
    t = np.arange(24)[:, None, None]
    x = np.arange(64)[None, None, :]
    grad = (128 + 60 * np.sin((x + 2 * t) / 9.0)).astype(np.uint8)
    frames = np.repeat(np.broadcast_to(grad, (24, 48, 64))[..., None], 3, axis=-1).copy()
    frames[12:] = np.clip(frames[12:].astype(int) + 60, 0, 255)  # a jump at frame 12
    path = write_video(tmp_path / "v.mp4", frames, fps=8, crf=0)
    assert main(["bench", "video", str(path), "--json", "--stride", "6"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 24 and len(report["per_second"]) == 3
    assert len(report["per_clip"]) == 4
    jumps = {s["frame"]: s["jump"] for s in report["seams"]}
    assert max(jumps, key=jumps.get) == 12 and jumps[12] > 0.1
    assert main(["bench", "video", str(path), "--no-features"]) == 0  # detected seams
    assert "frame 12" in capsys.readouterr().out


def test_bench_video_broken_file_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"garbage" * 50)
    assert main(["bench", "video", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_longer_rollouts_extend_cached_ones_exactly(model, tmp_path: Path) -> None:
    """3 clips, then 5 (continuing from the cached carry) == 5 clips in one go."""
    _run(model, [Contender("base")], tmp_path / "a", clips=3)
    extended = _run(model, [Contender("base")], tmp_path / "a", clips=5)
    direct = _run(model, [Contender("base")], tmp_path / "b", clips=5)
    assert json.dumps(extended.rows) == json.dumps(direct.rows)
    videos = [np.load(next((tmp_path / d / "cache").rglob("creative-9.npz")))["frames"]
              for d in ("a", "b")]  # fmt: skip
    assert videos[0].shape == (5 * 3, 32, 32, 3) and np.array_equal(*videos)


def test_parallel_workers_give_the_same_rows(model, tmp_path: Path) -> None:
    serial = _run(model, [Contender("base")], tmp_path / "s", clips=2, kind="consistent")
    parallel = _run(model, [Contender("base")], tmp_path / "p", clips=2, kind="consistent", jobs=2)
    assert json.dumps(parallel.rows) == json.dumps(serial.rows)


def test_cache_key_survives_new_default_settings() -> None:
    """Published rollouts stay cached when GenerationConfig gains a setting: a new field
    at its default leaves the key as it was; set, it changes it. The key of the
    benchmark's settings is pinned (the cached test-split rollouts were made with it)."""
    from dataclasses import asdict, dataclass

    base = Contender("base")
    key = runner.contender_key(base, "m", runner.benchmark_config())
    assert runner.key_hash(key) == "dfce55936045bc12"

    @dataclass(frozen=True)
    class Newer(GenerationConfig):
        newer_setting: str | None = None

    settings = {k: v for k, v in asdict(runner.benchmark_config()).items()}
    same = runner.contender_key(base, "m", Newer(**settings))
    assert same == key
    changed = runner.contender_key(base, "m", Newer(**{**settings, "newer_setting": "x"}))
    assert changed["config"]["newer_setting"] == "x" and changed != key


def test_reproduce_a_result_from_scratch(model, lora, tmp_path: Path, capsys) -> None:
    """`svi bench reproduce` re-runs a result's first scenes in a fresh cache: identical
    values pass; a recorded value off by more than its CI half-width fails (exit 1); a
    LoRA file changed since is refused before any work (exit 2, one line)."""
    copy = tmp_path / "l.safetensors"
    copy.write_bytes(Path(lora).read_bytes())
    contenders = [Contender("base"), Contender("l", loras=((str(copy), 1.0),))]
    run = _run(model, contenders, tmp_path, clips=3, kind="consistent")
    write_report(run, GenerationConfig(), tmp_path / "r")
    result = tmp_path / "r.json"
    args = ["bench", "reproduce", str(result), "--model", model, "--scenes", "1", "--clips", "3",
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| l | background_error | 3 | 1/1 |" in out and "NO" not in out
    assert "every value as recorded (up to float noise)" in out

    report = json.loads(result.read_text())
    iv = report["summary"]["l"]["motion"]["3"]
    report["per_scene"]["l"]["motion"]["3"][0] += iv["hi"] - iv["lo"] + 0.01
    result.write_text(json.dumps(report))
    assert main([*args, "--only", "l"]) == 1
    out = capsys.readouterr().out
    assert "| l | motion | 3 | 0/1 |" in out and "| NO |" in out and "| base |" not in out

    pipe = SVIPipeline.from_pretrained(model)
    save_lora(copy, random_lora(pipe.bundle.transformer, rank=3), form="diffusers")
    for bad, message in [(["--only", "l"], "differ from the result's"),
                         (["--clips", "2"], "one of the result's horizons"),
                         (["--clips", "0"], "horizons [1, 3], got 0"),
                         (["--only", "nobody"], "no contender nobody")]:  # fmt: skip
        assert main([*args, *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    no_interval = json.loads(json.dumps(report))
    del no_interval["summary"]["base"]["motion"]["3"]
    short = json.loads(json.dumps(report))
    short["per_scene"]["base"]["motion"]["3"] = short["per_scene"]["base"]["motion"]["3"][:1]
    for text, message in [("{}", "not a benchmark result"),
                          (json.dumps({**report, "summary": []}), "not a benchmark result"),
                          (json.dumps({**report, "protocol": {"horizons": [1]}}), "complete"),
                          (json.dumps(no_interval), "base at clip 3 but no valid"),
                          (json.dumps(short), "does not hold 2 scene values")]:  # fmt: skip
        (tmp_path / "x.json").write_text(text)
        assert main(["bench", "reproduce", str(tmp_path / "x.json"), "--clips", "3"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_batched_rollouts_do_not_depend_on_their_batch_mates(model, tmp_path: Path,
                                                             monkeypatch) -> None:  # fmt: skip
    """Scenes rolled out together (one DiT batch, padded to --batch rows) give each scene
    the frames it gets in any other batch of that size; a batched run has its own cache
    key (its rounding may differ from one scene at a time) and extends exactly."""
    both = _run(model, [Contender("base")], tmp_path / "a", clips=3, batch=4)
    alone = run_drift(model, [Contender("base")], [39], 3, kind="creative", split="val",
                      config=GenerationConfig(), cache_dir=tmp_path / "b", progress=False,
                      use_features=False, batch=4)  # fmt: skip
    assert json.dumps(alone.rows["base"][0]) == json.dumps(both.rows["base"][1])
    single = _run(model, [Contender("base")], tmp_path / "a", clips=3)
    keys = {p.name for p in (tmp_path / "a" / "cache").iterdir()}
    assert len(keys) == 2 + 3  # base alone, base batched, and the three references
    assert both.meta["batch"] == 4 and single.meta["batch"] == 1
    np.testing.assert_allclose(single.curve("base", "motion"), both.curve("base", "motion"),
                               atol=0.02)  # fmt: skip

    def alone(*_a, **_k):
        raise AssertionError("a batched cache is continued in its batch, never scene by scene")

    monkeypatch.setattr(drift, "rollout_scene", alone)
    longer = _run(model, [Contender("base")], tmp_path / "a", clips=5, batch=4)
    direct = _run(model, [Contender("base")], tmp_path / "c", clips=5, batch=4)
    assert json.dumps(longer.rows) == json.dumps(direct.rows)
    with pytest.raises(SviError, match="--batch must be >= 1"):
        _run(model, [Contender("base")], tmp_path / "a", batch=0)
