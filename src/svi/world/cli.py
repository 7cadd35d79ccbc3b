"""``svi world``: render episodes, datasets and contact sheets of the procedural world."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from svi.errors import SviError
from svi.world.config import KINDS, WorldConfig
from svi.world.files import contact_sheet, seconds_to_frames, write_dataset, write_episode
from svi.world.render import render_episode
from svi.world.splits import SPLITS

log = logging.getLogger(__name__)

app = typer.Typer(
    help="The procedural video world: episodes with exact ground truth, and datasets.",
    no_args_is_help=True,
    add_completion=False,
)

KIND_HELP = f"World kind: {', '.join(KINDS)}."


@app.command()
def render(
    kind: str = typer.Option(..., "--kind", help=KIND_HELP),
    seed: int = typer.Option(0, "--seed", help="Episode seed (>= 0)."),
    seconds: float = typer.Option(2.0, "--seconds", help="Length in seconds."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    size: int = typer.Option(32, "--size", help="Frame size in pixels (16..128)."),
    fps: int = typer.Option(8, "--fps", help="Frames per second."),
    clip_frames: int = typer.Option(8, "--clip-frames", help="Frames per clip (prompt/event)."),
) -> None:
    """Render one episode: video.mp4, prompts.txt, truth.npz/json (+ audio.wav or pose.mp4)."""
    config = WorldConfig(size=size, fps=fps, clip_frames=clip_frames)
    episode = render_episode(kind, seed, seconds_to_frames(seconds, fps), config)
    paths = write_episode(episode, out)
    for role, path in paths.items():
        typer.echo(f"{role:<10} {path}")


@app.command()
def dataset(
    out: Path = typer.Option(..., "--out", help="Dataset root folder."),
    videos: int = typer.Option(..., "--videos", help="Number of videos."),
    kind: str = typer.Option(..., "--kind", help=KIND_HELP),
    seconds: float = typer.Option(4.0, "--seconds", help="Length of each video in seconds."),
    split: str = typer.Option("train", "--split", help=f"Seed split: {', '.join(SPLITS)}."),
    size: int = typer.Option(32, "--size", help="Frame size in pixels (16..128)."),
    fps: int = typer.Option(8, "--fps", help="Frames per second."),
    clip_frames: int = typer.Option(8, "--clip-frames", help="Frames per clip (prompt/event)."),
    start: int = typer.Option(0, "--start", help="First seed to consider."),
) -> None:
    """Write OUT/KIND/KIND.csv and its videos (+ per-video wav, pose, truth files)."""
    config = WorldConfig(size=size, fps=fps, clip_frames=clip_frames)
    csv_path = write_dataset(out, kind, videos, seconds, split, config, start)
    typer.echo(str(csv_path))


@app.command("contact-sheet")
def contact_sheet_command(
    kind: str = typer.Option(..., "--kind", help=KIND_HELP),
    seed: int = typer.Option(0, "--seed", help="Episode seed (>= 0)."),
    out: Path = typer.Option(..., "--out", help="Output PNG file."),
    seconds: float = typer.Option(4.0, "--seconds", help="Length in seconds."),
    size: int = typer.Option(32, "--size", help="Frame size in pixels (16..128)."),
    fps: int = typer.Option(8, "--fps", help="Frames per second."),
    columns: int = typer.Option(8, "--columns", help="Frames per row."),
) -> None:
    """A PNG grid of frames of one episode (with its pose frames for dancing)."""
    if out.is_dir() or out.suffix.lower() != ".png":
        raise SviError(f"--out {out} must be a .png file name")
    if columns < 1:
        raise SviError(f"--columns must be >= 1, got {columns}")
    config = WorldConfig(size=size, fps=fps)
    episode = render_episode(kind, seed, seconds_to_frames(seconds, fps), config)
    typer.echo(str(contact_sheet(episode, out, columns=columns)))
