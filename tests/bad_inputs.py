"""The table of bad inputs (issue 28): run by ``test_cli_failures.py`` through the real CLI.

One row: arguments / files (``setup``) / environment (``env``) -> exit code, key words of
the one ``error:`` line (any of ``says``) and of the warning lines of ours before it
(``warns``, in order); nothing is created, changed or removed beside the output. A row
that succeeds (``code=0``, a real generation: ``slow``) names the files that must not
exist afterwards (``absent``) and the words of its stdout (``says``).

Grouped by command: generate (lengths, numbers, files, models, LoRAs, resume and edited
manifests), sample, train, world, bench, ui, info and the process environment.
"""

from __future__ import annotations

import json
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from svi.manifest import inputs_key, manifest_path, state_path
from svi.models.bundle import embedded_dir
from svi.video import VideoWriter

RESULTS = Path(__file__).parents[1] / "benchmarks" / "results"


@dataclass(frozen=True)
class Case:
    """A bad command: ``argv(assets, folder)``, its exit code and a word of its message
    (any of ``says``, in any case); ``warns``: words of the warning lines before it."""

    name: str
    argv: Callable[[dict, Path], list]
    says: str | tuple[str, ...]
    code: int = 2
    setup: Callable[[Path, dict, object], None] | None = None
    marks: tuple = field(default=())
    env: dict[str, str] = field(default_factory=dict)
    ulimit_v: int | None = None  # the address-space limit (KiB) the command runs under
    warns: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()


def _gen(model: Path, out: Path, *args: str, clips: str | None = "1", steps: str = "1") -> list:
    length = ["--clips", clips] if clips is not None else []
    return ["generate", "--model", model, "--out", out, "--no-progress", "--steps", steps,
            *length, *args]  # fmt: skip


def gen(*args: str, clips: str | None = "1", steps: str = "1") -> Callable[[dict, Path], list]:
    """A generate command into ``folder/out.mp4``; ``{lora}``/``{dir}`` are filled in."""

    def argv(assets: dict, folder: Path) -> list:
        filled = [a.format(lora=assets["lora"], dir=folder) for a in args]
        return _gen(assets["model"], folder / "out.mp4", *filled, clips=clips, steps=steps)

    return argv


def cmd(*args: str) -> Callable[[dict, Path], list]:
    """Any command; ``{model}``, ``{recipe}``, ``{lora}``, ``{dir}``, ``{results}`` and
    ``{port}`` (``folder/port``, written by a setup) are filled in."""

    def argv(assets: dict, folder: Path) -> list:
        port = folder / "port"
        names = {"model": assets["model"], "recipe": assets["recipe"], "lora": assets["lora"],
                 "dir": folder, "results": RESULTS, "embedded": embedded_dir("world-tiny"),
                 "port": port.read_text() if port.exists() else ""}  # fmt: skip
        return [a.format(**names) for a in args]

    return argv


# ---------------------------------------------------------------- setups (files before)


def _file(name: str, data: bytes = b"junk") -> Callable:
    def setup(folder: Path, assets: dict, cli) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)

    return setup


def _dir(name: str) -> Callable:
    return lambda folder, assets, cli: (folder / name).mkdir(parents=True)


def _png(name: str, width: int, height: int) -> Callable:
    """A grey PNG (a big one compresses to a few hundred kB)."""

    def setup(folder: Path, assets: dict, cli) -> None:
        from PIL import Image

        Image.new("L", (width, height)).save(folder / name)

    return setup


def _png_header(name: str, width: int, height: int) -> Callable:
    """A PNG that claims ``width`` x ``height`` pixels and holds none (Pillow judges the
    size from the header when it opens the file)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return _file(name, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def _video(name: str, frames: int = 12, size: int = 32) -> Callable:
    def setup(folder: Path, assets: dict, cli) -> None:
        import numpy as np

        from svi.video import write_video

        pixels = np.random.default_rng(0).integers(0, 256, (frames, size, size, 3), np.uint8)
        write_video(folder / name, pixels, fps=8)

    return setup


def _copy_of_lora(name: str) -> Callable:
    return lambda folder, assets, cli: (folder / name).write_bytes(
        Path(assets["lora"]).read_bytes()
    )


def _busy_port(folder: Path, assets: dict, cli) -> None:
    """A port another program listens on (held open for the module: ``_HELD``)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    _HELD.append(listener)
    (folder / "port").write_text(str(listener.getsockname()[1]))


_HELD: list[socket.socket] = []


def release_ports() -> None:
    """Close the listeners of ``_busy_port`` (after the rows ran)."""
    while _HELD:
        _HELD.pop().close()


def _damaged_manifest(text: bytes) -> Callable:
    """A partial video with a damaged manifest beside it."""

    def setup(folder: Path, assets: dict, cli) -> None:
        out = folder / "out.mp4"
        VideoWriter.partial_path_for(out).write_bytes(b"\0\0\0\x08free")
        manifest_path(out).write_bytes(text)

    return setup


def _truncated_state(folder: Path, assets: dict, cli) -> None:
    """The files of a run of ``gen()`` that crashed after clip 2 of 3 (state cut short)."""
    out = folder / "out.mp4"
    assert cli.start(gen(clips="2")(assets, folder), folder).wait().code == 0
    manifest = json.loads(manifest_path(out).read_text(encoding="utf-8"))
    manifest.update(status="running", frames_written=6)  # 2 clips of 3 new frames, no tail
    manifest_path(out).write_text(json.dumps(manifest), encoding="utf-8")
    out.rename(VideoWriter.partial_path_for(out))
    state_path(out, 1).parent.mkdir()
    state_path(out, 1).write_bytes(b'\x40\0\0\0\0\0\0\0{"carry')


CRASHED = ("--clips", "3")  # the run of assets["crashed"]: gen(clips="3"), crashed after 2


def _edited(edit: Callable[[dict], None], rekey: bool = False) -> Callable:
    """The files of ``assets["crashed"]`` (2 clips finished of 3) with the manifest edited
    by hand (``rekey``: its key recomputed to match the edited inputs)."""

    def setup(folder: Path, assets: dict, cli) -> None:
        for path in Path(assets["crashed"]).rglob("*"):
            target = folder / path.relative_to(assets["crashed"])
            if path.is_dir():
                target.mkdir()
            else:
                target.write_bytes(path.read_bytes())
        mpath = manifest_path(folder / "out.mp4")
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        edit(manifest)
        if rekey:
            manifest["key"] = inputs_key(manifest["inputs"])
        mpath.write_text(json.dumps(manifest, indent=1), encoding="utf-8")

    return setup


def _set(path: str, value) -> Callable[[dict], None]:
    """An edit: ``a.b.c`` (list indices as numbers) set to ``value``."""

    def edit(manifest: dict) -> None:
        *keys, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        node = manifest
        for key in keys:
            node = node[key]
        node[last] = value

    return edit


