"""What a video's container says (frame size, duration, frame rate) before any frame is decoded, and the caps.

Opening a clip with OpenCV already decodes frames (FFmpeg's stream analysis does, to guess the
decoder's delay): on a 752 KB H.264 clip of 16000x16000 frames that alone is ~600 MB. So the header
is read by FFmpeg's command-line tool (imageio-ffmpeg's bundled binary) with ``-skip_frame all``,
which decodes nothing: ~30 MB and ~10 ms on that clip. Its stream lines are parsed; a file it cannot
describe is left to OpenCV, whose own header facts are checked against the same caps (``check_caps``)
before the first frame is grabbed.
"""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("bigfive.data")

PROBE_TIMEOUT_S = 30.0  # the probe reads headers only; a hang must not hold the caller
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
# "1920x1080" in a "Video:" line, not "0x31637661" (a FourCC in hex)
_SIZE = re.compile(r"(?<![\w/])([1-9]\d*)x([1-9]\d*)(?!\w)")
_RATE = re.compile(r"([\d.]+)(k?) (?:fps|tbr)")


@dataclass(frozen=True)
class Header:
    width: int  # the largest video stream's, when a file has several
    height: int
    duration_s: float | None  # None when the container does not say
    fps: float | None


def read_header(path: str | Path) -> Header | None:
    """The container's video facts, decoding nothing; None when FFmpeg cannot describe the file."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as err:  # no bundled FFmpeg: OpenCV's header check still applies
        log.debug("no FFmpeg binary for the header probe (%s)", err)
        return None
    cmd = [exe, "-hide_banner", "-nostdin", "-threads", "1", "-skip_frame", "all", "-i", str(path)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.debug("header probe of %s failed (%s)", path, err)
        return None
    return parse_header(done.stderr)


def parse_header(text: str) -> Header | None:
    """:class:`Header` from ``ffmpeg -i``'s description of its input (None without a video stream)."""
    video = [line for line in text.splitlines() if "Stream #" in line and "Video:" in line]
    sizes = [tuple(map(int, m.groups())) for line in video if (m := _SIZE.search(line.split("Video:", 1)[1]))]
    if not sizes:
        return None
    width, height = max(sizes, key=lambda s: s[0] * s[1])
    d = _DURATION.search(text)
    duration = int(d[1]) * 3600 + int(d[2]) * 60 + float(d[3]) if d else None
    r = _RATE.search(video[0])
    fps = float(r[1]) * (1000 if r[2] else 1) if r else None
    return Header(width, height, duration, fps)


def check_caps(cfg: Any, *, width: int, height: int, duration_s: float | None,
               n_frames: int | None) -> str | None:
    """The first cap of ``cfg`` (the ``preprocess`` section) that the clip is over, as one line; None if none."""
    pixels = width * height
    if pixels > cfg.max_frame_pixels:
        return (f"frames of {width}x{height} ({pixels:,} pixels) are over the cap of {cfg.max_frame_pixels:,} "
                "pixels (preprocess.max_frame_pixels)")
    if duration_s is not None and duration_s > cfg.max_duration_s:
        return f"{duration_s:.1f} s long, over the cap of {cfg.max_duration_s:g} s (preprocess.max_duration_s)"
    if n_frames is not None and n_frames * pixels > cfg.max_decode_pixels:
        return (f"{n_frames} frames of {width}x{height} are {n_frames * pixels:,} pixels to decode, over the cap of "
                f"{cfg.max_decode_pixels:,} (preprocess.max_decode_pixels)")
    return None


def check_header(path: str | Path, cfg: Any) -> Header | None:
    """Refuse (:class:`~bigfive.data.video.VideoError`) a clip whose container is over a cap; its header else."""
    from bigfive.data.video import VideoError

    head = read_header(path)
    if head is None:
        return None
    frames = round(head.duration_s * head.fps) if head.duration_s and head.fps else None
    over = check_caps(cfg, width=head.width, height=head.height, duration_s=head.duration_s, n_frames=frames)
    if over:
        raise VideoError(path, over)
    return head
