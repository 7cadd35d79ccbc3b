"""Does a committed benchmark result reproduce from this checkout? (``svi bench reproduce``)

A drift or driven result's JSON records everything that determines its rollouts: the
split, kind (or condition) and scene seeds, the sampler settings, the model and every
contender's LoRA files by content (the cache key), the metrics and feature versions.
This module re-runs some of its (contender, scene) pairs from scratch - a fresh cache,
the model loaded anew - and compares each per-scene value with the recorded one.

A drift rollout's first h clips do not depend on its length, so a short run checks a
long result at horizon h. A driven rollout's last clip owns the final carried frames and
hears the end of the track, and its whole-video metrics span it all: a driven result is
re-run at its full length.

Same machine class, same torch: the values are identical, and the pass criterion is
float noise - every value equal to the recorded one to its recorded digits
(:data:`REL_TOLERANCE`). Elsewhere floating point may differ in the last bits and a
long rollout amplifies that: the report also gives each check's largest difference
next to the half-width of the recorded 95 % CI, so such a run can be judged.
The reference rows (truth, frozen pictures) need no model and are re-scored too.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from svi.errors import SviError

log = logging.getLogger(__name__)

# per-scene values are recorded to 5 significant digits: a deterministic re-run agrees
# to within the rounding of the last one
REL_TOLERANCE = 1e-4
ABS_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Check:
    """One (contender, metric, horizon): fresh vs recorded values over the scenes."""

    contender: str
    metric: str
    horizon: int
    scenes: int
    identical: int
    max_diff: float  # NaN where both are undefined on every scene
    half_width: float  # of the recorded CI (for judging a run on other hardware)
    ok: bool  # every value equal to the recorded one up to float noise


def load_result(path: Path) -> dict:
    """A result JSON (``svi bench drift`` / ``driven --out``), checked for what
    reproduction needs."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SviError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SviError(f"{path} is not a benchmark result (not JSON: {exc})") from exc
    needed = ("protocol", "provenance", "summary", "per_scene")
    if not isinstance(report, dict) or any(not isinstance(report.get(k), dict) for k in needed):
        raise SviError(f"{path} is not a benchmark result (needs {', '.join(needed)})")
    return report


def _contenders(report: dict, only: list[str] | None):
    from svi.bench.runner import Contender

    recorded = report["provenance"]["contenders"]
    names = only or list(recorded)
    unknown = [n for n in names if n not in recorded]
    if unknown:
        raise SviError(f"the result has no contender {', '.join(unknown)} "
                       f"(it has: {', '.join(recorded)})")  # fmt: skip
    keep = {f.name for f in fields(Contender)}
    out = []
    for name in names:
        if recorded[name].get("reference"):
            continue  # every drift run has the reference rows
        entry = {k: v for k, v in recorded[name].items() if k in keep}
        entry["loras"] = tuple((str(p), float(s)) for p, s in entry.get("loras", ()))
        out.append(Contender(**entry))
    return out


def _config(report: dict):
    from svi.plan import GenerationConfig

    sampler = dict(report["provenance"]["sampler"])
    known = {f.name for f in fields(GenerationConfig)}
    gone = sorted(set(sampler) - known)
    if gone:
        raise SviError(f"the result used settings this checkout does not have: {', '.join(gone)}")
    return GenerationConfig(**sampler)


def _locate_loras(contender, folder: Path):
    """A recorded LoRA path that is not here but names a file the model in ``folder``
    ships (a result written in another checkout records the bundled adapter's absolute
    path): that file. Its content is checked against the result's cache key before any
    work."""
    from dataclasses import replace

    from svi.models.bundle import shipped_lora

    loras = []
    for path, scale in contender.loras:
        shipped = None if Path(path).exists() else shipped_lora(folder, Path(path).name)
        if shipped is not None:
            log.info("contender %s: %s is not here; using the model's %s", contender.name,
                     path, shipped)  # fmt: skip
            path = str(shipped)
        loras.append((path, scale))
    return replace(contender, loras=tuple(loras))


def _driven(report: dict) -> bool:
    return report["protocol"].get("benchmark") == "driven"