def _complete_then_edited(folder: Path, assets: dict, cli) -> None:
    """A finished run of ``gen()`` whose manifest says it ran 3 sampler steps."""
    assert cli.start(gen()(assets, folder), folder).wait().code == 0
    mpath = manifest_path(folder / "out.mp4")
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    manifest["inputs"]["plan"]["steps"] = 3
    mpath.write_text(json.dumps(manifest), encoding="utf-8")


def _run_log(text: str, checkpoint: bool = True) -> Callable:
    """A run folder with ``text`` as its log (and an empty checkpoint folder)."""

    def setup(folder: Path, assets: dict, cli) -> None:
        _file("run/log.jsonl", text.encode())(folder, assets, cli)
        if checkpoint:
            (folder / "run" / "checkpoints" / "step-0000001").mkdir(parents=True)

    return setup


# ---------------------------------------------------------------- the rows

TRAIN = ("train", "--recipe", "{recipe}", "--out", "{dir}/run", "--no-progress")
SAMPLE = ("sample", "--model", "{model}", "--out", "{dir}/clip.mp4")
RENDER = ("world", "render", "--kind", "consistent", "--out", "{dir}/ep")
DATASET = ("world", "dataset", "--kind", "consistent", "--out", "{dir}/ds", "--videos", "1")
SHEET = ("world", "contact-sheet", "--kind", "consistent", "--out", "{dir}/s.png")
FIRST = ("bench", "first-clip", "--model", "{model}", "--scenes", "1", "--steps", "1")
CURVE = ("bench", "curve", "--run", "{dir}/run", "--out", "{dir}/c.png")
DRIFT = ("bench", "drift", "--model", "{model}", "--scenes", "1", "--clips", "1", "--out",
         "{dir}/d", "--no-progress")  # fmt: skip
ERRORS = ("bench", "errors", "--model", "{model}", "--checkpoint", "{dir}/ck", "--out", "{dir}/e")
VIDEO = ("bench", "video", "{dir}/v.mp4")
REPRODUCE = ("bench", "reproduce", "{results}/drift-test-consistent-50.json", "--scenes", "1")
DRIVEN = ("bench", "driven", "--model", "{model}", "--scenes", "1", "--clips", "1", "--out",
          "{dir}/d", "--cache", "{dir}/c", "--no-progress")  # fmt: skip
UI = ("ui", "--model", "{model}", "--sessions", "{dir}/sessions")
ESC = "\x1b[31mred"
SLOW = (pytest.mark.slow,)
LONG_PROMPT = "a red disc bounces over a green checkerboard " * 2300  # 100,000+ characters

