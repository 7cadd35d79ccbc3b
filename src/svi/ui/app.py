"""The Gradio page of ``svi ui`` and its callbacks.

:class:`Callbacks` holds every action of the page as a plain method over the modules of
this package (tested without a browser); :func:`build_app` lays the page out and wires
the methods to it; :func:`serve` starts it. The page polls the tab's job twice a second
(``gr.Timer``) and sends the preview and the drift plot only when a clip has arrived.

The preview is a copy of the growing video (``OUT.partial.mp4``): after every clip
the writer leaves it a complete fragmented MP4, which Chromium plays as it is, so the
copy is taken in the job's clip hook (no re-encoding, no frames kept in memory).
"""

from __future__ import annotations

import html
import json
import logging
import signal
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from svi.errors import SviError, one_line
from svi.interrupts import Interrupted
from svi.manifest import manifest_path
from svi.ui import forms
from svi.ui.forms import Form
from svi.ui.jobs import QUEUED, RUNNING, Job, JobQueue
from svi.ui.monitor import COLUMNS, figure
from svi.ui.sessions import COLUMNS as SESSION_COLUMNS
from svi.ui.sessions import Sessions

log = logging.getLogger(__name__)

FIELDS = [f.name for f in fields(Form)]  # the order of the page's inputs
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
POLL_SECONDS = 0.5


