"""The job queue of the app: generations run one at a time (``max_jobs``) on worker
threads, in the order they were submitted, whichever browser tab submitted them.

A job is one library call (:func:`svi.request.run_generate` or :func:`svi.branch.branch`)
with :class:`~svi.session.Hooks`: progress per step, a drift-monitor row and a preview
snapshot per clip, and a stop flag asked at every step (a stop finalises the mp4 as
Ctrl-C does). Each job writes its own output; the queue refuses a second job on an
output that a queued or running job holds, and the library's output lock refuses
another process.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svi.errors import SviError, one_line
from svi.interrupts import Interrupted
from svi.session import Hooks
from svi.steering import PromptSource
from svi.ui.monitor import ClipMonitor
from svi.video import VideoWriter

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, STOPPED, FAILED = "queued", "running", "done", "stopped", "failed"
FINAL = (DONE, STOPPED, FAILED)
PREVIEWS_KEPT = 3  # snapshots kept per job (the page may still be fetching the previous)


@dataclass
class Job:
    """One generation: its output, state, progress and what the page shows of it."""

    id: str
    out: Path
    run: Callable[[Hooks], dict]  # the library call
    clips: int | None = None  # clips asked for (None: until stopped)
    steps: int | None = None
    before: Callable[[Job], None] | None = None  # on the worker, before the run (seeding)
    state: str = QUEUED
    clip: int = 0  # the clip being sampled (0-based): clips finished in this session
    step: int = 0  # sampler steps done in the current clip
    prompt: str = ""  # the latest finished clip's prompt and seed
    seed: int | None = None
    preview: Path | None = None  # playable snapshot of the video so far
    version: int = 0  # bumps whenever the preview / monitor changes
    error: str | None = None
    manifest: dict | None = None
    monitor: ClipMonitor = field(default_factory=ClipMonitor)
    source: PromptSource | None = None  # the running generation's prompts (svi.steering)
    stop_flag: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self.state in FINAL


class JobQueue:
    """First in, first out; ``max_jobs`` worker threads (default 1: one at a time)."""

    def __init__(self, max_jobs: int = 1) -> None:
        if max_jobs < 1:
            raise SviError(f"max jobs must be at least 1, got {max_jobs}")
        self.max_jobs = max_jobs
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._closed = False
        self._workers = [threading.Thread(target=self._work, name=f"svi-ui-job-{i}", daemon=True)
                         for i in range(max_jobs)]  # fmt: skip
        for worker in self._workers:
            worker.start()

    def submit(self, out: Path, run: Callable[[Hooks], dict], **kw: Any) -> Job:
        """Queue ``run`` writing ``out``; SviError if a live job already writes ``out``."""
        with self._cond:
            if self._closed:
                raise SviError("the app is shutting down")
            busy = [j for j in self._jobs.values() if not j.finished
                    and j.out.resolve() == Path(out).resolve()]  # fmt: skip
            if busy:
                raise SviError(f"{Path(out).stem} is already {busy[0].state} as job {busy[0].id}")
            job = Job(id=f"job-{next(self._ids)}", out=Path(out), run=run, **kw)
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._cond.notify()
        return job

    def get(self, job_id: str | None) -> Job | None:
        return self._jobs.get(job_id or "")

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def position(self, job: Job) -> int:
        """0-based place of a queued job in the line (-1 when it is not waiting)."""
        with self._cond:
            return self._waiting.index(job) if job in self._waiting else -1

    def stop(self, job_id: str) -> Job | None:
        """Stop a job: a queued one never starts; a running one finalises its video."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            job.stop_flag.set()
            if job in self._waiting:
                self._waiting.remove(job)
                job.state = STOPPED
                self._cond.notify_all()
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job is finished (tests, scripts)."""
        with self._cond:
            job = self._jobs[job_id]
            if not self._cond.wait_for(lambda: job.finished, timeout):
                raise TimeoutError(f"{job_id} still {job.state} after {timeout} s")
        return job

    def close(self) -> None:
        """Stop every job and end the workers."""
        with self._cond:
            self._closed = True
            for job in list(self._waiting):
                job.state = STOPPED
            self._waiting.clear()
            for job in self._jobs.values():
                job.stop_flag.set()
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(timeout=30)

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting or self._closed)
                if self._closed:
                    return
                job = self._waiting.popleft()
                job.state = RUNNING
            state = _execute(job)
            with self._cond:
                job.state = state
                self._cond.notify_all()


def _execute(job: Job) -> str:
    """Run one job to its final state (never raises)."""
    try:
        if job.before is not None:
            job.before(job)
        job.manifest = job.run(_hooks(job))
        state = DONE
    except Interrupted:
        state = STOPPED
    except SviError as exc:
        job.error, state = one_line(exc), FAILED
    except Exception as exc:  # a bug: logged with its traceback, one line in the page
        log.exception("job %s failed", job.id)
        job.error, state = one_line(f"internal error ({type(exc).__name__}: {exc})"), FAILED
    if job.out.is_file():  # finished or stopped: the final video is the preview
        job.preview = _snapshot(job, job.out, "final")
        job.version += 1
    return state


def _hooks(job: Job) -> Hooks:
    def on_step(clip: int, step: int) -> None:
        job.clip, job.step = clip, step + 1

    def on_clip(record: dict, clip: Any) -> None:
        job.monitor.add(clip.index, clip.new_frames, record)
        job.prompt, job.seed = clip.prompt, clip.seed
        job.clip, job.step = clip.index + 1, 0
        partial = VideoWriter.partial_path_for(job.out)
        if partial.is_file():  # after every clip the growing file is a playable mp4
            job.preview = _snapshot(job, partial, f"clip-{clip.index:06d}")
        job.version += 1

    def on_source(source: PromptSource) -> None:
        job.source = source

    return Hooks(on_step=on_step, on_clip=on_clip, should_stop=job.stop_flag.is_set,
                 keep_states=True, on_source=on_source)  # fmt: skip


def _snapshot(job: Job, video: Path, name: str) -> Path:
    """Copy ``video`` to ``preview/NAME.mp4`` next to the output; keep the latest few."""
    folder = job.out.parent / "preview"
    folder.mkdir(exist_ok=True)
    target = folder / f"{name}.mp4"
    shutil.copyfile(video, target)
    for old in sorted(folder.glob("*.mp4"))[:-PREVIEWS_KEPT]:
        if old != target:
            old.unlink(missing_ok=True)
    return target
