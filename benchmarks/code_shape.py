"""The shape of the code (issue 24): file and function sizes, imports that run against
the layering, and the path a call of ``svi generate`` takes before its first clip.

Usage: ``.venv/bin/python benchmarks/code_shape.py [--trace] [--json FILE]``

- files in ``src/svi`` over 600 lines, functions over 60 lines (data tables included,
  marked where the body is one literal);
- imports against the direction cli/ui -> generate/bench -> pipeline/train -> erft /
  models / conditioning -> flow: a module of a lower layer importing a higher one
  (module-level and function-level imports both count); ``bench/metrics`` and
  ``pixels`` are leaves anyone may use;
- ``--trace``: runs ``svi generate --clips 1`` on the embedded model in-process under a
  profiler hook and lists the ``src/svi`` files its calls enter before the first
  sampler step: how many files, how many moves between files, and how many of those
  moves climb back to a file it had already left.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "svi"
log = logging.getLogger("code_shape")
# higher number = higher layer; a module may import its own layer or lower ones
LAYERS = {
    "cli": 5, "ui": 5, "__main__": 5,
    "request": 4, "session": 4, "manifest": 4, "branch": 4, "bench": 4, "world.cli": 4,
    "parallel": 4, "memory": 4,
    "pipeline": 3, "train": 3, "train_setup": 3, "reroll": 3, "starts": 3, "steering": 3,
}  # fmt: skip
LEAVES = {"svi.bench.metrics", "svi.pixels", "svi.errors"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def layer(module: str) -> int:
    parts = module.split(".")[1:]
    for n in (2, 1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    return 2  # erft, models, conditioning, flow, lora, conditions, video, world, ...


def sizes() -> dict:
    files, functions = [], []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        n = text.count("\n")
        rel = str(path.relative_to(ROOT.parent))
        if n > 600:
            files.append({"file": rel, "lines": n})
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    body = [b for b in node.body if not isinstance(b, ast.Expr)]
                    table = len(body) == 1 and isinstance(body[0], ast.Return) and isinstance(
                        body[0].value, (ast.Dict, ast.List, ast.Tuple))  # fmt: skip
                    functions.append({"function": f"{rel}:{node.name}", "lines": length,
                                      "data_table": table})  # fmt: skip
    functions.sort(key=lambda f: -f["lines"])
    return {"files_over_600": files, "functions_over_60": functions}


def upward_imports() -> list[dict]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        mod = module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t.startswith("svi.") and t not in LEAVES and layer(t) > layer(mod):
                    out.append({"module": mod, "imports": t, "line": node.lineno})
    return out


def trace_generate() -> dict:
    """The src/svi files entered by ``svi generate --clips 1`` before the first step."""
    from svi import sampling
    from svi.cli import main

    files: list[str] = []

    class FirstStep(BaseException):  # past the CLI's error handling
        pass

    def hook(frame, event, _arg):
        if event != "call":
            return
        path = frame.f_code.co_filename
        if path.startswith(str(ROOT)) and frame.f_code.co_name != "<module>":  # calls, not imports
            rel = str(Path(path).relative_to(ROOT))
            if not files or files[-1] != rel:
                files.append(rel)

    real = sampling.sample_latents

    def stop(*_a, **_k):
        raise FirstStep

    sampling.sample_latents = stop
    import svi.pipeline as pipeline_module

    pipeline_module.sample_latents = stop
    with tempfile.TemporaryDirectory() as tmp:
        sys.setprofile(hook)
        try:
            main(["generate", "--clips", "1", "--out", f"{tmp}/t.mp4"])
        except FirstStep:
            pass
        finally:
            sys.setprofile(None)
            sampling.sample_latents = pipeline_module.sample_latents = real
    seen, climbs = set(), 0
    for i, f in enumerate(files):
        if f in seen and files[i - 1] != f:
            climbs += 1
        seen.add(f)
    return {"files": sorted(seen), "file_count": len(seen), "moves": len(files) - 1,
            "climbs_back": climbs}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = {**sizes(), "upward_imports": upward_imports()}
    if args.trace:
        result["generate_path"] = trace_generate()
    log.info(
        "files over 600 lines: %s", [(f["file"], f["lines"]) for f in result["files_over_600"]]
    )
    log.info("functions over 60 lines: %d (%d data tables)", len(result["functions_over_60"]),
             sum(f["data_table"] for f in result["functions_over_60"]))  # fmt: skip
    for f in result["functions_over_60"]:
        log.info("  %4d  %s%s", f["lines"], f["function"], " (table)" if f["data_table"] else "")
    log.info("upward imports: %d", len(result["upward_imports"]))
    for i in result["upward_imports"]:
        log.info("  %s -> %s (line %d)", i["module"], i["imports"], i["line"])
    if args.trace:
        g = result["generate_path"]
        log.info("svi generate before its first step: %d files, %d moves, %d climbs back",
                 g["file_count"], g["moves"], g["climbs_back"])  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