class Callbacks:
    """The page's actions. Each returns what the page shows; an SviError becomes an
    ``error: ...`` message, never an exception."""

    def __init__(self, queue: JobQueue, sessions: Sessions) -> None:
        self.queue, self.sessions = queue, sessions

    # -- starting jobs -------------------------------------------------------------------
    def generate(self, *values: Any) -> tuple[str | None, str]:
        """A new session from the page's values (in :data:`FIELDS` order)."""
        try:
            form = Form.from_values(dict(zip(FIELDS, values, strict=True)))
            forms.check(form)
            job = self._submit(form, self.sessions.new("gen"))
        except SviError as exc:
            return None, f"error: {one_line(exc)}"
        return job.id, self._queued(job)

    def resume(self, sid: str) -> tuple[str | None, str]:
        """Continue an interrupted session into its own files."""
        try:
            info = self.sessions.info(sid)
            if not info.resumable:
                raise SviError(f"session {sid} is {info.status}: nothing to resume")
            form, clips = self.sessions.form(sid), info.clips
            plan = self.sessions.manifest(sid)["inputs"]["plan"]
            video = self.sessions.video_so_far(sid)

            def seed(job: Job) -> None:
                if video is not None:
                    job.monitor.seed_from_video(video, plan, clips)

            job = self._submit(form, info.out, resume=True, before=seed)
        except SviError as exc:
            return None, f"error: {one_line(exc)}"
        return job.id, self._queued(job)

    def branch(self, sid: str, clip: Any, seed: Any, prompts: str,
               clips: Any) -> tuple[str | None, str]:  # fmt: skip
        """A new session: ``sid``'s clips before ``clip``, then a new seed and / or prompt
        stream (blank: the source's) for ``clips`` clips in all (0 or blank: the source's
        length)."""
        try:
            source = self.sessions.out(sid)
            k = forms._whole(clip, "branch clip")
            form = self.sessions.form(sid)
            changes: dict[str, Any] = {}
            if seed not in (None, ""):
                changes["seed"] = forms._whole(seed, "seed")
            if prompts and prompts.strip():
                changes["prompts"] = prompts
            total = None if clips in (None, "") else forms._whole(clips, "clips in all")
            if total:  # 0 or blank: the source's length
                changes.update(length="clips", amount=total)
            form = replace(form, **changes)
            forms.check(form)
            plan = self.sessions.manifest(sid)["inputs"]["plan"]
            video = self.sessions.video_so_far(sid)

            def seed_rows(job: Job) -> None:
                if video is not None:
                    job.monitor.seed_from_video(video, plan, k)

            job = self._submit(form, self.sessions.new("branch"), branch_from=(source, k),
                               before=seed_rows)  # fmt: skip
        except SviError as exc:
            return None, f"error: {one_line(exc)}"
        return job.id, self._queued(job) + f" (branch of {sid} at clip {k})"

    def _submit(self, form: Form, out: Path, *, resume: bool = False,
                branch_from: tuple[Path, int] | None = None, before=None) -> Job:  # fmt: skip
        from svi.branch import branch
        from svi.request import run_generate

        folder = out.parent
        form = forms.adopt_inputs(form, folder)
        if not resume:
            self.sessions.save_form(out, form)
        req = replace(forms.to_request(form, folder, out), resume=resume)
        if branch_from is not None:
            source, k = branch_from

            def run(hooks):
                return branch(source, k, req, hooks)
        else:

            def run(hooks):
                return run_generate(req, hooks)

        clips = int(form.amount) if form.length == "clips" else None
        return self.queue.submit(out, run, clips=clips, steps=form.steps, before=before)

    def _queued(self, job: Job) -> str:
        ahead = self.queue.position(job)
        wait = f", {ahead} ahead of it" if ahead > 0 else ""
        return f"{job.id}: session {job.out.stem} queued{wait}"

    # -- a running job -------------------------------------------------------------------
    def stop(self, job_id: str | None) -> str:
        job = self.queue.get(job_id)
        if job is None:
            return "no generation to stop"
        if job.finished:
            return f"{job.id} is already {job.state}"
        self.queue.stop(job.id)
        return f"stopping {job.id}: its video is finalised with the clips finished so far"

    def steer(self, job_id: str | None, text: str) -> str:
        """Give a running job an edited prompt stream (prompts, per-segment LoRA
        strengths): every clip not started yet follows it, the finished ones stay; the
        manifest records the change (:mod:`svi.steering`)."""
        from svi.prompt_stream import parse_prompt_entries
        from svi.steering import Stream

        job = self.queue.get(job_id)
        if job is None or job.finished:
            return "no running generation to steer: Generate starts one with these prompts"
        if job.source is None:
            return f"{job.id} has not started yet: it starts with the prompts it was given"
        try:
            if not (text or "").strip():
                raise SviError("the prompt stream is empty: enter at least one prompt")
            plan = json.loads(manifest_path(job.out).read_text())["inputs"]["plan"]
            prompts, loras = parse_prompt_entries(
                text, "the prompt stream", seconds_per_clip=plan["new_frames"] / plan["fps"]
            )
            job.source.set(Stream.of(prompts, loras if any(loras) else None))
            clips = self.plan_numbers(job)[0]
            if clips and job.clip + 1 >= clips:
                return f"{job.id} is sampling its last clip: no clip is left to follow the edit"
        except SviError as exc:
            return f"error: {one_line(exc)}"
        except (OSError, ValueError, KeyError) as exc:
            return f"error: cannot read the manifest of {job.out.stem} ({exc})"
        return (f"{job.id}: the clips not started yet (from clip {job.clip + 2} on) follow "
                "the edited prompt stream; the finished ones stay")  # fmt: skip

    def poll(self, job_id: str | None, seen: int) -> tuple[str, Path | None, Any, Any, int]:
        """(status HTML, new preview or None, new plot or None, new table or None,
        version): the preview and plot only when they changed since ``seen``."""
        job = self.queue.get(job_id)
        if job is None:
            return status_html(None, self), None, None, None, seen
        if job.version == seen:
            return status_html(job, self), None, None, None, seen
        version = job.version  # read before the rows: a newer clip is sent next time
        rows = list(job.monitor.rows)
        return status_html(job, self), job.preview, figure(rows), job.monitor.table(), version

    def plan_numbers(self, job: Job) -> tuple[int | None, int | None]:
        """(clips, steps) of a job, from its manifest's plan once it exists."""
        if job.steps is None or (job.clips is None and job.state == RUNNING):
            try:
                plan = json.loads(manifest_path(job.out).read_text())["inputs"]["plan"]
                job.steps = job.steps or plan.get("steps")
                job.clips = job.clips or (plan.get("clips") or None)
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return job.clips, job.steps

    # -- sessions ------------------------------------------------------------------------
    def sessions_rows(self) -> tuple[list[list], list[str]]:
        found = self.sessions.list()
        return [s.row for s in found], [s.id for s in found]

    def downloads(self, sid: str | None) -> tuple[list[str] | None, str]:
        try:
            paths = self.sessions.downloads(sid or "")
        except SviError as exc:
            return None, f"error: {one_line(exc)}"
        return [str(p) for p in paths], f"session {sid}: video and manifest"


