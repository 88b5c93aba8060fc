"""Clips for the hostile-input tests, made with imageio-ffmpeg's FFmpeg (H.264, as downloads are): cheap to
make, expensive to accept. Tests import it as ``hostile_clips`` (pytest puts tests/ on ``sys.path``);
benchmarks/memory.py inserts tests/ itself."""

from __future__ import annotations

import subprocess
from pathlib import Path


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def flat_clip(path: Path, width: int, height: int, *, fps: float = 5, seconds: float = 0.6) -> Path:
    """A grey H.264 clip: a few hundred KB even at 16000x16000 (what made main decode 12 GB)."""
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=gray:s={width}x{height}:r={fps}:"
                    f"d={seconds}", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-threads", "1",
                    str(path)], check=True, capture_output=True)
    return path


def long_clip(path: Path, seconds: int, *, width: int = 1920, height: int = 1080, fps: int = 60) -> Path:
    """One second of moving test pattern, repeated by stream copy to ``seconds`` (encoded once: quick to make,
    every frame still decoded by a reader)."""
    one = path.with_name(path.stem + ".one.mp4")
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={width}x{height}:r={fps}:d=1",
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "45", str(one)], check=True, capture_output=True)
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-stream_loop", str(seconds - 1), "-i", str(one), "-c", "copy",
                    str(path)], check=True, capture_output=True)
    one.unlink()
    return path