# fmt: off
GENERATE = [
    # lengths: one of --clips / --seconds / --frames / --forever, each bounded
    Case("clips-negative", gen(clips="-1"), "--clips"),
    Case("clips-past-the-limit", gen(clips=str(10**12)), ("--clips", "1000000000")),
    Case("clips-not-a-number", gen(clips="many"), "--clips"),
    Case("clips-and-seconds", gen("--seconds", "3"), "only one of"),
    Case("clips-and-forever", gen("--forever"), "only one of"),
    Case("frames-and-seconds", gen("--frames", "9", "--seconds", "3", clips=None), "only one of"),
    Case("seconds-nan", gen("--seconds", "nan", clips=None), "seconds"),
    Case("seconds-inf", gen("--seconds", "inf", clips=None), "seconds"),
    Case("seconds-negative", gen("--seconds", "-1", clips=None), "--seconds"),
    Case("seconds-zero", gen("--seconds", "0", clips=None), "--seconds"),
    Case("seconds-past-the-limit", gen("--seconds", "1e300", clips=None), "--seconds"),
    Case("seconds-not-a-number", gen("--seconds", "long", clips=None), "--seconds"),
    Case("seconds-times-fps-past-the-frame-limit",
         gen("--seconds", "1e7", "--fps", "1000", clips=None), "length in frames"),
    Case("frames-negative", gen("--frames", "-5", clips=None), "frames"),
    Case("frames-zero", gen("--frames", "0", clips=None), "--frames"),
    Case("frames-past-the-limit", gen("--frames", str(10**10), clips=None), "--frames"),
    Case("frames-not-an-integer", gen("--frames", "1.5", clips=None), "--frames"),
    Case("frames-1e30", gen("--frames", "1e30", clips=None), "--frames"),
    # numbers of the plan
    Case("steps-negative", gen(steps="-2"), "steps"),
    Case("steps-zero", gen(steps="0"), "steps"),
    Case("steps-past-the-limit", gen(steps="100000"), "--steps"),
    Case("steps-2-to-the-100", gen(steps=str(2**100)), "--steps"),
    Case("cfg-nan", gen("--cfg", "nan"), "cfg"),
    Case("cfg-inf", gen("--cfg", "inf"), "cfg"),
    Case("cfg-negative", gen("--cfg", "-1"), "--cfg"),
    Case("cfg-past-the-limit", gen("--cfg", "1e9"), "--cfg"),
    Case("cfg-not-a-number", gen("--cfg", "high"), "--cfg"),
    Case("fps-zero", gen("--fps", "0"), "fps"),
    Case("fps-negative", gen("--fps", "-8"), "--fps"),
    Case("fps-past-the-limit", gen("--fps", "100000"), "--fps"),
    Case("motion-frames-zero", gen("--motion-frames", "0"), "motion"),
    Case("motion-frames-negative", gen("--motion-frames", "-1"), "--motion-frames"),
    Case("motion-frames-fill-the-clip", gen("--motion-frames", "1000"), "carries"),
    Case("overlap-without-head-stitching", gen("--overlap", "2"), "--overlap"),
    Case("overlap-negative", gen("--variant", "2.0-pro", "--overlap", "-1"), "--overlap"),
    Case("overlap-past-the-clip", gen("--variant", "2.0-pro", "--overlap", "99"), "--overlap"),
    Case("variant-unknown", gen("--variant", "9.9"), "unknown variant"),
    Case("handoff-bogus", gen("--handoff", "bogus"), ("handoff", "hand-off")),
    Case("padding-bogus", gen("--padding", "bogus"), "padding"),
    Case("padding-anchor-first-with-pixel-handoff", gen("--padding", "anchor-first"),
         "--handoff latent"),
    Case("latent-handoff-carrying-the-whole-clip",
         gen("--handoff", "latent", "--motion-frames", "5"), "latent frames"),
    Case("clip-preprocess-bogus", gen("--clip-preprocess", "bogus"), "clip preprocessing"),
    Case("few-step-bogus", gen("--few-step", "bogus"), "few-step"),
    Case("offload-bogus", gen("--offload", "bogus"), "offload"),
    Case("weights-dtype-bogus", gen("--weights-dtype", "fp3"), "dtype"),
    # seeds within the generator's range for every clip
    Case("seed-negative", gen("--seed", "-1"), "--seed"),
    Case("seed-not-a-number", gen("--seed", "lucky"), "--seed"),
    Case("seed-2-to-the-63", gen("--seed", str(2**63)), "--seed"),
    Case("seed-past-64-bits", gen("--seed", "1180591620717411303424"), "--seed"),
    Case("seed-whose-clip-2-overflows", gen("--seed", "18446744073709551600", clips="2"),
         "--seed"),
    Case("seed-stride-negative", gen("--seed-stride", "-1"), "--seed-stride"),
    Case("seed-stride-past-32-bits", gen("--seed-stride", str(2**40)), "--seed-stride"),
    # re-roll
    Case("reroll-zero", gen("--reroll", "0"), "--reroll"),
    Case("reroll-past-1", gen("--reroll", "2"), "--reroll"),
    Case("reroll-nan", gen("--reroll", "nan"), "--reroll"),
    Case("max-rerolls-without-reroll", gen("--max-rerolls", "2"), "--reroll"),
    Case("max-rerolls-zero", gen("--reroll", "0.5", "--max-rerolls", "0"), "--max-rerolls"),
    Case("max-rerolls-past-the-limit", gen("--reroll", "0.5", "--max-rerolls", "1000"),
         "--max-rerolls"),
    # LoRAs
    Case("lora-scale-nan", gen("--lora", "{lora}", "--lora-scale", "nan"), ("scale", "strength")),
    Case("lora-scale-inf", gen("--lora", "{lora}", "--lora-scale", "inf"), "strength"),
    Case("lora-scale-past-the-limit", gen("--lora", "{lora}", "--lora-scale", "1e30"),
         "strength"),
    Case("lora-scale-without-lora", gen("--lora-scale", "0.5"), "--lora-scale"),
    Case("lora-low-scale-without-lora-low", gen("--lora-low-scale", "1"), "--lora-low-scale"),
    Case("lora-low-on-a-model-with-one-expert", gen("--lora-low", "{lora}"), "low-noise"),
    Case("lora-missing", gen("--lora", "{dir}/nope.safetensors"), "not found"),
    Case("lora-unknown-name", gen("--lora", "bogus"), "not found"),
    Case("lora-folder-without-safetensors", gen("--lora", "{dir}/loras"), "no .safetensors",
         setup=_dir("loras")),
    Case("lora-empty-file", gen("--lora", "{dir}/e.safetensors"), "safetensors",
         setup=_file("e.safetensors", b"")),
    Case("lora-not-safetensors", gen("--lora", "{dir}/l.safetensors"), "l.safetensors",
         setup=_file("l.safetensors", b"\x80\x04pickle")),
    Case("same-lora-file-twice", gen("--lora", "{lora}", "--lora", "{dir}/copy.safetensors"),
         "same file", setup=_copy_of_lora("copy.safetensors")),
    Case("same-lora-path-twice", gen("--lora", "{lora}", "--lora", "{lora}"), "same file"),
    # LoRAs per segment of a prompt stream (issue 27)
    Case("segment-names-an-unknown-lora", gen("--prompts", "{dir}/p.yaml"), "not loaded",
         setup=_file("p.yaml", b"- prompt: a red disc\n  loras: {nope: 0.5}\n")),
    Case("segment-lora-scale-nan", gen("--prompts", "{dir}/p.yaml"), "finite",
         setup=_file("p.yaml", b"- prompt: a red disc\n  loras: {svi: .nan}\n")),
    Case("segment-lora-scale-inf", gen("--prompts", "{dir}/p.json"), "finite",
         setup=_file("p.json", b'[{"prompt": "a red disc", "loras": {"svi": Infinity}}]')),
    Case("segment-loras-not-a-mapping", gen("--prompts", "{dir}/p.yaml"), "strengths",
         setup=_file("p.yaml", b"- prompt: a red disc\n  loras: [svi]\n")),
    # extending a video (issue 27)
    Case("extend-shorter-than-the-carry", gen("--extend", "{dir}/short.mp4"), "carries",
         setup=_video("short.mp4", frames=1)),
    Case("extend-unreadable-file", gen("--extend", "{dir}/bad.mp4"), "bad.mp4",
         setup=_file("bad.mp4", b"junk, not a video")),
    Case("extend-missing-file", gen("--extend", "{dir}/nope.mp4"), "not found"),
    Case("new-only-without-extend", gen("--new-only"), "--new-only needs --extend"),
    Case("same-lora-by-name-and-path", cmd("generate", "--out", "{dir}/o.mp4", "--lora", "clean",
                                           "--lora", "{embedded}/clean_lora.safetensors"),
         "same file"),
    # prompts
    Case("prompt-and-prompts", gen("--prompt", "a", "--prompts", "{dir}/p.txt"), "not both",
         setup=_file("p.txt", b"a red disc\n")),
    Case("prompt-empty", gen("--prompt", ""), "--prompt is empty"),
    Case("prompt-blank", gen("--prompt", " \t "), "--prompt is empty"),
    Case("prompts-missing", gen("--prompts", "{dir}/nope.txt"), "not found"),
    Case("prompts-empty-file", gen("--prompts", "{dir}/p.txt"), "empty",
         setup=_file("p.txt", b"")),
    Case("prompts-a-directory", gen("--prompts", "{dir}/p"), "directory", setup=_dir("p")),
    Case("prompt-file-with-escapes", gen("--prompts", "{dir}/" + ESC + ".txt"), "no prompts",
         setup=_file(ESC + ".txt", f"# {ESC} only a comment\n".encode())),
    Case("prompt-file-not-utf8", gen("--prompts", "{dir}/p.txt"), "p.txt",
         setup=_file("p.txt", b"a red disc \xff\xfe\n")),
    Case("prompts-json-damaged", gen("--prompts", "{dir}/p.json"), "invalid json",
         setup=_file("p.json", b"[{")),
    Case("prompts-json-not-a-list", gen("--prompts", "{dir}/p.json"), "list of prompts",
         setup=_file("p.json", b'{"a": 1}')),
    Case("prompts-json-item-without-prompt", gen("--prompts", "{dir}/p.json"), '"prompt"',
         setup=_file("p.json", b'[{"seconds": 1}]')),
    Case("prompts-json-prompt-a-number", gen("--prompts", "{dir}/p.json"), '"prompt"',
         setup=_file("p.json", b'[{"prompt": 3}]')),
    Case("prompts-json-seconds-negative", gen("--prompts", "{dir}/p.json", clips=None),
         '"seconds"', setup=_file("p.json", b'[{"prompt": "a", "seconds": -1}]')),
    Case("prompts-json-seconds-nan", gen("--prompts", "{dir}/p.json", clips=None), '"seconds"',
         setup=_file("p.json", b'[{"prompt": "a", "seconds": NaN}]')),
    Case("prompts-json-seconds-text", gen("--prompts", "{dir}/p.json", clips=None),
         '"seconds"', setup=_file("p.json", b'[{"prompt": "a", "seconds": "x"}]')),
    Case("prompt-file-seconds-overflow", gen("--prompts", "{dir}/p.json", clips=None),
         "limit", setup=_file("p.json", b'[{"prompt": "a red disc", "seconds": 1e308}]')),
    Case("prompts-json-nested-too-deeply", gen("--prompts", "{dir}/p.json"), "nested",
         setup=_file("p.json", b"[" * 10_000)),
    Case("prompts-yaml-nested-too-deeply", gen("--prompts", "{dir}/p.yaml"), "nested",
         setup=_file("p.yaml", b"[" * 10_000)),
    Case("prompts-list-nested-too-deeply", gen("--prompts", "{dir}/p.txt"), "nested",
         setup=_file("p.txt", b"[" * 10_000)),
    # start pictures
    Case("image-is-a-directory", gen("--image", "{dir}/pic.png", "--prompt", "a"),
         "is a directory", setup=_dir("pic.png")),
    Case("image-missing", gen("--image", "{dir}/nope.png", "--prompt", "a"), "does not exist"),
    Case("image-not-a-picture", gen("--image", "{dir}/p.png", "--prompt", "a"),
         "not a readable image", setup=_file("p.png")),
    Case("image-empty", gen("--image", "{dir}/p.png", "--prompt", "a"), "empty",
         setup=_file("p.png", b"")),
    Case("image-truncated-png", gen("--image", "{dir}/p.png", "--prompt", "a"),
         "not a readable image",
         setup=_file("p.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0")),
    Case("image-past-pillows-bomb-limit", gen("--image", "{dir}/p.png", "--prompt", "a"),
         "decompression bombs", setup=_png_header("p.png", 20_000, 9_000)),
    Case("image-without-prompt", gen("--image", "{dir}/p.png"), "--prompt",
         setup=_png("p.png", 8, 8)),
    # a 90-megapixel picture: Pillow's DecompressionBombWarning is ours to handle (the
    # picture is fitted to the clip), so only our note on the crop is said
    Case("image-of-90-megapixels", gen("--image", "{dir}/p.png", "--prompt", "a", "--cfg", "-1"),
         "--cfg", setup=_png("p.png", 10_000, 9_000), warns=("cropped",), marks=SLOW),
    # audio / pose
    Case("audio-and-pose", gen("--audio", "{dir}/a.wav", "--pose", "{dir}/p.mp4"), "not both"),
    Case("audio-missing", gen("--audio", "{dir}/a.wav"), "does not exist"),
    Case("audio-cfg-without-audio", gen("--audio-cfg", "2"), "need --audio"),
    Case("audio-encoder-without-audio", gen("--audio-encoder", "{dir}"), "need --audio"),
    Case("audio-without-a-talk-adapter", gen("--audio", "{dir}/a.wav"), "no talk adapter",
         setup=_file("a.wav")),
    Case("pose-missing", gen("--pose", "{dir}/p.mp4"), "does not exist"),
    Case("pose-without-a-dance-adapter", gen("--pose", "{dir}/p.mp4"), "no dance adapter",
         setup=_file("p.mp4")),
    Case("audio-a-directory", cmd("generate", "--audio", "{dir}/a.wav", "--out",
                                  "{dir}/o.mp4"), "directory", setup=_dir("a.wav")),
    # models
    Case("model-missing", cmd("generate", "--model", "{dir}/m", "--out", "{dir}/o.mp4"),
         "neither a preset"),
    Case("model-empty-folder", cmd("generate", "--model", "{dir}/m", "--out", "{dir}/o.mp4"),
         "holds neither", setup=_dir("m")),
    Case("model-unknown-name", cmd("generate", "--model", "world-huge", "--out",
                                   "{dir}/o.mp4"), "neither a preset"),
    Case("model-json-damaged", cmd("generate", "--model", "{dir}/m", "--out", "{dir}/o.mp4"),
         "svi_model.json", setup=_file("m/svi_model.json", b"{")),
    Case("model-wan-preset-without-weights", cmd("generate", "--model", "wan2.2-i2v-a14b",
                                                 "--out", "{dir}/o.mp4"), "needs its weights"),
    Case("preset-unknown", gen("--preset", "bogus"), "unknown preset"),
    Case("preset-not-the-folders", gen("--preset", "wan2.1-i2v-14b-480p"), "holds a world-tiny"),
    Case("height-on-the-world-model", gen("--height", "64"), "fixed"),
    Case("height-not-a-multiple-of-16", gen("--height", "33"), "multiple of 16"),
    Case("num-frames-on-the-world-model", gen("--num-frames", "9"), "fixed"),
    Case("world-kind-unknown", gen("--world-kind", "bogus"), "world kind"),
    Case("world-seed-negative", gen("--world-seed", "-1"), "world seed"),
    # the output
    Case("out-is-a-directory", gen(), "is a directory", setup=_dir("out.mp4")),
    Case("out-folder-missing", cmd("generate", "--model", "{model}", "--clips", "1",
                                   "--out", "{dir}/no/out.mp4"), "does not exist"),
    Case("out-not-mp4", cmd("generate", "--model", "{model}", "--clips", "1",
                            "--out", "{dir}/out.avi"), ".mp4"),
    Case("out-named-only-mp4", cmd("generate", "--model", "{model}", "--clips", "1",
                                   "--out", "{dir}/.mp4"), "no name before .mp4"),
    Case("out-under-a-file", cmd("generate", "--model", "{model}", "--clips", "1",
                                 "--out", "{dir}/f/out.mp4"), "not a folder", setup=_file("f")),
    Case("out-exists", gen(), "--overwrite", setup=_file("out.mp4")),
    Case("out-partial-exists", gen(), "--overwrite", setup=_file("out.partial.mp4")),
    Case("out-manifest-exists", gen(), "--overwrite", setup=_file("out.svi.json", b"{}")),
    Case("clips-dir-is-a-file", gen("--clips-dir", "{dir}/clips"), "is a file",
         setup=_file("clips")),
    Case("unknown-option", gen("--colour", "red"), "no such option"),
    Case("extra-argument", gen("extra"), "unexpected extra argument"),
    Case("option-without-its-value", cmd("generate", "--model", "{model}", "--out"),
         "requires an argument"),
    # resume: damaged files
    Case("resume-manifest-not-json", gen("--resume"), "damaged",
         setup=_damaged_manifest(b'{"clips": [')),
    Case("resume-manifest-not-a-manifest", gen("--resume"), "not a manifest",
         setup=_damaged_manifest(b"[1, 2]")),
    Case("resume-manifest-not-utf8", gen("--resume"), "damaged",
         setup=_damaged_manifest(b'{"a": "\xff\xfe"}')),
    Case("resume-manifest-negative-frames", gen("--resume"), "not a manifest",
         setup=_damaged_manifest(b'{"clips": [], "frames_written": -3}')),
    Case("resume-a-file-without-manifest", gen("--resume"), "no manifest",
         setup=_file("out.mp4")),
    Case("resume-state-truncated", gen("--resume", clips="2"), "damaged",
         setup=_truncated_state),
    Case("resume-with-other-settings", gen("--resume", "--seed", "5", clips="3"),
         "changed: plan.seed", setup=_edited(lambda m: None)),
    # resume: a manifest is evidence, not input (edited by hand: refused, never rewritten)
    Case("manifest-edited-plan-steps", gen("--resume", clips="3"), "inputs.plan.steps",
         setup=_edited(_set("inputs.plan.steps", 3))),
    Case("manifest-edited-plan-steps-and-key", gen("--resume", clips="3"), "changed: plan.steps",
         setup=_edited(_set("inputs.plan.steps", 3), rekey=True)),
    Case("manifest-edited-plan-cfg", gen("--resume", clips="3"), "inputs.plan.cfg",
         setup=_edited(_set("inputs.plan.cfg", 9.5))),
    Case("manifest-edited-model", gen("--resume", clips="3"), "inputs.model",
         setup=_edited(_set("inputs.model", "/elsewhere"))),
    Case("manifest-edited-prompt", gen("--resume", clips="3"), "inputs.prompt_texts",
         setup=_edited(_set("inputs.prompt_texts.0", "a blue square"))),
    Case("manifest-edited-inputs-gone", gen("--resume", clips="3"), "inputs",
         setup=_edited(_set("inputs", None))),
    Case("manifest-edited-clip-seed", gen("--resume", clips="3"), "clips[1].seed",
         setup=_edited(_set("clips.1.seed", 7))),
    Case("manifest-edited-clip-index", gen("--resume", clips="3"), "clips[1].index",
         setup=_edited(_set("clips.1.index", 5))),
    Case("manifest-edited-clip-prompt", gen("--resume", clips="3"), "clips[0].prompt_index",
         setup=_edited(_set("clips.0.prompt_index", 4))),
    Case("manifest-edited-clip-tries", gen("--resume", clips="3"), "clips[0].tries",
         setup=_edited(_set("clips.0.tries", [{"seed": 0, "kept": True}]))),
    Case("manifest-edited-clip-removed", gen("--resume", clips="3"), "frames_written",
         setup=_edited(lambda m: m["clips"].pop())),
    Case("manifest-edited-frames-written", gen("--resume", clips="3"), "frames_written",
         setup=_edited(_set("frames_written", 7))),
    Case("manifest-edited-tail-frames", gen("--resume", clips="3"), "tail_frames",
         setup=_edited(_set("tail_frames", 1))),
    Case("manifest-edited-of-a-finished-run", gen("--resume"), "inputs.plan.steps",
         setup=_complete_then_edited),
    # what a successful generation must not say: no raw library line, our one warning
    Case("prompt-of-100000-characters", gen("--prompt", LONG_PROMPT), "complete",
         code=0, warns=("cut to the text encoder",), absent=("out.partial.mp4",
                                                              "out.svi-state"), marks=SLOW),
    Case("seconds-shorter-than-a-clip", gen("--seconds", "1e-9", clips=None), "1 clips",
         code=0, warns=("shorter than one clip",), absent=("out.partial.mp4",), marks=SLOW),
]