def status_html(job: Job | None, callbacks: Callbacks) -> str:
    """The job's state, a bar over clips and one over the current clip's steps, and the
    latest clip's prompt and seed."""
    if job is None:
        return '<div id="job-state" data-state="none">no generation in this tab yet</div>'
    clips, steps = callbacks.plan_numbers(job)
    head = f"{job.id} - session {html.escape(job.out.stem)}: {job.state}"
    if job.state == QUEUED:
        head += f" ({callbacks.queue.position(job)} ahead)"
    if job.error:
        head += f" - {html.escape(job.error)}"
    finished = len(job.monitor.rows) if job.monitor.rows else job.clip
    bars = [
        _bar("clips", job.clip, clips),
        _bar(f"steps of clip {job.clip + 1}" if job.state == RUNNING else "steps", job.step,
             steps),
    ]  # fmt: skip
    last = ""
    if job.seed is not None:
        last = (f"<div>clip {finished}: seed {job.seed}, prompt "
                f"<i>{html.escape(job.prompt)}</i></div>")  # fmt: skip
    return (f'<div id="job-state" data-state="{job.state}" data-clips="{job.clip}">'
            f"<b>{head}</b>{''.join(bars)}{last}</div>")  # fmt: skip


def _bar(label: str, value: int, total: int | None) -> str:
    top = total if total else max(value, 1)
    shown = f"{value} / {total}" if total else f"{value}"
    return (f'<div class="svi-bar">{label}: {shown} '
            f'<progress value="{min(value, top)}" max="{top}"></progress></div>')  # fmt: skip


CSS = ".svi-bar progress { width: 60%; } #preview video { image-rendering: pixelated; }"