def check_settings(report: dict, folder: Path, contenders, config) -> None:
    """Refuse (one line) where this checkout would not roll out what the result did:
    another model (``folder``, not loaded), another LoRA file, other metrics or features."""
    from svi.bench import driven
    from svi.bench.drift import METRICS_VERSION
    from svi.bench.features import FEATURE_VERSION
    from svi.bench.runner import contender_key, key_hash, weights_fingerprint

    prov = report["provenance"]
    version = driven.METRICS_VERSION if _driven(report) else METRICS_VERSION
    if prov.get("metrics_version") != version:
        raise SviError(f"the result was scored with metrics {prov.get('metrics_version')}, "
                       f"this checkout has {version}")  # fmt: skip
    if prov.get("features") not in (None, FEATURE_VERSION):
        raise SviError(f"the result used world features {prov['features']}, "
                       f"this checkout has {FEATURE_VERSION}")  # fmt: skip
    model_hash = weights_fingerprint(folder)  # without loading it
    if model_hash != prov.get("model_hash"):
        raise SviError(
            f"the model's weights differ from the result's (model hash {model_hash}, "
            f"recorded {prov.get('model_hash')}); pass the result's --model"
        )
    for c in contenders:
        for path, _ in c.loras:
            if not Path(path).exists():
                raise SviError(
                    f"contender {c.name!r}: LoRA file not found: {path} (paths are "
                    "relative to where the benchmark ran, the repository root)"
                )
        if _driven(report):
            key = driven.driven_key(c, model_hash, config, report["protocol"]["condition"])
        else:
            key = contender_key(c, model_hash, config)
            if int(prov.get("batch", 1)) > 1:  # batched rollouts: run_drift's key
                key = {**key, "batch": int(prov["batch"])}
        if key_hash(key) != prov["contenders"][c.name]["key_hash"]:
            raise SviError(f"contender {c.name!r}: its LoRA files or settings differ from the "
                           "result's (another cache key)")  # fmt: skip


def compare(report: dict, run) -> list[Check]:
    """Every (contender, metric, horizon) of ``run`` that ``report`` also has, compared
    scene by scene (the run's scenes are the first of the report's); a driven run's
    whole-video metrics too (at its last clip)."""
    from svi.bench.report import metrics_of

    n = len(run.seeds)
    if run.seeds != report["protocol"]["seeds"][:n]:
        raise SviError("the run's scenes are not the result's first scenes")
    driven = _driven(report)
    checks = []
    for c in run.contenders:
        for m in list(run.clip_metrics()) if driven else metrics_of(run):
            for h in run.horizons():
                recorded = report["per_scene"].get(c.name, {}).get(m, {}).get(str(h))
                if recorded is not None:
                    half = _half_width(report, c.name, m, h)
                    checks.append(_check(c.name, m, h, run.at_horizon(c.name, m, h),
                                         recorded[:n], half))  # fmt: skip
        for m in run.video_metrics() if driven else ():
            recorded = report.get("per_scene_video", {}).get(c.name, {}).get(m)
            if recorded is not None:
                half = _half_width(report, c.name, m, None)
                checks.append(_check(c.name, f"{m} (video)", run.clips,
                                     run.video_values(c.name, m), recorded[:n], half))  # fmt: skip
    if not checks:
        raise SviError("nothing to compare: the run and the result share no horizon")
    return checks


def _check(name: str, metric: str, h: int, fresh, recorded: list, half: float) -> Check:
    from svi.bench.report import _round

    pairs = list(zip(_round(fresh), recorded, strict=True))
    diffs = [_diff(a, b) for a, b in pairs]
    finite = [d for d in diffs if np.isfinite(d)]
    noise = [ABS_TOLERANCE + REL_TOLERANCE * abs(b or 0.0) for _, b in pairs]
    return Check(name, metric, h, len(diffs), sum(d == 0 for d in diffs),
                 max(finite) if finite else float("nan"), half,
                 all(d <= tol for d, tol in zip(diffs, noise, strict=True)))  # fmt: skip


def _half_width(report: dict, name: str, metric: str, horizon: int | None) -> float:
    """Half the recorded 95 % CI of ``metric`` at ``horizon`` (``None``: a driven
    whole-video metric); 0 where it is undefined."""
    try:
        if horizon is None:
            iv = report["video_summary"].get(name, {}).get(metric)
        else:
            iv = report["summary"].get(name, {}).get(metric, {}).get(str(horizon))
        return 0.0 if iv["lo"] is None else (iv["hi"] - iv["lo"]) / 2
    except (KeyError, TypeError, AttributeError):
        where = "over the video" if horizon is None else f"at clip {horizon}"
        raise SviError(f"the result has per-scene {metric} of {name} {where} but no "
                       "valid summary interval for it") from None  # fmt: skip


