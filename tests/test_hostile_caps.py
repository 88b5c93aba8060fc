"""Caps read from the container before decoding (issue 26, findings 1 and 2): a clip of huge frames or one that
is too long is refused in one line naming the file and the cap, by `bigfive predict`, by the Python API and by
the faces stage (where it is listed with its reason and never stops the batch). Memory is measured in
benchmarks/memory.py, not here."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import HANG_S, ROOT, clean_env
from hostile_clips import flat_clip, long_clip
from synth_clips import write_clip
from test_predict import make_checkpoint

from bigfive.config import Params, PreprocessConfig
from bigfive.data.container import check_header, parse_header
from bigfive.data.video import VideoError, read_frames

BIG = "preprocess.max_frame_pixels"
LONG = "preprocess.max_duration_s"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("caps")
    return {"big": flat_clip(d / "big.mp4", 4200, 4200, fps=2, seconds=1),  # just over 4096 x 4096
            "long": long_clip(d / "long.mp4", 61, width=64, height=64, fps=2),  # over 60 s
            "ok": write_clip(d / "ok.mp4", frames=12, width=160, height=120)}


def test_header_is_read_without_decoding_and_over_cap_clips_are_refused(clips):
    with pytest.raises(VideoError) as err:
        check_header(clips["big"], PreprocessConfig())
    assert str(err.value).startswith(f"{clips['big']}: frames of 4200x4200") and BIG in str(err.value)
    with pytest.raises(VideoError) as err:
        check_header(clips["long"], PreprocessConfig())
    assert "61.0 s long, over the cap of 60 s" in str(err.value) and LONG in str(err.value)
    assert check_header(clips["ok"], PreprocessConfig()).width == 160


def test_header_parser_ignores_fourcc_hex_and_takes_the_largest_stream():
    text = ("  Duration: 00:01:02.50, start: 0.0\n"
            "  Stream #0:0[0x1](und): Video: h264 (avc1 / 0x31637661), yuv420p, 640x360, 25 fps, 25 tbr\n"
            "  Stream #0:1[0x2](und): Video: mjpeg (Baseline), yuvj420p, 5000x4000, 90k tbr (attached pic)\n")
    head = parse_header(text)
    assert (head.width, head.height, head.duration_s, head.fps) == (5000, 4000, 62.5, 25.0)
    assert parse_header("Invalid data found when processing input") is None


def test_large_frames_are_shrunk_as_they_are_read(clips):
    frames, info, _ = read_frames(clips["big"], [0], max_pixels=400 * 400)
    assert (info.width, info.height) == (4200, 4200) and frames[0].shape == (400, 400, 3)
    small, _, _ = read_frames(clips["ok"], [0], max_pixels=400 * 400)
    assert small[0].shape == (120, 160, 3)  # under the cap: untouched


def test_predict_refuses_over_cap_clips_and_predicts_the_rest(clips, tmp_path):
    model = make_checkpoint(tmp_path / "model.pt")
    folder = tmp_path / "downloads"
    folder.mkdir()
    for name in ("big", "long", "ok"):
        shutil.copy(clips[name], folder / f"{name}.mp4")
    done = subprocess.run([sys.executable, "-m", "bigfive", "predict", str(folder), "--model", str(model),
                           "--no-progress", "--workers", "1"], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=HANG_S)
    lines = done.stderr.splitlines()
    big = [ln for ln in lines if ln.startswith(f"{folder / 'big.mp4'}: ")]
    long = [ln for ln in lines if ln.startswith(f"{folder / 'long.mp4'}: ")]
    assert len(big) == 1 and BIG in big[0], done.stderr
    assert len(long) == 1 and LONG in long[0], done.stderr
    assert "Traceback" not in done.stderr
    assert "ok.mp4" in done.stdout and "2 of 3 clip(s) failed" in done.stderr


def test_caps_come_from_params_yaml(clips, tmp_path):
    """predict reads the caps of the params it is given: a 160x120 clip over a 100x100 cap is refused."""
    from bigfive.inference.predict import predict_videos

    params = Params(preprocess=PreprocessConfig(max_frame_pixels=100 * 100))
    [pred] = predict_videos([clips["ok"]], make_checkpoint(tmp_path / "m.pt"), params=params, show_progress=False)
    assert pred.status == "error" and pred.error.startswith("frames of 160x120 (19,200 pixels) are over the cap")


def test_faces_stage_lists_a_refused_clip_with_its_reason_and_finishes_the_batch(clips, tmp_path):
    raw = tmp_path / "raw"
    rows = [("good", "train", clips["ok"]), ("huge", "train", clips["big"]), ("endless", "train", clips["long"])]
    for vid, split, src in rows:
        (raw / split).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, raw / split / f"{vid}.mp4")
    with (raw / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "split", "path"])
        w.writerows([(vid, split, f"{split}/{vid}.mp4") for vid, split, _ in rows])
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["raw_dir"] = str(raw)
    params["preprocess"].update(faces_dir=str(tmp_path / "faces"), workers=1, frames=4)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run([sys.executable, "-m", "bigfive", "faces", "--params", str(tmp_path / "params.yaml")],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=HANG_S)
    with (tmp_path / "faces" / "quality.csv").open(newline="") as f:
        quality = {r["video_id"]: r for r in csv.DictReader(f)}
    assert set(quality) == {"good", "huge", "endless"}, done.stderr
    assert quality["good"]["status"] in ("ok", "excluded")
    assert quality["huge"]["status"] == "failed" and BIG in quality["huge"]["reason"]
    assert quality["endless"]["status"] == "failed" and LONG in quality["endless"]["reason"]
    assert "Traceback" not in done.stderr