def build_app(queue: JobQueue, sessions: Sessions, defaults: Form | None = None):
    """The page: inputs on the left, the running job on the right, sessions below."""
    import gradio as gr

    from svi.variants import VARIANTS
    from svi.world.config import KINDS

    cb, d = Callbacks(queue, sessions), defaults or Form()
    with gr.Blocks(title="svi ui", delete_cache=(120, 900), analytics_enabled=False) as demo:
        job_id, seen = gr.State(None), gr.State(-1)
        gr.Markdown("## Stable Video Infinity - any-length video, clip by clip")
        with gr.Row():
            with gr.Column(scale=1):
                c: dict[str, Any] = {}
                c["prompts"] = gr.Textbox(
                    d.prompts,
                    lines=5,
                    elem_id="prompts",
                    label="Prompt stream (one per line, or a list; blank: the world scene's)",
                )
                with gr.Accordion("Start", open=False):
                    c["image"] = gr.Image(label="Start image (blank: a world scene)",
                                          type="filepath", height=160)  # fmt: skip
                    c["extend"] = gr.File(label="Video to continue (its last frames carry "
                                          "on; blank: none)", type="filepath",
                                          elem_id="extend")  # fmt: skip
                    c["world_kind"] = gr.Dropdown(list(KINDS), value=d.world_kind,
                                                  label="World scene kind")  # fmt: skip
                    c["world_seed"] = _optional(d.world_seed, "World scene seed")
                with gr.Row():
                    c["model"] = gr.Textbox(d.model, label="Model (blank: embedded; or a "
                                            "local Wan folder)", elem_id="model")  # fmt: skip
                    c["variant"] = gr.Dropdown(["", *VARIANTS], value=d.variant, label="Variant")
                c["loras"] = gr.Textbox(d.loras, label="LoRAs (one per line: file, scale)",
                                        lines=2)  # fmt: skip
                with gr.Row():
                    c["length"] = gr.Radio(list(forms.LENGTHS), value=d.length, label="Length",
                                           elem_id="length")  # fmt: skip
                    c["amount"] = gr.Number(d.amount, label="Clips / seconds", elem_id="amount")
                with gr.Row():
                    c["seed"] = gr.Number(d.seed, label="Seed", precision=0, elem_id="seed")
                    c["steps"] = _optional(d.steps, "Steps", elem_id="steps")
                    c["cfg"] = _optional(d.cfg, "CFG")
                with gr.Accordion("Auto re-roll", open=False), gr.Row():
                    c["reroll"] = _optional(d.reroll, "Threshold (0-1; blank: off)")
                    c["max_rerolls"] = _optional(d.max_rerolls, "Max re-rolls (blank: 3)")
                with gr.Accordion("Audio / pose (conditional models)", open=False):
                    c["audio"] = gr.Audio(label="Driving audio (talk)", type="filepath")
                    c["pose"] = gr.File(label="Driving pose video (dance)", type="filepath")
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
                    steer = gr.Button("Apply prompts to the running job", elem_id="steer")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                message = gr.Markdown(elem_id="message")
            with gr.Column(scale=2):
                status = gr.HTML(status_html(None, cb), elem_id="job-status")
                preview = gr.Video(label="Video so far", elem_id="preview", height=320,
                                   autoplay=True, loop=True, interactive=False)  # fmt: skip
                plot = gr.Plot(label="Drift monitor", elem_id="drift-plot")
                table = gr.Dataframe(headers=COLUMNS, label="Per clip", elem_id="drift-table",
                                     interactive=False)  # fmt: skip
        with gr.Row():
            with gr.Column(scale=2):
                listing = gr.Dataframe(headers=SESSION_COLUMNS, label="Sessions",
                                       interactive=False, elem_id="sessions")  # fmt: skip
                with gr.Row():
                    pick = gr.Dropdown([], label="Session", elem_id="session",
                                       allow_custom_value=True)  # fmt: skip
                    resume = gr.Button("Resume", elem_id="resume")
                    download = gr.Button("Download", elem_id="download")
                files = gr.File(label="Files", file_count="multiple", elem_id="files")
            with gr.Column(scale=1):
                gr.Markdown("**Branch** the picked session at a clip: a new session")
                with gr.Row():
                    b_clip = gr.Number(2, label="From clip", precision=0, elem_id="branch-clip")
                    b_seed = _optional(None, "New seed (blank: same)", elem_id="branch-seed")
                    b_clips = _optional(None, "Clips in all (blank: same)", elem_id="branch-clips")
                b_prompts = gr.Textbox(label="New prompts (blank: same)", lines=2)
                branch = gr.Button("Branch", elem_id="branch")

        def started(result):
            jid, text = result
            sid = queue.get(jid).out.stem if jid else gr.skip()
            return (jid if jid else gr.skip()), -1, text, sid

        go.click(lambda *v: started(cb.generate(*v)), [c[n] for n in FIELDS],
                 [job_id, seen, message, pick])  # fmt: skip
        stop.click(cb.stop, [job_id], [message])
        steer.click(cb.steer, [job_id, c["prompts"]], [message])
        resume.click(lambda s: started(cb.resume(s)), [pick], [job_id, seen, message, pick])
        branch.click(lambda *a: started(cb.branch(*a)), [pick, b_clip, b_seed, b_prompts, b_clips],
                     [job_id, seen, message, pick])  # fmt: skip

        def get_files(sid):
            paths, text = cb.downloads(sid)
            return paths, text

        download.click(get_files, [pick], [files, message])

        def tick(jid, version):
            out = cb.poll(jid, version)
            return [gr.skip() if v is None else v for v in out[:4]] + [out[4]]

        def list_sessions():
            rows, ids = cb.sessions_rows()
            return rows, gr.Dropdown(choices=ids)

        timer = gr.Timer(POLL_SECONDS)
        timer.tick(tick, [job_id, seen], [status, preview, plot, table, seen],
                   show_progress="hidden", concurrency_limit=None)  # fmt: skip
        slow = gr.Timer(2.0)
        slow.tick(list_sessions, None, [listing, pick], show_progress="hidden",
                  concurrency_limit=None)  # fmt: skip
        demo.load(list_sessions, None, [listing, pick])
    return demo