SAMPLE_ROWS = [
    Case("sample-steps-zero", cmd(*SAMPLE, "--steps", "0"), "--steps"),
    Case("sample-cfg-nan", cmd(*SAMPLE, "--cfg", "nan"), "--cfg"),
    Case("sample-seed-negative", cmd(*SAMPLE, "--seed", "-1"), "--seed"),
    Case("sample-seed-past-64-bits", cmd(*SAMPLE, "--seed", str(2**64)), "--seed"),
    Case("sample-out-is-a-directory", cmd(*SAMPLE), "is a directory", setup=_dir("clip.mp4")),
    Case("sample-out-not-mp4", cmd("sample", "--model", "{model}", "--out", "{dir}/c.avi"),
         ".mp4"),
    Case("sample-out-exists", cmd(*SAMPLE), "--overwrite", setup=_file("clip.mp4")),
    Case("sample-image-missing", cmd(*SAMPLE, "--image", "{dir}/x.png"), "does not exist"),
    Case("sample-image-not-a-picture", cmd(*SAMPLE, "--image", "{dir}/x.png", "--prompt", "a"),
         "not a readable image", setup=_file("x.png")),
    Case("sample-model-missing", cmd("sample", "--model", "{dir}/m", "--out", "{dir}/c.mp4"),
         "neither a preset"),
    Case("sample-prompt-empty", cmd(*SAMPLE, "--prompt", ""), "--prompt is empty"),
    Case("sample-has-no-clips-option", cmd(*SAMPLE, "--clips", "2"), "no such option"),
]

