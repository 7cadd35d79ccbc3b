"""The sessions folder: one sub-folder per generation, never reused.

``ROOT/ID/`` holds ``ID.mp4`` (``ID.partial.mp4`` while it grows), the manifest
``ID.svi.json``, the per-clip states ``ID.svi-state/``, the page settings ``ID.ui.json``,
the copied inputs (``prompts.txt``, ``image.*``, ``audio.*``, ``pose.*``) and
``preview/`` (snapshots for the page). A new session's folder is created with
``mkdir(exist_ok=False)``, so two jobs (or two apps on one folder) never share a file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from svi.errors import SviError
from svi.manifest import manifest_path
from svi.ui import forms
from svi.video import VideoWriter


@dataclass(frozen=True)
class SessionInfo:
    """One row of the sessions list."""

    id: str
    out: Path
    status: str  # complete | interrupted | running | failed (no manifest: nothing finished)
    clips: int
    frames: int
    branch_of: str  # "SOURCE_ID @ clip k" or ""
    started: float

    @property
    def resumable(self) -> bool:
        return self.status in ("interrupted", "running")  # "running" without a job: crashed

    @property
    def row(self) -> list:
        return [self.id, self.status, self.clips, self.frames, self.branch_of]


COLUMNS = ["session", "status", "clips", "frames", "branch of"]


class Sessions:
    """The folder ``root`` of every session of the app (created on first use)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def new(self, kind: str = "gen") -> Path:
        """The output ``ROOT/ID/ID.mp4`` of a new session in a folder made for it alone."""
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 10_000):
            sid = f"{stamp}-{kind}-{n:03d}"
            try:
                (self.root / sid).mkdir()
            except FileExistsError:
                continue
            return self.out(sid)
        raise SviError(f"cannot create a new session folder in {self.root}")

    def out(self, sid: str) -> Path:
        if not sid or Path(sid).name != sid or sid in (".", ".."):
            raise SviError(f"no session {sid!r} (pick one from the sessions list)")
        return self.root / sid / f"{sid}.mp4"

    def folder(self, sid: str) -> Path:
        return self.out(sid).parent

    def form(self, sid: str) -> forms.Form:
        return forms.load(self.out(sid).with_suffix(".ui.json"))

    def save_form(self, out: Path, form: forms.Form) -> None:
        forms.save(form, out.with_suffix(".ui.json"))

    def manifest(self, sid: str) -> dict:
        path = manifest_path(self.out(sid))
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SviError(f"session {sid} finished no clip yet (no manifest)") from None
        except ValueError as exc:
            raise SviError(f"the manifest of session {sid} is damaged ({exc})") from None

    def info(self, sid: str) -> SessionInfo:
        out = self.out(sid)
        try:
            m = self.manifest(sid)
        except SviError:
            return SessionInfo(sid, out, "failed", 0, 0, "", _mtime(out.parent))
        branch = m.get("branch") or {}
        source = f"{Path(branch['source']).stem} @ clip {branch['clip']}" if branch else ""
        return SessionInfo(sid, out, str(m.get("status", "?")), len(m.get("clips", [])),
                           int(m.get("frames_written", 0)), source,
                           float(m.get("started", 0)))  # fmt: skip

    def list(self) -> list[SessionInfo]:
        """Every session, newest first."""
        if not self.root.is_dir():
            return []
        found = [self.info(d.name) for d in self.root.iterdir()
                 if d.is_dir() and (d / f"{d.name}.ui.json").is_file()]  # fmt: skip
        return sorted(found, key=lambda s: (s.started, s.id), reverse=True)

    def downloads(self, sid: str) -> list[Path]:
        """The finished (or stopped) video and its manifest."""
        out = self.out(sid)
        if not out.is_file():
            state = "is still being written" if VideoWriter.partial_path_for(out).exists() else (
                "has no video")  # fmt: skip
            raise SviError(f"session {sid} {state}: stop it or let it finish first")
        return [out, manifest_path(out)]

    def video_so_far(self, sid: str) -> Path | None:
        """The finished video, else the growing one (``None`` before the first clip)."""
        out = self.out(sid)
        partial = VideoWriter.partial_path_for(out)
        return partial if partial.is_file() else out if out.is_file() else None


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