def _check_series(report: dict, names: list[str], scenes: int) -> None:
    """Every recorded per-scene series covers the first ``scenes`` scenes and has its
    interval (checked before any work)."""
    for name in names:
        series = [
            (m, int(h), values)
            for m, by_h in _table(report, "per_scene", name).items()
            for h, values in (by_h.items() if isinstance(by_h, dict) else [(0, None)])
        ]
        if _driven(report):
            series += [
                (m, None, values) for m, values in _table(report, "per_scene_video", name).items()
            ]
        for metric, h, values in series:
            if not isinstance(values, list) or len(values) < scenes:
                where = "over the video" if h is None else f"at clip {h}"
                raise SviError(f"the result's per-scene {metric} of {name} {where} does not "
                               f"hold {scenes} scene values")  # fmt: skip
            _half_width(report, name, metric, h)


def _table(report: dict, section: str, name: str) -> dict:
    table = report.get(section, {}).get(name, {})
    if not isinstance(table, dict):
        raise SviError(f"the result's {section} of {name} is not a table")
    return table


def _diff(a: float | None, b: float | None) -> float:
    """|a - b|; 0 where both are undefined, infinite where only one is."""
    if a is None or b is None:
        return 0.0 if a is None and b is None else float("inf")
    return abs(a - b)


def reproduce(
    path: Path,
    *,
    scenes: int,
    clips: int | None = None,
    only: list[str] | None = None,
    model: str | None = None,
    jobs: int = 1,
    progress: bool = True,
) -> list[Check]:
    """Re-run the first ``scenes`` scenes of a result from scratch (a temporary cache) -
    a drift result for ``clips`` clips (default 10), a driven one at its own length - and
    compare with what it recorded."""
    from svi.bench.drift import run_drift
    from svi.bench.driven import run_driven
    from svi.models.bundle import model_dir

    report = load_result(path)
    try:
        proto = report["protocol"]
        horizons = [int(h) for h in proto["horizons"]]
        seeds = [int(s) for s in proto["seeds"]]
        split = str(proto["split"])
        # a drift result's scene kind; a driven one's condition and rollout length
        kind = None if _driven(report) else str(proto["kind"])
        condition = str(proto["condition"]) if _driven(report) else None
        length = int(proto["clips"]) if _driven(report) else None
        contenders = _contenders(report, only)
        config = _config(report)
        if length is not None and clips not in (None, length):
            raise SviError(
                f"a driven result is re-run at its full length (its last clip and video "
                f"metrics depend on it): --clips {length}, got {clips}"
            )
        clips = length if length is not None else 10 if clips is None else clips
        if clips not in horizons:
            raise SviError(f"--clips must be one of the result's horizons {horizons}, got {clips}")
        if not 1 <= scenes <= len(seeds):
            raise SviError(f"--scenes must be 1..{len(seeds)}, got {scenes}")
        if jobs < 1:
            raise SviError(f"--jobs must be >= 1, got {jobs}")
        _check_series(report, [c.name for c in contenders], scenes)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SviError(f"{path} is not a complete benchmark result (bad or missing {exc})") from exc
    folder = model_dir(model)  # resolved once, nothing loaded
    contenders = [_locate_loras(c, folder) for c in contenders]
    check_settings(report, folder, contenders, config)

    with tempfile.TemporaryDirectory(prefix="svi-reproduce-") as cache:
        common = dict(split=split, config=config, cache_dir=Path(cache), jobs=jobs,
                      progress=progress)  # fmt: skip
        if condition is not None:
            run = run_driven(model, contenders, seeds[:scenes], clips, condition=condition,
                             **common)  # fmt: skip
        else:
            run = run_drift(model, contenders, seeds[:scenes], clips, kind=kind,
                            use_features=report["provenance"].get("features") is not None,
                            batch=int(report["provenance"].get("batch", 1)), **common)  # fmt: skip
    return compare(report, run)


def markdown(checks: list[Check]) -> str:
    rows = ["| contender | metric | clip | identical | max diff | CI half-width | same |",
            "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for c in checks:
        rows.append(
            f"| {c.contender} | {c.metric} | {c.horizon} | {c.identical}/{c.scenes} | "
            f"{c.max_diff:.3g} | {c.half_width:.3g} | {'yes' if c.ok else 'NO'} |"
        )
    return "\n".join(rows)