TRAIN_ROWS = [
    Case("train-steps-negative", cmd(*TRAIN, "--steps", "-1"), "steps"),
    Case("train-steps-past-the-limit", cmd(*TRAIN, "--steps", str(10**30)), "steps"),
    Case("train-batch-size-zero", cmd(*TRAIN, "--batch-size", "0"), "batch"),
    Case("train-batch-size-past-the-limit", cmd(*TRAIN, "--batch-size", str(10**9)), "batch"),
    Case("train-lora-rank-zero", cmd(*TRAIN, "--lora-rank", "0"), "lora_rank"),
    Case("train-lora-rank-past-the-limit", cmd(*TRAIN, "--lora-rank", str(10**6)),
         "lora_rank"),
    Case("train-seed-negative", cmd(*TRAIN, "--seed", "-1"), "seed"),
    Case("train-seed-past-64-bits", cmd(*TRAIN, "--seed", str(2**70)), "seed"),
    Case("train-lr-nan", cmd(*TRAIN, "--lr", "nan"), "optim.lr"),
    Case("train-lr-negative", cmd(*TRAIN, "--lr", "-1"), "optim.lr"),
    Case("train-lr-inf", cmd(*TRAIN, "--lr", "inf"), "optim.lr"),
    Case("train-lr-zero", cmd(*TRAIN, "--lr", "0"), "optim.lr"),
    Case("train-expert-unknown", cmd(*TRAIN, "--expert", "middle"), "expert"),
    Case("train-expert-on-one-dit", cmd(*TRAIN, "--expert", "high"), "two experts"),
    Case("train-condition-unknown", cmd(*TRAIN, "--condition", "smell"), "data.condition"),
    Case("train-preset-unknown", cmd(*TRAIN, "--preset", "bogus"), "unknown preset"),
    Case("train-world-clip-size-is-fixed", cmd(*TRAIN, "--num-frames", "9"), "fixed"),
    Case("train-height-on-the-world-model", cmd(*TRAIN, "--height", "64"), "fixed"),
    Case("train-model-missing", cmd("train", "--model", "{dir}/m", "--out", "{dir}/run"),
         "neither a preset"),
    Case("train-out-is-a-file", cmd(*TRAIN), "is a file", setup=_file("run")),
    Case("train-out-missing", cmd("train", "--recipe", "{recipe}"), "missing option"),
    Case("train-data-folder-missing", cmd(*TRAIN, "--data", "{dir}/nope"), "not found"),
    Case("train-data-is-a-file", cmd(*TRAIN, "--data", "{dir}/d"), "is a file",
         setup=_file("d")),
    Case("train-data-without-a-csv", cmd(*TRAIN, "--data", "{dir}/d"), ".csv",
         setup=_dir("d")),
    Case("train-recipe-missing", cmd("train", "--recipe", "{dir}/r.toml", "--out", "{dir}/run"),
         "does not exist"),
    Case("train-recipe-a-directory", cmd("train", "--recipe", "{dir}/r", "--out", "{dir}/run"),
         "directory", setup=_dir("r")),
    Case("train-recipe-not-toml", cmd("train", "--recipe", "{dir}/r.toml", "--out", "{dir}/run"),
         "r.toml", setup=_file("r.toml", b"steps = = 3\n")),
    Case("train-recipe-not-utf8", cmd("train", "--recipe", "{dir}/r.toml", "--out", "{dir}/run"),
         "r.toml", setup=_file("r.toml", b"steps = 3 # \xff\n")),
    Case("train-recipe-unknown-key", cmd("train", "--recipe", "{dir}/r.toml", "--out",
                                         "{dir}/run"), "unknown key",
         setup=_file("r.toml", b"stepz = 3\n")),
    Case("train-recipe-wrong-type", cmd("train", "--recipe", "{dir}/r.toml", "--out",
                                        "{dir}/run"), "must be int",
         setup=_file("r.toml", b'steps = "ten"\n')),
    Case("train-recipe-seed-past-64-bits", cmd("train", "--recipe", "{dir}/r.toml", "--out",
                                               "{dir}/run"), "seed",
         setup=_file("r.toml", b"seed = 1180591620717411303424\n")),
]

