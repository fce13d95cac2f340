"""Frames -> files: mp4 (H.264 through the ffmpeg that imageio-ffmpeg ships), gif, png, contact sheets.

Every frame written by awac-robot carries a caption bar (task, seed, step) and, once the
task is solved, a green border and "solved": a video has to say what it shows. Files are
written under a temporary name and renamed into place, so a killed render leaves no half
video behind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from awac_robot.gl import RenderError

VIDEO_SUFFIXES = (".mp4", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Videos play in real time at up to this rate; faster tasks (door: 100 Hz) keep every k-th frame.
MAX_FPS = 25
BAR = 22
BORDER = 4
SOLVED_RGB = (40, 200, 60)
FAILED_RGB = (220, 50, 40)


def frame_stride(control_period: float, max_fps: float = MAX_FPS) -> int:
    """Keep every k-th control step so the video plays in real time at no more than `max_fps`."""
    return max(1, math.ceil((1.0 / control_period) / max_fps - 1e-9))


def check_suffix(path: Path, allowed: Sequence[str], what: str) -> None:
    if path.suffix.lower() not in allowed:
        raise RenderError(f"{path}: a {what} must end in {' or '.join(allowed)}")


def label(frame: np.ndarray, caption: str, solved: bool | None = None) -> np.ndarray:
    """`frame` with a caption bar on top; `solved` True adds a green border and a "solved" badge, False "not solved"."""
    height, width = frame.shape[:2]
    canvas = Image.new("RGB", (width, height + BAR), (20, 20, 20))
    canvas.paste(Image.fromarray(np.ascontiguousarray(frame[..., :3])), (0, BAR))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13 if width >= 240 else 11)
    draw.text((5, 4), caption, fill=(235, 235, 235), font=font)
    if solved is not None:
        text, colour = ("solved", SOLVED_RGB) if solved else ("not solved", FAILED_RGB)
        if solved:
            draw.rectangle((0, BAR, width - 1, height + BAR - 1), outline=colour, width=BORDER)
        left, top, right, bottom = draw.textbbox((BORDER + 4, height + BAR - BORDER - 4), text, font=font, anchor="lb")
        draw.rectangle((left - 3, top - 3, right + 3, bottom + 3), fill=colour)
        draw.text((BORDER + 4, height + BAR - BORDER - 4), text, fill=(255, 255, 255), font=font, anchor="lb")
    return np.asarray(canvas)


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Tiles of equal size laid out row by row on a white background (short rows are left blank at the end)."""
    if not rows or not any(rows):
        raise RenderError("a contact sheet needs at least one frame")
    tile_h, tile_w = rows[0][0].shape[:2]
    columns = max(len(row) for row in rows)
    sheet = np.full(
        (len(rows) * (tile_h + gap) + gap, columns * (tile_w + gap) + gap, 3),
        255,
        dtype=np.uint8,
    )
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            y, x = gap + r * (tile_h + gap), gap + c * (tile_w + gap)
            sheet[y : y + tile_h, x : x + tile_w] = tile[..., :3]
    return sheet


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """mp4 or gif by suffix; every frame must have the same size (even sides for mp4)."""
    path = Path(path)
    check_suffix(path, VIDEO_SUFFIXES, "video")
    if not frames:
        raise RenderError(f"{path}: no frames to write")
    height, width = frames[0].shape[:2]
    tmp = _temporary(path)
    try:
        if path.suffix.lower() == ".mp4":
            if width % 2 or height % 2:
                raise RenderError(f"{path}: H.264 needs even frame sides, got {width}x{height}")
            writer = imageio_ffmpeg.write_frames(str(tmp), (width, height), fps=fps, macro_block_size=1, quality=7)
            writer.send(None)
            for frame in frames:
                writer.send(np.ascontiguousarray(frame[..., :3]))
            writer.close()
        else:
            iio.imwrite(tmp, np.stack(frames)[..., :3], extension=".gif", duration=1000.0 / fps, loop=0)
        os.replace(tmp, path)
    except OSError as exc:
        raise RenderError(f"cannot write {path} ({exc.strerror or exc}): choose another path") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_image(path: Path, image: np.ndarray) -> Path:
    path = Path(path)
    check_suffix(path, IMAGE_SUFFIXES, "picture")
    tmp = _temporary(path)
    try:
        iio.imwrite(tmp, image[..., :3], extension=path.suffix.lower())
        os.replace(tmp, path)
    except OSError as exc:
        raise RenderError(f"cannot write {path} ({exc.strerror or exc}): choose another path") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _temporary(path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RenderError(f"cannot create the folder of {path} ({exc.strerror or exc}): choose another path") from None
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