def _optional(value: Any, label: str, **kw: Any):
    """A number that may stay blank (the default): a textbox, since a blank gr.Number
    shows and sends 0."""
    import gradio as gr

    return gr.Textbox("" if value is None else str(value), label=label, placeholder="default",
                      **kw)  # fmt: skip


def serve(host: str = "127.0.0.1", port: int = 7860, model: str | None = None,
          sessions: Path = Path("svi-sessions"), max_jobs: int = 1, block: bool = True,
          defaults: Form | None = None):  # fmt: skip
    """Start the app; with ``block=False`` return ``(demo, queue)`` at once (tests)."""
    _check_serve(host, port, model, Path(sessions), max_jobs)
    if host not in LOCAL_HOSTS:
        log.warning("svi ui listens on %s: anyone who can reach this address can generate "
                    "videos and read the sessions folder", host)  # fmt: skip
    store = Sessions(Path(sessions))
    store.root.mkdir(parents=True, exist_ok=True)
    queue = JobQueue(max_jobs)
    form = replace(defaults or Form(), model=model or (defaults.model if defaults else ""))
    demo = build_app(queue, store, form)
    demo.queue(default_concurrency_limit=4)

    def launch() -> None:
        demo.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                    allowed_paths=[str(store.root.resolve())], prevent_thread_lock=True,
                    css=CSS, quiet=not block, footer_links=[])  # fmt: skip

    if not block:
        launch()
        return demo, queue
    stop: Interrupted | None = None
    try:
        launch()  # a signal that lands while the server starts stops it as any other
        while True:  # until Ctrl-C / SIGTERM (svi.interrupts) or KeyboardInterrupt
            time.sleep(3600)
    except (KeyboardInterrupt, Interrupted) as exc:
        log.warning("svi ui: stopping; running generations are finalised as stopped")
        stop = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
    finally:
        queue.close()  # stops every job: each finalises its mp4 and manifest
        demo.close()
    # a stopped server exits as any stopped svi command: 130 (SIGINT) / 143 (SIGTERM)
    raise stop.with_message("svi ui stopped; every session was finalised")


MAX_JOBS = 64  # one worker thread each, all in one process's memory


def _check_serve(host: str, port: int, model: str | None, sessions: Path, max_jobs: int) -> None:
    """Every option of ``svi ui`` checked before a folder, a thread or a socket exists:
    the port free on the host, the model resolvable (no weights loaded)."""
    import errno
    import socket

    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise SviError(f"--port must be in 1..65535, got {port!r}")
    if not 1 <= max_jobs <= MAX_JOBS:
        raise SviError(f"--max-jobs must be in 1..{MAX_JOBS}, got {max_jobs}")
    if sessions.exists() and not sessions.is_dir():
        raise SviError(f"--sessions {sessions} is a file, not a folder")
    if model:
        from svi.models.bundle import model_dir

        model_dir(model)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise SviError(f"--host {host}: no such address ({exc})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SviError(f"--port {port} is in use on {host} (another svi ui?); pick "
                               "another --port") from None  # fmt: skip
            raise SviError(f"cannot listen on --host {host} --port {port}: "
                           f"{exc.strerror or exc}") from None  # fmt: skip