WORLD = [
    Case("world-unknown-command", cmd("world", "paint"), "no such command"),
    Case("render-kind-unknown", cmd("world", "render", "--kind", "x", "--out", "{dir}/ep"),
         "world kind"),
    Case("render-kind-missing", cmd("world", "render", "--out", "{dir}/ep"), "--kind"),
    Case("render-out-missing", cmd("world", "render", "--kind", "consistent"), "--out"),
    Case("render-seed-negative", cmd(*RENDER, "--seed", "-1"), "seed"),
    Case("render-seconds-zero", cmd(*RENDER, "--seconds", "0"), "--seconds"),
    Case("render-seconds-negative", cmd(*RENDER, "--seconds", "-2"), "--seconds"),
    Case("render-seconds-nan", cmd(*RENDER, "--seconds", "nan"), "--seconds"),
    Case("render-seconds-inf", cmd(*RENDER, "--seconds", "inf"), "--seconds"),
    Case("render-seconds-past-the-limit", cmd(*RENDER, "--seconds", "1e12"), "at most"),
    Case("render-fps-zero", cmd(*RENDER, "--fps", "0"), "fps"),
    Case("render-fps-past-the-frame-limit", cmd(*RENDER, "--fps", str(10**9)), "at most"),
    Case("render-size-too-small", cmd(*RENDER, "--size", "8"), "size"),
    Case("render-size-too-big", cmd(*RENDER, "--size", "4096"), "size"),
    Case("render-size-odd", cmd(*RENDER, "--size", "33"), "odd"),
    Case("render-clip-frames-zero", cmd(*RENDER, "--clip-frames", "0"), "clip_frames"),
    Case("render-out-is-a-file", cmd(*RENDER), "cannot write", setup=_file("ep")),
    Case("dataset-videos-zero", cmd(*DATASET[:-1], "0"), "--videos"),
    Case("dataset-videos-negative", cmd(*DATASET[:-1], "-1"), "--videos"),
    Case("dataset-videos-past-the-limit", cmd(*DATASET[:-1], str(10**12)), "--videos"),
    Case("dataset-videos-missing", cmd(*DATASET[:-2]), "--videos"),
    Case("dataset-split-unknown", cmd(*DATASET, "--split", "dev"), "split"),
    Case("dataset-start-negative", cmd(*DATASET, "--start", "-5"), "--start"),
    Case("dataset-seconds-nan", cmd(*DATASET, "--seconds", "nan"), "--seconds"),
    Case("dataset-seconds-past-the-limit", cmd(*DATASET, "--seconds", "1e9"), "at most"),
    Case("dataset-kind-unknown", cmd("world", "dataset", "--kind", "x", "--out", "{dir}/ds",
                                     "--videos", "1"), "world kind"),
    Case("dataset-size-zero", cmd(*DATASET, "--size", "0"), "size"),
    Case("dataset-size-odd", cmd(*DATASET, "--size", "17"), "odd"),
    Case("dataset-fps-negative", cmd(*DATASET, "--fps", "-1"), "fps"),
    Case("dataset-out-is-a-file", cmd(*DATASET), "cannot write", setup=_file("ds")),
    Case("sheet-columns-zero", cmd(*SHEET, "--columns", "0"), "--columns"),
    Case("sheet-columns-negative", cmd(*SHEET, "--columns", "-3"), "--columns"),
    Case("sheet-out-is-a-directory", cmd(*SHEET), ".png", setup=_dir("s.png")),
    Case("sheet-out-not-png", cmd("world", "contact-sheet", "--kind", "consistent", "--out",
                                  "{dir}/s.txt"), ".png"),
    Case("sheet-out-without-suffix", cmd("world", "contact-sheet", "--kind", "consistent",
                                         "--out", "{dir}/s"), ".png"),
    Case("sheet-seconds-zero", cmd(*SHEET, "--seconds", "0"), "--seconds"),
    Case("sheet-seconds-past-the-limit", cmd(*SHEET, "--seconds", "1e9"), "at most"),
    Case("sheet-size-too-big", cmd(*SHEET, "--size", "1000"), "size"),
    Case("sheet-fps-zero", cmd(*SHEET, "--fps", "0"), "fps"),
    Case("sheet-kind-unknown", cmd("world", "contact-sheet", "--kind", "q", "--out",
                                   "{dir}/s.png"), "world kind"),
]

