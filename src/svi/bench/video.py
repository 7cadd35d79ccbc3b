"""Metrics of any video (``svi bench video``): without ground truth, or against the
truth of a world scene (:func:`analyse_against_truth`).

Per second and per clip (when the clip stride is known): colour drift against the
first second, patch-grid energy, motion, flicker and (on 32-pixel-world-like content;
out of domain elsewhere) world-feature consistency with the first second. Seams: the
change across each clip boundary minus the within-clip change around it, at a given
stride (new frames per clip, ``F - M`` for SVI output) or, without one, detected as
frame-to-frame changes far above the video's typical change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from svi.bench import metrics

SEAM_OUTLIER = 6.0  # detected seam: change > median + SEAM_OUTLIER * MAD of all changes


def _segment_rows(frames: np.ndarray, bounds: list[tuple[int, int]], period: int, encoder,
                  ref: np.ndarray) -> list[dict]:  # fmt: skip
    ref_emb = None
    if encoder is not None:
        mean = encoder.embed(ref).mean(0)
        ref_emb = mean / max(float(np.linalg.norm(mean)), 1e-8)
    rows = []
    for start, stop in bounds:
        seg = frames[start:stop]
        rows.append({
            "start": start, "stop": stop,
            "colour_drift": metrics.colour_drift(seg, ref),
            "grid_energy": 1000 * metrics.grid_energy(seg, period),
            "motion": metrics.motion_energy(seg),
            "flicker": metrics.flicker(seg),
            "feature_first": (float((encoder.embed(seg) @ ref_emb).mean())
                              if encoder is not None else None),
        })  # fmt: skip
    return rows


def seam_jumps(frames: np.ndarray, stride: int | None) -> list[dict]:
    """Change at each clip boundary minus the median change within the adjacent clips."""
    g = metrics.grey(frames)
    change = np.abs(np.diff(g, axis=0)).mean(axis=(1, 2))  # (T-1,): frame t -> t+1
    if len(change) == 0:
        return []
    if stride:
        cuts = list(range(stride, len(frames), stride))  # first frame of each later clip
    else:
        med = float(np.median(change))
        mad = float(np.median(np.abs(change - med))) or 1e-6
        cuts = [int(t) + 1 for t in np.flatnonzero(change > med + SEAM_OUTLIER * mad)]
    out = []
    for cut in cuts:
        lo, hi = max(0, cut - (stride or 4)), min(len(change), cut + (stride or 4))
        inner = [change[t] for t in range(lo, hi) if t != cut - 1]
        within = float(np.median(inner)) if inner else 0.0
        out.append({"frame": cut, "jump": float(change[cut - 1] - within)})
    return out


def analyse_video(path: Path, *, stride: int | None = None, grid: int = 16,
                  features: bool = True) -> dict:  # fmt: skip
    """The report of ``svi bench video`` for one file."""
    from svi.errors import SviError
    from svi.video import read_video, video_fps

    if stride is not None and stride < 1:  # the options before the file is decoded
        raise SviError(f"--stride must be >= 1, got {stride}")
    if grid < 2:
        raise SviError(f"--grid must be >= 2 pixels, got {grid}")
    frames = read_video(path)
    if len(frames) < 2:
        raise SviError(f"{path}: a video needs at least 2 frames, got {len(frames)}")
    fps = video_fps(path) or 16.0  # read_video decoded it once; this only reads the header
    sec = max(1, round(fps))
    encoder = None
    if features:
        from svi.bench.features import load_feature_encoder

        encoder = load_feature_encoder()
    ref = frames[:sec]
    per_second = _segment_rows(frames, _bounds(len(frames), sec), grid, encoder, ref)
    report = {
        "file": str(path), "frames": len(frames), "fps": fps,
        "size": [int(frames.shape[2]), int(frames.shape[1])], "grid": grid, "stride": stride,
        "per_second": per_second,
        "seams": seam_jumps(frames, stride),
        "feature_domain": "procedural world (32 px); out of domain for other content",
    }  # fmt: skip
    if stride:
        report["per_clip"] = _segment_rows(frames, _bounds(len(frames), stride), grid, encoder,
                                           ref)  # fmt: skip
    return report


def _bounds(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def text_table(report: dict) -> str:
    """A plain-text table: one line per second (and per clip), then the seams."""
    cols = ("colour_drift", "grid_energy", "motion", "flicker", "feature_first")
    head = f"{'segment':>13} " + " ".join(f"{c:>13}" for c in cols)
    lines = [f"{report['file']}: {report['frames']} frames at {report['fps']:.3g} fps, "
             f"{report['size'][0]}x{report['size'][1]}", "", head]  # fmt: skip
    for label, rows in (("s", report["per_second"]), ("clip", report.get("per_clip", []))):
        for i, row in enumerate(rows):
            cells = " ".join(f"{_fmt(row[c]):>13}" for c in cols)
            lines.append(f"{label + ' ' + str(i):>13} {cells}")
    seams = report["seams"]
    if seams:
        worst = max(seams, key=lambda s: s["jump"])
        mean = float(np.mean([s["jump"] for s in seams]))
        lines += ["", f"seams: {len(seams)}, mean jump {mean:.4f}, worst {worst['jump']:.4f} "
                  f"at frame {worst['frame']}"]  # fmt: skip
    return "\n".join(lines)


def _fmt(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.4f}"


# -- against a world scene's truth (svi bench video --truth-scene) ---------------------
TRUTH_PATHS = ("auto", "raw", "mp4")
GRID_WORLD = 4  # the embedded model's patch grid in pixels
_CONTAINERS = (".mp4", ".m4v", ".mov", ".mkv", ".webm")
TRUTH_COLUMNS = ("headline", "identity_located", "motion", "motion_truth", "flicker",
                 "background_error", "colour_drift")  # fmt: skip


def analyse_against_truth(path: Path, seed: int, *, kind: str = "consistent",
                          stride: int | None = None, motion: int | None = None,
                          truth_path: str = "auto") -> dict:  # fmt: skip
    """Per-clip drift metrics and the headline (0 = the start frame held, 1 = the truth)
    of a video of world scene ``seed`` (its frame 0 = the scene's frame 0, as
    ``svi generate`` writes a world video), with the truth, freeze and hold-last rows
    scored by the same code. ``stride`` = new frames per clip (default: the embedded
    model's F - M), ``motion`` = given frames (hold-last holds the last; default its M).
    ``truth_path``: the reference videos go through an mp4 written by svi's writer
    (``"mp4"``: the path of a video ``svi generate`` wrote) or stay raw; ``"auto"`` takes
    the mp4 path for video containers, raw for GIFs and image folders."""
    import tempfile

    from svi.bench.drift import score_with_references
    from svi.bench.runner import REFERENCES, reference_video
    from svi.errors import SviError
    from svi.models.presets import get_preset
    from svi.video import read_video, write_video
    from svi.world import KINDS, WorldConfig, render_episode

    if kind not in KINDS:
        raise SviError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if truth_path not in TRUTH_PATHS:
        raise SviError(f"--truth-path must be one of {', '.join(TRUTH_PATHS)}, got {truth_path!r}")
    if not 0 <= seed < 2**63:
        raise SviError(f"--truth-scene must be a scene seed in [0, 2^63), got {seed}")
    preset = get_preset("world-tiny")
    motion = preset.motion_frames if motion is None else motion
    stride = preset.num_frames - motion if stride is None else stride
    if stride < 1 or motion < 1:
        raise SviError(f"--stride and --motion must be >= 1, got {stride} and {motion}")
    frames = read_video(path)
    size = preset.height
    if frames.shape[1:3] != (size, size):
        raise SviError(f"{path} is {frames.shape[2]}x{frames.shape[1]}; a world scene's truth "
                       f"is {size}x{size} (the embedded model's size)")  # fmt: skip
    if len(frames) < max(2, motion):
        raise SviError(f"{path}: {len(frames)} frames; at least {max(2, motion)} are needed")
    episode = render_episode(kind, seed, len(frames), WorldConfig(size=size))
    through = truth_path
    if through == "auto":
        through = "mp4" if Path(path).suffix.lower() in _CONTAINERS else "raw"
    if through == "mp4":  # the references as svi would have written them
        videos = {}
        with tempfile.TemporaryDirectory(prefix="svi-truth-") as tmp:
            for name in REFERENCES:
                ref = reference_video(name, episode, len(frames), motion)
                videos[name] = read_video(write_video(Path(tmp) / f"{name}.mp4", ref,
                                                      fps=episode.config.fps))  # fmt: skip
        rows = score_with_references(frames, episode, stride, motion, GRID_WORLD,
                                     references=videos)  # fmt: skip
    else:
        rows = score_with_references(frames, episode, stride, motion, GRID_WORLD)
    return {
        "file": str(path), "frames": len(frames), "truth_scene": seed, "kind": kind,
        "stride": stride, "motion": motion, "truth_path": through,
        "headline": [_json(r["headline"]) for r in rows["video"]],
        "headline_mean": _json(_mean(r["headline"] for r in rows["video"])),
        "references_headline_mean": {n: _json(_mean(r["headline"] for r in rows[n]))
                                     for n in REFERENCES},
        "per_clip": [{k: _json(r[k]) for k in (*TRUTH_COLUMNS, "headline_error")}
                     for r in rows["video"]],
    }  # fmt: skip


def _mean(values) -> float:
    x = np.asarray([v for v in values], dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def _json(v):
    return None if v is None or not np.isfinite(v) else round(float(v), 6)


def truth_table(report: dict) -> str:
    """Plain text: one line per clip, then the mean headline next to the references'."""
    head = f"{'clip':>5} " + " ".join(f"{c:>17}" for c in TRUTH_COLUMNS)
    lines = [f"{report['file']}: {report['frames']} frames vs world scene {report['truth_scene']} "
             f"({report['kind']}), {report['stride']} new frames per clip, references through "
             f"the {report['truth_path']} path", "", head]  # fmt: skip
    for i, row in enumerate(report["per_clip"]):
        lines.append(f"{i + 1:>5} " + " ".join(f"{_fmt(row[c]):>17}" for c in TRUTH_COLUMNS))
    refs = ", ".join(f"{n} {_fmt(v)}" for n, v in report["references_headline_mean"].items())
    mean = _fmt(report["headline_mean"])
    lines += ["", f"headline (0 = start frame held, 1 = truth): mean {mean} ({refs})"]
    return "\n".join(lines)
