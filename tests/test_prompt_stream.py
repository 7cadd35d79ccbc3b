"""Tests for svi.prompt_stream: the prompt-stream readers (Python list, text, JSON, YAML)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from svi.errors import SviError
from svi.prompt_stream import parse_prompt_stream, read_prompt_stream

PYTHON_FORM = """\
# Prompts for the kitten story.
prompts = [
    "A kitten rests inside a straw hat.",   # clip 1
    'The kitten jumps onto the carpet.',
    # a comment between items
    "The kitten chases a \\"feather\\" toy",
    "A long prompt "
    "split over two lines",
]
# trailing comment
"""
PYTHON_PROMPTS = [
    "A kitten rests inside a straw hat.",
    "The kitten jumps onto the carpet.",
    'The kitten chases a "feather" toy',
    "A long prompt split over two lines",
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- accepted forms


@pytest.mark.parametrize("name", ["prompt.txt", "prompts.py", "stream"])
def test_python_list_form(tmp_path: Path, name: str) -> None:
    assert read_prompt_stream(write(tmp_path, name, PYTHON_FORM)) == PYTHON_PROMPTS


@pytest.mark.parametrize(
    "text",
    [
        "['a cat', \"a dog\"]",
        "scene_prompts=['a cat',\n'a dog',]",
        "prompts: list[str] = [\n  'a cat',\n  'a dog',\n]\n",
        "\n\n# lead\n[\n 'a cat',  # one\n 'a dog'  # two\n]  # end\n",
    ],
)
def test_python_list_variants(text: str) -> None:
    assert parse_prompt_stream(text) == ["a cat", "a dog"]


def test_plain_text(tmp_path: Path) -> None:
    text = "# my story\n\n  a cat sleeps  \n\t# indented comment\na dog barks # not a comment\n\n"
    path = write(tmp_path, "story.txt", text)
    assert read_prompt_stream(path) == ["a cat sleeps", "a dog barks # not a comment"]


def test_json_strings_and_repeats(tmp_path: Path) -> None:
    items = ["a cat", {"prompt": " a dog ", "clips": 3}, {"prompt": "a bird"}]
    path = write(tmp_path, "s.json", json.dumps(items, indent=2))
    assert read_prompt_stream(path) == ["a cat", "a dog", "a dog", "a dog", "a bird"]


def test_json_detected_from_content_in_txt_file(tmp_path: Path) -> None:
    path = write(tmp_path, "s.txt", '[{"prompt": "a cat", "clips": 2}, "a dog"]')
    assert read_prompt_stream(path) == ["a cat", "a cat", "a dog"]


@pytest.mark.parametrize(
    ("seconds", "expected_repeats"),
    [(10.0, 2), (1, 1), (7.6, 2), (12.4, 2), (15, 3)],
)
def test_seconds_are_converted_with_seconds_per_clip(
    tmp_path: Path, seconds: float, expected_repeats: int
) -> None:
    path = write(tmp_path, "s.json", json.dumps([{"prompt": "x", "seconds": seconds}, "y"]))
    assert read_prompt_stream(path, seconds_per_clip=5.0) == ["x"] * expected_repeats + ["y"]


def test_yaml_forms(tmp_path: Path) -> None:
    text = "# story\n- a cat\n- prompt: a dog\n  clips: 2\n- prompt: a bird\n  seconds: 9\n"
    path = write(tmp_path, "s.yaml", text)
    expected = ["a cat", "a dog", "a dog", "a bird", "a bird"]
    assert read_prompt_stream(path, seconds_per_clip=5) == expected
    nested = write(tmp_path, "n.yml", "prompts:\n  - one\n  - prompt: two\n    clips: 2\n")
    assert read_prompt_stream(nested) == ["one", "two", "two"]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfprompts = ['caf\xc3\xa9']\n")
    assert read_prompt_stream(path) == ["café"]


# --------------------------------------------------------------------------- hostile input


def test_payload_call_in_list_is_rejected_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"prompts = [\n    'a cat',\n    __import__('os').system('touch {marker}'),\n]\n"
    path = write(tmp_path, "evil.txt", text)
    with pytest.raises(SviError, match=r"evil\.txt:3: .*found a function call"):
        read_prompt_stream(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("template", "line", "message"),
    [
        ("['a',\n open('{m}', 'w')]", 2, "a function call"),
        ("prompts = __import__('os').system('touch {m}')", 1, "expected a list of strings"),
        ("['a'] + [exec(\"open('{m}', 'w')\")]", 1, "expected a list of strings"),
        ("['a']\n__import__('os').system('touch {m}')", 2, "unexpected statement"),
        ("import os\nos.system('touch {m}')\n['a']", 1, "expected a list of strings"),
        ("x = y = ['a', (lambda: open('{m}', 'w'))()]", 1, "a function call"),
        ("[\n 'a',\n f\"{{open('{m}', 'w')}}\",\n]", 3, "an f-string"),
        ("[\n 'a',\n os.system,\n]", 3, "an attribute access"),
        ("[\n 'a',\n name,\n]", 3, "a bare name"),
        ("[\n 'a',\n\n 42,\n]", 4, "a constant of type int"),
        ("[\n 'a',\n ['nested'],\n]", 3, "a nested list"),
    ],
)
def test_hostile_or_non_string_python_elements(
    tmp_path: Path, template: str, line: int, message: str
) -> None:
    marker = tmp_path / "pwned"
    path = write(tmp_path, "p.py", template.format(m=marker))
    with pytest.raises(SviError, match=rf"p\.py:{line}: .*{message}"):
        read_prompt_stream(path)
    assert not marker.exists()


def test_quoted_payload_is_just_a_prompt(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    path = write(tmp_path, "p.txt", f"prompts = [{payload!r}]\n")
    assert read_prompt_stream(path) == [payload]
    assert not marker.exists()


def test_yaml_python_tags_are_rejected_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"- a cat\n- !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(SviError, match=r"evil\.yaml:2: invalid YAML: could not determine"):
        read_prompt_stream(write(tmp_path, "evil.yaml", text))
    assert not marker.exists()


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.txt", "prompts = [\n  'a',\n  'b',\n", r"a\.txt:1: invalid prompt list syntax: '\[' "),
        ("b.txt", "prompts = [\n  'a',\n  'b',,\n]\n", r"b\.txt:3: invalid prompt list syntax"),
        ("c.json", '[\n  "a",\n  "b"\n  "c"\n]', r"c\.json:4: invalid JSON: Expecting ','"),
        ("d.json", '{"prompts": ["a",', r"d\.json:1: invalid JSON"),
        ("e.yaml", "- a\n- b\n  c: d\n", r"e\.yaml:3: invalid YAML: mapping values"),
        ("f.json", '[\n  "a",\n  {"promt": "b"}\n]', r"f\.json:3: unknown key\(s\) \['promt'\]"),
        ("g.json", '[\n  "a",\n  3\n]', r"g\.json:3: items must be strings"),
        ("h.json", '["a",\n {"prompt": "b", "clips": 0}]', r"h\.json:2: \"clips\" must be an"),
        ("i.yaml", "- a\n- prompt: b\n  clips: 1.5\n", r"i\.yaml:2: \"clips\" must be"),
        ("j.yaml", "- prompt: b\n  clips: true\n", r"j\.yaml:1: \"clips\" must be"),
        ("k.json", '["a", {"prompt": "b", "seconds": 5}]', r"k\.json:1: \"seconds\" needs"),
        ("l.json", '[{"prompt": "b", "seconds": -2}]', r"l\.json:1: \"seconds\" must be"),
        ("m.json", '[{"prompt": "b", "clips": 2, "seconds": 2}]', r"m\.json:1: give either"),
        ("n.json", '[\n {"clips": 2}\n]', r"n\.json:2: item needs a \"prompt\" string"),
        ("o.json", '{"scenes": ["a"]}', r"o\.json: expected a list of prompts"),
        ("p.yaml", "- a\n- '   '\n", r"p\.yaml:2: empty prompt"),
        ("q.txt", "[\n  'a',\n  '',\n]", r"q\.txt:3: empty prompt"),
        ("r.json", '[{"prompt": "b", "clips": 1000001}]', r"r\.json:1: 1000001 clips is more"),
    ],
)
def test_malformed_files_name_file_and_line(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    with pytest.raises(SviError, match=expected):
        read_prompt_stream(write(tmp_path, name, text))


def test_plain_text_starting_with_bracket_explains_detection(tmp_path: Path) -> None:
    path = write(tmp_path, "s.txt", "[scene 1] a cat\na dog\n")
    with pytest.raises(SviError, match=r"s\.txt:1: .*read as a Python-style list"):
        read_prompt_stream(path)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("blank.txt", "\n  \n\t\n"),
        ("comments.txt", "# one\n   # two\n"),
        ("empty_list.txt", "# nothing yet\nprompts = []\n"),
        ("empty.json", "[]"),
        ("empty.yaml", "# nothing\n"),
        ("comment.py", "# only a comment\n"),
    ],
)
def test_no_prompts(tmp_path: Path, name: str, text: str) -> None:
    with pytest.raises(SviError, match=rf"{re.escape(name)}: no prompts found"):
        read_prompt_stream(write(tmp_path, name, text))


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(SviError, match=r"empty\.txt: file is empty"):
        read_prompt_stream(write(tmp_path, "empty.txt", ""))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SviError, match=r"nope\.txt: file not found"):
        read_prompt_stream(tmp_path / "nope.txt")
    with pytest.raises(SviError, match="is a directory"):
        read_prompt_stream(tmp_path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"a cat\na caf\xe9 scene\n")
    with pytest.raises(SviError, match=r"latin1\.txt:2: not UTF-8 text \(byte 0xe9 at offset 11\)"):
        read_prompt_stream(path)


def test_bad_arguments() -> None:
    with pytest.raises(SviError, match="seconds_per_clip must be positive"):
        parse_prompt_stream("a", seconds_per_clip=0)
    with pytest.raises(SviError, match="unknown prompt format 'toml'"):
        parse_prompt_stream("a", fmt="toml")
    with pytest.raises(SviError, match=r"<string>:1: invalid prompt list syntax"):
        parse_prompt_stream("[")


# --------------------------------------------------------------------------- properties

PROMPT_TEXT = st.text(
    alphabet=st.characters(
        min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cs", "Cc", "Zl", "Zp")
    ),
    min_size=1,
    max_size=30,
).filter(lambda text: text.strip() != "")


def python_literal(text: str, quote: str) -> str:
    """``text`` as a Python string literal delimited by ``quote``."""
    body = text.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return quote + body + quote


@given(
    prompts=st.lists(PROMPT_TEXT, min_size=1, max_size=6),
    quotes=st.lists(st.sampled_from(["'", '"']), min_size=6, max_size=6),
    trailing_comma=st.booleans(),
    name=st.sampled_from(["", "prompts = ", "clip_prompts=", "p: list = "]),
)
def test_python_form_round_trips(
    prompts: list[str], quotes: list[str], trailing_comma: bool, name: str
) -> None:
    items = [python_literal(p, q) for p, q in zip(prompts, quotes, strict=False)]
    body = ",\n    ".join(items) + ("," if trailing_comma else "")
    text = f"# generated\n{name}[\n    {body}\n]  # end\n"
    assert parse_prompt_stream(text) == [p.strip() for p in prompts]


@given(
    items=st.lists(
        st.one_of(
            PROMPT_TEXT,
            st.fixed_dictionaries({"prompt": PROMPT_TEXT, "clips": st.integers(1, 4)}),
        ),
        min_size=1,
        max_size=6,
    ),
    indent=st.sampled_from([None, 2]),
    ensure_ascii=st.booleans(),
)
def test_json_form_round_trips(
    items: list[str | dict[str, object]], indent: int | None, ensure_ascii: bool
) -> None:
    text = json.dumps(items, indent=indent, ensure_ascii=ensure_ascii)
    expected: list[str] = []
    for item in items:
        if isinstance(item, str):
            expected.append(item.strip())
        else:
            expected += [str(item["prompt"]).strip()] * int(item["clips"])  # type: ignore[call-overload]
    assert parse_prompt_stream(text) == expected
    assert parse_prompt_stream(text, fmt="yaml") == expected


@given(prompts=st.lists(PROMPT_TEXT.filter(lambda t: not t.strip().startswith("#")), min_size=1))
def test_text_form_round_trips(prompts: list[str]) -> None:
    text = "# header\n\n" + "\n".join(prompts) + "\n"
    assert parse_prompt_stream(text, fmt="text") == [p.strip() for p in prompts]


def test_entries_may_set_lora_strengths_for_the_clips_they_cover() -> None:
    from svi.prompt_stream import parse_prompt_entries

    text = ('[{"prompt": "a", "clips": 2, "loras": {"style": 0.5}}, "b", '
            '{"prompt": "c", "loras": {}}]')  # fmt: skip
    prompts, loras = parse_prompt_entries(text)
    assert prompts == ["a", "a", "b", "c"]
    assert loras == [{"style": 0.5}, {"style": 0.5}, {}, {}]
    assert parse_prompt_entries("one\ntwo\n") == (["one", "two"], [{}, {}])


@pytest.mark.parametrize(
    ("loras", "says"),
    [(".nan", "finite"), (".inf", "finite"), ("1e9", "finite"), ("yes", "finite"),
     ("[style]", "must map LoRA names")],
)  # fmt: skip
def test_a_bad_lora_strength_names_the_line(loras: str, says: str) -> None:
    from svi.prompt_stream import parse_prompt_entries

    text = f"- a\n- prompt: b\n  loras: {{style: {loras}}}\n" if "[" not in loras else (
        f"- a\n- prompt: b\n  loras: {loras}\n")  # fmt: skip
    with pytest.raises(SviError, match=rf"p\.yaml:2: .*{says}"):
        parse_prompt_entries(text, "p.yaml", fmt="yaml")
