"""Prompt streams: the list of per-clip prompts, from a file or a string.

:func:`read_prompt_stream` / :func:`parse_prompt_stream` read the list of per-clip
prompts from a Python-style list (``prompts = ["a", 'b',]``; parsed with :mod:`ast`,
never executed), plain text (one prompt per line, ``#`` comments), JSON or YAML (strings
or ``{"prompt": ..., "clips": n}`` / ``{"prompt": ..., "seconds": s}`` objects, which
may also set LoRA strengths for the clips they cover: ``loras: {name: scale}``;
:func:`read_prompt_entries` returns them).
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from typing import Any

import yaml

from svi.errors import SviError
from svi.video.reader import PathLike, check_input_file

MAX_CLIPS_PER_ITEM = 100_000
"""Upper bound on the repeat count of one prompt-stream item (guards against typos)."""

_SUFFIX_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".py": "python"}
_PROMPT_FORMATS = ("python", "text", "json", "yaml")
_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*\s*(:[^=]*)?=\s*\[")
_DETECTED_HINT = (
    " (read as a Python-style list because the first prompt line starts with '[' or "
    "'name = ['; plain-text prompt files must not start that way)"
)
_ITEM_KEYS = frozenset({"prompt", "clips", "seconds", "loras"})
_NODE_NAMES = {
    "Call": "a function call",
    "Name": "a bare name",
    "Attribute": "an attribute access",
    "JoinedStr": "an f-string",
    "BinOp": "an expression",
    "Dict": "a dict",
    "List": "a nested list",
    "Tuple": "a tuple",
}


def read_prompt_stream(path: PathLike, seconds_per_clip: float | None = None) -> list[str]:
    """Read the per-clip prompts of a prompt-stream file (see :func:`parse_prompt_stream`).

    The format comes from the suffix (``.json``, ``.yaml``/``.yml``, ``.py``) or, for
    any other suffix (``.txt``, ...), from the content. The file must be UTF-8.
    """
    return read_prompt_entries(path, seconds_per_clip)[0]


def read_prompt_entries(
    path: PathLike, seconds_per_clip: float | None = None
) -> tuple[list[str], list[dict[str, float]]]:
    """The prompts of a prompt-stream file and, per prompt, the LoRA strengths its item
    sets (``loras: {name: scale}``; ``{}``: the loaded strengths)."""
    file = check_input_file(path)
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SviError(
            f"{file}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from exc
    fmt = _SUFFIX_FORMATS.get(file.suffix.lower())
    return parse_prompt_entries(text, str(file), seconds_per_clip=seconds_per_clip, fmt=fmt)


def parse_prompt_stream(
    text: str,
    source: str = "<string>",
    *,
    seconds_per_clip: float | None = None,
    fmt: str | None = None,
) -> list[str]:
    """Parse a prompt stream into the list of prompts, one per clip (stripped, non-empty).

    Formats (``fmt``; detected from the content when None):

    * ``"python"``: an optional assignment (``prompts = ``, any name) and one list
      literal of string literals, any quotes, trailing comma and ``#`` comments allowed.
      Detected when the first non-comment line starts with ``[`` (and the text is not
      valid JSON) or with ``name = [``. It is parsed with :mod:`ast`, never executed;
      any element that is not a plain string literal is an error.
    * ``"json"`` / ``"yaml"``: a list (or ``{"prompts": [...]}``) whose items are strings
      or objects ``{"prompt": str, "clips": int >= 1}`` / ``{"prompt": str,
      "seconds": float > 0}``. ``clips: n`` repeats the prompt n times; ``seconds``
      repeats it ``max(1, round(seconds / seconds_per_clip))`` times and needs
      ``seconds_per_clip``. JSON is detected when the text starts with ``[`` and is
      valid JSON; YAML only by ``fmt``.
    * ``"text"``: one prompt per non-empty line; lines starting with ``#`` are comments.

    Errors (SviError) name ``source`` and the line: syntax errors (where the parser
    reports them), bad items, empty prompts, or no prompts at all.
    """
    return parse_prompt_entries(text, source, seconds_per_clip=seconds_per_clip, fmt=fmt)[0]


def parse_prompt_entries(
    text: str,
    source: str = "<string>",
    *,
    seconds_per_clip: float | None = None,
    fmt: str | None = None,
) -> tuple[list[str], list[dict[str, float]]]:
    """:func:`parse_prompt_stream`, with each prompt's LoRA strengths: a JSON / YAML item
    may set ``"loras": {name: scale}`` (finite numbers) for the clips it covers."""
    if seconds_per_clip is not None and not seconds_per_clip > 0:
        raise SviError(f"seconds_per_clip must be positive, got {seconds_per_clip!r}")
    text = text.removeprefix("\ufeff")
    detected = fmt is None
    fmt = fmt or _detect_prompt_format(text)
    if fmt not in _PROMPT_FORMATS:
        raise SviError(f"{source}: unknown prompt format {fmt!r}; use one of {_PROMPT_FORMATS}")
    loras: list[dict[str, float]] | None = None
    if fmt == "python":
        prompts = _parse_python_list(text, source, detected)
    elif fmt == "text":
        prompts = _parse_text_lines(text)
    else:
        prompts, loras = _parse_structured(text, source, fmt, seconds_per_clip)
    if not prompts:
        raise SviError(f"{source}: no prompts found (the file is empty or only has comments)")
    return prompts, loras or [{} for _ in prompts]


def _first_code_line(text: str) -> str | None:
    """The first line that is neither blank nor a ``#`` comment, stripped."""
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped
    return None


def _detect_prompt_format(text: str) -> str:
    first = _first_code_line(text)
    if first is None:
        return "text"
    if first.startswith("["):
        try:
            json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            return "python"
        return "json"
    if _ASSIGNMENT.match(first):
        return "python"
    return "text"


def _parse_text_lines(text: str) -> list[str]:
    stripped = (line.strip() for line in text.split("\n"))
    return [line for line in stripped if line and not line.startswith("#")]


def _parse_python_list(text: str, source: str, detected: bool = False) -> list[str]:
    """Prompts from ``[name =] [ "...", ... ]`` by parsing (never running) the text.

    ``detected``: the format was guessed from the content, so a syntax error message
    explains why the text was read as a Python list.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning: invalid escape sequence
            tree = ast.parse(text, filename=source, mode="exec")
    except SyntaxError as exc:
        hint = _DETECTED_HINT if detected else ""
        raise SviError(
            f"{source}:{exc.lineno}: invalid prompt list syntax: {exc.msg}{hint}"
        ) from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise SviError(f"{source}: invalid prompt list: {exc}") from exc
    if not tree.body:
        return []
    elements = _list_literal(tree.body[0], source).elts
    if len(tree.body) > 1:
        line = tree.body[1].lineno
        raise SviError(f"{source}:{line}: unexpected statement after the prompt list")
    return [_string_element(element, text, source) for element in elements]


def _list_literal(statement: ast.stmt, source: str) -> ast.List:
    """The list of ``[...]``, ``name = [...]`` or ``name: type = [...]``; else SviError."""
    value = _assigned_value(statement)
    if not isinstance(value, ast.List):
        raise SviError(
            f"{source}:{statement.lineno}: expected a list of strings like "
            '`prompts = ["a cat", "a dog"]`'
        )
    return value


def _assigned_value(statement: ast.stmt) -> ast.expr | None:
    """The expression of ``expr``, ``name = expr`` or ``name: type = expr``; else None."""
    if isinstance(statement, ast.Expr):
        return statement.value
    if isinstance(statement, ast.Assign):
        simple = all(isinstance(target, ast.Name) for target in statement.targets)
        return statement.value if simple else None
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        return statement.value
    return None


def _string_element(element: ast.expr, text: str, source: str) -> str:
    """A list element that must be a non-empty string literal; the prompt, stripped."""
    if isinstance(element, ast.Constant) and isinstance(element.value, str):
        prompt = element.value.strip()
        if not prompt:
            raise SviError(f"{source}:{element.lineno}: empty prompt")
        return prompt
    kind = _NODE_NAMES.get(type(element).__name__, "an expression")
    if isinstance(element, ast.Constant):
        kind = f"a constant of type {type(element.value).__name__}"
    snippet = (ast.get_source_segment(text, element) or "").replace("\n", " ")
    if len(snippet) > 40:
        snippet = snippet[:37] + "..."
    raise SviError(
        f"{source}:{element.lineno}: prompt list items must be string literals, "
        f"found {kind}: {snippet}"
    )


def _parse_structured(
    text: str, source: str, fmt: str, seconds_per_clip: float | None
) -> tuple[list[str], list[dict[str, float]]]:
    """Prompts and their LoRA strengths from JSON or YAML text (syntax checked, then
    each item expanded)."""
    data = _load_json(text, source) if fmt == "json" else _load_yaml(text, source)
    if data is None:
        return [], []
    items = data["prompts"] if isinstance(data, dict) and set(data) == {"prompts"} else data
    if not isinstance(items, list):
        raise SviError(
            f'{source}: expected a list of prompts (or {{"prompts": [...]}}), '
            f"got {type(data).__name__}"
        )
    lines = _item_lines(text)
    prompts: list[str] = []
    loras: list[dict[str, float]] = []
    for index, item in enumerate(items):
        where = _item_location(source, lines, index)
        prompt, repeats = _expand_item(item, where, seconds_per_clip)
        prompts.extend([prompt] * repeats)
        scales = _lora_scales(item.get("loras"), where) if isinstance(item, dict) else {}
        loras.extend(dict(scales) for _ in range(repeats))
    return prompts, loras


def _lora_scales(value: Any, where: str) -> dict[str, float]:
    """An item's ``loras``: LoRA name -> finite strength (names: the loaded LoRA files'
    stems, checked against the loaded ones when a generation starts)."""
    from svi.lora.apply import MAX_STRENGTH

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SviError(f'{where}: "loras" must map LoRA names to strengths, e.g. '
                       f"{{style: 0.8}}, got {type(value).__name__}")  # fmt: skip
    scales = {}
    for name, scale in value.items():
        number = isinstance(scale, int | float) and not isinstance(scale, bool)
        if not (number and math.isfinite(scale) and abs(scale) <= MAX_STRENGTH):
            raise SviError(f"{where}: the strength of LoRA {name!r} must be a finite number "
                           f"within +-{MAX_STRENGTH:g}, got {scale!r}")  # fmt: skip
        scales[str(name)] = float(scale)
    return scales


def _load_json(text: str, source: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SviError(
            f"{source}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
        ) from exc
    except RecursionError:
        raise SviError(f"{source}: invalid JSON: nested too deeply") from None


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        raise SviError(f"{source}{line}: invalid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise SviError(f"{source}: invalid YAML: {exc}") from exc
    except RecursionError:
        raise SviError(f"{source}: invalid YAML: nested too deeply") from None


def _item_lines(text: str) -> list[int] | None:
    """1-based start line of each top-level list item (also for JSON), if YAML can tell."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return None
    if isinstance(node, yaml.MappingNode) and len(node.value) == 1:
        node = node.value[0][1]  # {"prompts": [...]}
    if not isinstance(node, yaml.SequenceNode):
        return None
    return [child.start_mark.line + 1 for child in node.value]


def _item_location(source: str, lines: list[int] | None, index: int) -> str:
    if lines is not None and index < len(lines):
        return f"{source}:{lines[index]}"
    return f"{source} (item {index + 1})"


def _expand_item(item: Any, where: str, seconds_per_clip: float | None) -> tuple[str, int]:
    """One JSON/YAML item as ``(prompt, repeat count)``."""
    if isinstance(item, str):
        return _non_empty_prompt(item, where), 1
    if not isinstance(item, dict):
        raise SviError(
            f'{where}: items must be strings or {{"prompt": ..., "clips": n}} objects, '
            f"got {type(item).__name__}"
        )
    unknown = sorted(str(key) for key in item if key not in _ITEM_KEYS)
    if unknown:
        raise SviError(f"{where}: unknown key(s) {unknown}; allowed: prompt, clips, seconds, "
                       "loras")  # fmt: skip
    if not isinstance(item.get("prompt"), str):
        raise SviError(f'{where}: item needs a "prompt" string')
    prompt = _non_empty_prompt(item["prompt"], where)
    return prompt, _item_repeats(item, where, seconds_per_clip)


def _non_empty_prompt(prompt: str, where: str) -> str:
    stripped = prompt.strip()
    if not stripped:
        raise SviError(f"{where}: empty prompt")
    return stripped


def _item_repeats(item: dict[str, Any], where: str, seconds_per_clip: float | None) -> int:
    """Repeat count from ``clips`` or ``seconds`` (default 1)."""
    if "clips" in item and "seconds" in item:
        raise SviError(f'{where}: give either "clips" or "seconds", not both')
    if "clips" in item:
        clips = item["clips"]
        if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
            raise SviError(f'{where}: "clips" must be an integer >= 1, got {clips!r}')
        repeats = clips
    elif "seconds" in item:
        repeats = _seconds_to_clips(item["seconds"], where, seconds_per_clip)
    else:
        repeats = 1
    if repeats > MAX_CLIPS_PER_ITEM:
        raise SviError(f"{where}: {repeats} clips is more than the limit {MAX_CLIPS_PER_ITEM}")
    return repeats


def _seconds_to_clips(seconds: Any, where: str, seconds_per_clip: float | None) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise SviError(f'{where}: "seconds" must be a number > 0, got {seconds!r}')
    if not (math.isfinite(seconds) and seconds > 0):
        raise SviError(f'{where}: "seconds" must be a number > 0, got {seconds!r}')
    if seconds_per_clip is None:
        raise SviError(
            f'{where}: "seconds" needs the clip duration (seconds_per_clip) to convert to '
            'clips; use "clips" instead'
        )
    clips = seconds / seconds_per_clip
    if not clips <= MAX_CLIPS_PER_ITEM:  # inf included (1e308 seconds)
        raise SviError(f'{where}: "seconds" {seconds!r} is more than the limit of '
                       f"{MAX_CLIPS_PER_ITEM} clips")  # fmt: skip
    return max(1, round(clips))