BENCH = [
    Case("bench-unknown-command", cmd("bench", "speed"), "no such command"),
    Case("bench-first-clip-no-scenes", cmd("bench", "first-clip", "--model", "{model}",
                                           "--scenes", "0"), "scenes"),
    Case("first-clip-scenes-negative", cmd(*FIRST[:-4], "--scenes", "-1"), "--scenes"),
    Case("first-clip-scenes-past-the-limit", cmd(*FIRST[:-4], "--scenes", str(10**12)),
         "--scenes"),
    Case("first-clip-split-train", cmd(*FIRST, "--split", "train"), "--split"),
    Case("first-clip-split-unknown", cmd(*FIRST, "--split", "x"), "--split"),
    Case("first-clip-kind-unknown", cmd(*FIRST, "--kind", "x"), "world kind"),
    Case("first-clip-steps-zero", cmd(*FIRST[:-2], "--steps", "0"), "--steps"),
    Case("first-clip-shift-zero", cmd(*FIRST, "--shift", "0"), "--shift"),
    Case("first-clip-shift-nan", cmd(*FIRST, "--shift", "nan"), "--shift"),
    Case("first-clip-cfg-nan", cmd(*FIRST, "--cfg", "nan"), "--cfg"),
    Case("first-clip-cfg-negative", cmd(*FIRST, "--cfg", "-5"), "--cfg"),
    Case("first-clip-model-missing", cmd("bench", "first-clip", "--model", "{dir}/m"),
         "neither a preset"),
    Case("first-clip-out-is-a-directory", cmd(*FIRST, "--out", "{dir}/o"), "--out",
         setup=_dir("o")),
    Case("first-clip-out-folder-missing", cmd(*FIRST, "--out", "{dir}/a/b.json"), "--out"),
    Case("curve-run-missing", cmd(*CURVE), "not a training run"),
    Case("curve-run-empty", cmd(*CURVE), "not a training run", setup=_dir("run")),
    Case("curve-run-is-a-file", cmd(*CURVE), "not a training run", setup=_file("run")),
    Case("curve-scenes-zero", cmd(*CURVE, "--scenes", "0"), "--scenes"),
    Case("curve-steps-zero", cmd(*CURVE, "--steps", "0"), "--steps"),
    Case("curve-no-checkpoints", cmd(*CURVE), "no checkpoints",
         setup=_run_log('{"step": 1, "elapsed_s": 2}\n', checkpoint=False)),
    Case("curve-checkpoint-incomplete", cmd(*CURVE), "incomplete",
         setup=_run_log('{"step": 1, "elapsed_s": 2}\n')),
    Case("curve-log-damaged", cmd(*CURVE), "log.jsonl:1", setup=_run_log("{not json\n")),
    Case("curve-log-without-time", cmd(*CURVE), "log.jsonl:1", setup=_run_log('{"step": 1}\n')),
    Case("drift-no-contenders", cmd(*DRIFT, "--no-base"), "no contenders"),
    Case("drift-scenes-zero", cmd(*DRIFT, "--scenes", "0"), "--scenes"),
    Case("drift-clips-zero", cmd(*DRIFT, "--clips", "0"), "--clips"),
    Case("drift-jobs-zero", cmd(*DRIFT, "--jobs", "0"), "--jobs"),
    Case("drift-batch-zero", cmd(*DRIFT, "--batch", "0"), "--batch"),
    Case("drift-scenes-past-the-limit", cmd(*DRIFT, "--scenes", str(10**12)), "--scenes"),
    Case("drift-clips-past-the-limit", cmd(*DRIFT, "--clips", str(10**12)), "--clips"),
    Case("drift-jobs-past-the-limit", cmd(*DRIFT, "--jobs", "100000"), "--jobs"),
    Case("drift-split-train", cmd(*DRIFT, "--split", "train"), "--split"),
    Case("drift-kind-talking", cmd(*DRIFT, "--kind", "talking"), "--kind"),
    Case("drift-only-unknown", cmd(*DRIFT, "--only", "nope"), "--only"),
    Case("drift-focus-unknown", cmd(*DRIFT, "--focus", "nope"), "--focus"),
    Case("drift-padding-unknown", cmd(*DRIFT, "--padding", "x"), "padding"),
    Case("drift-lora-without-label", cmd(*DRIFT, "--lora", "{lora}"), "LABEL=PATH"),
    Case("drift-lora-missing", cmd(*DRIFT, "--lora", "a={dir}/x.safetensors"), "not found"),
    Case("drift-lora-scale-not-a-number", cmd(*DRIFT, "--lora", "a={lora}:abc"),
         "not a number"),
    Case("drift-lora-scale-nan", cmd(*DRIFT, "--lora", "a={lora}:nan"), "finite"),
    Case("drift-lora-label-twice", cmd(*DRIFT, "--lora", "a={lora}", "--lora", "a={lora}"),
         "unique"),
    Case("drift-contenders-missing", cmd(*DRIFT, "--contenders", "{dir}/c.toml"), "c.toml"),
    Case("drift-contenders-damaged", cmd(*DRIFT, "--contenders", "{dir}/c.toml"), "c.toml",
         setup=_file("c.toml", b"[[x")),
    Case("drift-contenders-empty", cmd(*DRIFT, "--contenders", "{dir}/c.toml"), "no [contender",
         setup=_file("c.toml", b"")),
    Case("errors-checkpoint-missing", cmd(*ERRORS), "no banks"),
    Case("errors-checkpoint-without-banks", cmd(*ERRORS), "no banks", setup=_dir("ck")),
    Case("errors-scenes-zero", cmd(*ERRORS, "--scenes", "0"), "--scenes", setup=_dir("ck")),
    Case("errors-clips-past-the-limit", cmd(*ERRORS, "--clips", str(10**9)), "--clips",
         setup=_dir("ck")),
    Case("errors-split-unknown", cmd(*ERRORS, "--split", "x"), "--split", setup=_dir("ck")),
    Case("errors-kind-unknown", cmd(*ERRORS, "--kind", "x"), "--kind", setup=_dir("ck")),
    Case("errors-padding-unknown", cmd(*ERRORS, "--padding", "x"), "padding",
         setup=_dir("ck")),
    Case("video-missing", cmd(*VIDEO), "not found"),
    Case("video-not-a-video", cmd(*VIDEO), "not a readable video", setup=_file("v.mp4")),
    Case("video-empty", cmd(*VIDEO), "empty", setup=_file("v.mp4", b"")),
    Case("video-a-directory", cmd("bench", "video", "{dir}"), "directory"),
    Case("video-argument-missing", cmd("bench", "video"), "missing argument"),
    Case("video-one-frame", cmd(*VIDEO), "at least 2 frames", setup=_video("v.mp4", frames=1)),
    Case("video-stride-zero", cmd(*VIDEO, "--stride", "0"), "--stride", setup=_video("v.mp4")),
    Case("video-grid-one", cmd(*VIDEO, "--grid", "1"), "--grid", setup=_video("v.mp4")),
    Case("video-truth-scene-negative", cmd(*VIDEO, "--truth-scene", "-1"), "--truth-scene",
         setup=_video("v.mp4")),
    Case("video-truth-scene-past-63-bits", cmd(*VIDEO, "--truth-scene", str(2**70)),
         "--truth-scene", setup=_video("v.mp4")),
    Case("video-truth-path-unknown", cmd(*VIDEO, "--truth-scene", "1", "--truth-path", "x"),
         "--truth-path", setup=_video("v.mp4")),
    Case("video-motion-negative", cmd(*VIDEO, "--truth-scene", "1", "--motion", "-1"),
         "--motion", setup=_video("v.mp4")),
    Case("video-kind-unknown", cmd(*VIDEO, "--truth-scene", "1", "--kind", "x"), "--kind",
         setup=_video("v.mp4")),
    Case("video-truth-of-another-size", cmd(*VIDEO, "--truth-scene", "3"), "32x32",
         setup=_video("v.mp4", size=48)),
    Case("reproduce-missing", cmd("bench", "reproduce", "{dir}/r.json"), "cannot read"),
    Case("reproduce-a-directory", cmd("bench", "reproduce", "{dir}"), "cannot read"),
    Case("reproduce-not-json", cmd("bench", "reproduce", "{dir}/r.json"), "not a benchmark",
         setup=_file("r.json")),
    Case("reproduce-not-a-result", cmd("bench", "reproduce", "{dir}/r.json"), "not a benchmark",
         setup=_file("r.json", b"[1]")),
    Case("reproduce-empty-result", cmd("bench", "reproduce", "{dir}/r.json"), "not a benchmark",
         setup=_file("r.json", b"{}")),
    Case("reproduce-scenes-zero", cmd(*REPRODUCE[:-2], "--scenes", "0"), "--scenes"),
    Case("reproduce-scenes-past-the-result", cmd(*REPRODUCE[:-2], "--scenes", "5000"),
         "--scenes"),
    Case("reproduce-jobs-zero", cmd(*REPRODUCE, "--jobs", "0"), "--jobs"),
    Case("reproduce-clips-not-a-horizon", cmd(*REPRODUCE, "--clips", "7"), "horizons"),
    Case("reproduce-only-unknown", cmd(*REPRODUCE, "--only", "nope"), "no contender"),
    Case("driven-condition-unknown", cmd(*DRIVEN, "--condition", "smell"), "--condition"),
    Case("driven-condition-missing", cmd(*DRIVEN), "--condition"),
    Case("driven-split-unknown", cmd(*DRIVEN, "--condition", "audio", "--split", "x"),
         "--split"),
    Case("driven-scenes-zero", cmd(*DRIVEN, "--condition", "audio", "--scenes", "0"),
         "--scenes"),
    Case("driven-clips-past-the-limit", cmd(*DRIVEN, "--condition", "pose", "--clips",
                                            str(10**9)), "--clips"),
    Case("driven-seed-offset-negative", cmd(*DRIVEN, "--condition", "audio", "--seed-offset",
                                            "-1"), "--seed-offset"),
    Case("driven-jobs-zero", cmd(*DRIVEN, "--condition", "audio", "--jobs", "0"), "--jobs"),
    Case("driven-lora-malformed", cmd(*DRIVEN, "--condition", "audio", "--lora", "xyz"),
         "=PATH"),
    Case("driven-contenders-missing", cmd(*DRIVEN, "--condition", "audio", "--contenders",
                                          "{dir}/c.toml"), "c.toml"),
    Case("driven-no-contenders", cmd(*DRIVEN, "--condition", "audio"), "no contenders"),
]

