"""``svi ui``: a local web app over the same library calls as the CLI.

One concept per module: :mod:`~svi.ui.forms` (page values -> a
:class:`~svi.request.GenerateRequest`), :mod:`~svi.ui.sessions` (the sessions folder),
:mod:`~svi.ui.monitor` (drift-monitor rows and plot), :mod:`~svi.ui.jobs` (the job queue
and its worker threads) and :mod:`~svi.ui.app` (the Gradio page and its callbacks).
Gradio is imported by :mod:`~svi.ui.app` alone.
"""

from __future__ import annotations

from svi.ui.forms import Form
from svi.ui.jobs import Job, JobQueue
from svi.ui.sessions import Sessions

__all__ = ["Form", "Job", "JobQueue", "Sessions"]
