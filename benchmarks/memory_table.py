"""The README's GPU-memory table, from the memory model (``svi.memory``).

Usage: ``.venv/bin/python benchmarks/memory_table.py [--check]``

Rewrites the block between the ``memory-table`` markers in README.md and docs/memory.md
with the predicted
peak accelerator memory of one clip (preset size, 81 frames, CFG 5) per model, DiT
weights dtype and offload mode, and writes every prediction, phase by phase, to
``benchmarks/results/memory_predicted.json``. When ``benchmarks/results/gpu_memory_check.json``
(a run of ``benchmarks/gpu_memory_check.py`` on a GPU) exists, its measured DiT-phase
figures are tabled beside the predicted ones; until then the block says that nothing
was measured on a GPU yet. ``--check`` only reports whether both files are current (exit
1 if not).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from svi.memory import GIB, MODELS, markdown_table, predict
from svi.models.offload import OFFLOAD_MODES, MemoryMode

log = logging.getLogger("memory_table")

ROOT = Path(__file__).resolve().parent.parent
PAGES = (ROOT / "README.md", ROOT / "docs" / "memory.md")
RESULTS = ROOT / "benchmarks" / "results"
MEASURED = RESULTS / "gpu_memory_check.json"
START = "<!-- memory-table:start (benchmarks/memory_table.py writes this block) -->"
END = "<!-- memory-table:end -->"


def measured_table(path: Path) -> str:
    """Measured vs predicted DiT phase of a gpu_memory_check.py run."""
    report = json.loads(path.read_text(encoding="utf-8"))
    lines = [f"Measured on {report['device']} (`benchmarks/gpu_memory_check.py`; DiT steps at "
             "480 x 832, 81 frames, random weights):", "",
             "| model | mode | peak allocated GiB | predicted DiT phase GiB | s / step (CFG) "
             "| DiT s / clip, 50 steps CFG 5 | DiT s / clip, 4 steps CFG 1 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for result in report["results"]:
        for m in result["modes"]:
            clip = m["dit_seconds_per_clip"]
            lines.append(f"| {result['model']} | {m['mode']} | {m.get('peak_allocated_gib')} | "
                         f"{m['predicted_dit_gib']} | {m['seconds_per_step']['cfg']} | "
                         f"{clip['50 steps CFG 5']} | {clip['lightx2v-4step']} |")  # fmt: skip
        for name in result["skipped"]:
            lines.append(f"| {result['model']} | {name} | skipped (time budget) | | | | |")
    checks = report.get("pipeline_check") or []
    if checks:
        failed = [f"{r['variant']} {r['mode']}" for r in checks if "error" in r]
        changed = [f"{r['variant']} {r['mode']}" for r in checks
                   if r.get("max_levels") and "fp8" not in r["mode"]]  # fmt: skip
        lines += ["", "Whole clip loop of the tiny Wan folders on the same device, every mode: "
                  + ("frames of every offloading mode equal to `none`'s" if not failed + changed
                     else f"failed: {', '.join(failed) or '-'}; frames changed: "
                     f"{', '.join(changed) or '-'}") + "."]  # fmt: skip
    return "\n".join(lines)


def block() -> str:
    intro = ("Predicted peak GPU memory (GiB) of one clip - 81 frames at the preset's size, "
             "CFG 5 - by the memory model (`svi info --memory`), with the component whose "
             "pass sets the peak:")  # fmt: skip
    parts = [START, intro, "", markdown_table()]
    if MEASURED.is_file():
        parts += ["", measured_table(MEASURED)]
    else:
        parts += ["", "**Not measured on a GPU yet** (`benchmarks/gpu_memory_check.py` is the "
                  "check: about 8 minutes on one 80 GB GPU)."]  # fmt: skip
    return "\n".join([*parts, END])


def rewrite(text: str, new: str) -> str:
    head, sep, rest = text.partition(START)
    if not sep or END not in rest:
        raise SystemExit(f"no {START} ... {END} block")
    return head + new + rest.split(END, 1)[1]


def predictions() -> list[dict]:
    return [predict(model, MemoryMode(offload=off, weights_dtype=dtype)).to_dict()
            for model in MODELS for dtype in ("bf16", "fp8") for off in OFFLOAD_MODES]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only check README.md is current.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table = block()
    pages = {page: page.read_text(encoding="utf-8") for page in PAGES}
    new = {page: rewrite(text, table) for page, text in pages.items()}
    if args.check:
        stale = [page.name for page in PAGES if new[page] != pages[page]]
        log.info("memory table %s", f"out of date in {', '.join(stale)}" if stale else "current")
        return 1 if stale else 0
    for page, text in new.items():
        page.write_text(text, encoding="utf-8")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "memory_predicted.json"
    out.write_text(json.dumps(predictions(), indent=1) + "\n", encoding="utf-8")
    peak = predict("wan2.1-i2v-14b-480p", MemoryMode("group", "fp8")).peak
    log.info("README.md, docs/memory.md and %s written; Wan 2.1 480p group + fp8: %.2f GiB",
             out, peak / GIB)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