UI_ROWS = [
    Case("ui-port-past-65535", cmd("ui", "--model", "{model}", "--port", "99999",
                                   "--sessions", "{dir}/sessions"), "--port"),
    Case("ui-port-negative", cmd(*UI, "--port", "-1"), "--port"),
    Case("ui-port-zero", cmd(*UI, "--port", "0"), "--port"),
    Case("ui-port-not-a-number", cmd(*UI, "--port", "http"), "--port"),
    Case("ui-port-in-use", cmd(*UI, "--port", "{port}"), "in use", setup=_busy_port),
    Case("ui-host-unknown", cmd(*UI, "--host", "no.such.host.invalid"), "--host"),
    Case("ui-host-not-this-machine", cmd(*UI, "--host", "192.0.2.1"), "cannot listen"),
    Case("ui-max-jobs-zero", cmd(*UI, "--max-jobs", "0"), "--max-jobs"),
    Case("ui-max-jobs-past-the-limit", cmd(*UI, "--max-jobs", str(10**6)), "--max-jobs"),
    Case("ui-sessions-is-a-file", cmd(*UI), "not a folder", setup=_file("sessions")),
    Case("ui-model-missing", cmd("ui", "--model", "{dir}/m", "--sessions", "{dir}/s"),
         "neither a preset"),
    Case("ui-unknown-option", cmd(*UI, "--share"), "no such option"),
]

INFO_AND_ENVIRONMENT = [
    Case("unknown-command", cmd("paint"), "no such command"),
    Case("unknown-root-option", cmd("--colour"), "no such option"),
    Case("info-extra-argument", cmd("info", "extra"), "unexpected extra argument"),
    Case("info-unknown-option", cmd("info", "--gpu"), "no such option"),
    Case("info-memory-without-model", cmd("info", "--memory"), "--model"),
    # OpenMP settings libgomp rejects (with a raw "libgomp: Invalid value" line): ours
    Case("omp-threads-zero", gen(), "OMP_NUM_THREADS", env={"OMP_NUM_THREADS": "0"}),
    Case("omp-threads-negative", cmd("info"), "OMP_NUM_THREADS", env={"OMP_NUM_THREADS": "-1"}),
    Case("omp-threads-text", cmd(*SAMPLE), "OMP_NUM_THREADS", env={"OMP_NUM_THREADS": "all"}),
    Case("omp-threads-empty", cmd(*TRAIN), "OMP_NUM_THREADS", env={"OMP_NUM_THREADS": ""}),
    Case("omp-threads-fraction", cmd(*RENDER), "OMP_NUM_THREADS",
         env={"OMP_NUM_THREADS": "1.5"}),
    Case("omp-threads-trailing-comma", cmd(*VIDEO), "OMP_NUM_THREADS",
         env={"OMP_NUM_THREADS": "2,"}),
    Case("omp-threads-zero-ui", cmd(*UI), "OMP_NUM_THREADS", env={"OMP_NUM_THREADS": "00"}),
    Case("omp-wait-policy-unknown", cmd(*DRIFT), "OMP_WAIT_POLICY",
         env={"OMP_WAIT_POLICY": "sometimes"}),
    Case("omp-wait-policy-empty", cmd("info"), "OMP_WAIT_POLICY", env={"OMP_WAIT_POLICY": ""}),
    # issue 28's hang: `ulimit -v 800000; svi generate --clips 1` ran until kill -9 (the
    # real start-up under the limit: test_a_small_address_space_limit_fails_at_once)
    Case("address-space-limit-too-small", cmd("generate", "--clips", "1", "--out",
                                              "{dir}/o.mp4"), "ulimit -v", ulimit_v=800_000),
    Case("address-space-limit-too-small-train", cmd(*TRAIN), "ulimit -v", ulimit_v=1_000_000),
]
# fmt: on

CASES = GENERATE + SAMPLE_ROWS + TRAIN_ROWS + WORLD + BENCH + UI_ROWS + INFO_AND_ENVIRONMENT
