"""Video folders with a CSV per category (the reference SVI training layout).

Layout::

    root/
      <category>/
        <category>.csv      Video Title,Video Description,Video URL,Download URL,Filename
        <file>.mp4          one per row, named by the Filename column
        <stem>.wav          optional extras next to the video (see EXTRAS)
        <stem>_pose.mp4 ...

Required columns: ``Video Description`` (the prompt; a prompt stream is written as
prompts joined by ``" | "``, see :attr:`VideoRecord.prompts`) and ``Filename`` (a
path relative to the category folder). ``Video Title`` defaults to the file stem;
the URL columns are not used. The CSV must be UTF-8 (a BOM is accepted).

Rejected, as :class:`~svi.errors.SviError` naming the CSV file and row (the header is
row 1): missing columns, empty or absolute file names, names with ``..``, names
(or symlinks) that resolve outside the category folder, missing video files, and
non-UTF-8 CSVs. Nothing here is specific to the procedural world: any folder of
videos with such CSVs works.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from svi.errors import SviError

log = logging.getLogger(__name__)

TITLE, DESCRIPTION, FILENAME = "Video Title", "Video Description", "Filename"
REQUIRED_COLUMNS = (DESCRIPTION, FILENAME)
PROMPT_SEPARATOR = " | "
# Optional per-video files next to ``<stem>.<ext>``: role -> file name suffix.
EXTRAS = {
    "audio": ".wav",
    "pose": "_pose.mp4",
    "truth": "_truth.npz",
    "truth_json": "_truth.json",
    "prompts": "_prompts.txt",
}
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class VideoRecord:
    """One video of a dataset: its file, prompt, category, title and extra files."""

    path: Path
    prompt: str
    category: str
    title: str
    extras: dict[str, Path] = field(default_factory=dict)

    @property
    def prompts(self) -> list[str]:
        """The prompt stream: the description split on ``" | "``."""
        return [part.strip() for part in self.prompt.split(PROMPT_SEPARATOR)]


class VideoFolderDataset(Sequence[VideoRecord]):
    """All rows of ``root/<category>/<category>.csv`` for the chosen categories."""

    def __init__(self, root: str | Path, categories: Sequence[str] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SviError(f"dataset folder not found: {self.root}")
        if categories is None:
            categories = sorted(
                d.name for d in self.root.iterdir() if (d / f"{d.name}.csv").is_file()
            )
            if not categories:
                raise SviError(f"no <category>/<category>.csv found under {self.root}")
        self.categories = list(categories)
        self.records: list[VideoRecord] = []
        for category in self.categories:
            self.records.extend(read_category(self.root, category))
        log.debug("%d videos in %d categories under %s", len(self), len(self.categories), root)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> VideoRecord:  # type: ignore[override]
        return self.records[index]

    def __iter__(self) -> Iterator[VideoRecord]:
        return iter(self.records)


def _read_text(csv_path: Path) -> str:
    try:
        data = csv_path.read_bytes()
    except OSError as exc:
        raise SviError(f"cannot read {csv_path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SviError(f"{csv_path}, line {line}: not UTF-8 text") from exc


def read_category(root: Path, category: str) -> list[VideoRecord]:
    """The records of one category folder (validated, see the module docstring)."""
    folder = root / category
    csv_path = folder / f"{category}.csv"
    if not csv_path.is_file():
        raise SviError(f"category {category!r} has no CSV: {csv_path} not found")
    reader = csv.DictReader(io.StringIO(_read_text(csv_path), newline=""))
    columns = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise SviError(f"{csv_path}, row 1: missing column(s) {', '.join(missing)}")
    reader.fieldnames = columns
    base = folder.resolve()
    records = []
    try:
        for index, row in enumerate(reader):
            if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
                continue
            where = f"{csv_path}, row {index + 2}"
            path = _video_path(folder, base, (row.get(FILENAME) or "").strip(), where)
            prompt = (row.get(DESCRIPTION) or "").strip()
            title = (row.get(TITLE) or "").strip() or path.stem
            extras = _extras(path, base, where)
            records.append(VideoRecord(path, prompt, category, title, extras))
    except csv.Error as exc:
        raise SviError(f"{csv_path}, line {reader.line_num}: bad CSV: {exc}") from exc
    return records


def _inside(path: Path, base: Path) -> bool:
    return path.resolve().is_relative_to(base)


def _video_path(folder: Path, base: Path, name: str, where: str) -> Path:
    if not name:
        raise SviError(f"{where}: empty Filename")
    if name.startswith(("/", "\\")) or _DRIVE.match(name) or Path(name).is_absolute():
        raise SviError(f"{where}: Filename {name!r} is an absolute path")
    if ".." in re.split(r"[\\/]", name):
        raise SviError(f"{where}: Filename {name!r} escapes the category folder ('..')")
    path = folder / name
    if not _inside(path, base):
        raise SviError(f"{where}: Filename {name!r} resolves outside the category folder")
    if not path.is_file():
        raise SviError(f"{where}: video file not found: {path}")
    return path


def _extras(video: Path, base: Path, where: str) -> dict[str, Path]:
    extras = {}
    for role, suffix in EXTRAS.items():
        candidate = video.with_name(video.stem + suffix)
        if candidate == video or not candidate.is_file():
            continue
        if not _inside(candidate, base):
            raise SviError(f"{where}: {candidate.name} resolves outside the category folder")
        extras[role] = candidate
    return extras
