"""The embedded sample generator: layout, labels, determinism, encryption, real faces, label model."""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from bigfive import ALL_LABELS, TRAITS
from bigfive.config import ConfigError, SampleConfig
from bigfive.config.base import from_dict
from bigfive.data import sample as S
from bigfive.data import sample_plan as P
from bigfive.data import sample_render as R
from bigfive.data.faces_source import CARPHONE_BOXES, carphone_path, load_face_sources, read_video_rgb

PASSWORD = "s3cret"
TINY = SampleConfig(n_train=6, n_val=3, n_test=3, seconds=1.0, fps=15, seed=3)
CLIP_NAME = re.compile(r"^[A-Za-z0-9_-]{11}\.\d{3}\.mp4$")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sample")
    meta = S.generate(TINY, out, password=PASSWORD, progress=False)
    return out, meta


@pytest.fixture(scope="module")
def mtcnn():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


def _nested(out: Path, split: str, password: str | None = None) -> dict[str, bytes]:
    """{clip name: mp4 bytes} of one split, read through both zip levels."""
    pwd = password.encode() if password else None
    clips = {}
    with zipfile.ZipFile(out / S.ARCHIVES[split]) as outer:
        for name in outer.namelist():
            assert re.fullmatch(rf"{S.NESTED_PREFIX[split]}\d\d\.zip", name), name
            with zipfile.ZipFile(io.BytesIO(outer.read(name, pwd=pwd))) as inner:
                for clip in inner.namelist():
                    clips[clip] = inner.read(clip)
    return clips


def _decode(data: bytes, tmp: Path) -> list[np.ndarray]:
    path = tmp / "clip.mp4"
    path.write_bytes(data)
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def _load_annotations(path: Path) -> dict:
    with path.open("rb") as f:
        return pickle.load(f, encoding="latin1")


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"global {module}.{name} in an annotation pickle")


def test_download_layout_and_names(tiny: tuple[Path, dict]) -> None:
    out, meta = tiny
    expected = {"train-1.zip", "val-1.zip", "test-1e.zip", "annotation_training.pkl", "annotation_validation.pkl",
                "annotation_test.pkl", "eth_gender_annotations_dev.csv", "eth_gender_annotations_test.csv",
                "sample_metadata.json", "sample_complete.json"}
    assert {p.name for p in out.iterdir()} == expected  # no temp files left behind
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []  # nor beside it
    done = json.loads((out / S.SAMPLE_COMPLETE).read_text())  # written last: every file and its size
    assert done["files"] == {p.name: p.stat().st_size for p in out.iterdir() if p.name != S.SAMPLE_COMPLETE}
    counts = {"train": 6, "val": 3, "test": 3}
    for split, ann in S.ANNOTATIONS.items():
        clips = _nested(out, split, PASSWORD)
        assert len(clips) == counts[split]
        assert all(CLIP_NAME.match(name) for name in clips), sorted(clips)
        assert set(clips) == set(_load_annotations(out / ann)["openness"])
    assert meta["counts"]["clips"] == counts
    assert json.loads((out / "sample_metadata.json").read_text())["noise_floor_mean_accuracy"] == pytest.approx(
        meta["noise_floor_mean_accuracy"])


def test_nested_zips_hold_80_clips_last_partial(tmp_path: Path) -> None:
    members = [(f"AAAAAAAAAAA.{i:03d}.mp4", bytes([i % 256]) * 10) for i in range(170)]
    names = S.write_split_archive(tmp_path, "val", members, None, seed=0)
    assert names == ["validation80_01.zip", "validation80_02.zip", "validation80_03.zip"]
    with zipfile.ZipFile(tmp_path / "val-1.zip") as outer:
        sizes = [len(zipfile.ZipFile(io.BytesIO(outer.read(n))).namelist()) for n in names]
    assert sizes == [80, 80, 10]


def test_annotation_pickles_are_plain_builtins(tiny: tuple[Path, dict]) -> None:
    out, _ = tiny
    for ann in S.ANNOTATIONS.values():
        data = _load_annotations(out / ann)
        with (out / ann).open("rb") as f:
            assert _NoGlobals(f, encoding="latin1").load() == data  # no class or numpy reference inside
        assert type(data) is dict and set(data) == set(ALL_LABELS)
        for trait, values in data.items():
            assert type(values) is dict
            for name, value in values.items():
                assert type(name) is str and type(value) is float, (trait, name, type(value))
                assert 0.0 <= value <= 1.0


def test_demographics_csv(tiny: tuple[Path, dict]) -> None:
    out, _ = tiny
    dev = (out / "eth_gender_annotations_dev.csv").read_text().splitlines()
    test = (out / "eth_gender_annotations_test.csv").read_text().splitlines()
    assert dev[0] == test[0] == "VideoName;YouTubeID;Ethnicity;Gender"
    assert len(dev) == 1 + 6 + 3 and len(test) == 1 + 3
    for line in dev[1:] + test[1:]:
        video, yid, eth, gender = line.split(";")
        assert video.startswith(yid + ".") and eth in {"1", "2", "3"} and gender in {"1", "2"}


def test_same_seed_same_labels_and_frames(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = tiny
    again = tmp_path / "again"
    S.generate(TINY, again, progress=False)
    for ann in S.ANNOTATIONS.values():
        assert (out / ann).read_bytes() == (again / ann).read_bytes()
    first = _nested(out, "train")
    second = _nested(again, "train")
    name = sorted(first)[0]
    assert np.array_equal(_decode(first[name], tmp_path)[0], _decode(second[name], tmp_path)[0])

    other = P.plan_clips(dataclasses.replace(TINY, seed=4))
    assert [P.noisy_labels(s) for s in other] != [P.noisy_labels(s) for s in P.plan_clips(TINY)]


def test_val_and_test_need_the_password(tiny: tuple[Path, dict]) -> None:
    import pyzipper

    out, _ = tiny
    for split in ("val", "test"):
        with zipfile.ZipFile(out / S.ARCHIVES[split]) as zf:
            name = zf.namelist()[0]
            with pytest.raises(RuntimeError, match="encrypted|password"):
                zf.read(name)
            with pytest.raises(RuntimeError, match="password"):
                zf.read(name, pwd=b"wrong")
            plain = zf.read(name, pwd=PASSWORD.encode())
        with pyzipper.AESZipFile(out / S.ARCHIVES[split]) as zf:  # what a ChaLearn reader may use
            zf.setpassword(PASSWORD.encode())
            assert zf.read(name) == plain
        assert zipfile.ZipFile(io.BytesIO(plain)).testzip() is None
    with zipfile.ZipFile(out / "train-1.zip") as zf:  # like ChaLearn, training data is not encrypted
        assert all(not info.flag_bits & 0x1 for info in zf.infolist())


def test_mtcnn_finds_a_face_in_sampled_frames(tiny: tuple[Path, dict], mtcnn, tmp_path: Path) -> None:
    out, _ = tiny
    clips = [*_nested(out, "train").values()][:2] + [*_nested(out, "test", PASSWORD).values()][:1]
    found = total = 0
    for data in clips:
        frames = _decode(data, tmp_path)
        assert len(frames) == P.n_frames(TINY) and frames[0].shape == (TINY.height, TINY.width, 3)
        picked = [frames[c] for c in P.segment_centers(len(frames), TINY.segments)]
        boxes, _ = mtcnn.detect(picked)
        for b in boxes:
            total += 1
            if b is not None:
                found += 1
                h = float(b[0][3] - b[0][1])
                assert 35 <= h <= 90, f"face box {h:.0f} px tall"
    assert found >= 0.9 * total, f"MTCNN found a face in {found}/{total} sampled frames"


def _spec(**changes) -> P.ClipSpec:
    base = P.plan_clips(dataclasses.replace(TINY, seconds=3.0))[0]
    return dataclasses.replace(base, **changes)


def _shifts(frames: np.ndarray) -> np.ndarray:
    """Frame-to-frame (dx, dy) of the picture by phase correlation, px."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float64) for f in frames]
    return np.array([cv2.phaseCorrelate(a, b)[0] for a, b in zip(grey[:-1], grey[1:])])


def test_extraversion_is_sway_speed_at_fixed_amplitude() -> None:
    cfg = dataclasses.replace(TINY, seconds=3.0)
    labels = [P.clean_labels(_spec(extraversion=u))["extraversion"] for u in (0.0, 0.3, 0.7, 1.0)]
    assert labels == sorted(labels) and labels[0] == pytest.approx(P.LABEL_LOW)
    speeds = []
    for u in (0.0, 1.0):
        spec = _spec(extraversion=u, neuroticism=0.0, nod_slots=(), flash_slots=())
        dx = np.abs(_shifts(R.render_frames(spec, cfg))[:, 0])
        speeds.append(float(np.median(dx)))
        expected = spec.face_height * (R.SPEED_RANGE[0] + u * (R.SPEED_RANGE[1] - R.SPEED_RANGE[0]))
        # phase correlation sees the face and the (static) background: the peak follows the face
        assert speeds[-1] == pytest.approx(expected, rel=0.35, abs=0.3)
    assert speeds[1] > 3 * speeds[0]


def test_neuroticism_is_an_alternating_tremor() -> None:
    cfg = dataclasses.replace(TINY, seconds=3.0)
    dys = []
    for u in (0.0, 1.0):
        spec = _spec(extraversion=0.0, neuroticism=u, nod_slots=(), flash_slots=())
        dys.append(_shifts(R.render_frames(spec, cfg))[:, 1])
    assert np.median(np.abs(dys[1])) > np.median(np.abs(dys[0])) + 1.0
    signs = np.sign(dys[1][np.abs(dys[1]) > 0.5])
    assert np.all(signs[1:] == -signs[:-1])  # direction flips every frame: no single frame shows it


def test_flashes_span_the_flow_pair_and_agreeableness_counts_matches() -> None:
    cfg = dataclasses.replace(TINY, seconds=3.0)
    spec = _spec(nod_slots=(1, 4, 6), flash_slots=(1, 2, 6))
    assert spec.matches == 2
    assert P.clean_labels(spec)["agreeableness"] == pytest.approx(P.LABEL_LOW + P.LABEL_SPAN * 2 / 3)
    frames = R.render_frames(spec, cfg).astype(np.float64)
    brightness = frames.mean(axis=(1, 2, 3))
    centers = P.segment_centers(len(frames), cfg.segments)
    lit = [centers[k] for k in spec.flash_slots]
    dark = [centers[k] for k in range(cfg.segments) if k not in spec.flash_slots]
    assert min(brightness[lit]) > max(brightness[dark]) + 10
    for c in lit:  # same brightness on both frames of the pair (c, c+1): nothing for the flow to see
        assert abs(brightness[c + 1] - brightness[c]) < 0.1 * (brightness[c] - brightness[dark].mean())


def test_noise_floor_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    for mu in (0.5, 0.98):
        e = rng.normal(0, 0.05, size=400_000)
        mc = np.abs(np.clip(mu + e, 0, 1) - mu).mean()
        assert P.expected_abs_error(mu, 0.05) == pytest.approx(mc, rel=0.01)
    assert P.expected_abs_error(0.5, 0.03) == pytest.approx(0.03 * np.sqrt(2 / np.pi), rel=1e-4)


def test_metadata_noise_floor_and_baseline(tiny: tuple[Path, dict]) -> None:
    _, meta = tiny
    floor = meta["noise_floor"]
    assert set(floor) == set(ALL_LABELS)
    assert meta["noise_floor_mean_accuracy"] == pytest.approx(np.mean([floor[t] for t in TRAITS]))
    assert 0.97 < meta["noise_floor_mean_accuracy"] < 0.99  # sigma 0.03 -> 1 - 0.03 * sqrt(2 / pi)
    assert meta["train_mean_baseline"]["test"]["mean"] < meta["noise_floor_mean_accuracy"]


def test_subjects_have_several_clips_and_cross_splits() -> None:
    specs = P.plan_clips(SampleConfig())
    yids = {s.youtube_id for s in specs}
    assert len(yids) < len(specs) / 2  # several clips per subject
    assert any(y.startswith("-") for y in yids)
    by_split = {sp: {s.youtube_id for s in specs if s.split == sp} for sp in ("train", "val", "test")}
    assert by_split["train"] & by_split["test"]  # so a subject-disjoint re-split changes something
    assert {int(s.video_id.rsplit(".", 1)[1]) for s in specs} <= set(range(6))


def test_config_rejects_too_few_segments() -> None:
    with pytest.raises(ConfigError, match=r"sample\.segments"):
        from_dict(SampleConfig, {"segments": 4}, "sample")


def test_cli_writes_sample_and_needs_the_password_variable(tmp_path: Path, monkeypatch) -> None:
    from bigfive.cli import main

    params = tmp_path / "params.yaml"
    params.write_text("sample:\n  seconds: 1.0\n  n_train: 2\n  n_val: 1\n  n_test: 1\n")
    out = tmp_path / "dl"
    monkeypatch.delenv("BIGFIVE_TEST_PW", raising=False)
    args = ["sample", "--params", str(params), "--out", str(out), "--n-train", "3", "--no-progress"]
    assert main([*args, "--password-env", "BIGFIVE_TEST_PW"]) == 1  # unset variable: a clear error
    monkeypatch.setenv("BIGFIVE_TEST_PW", PASSWORD)
    assert main([*args, "--password-env", "BIGFIVE_TEST_PW", "--workers", "2"]) == 0
    assert len(_nested(out, "train")) == 3 and len(_nested(out, "val", PASSWORD)) == 1


def test_real_carphone_footage_is_found_and_read(mtcnn) -> None:
    path = carphone_path()
    assert path.name == "carphone_pristine.mp4" and path.is_file()
    frames = read_video_rgb(path)
    assert len(frames) == 120 and frames[0].shape == (144, 176, 3)
    sources = load_face_sources()
    assert [s.name for s in sources][0] == "astronaut" and len(sources) == 1 + len(CARPHONE_BOXES)
    boxes, _ = mtcnn.detect([s.image for s in sources[1:4]])  # the recorded boxes are real faces
    for source, found in zip(sources[1:4], boxes):
        assert found is not None
        a, b = np.asarray(found[0], dtype=float), np.asarray(source.box, dtype=float)
        inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
        union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
        assert inter / union > 0.7


# ---------------------------------------------------------------- sample.cross_time (conscientiousness)

# sha256 of the tiny sample's annotation pickles, metadata and rendered frames, recorded with the generator
# before sample.cross_time existed (commit 0c3428b): with the option off the sample must not change at all.
# (The frames are hashed before encoding, so only a different OpenCV warp could move this digest.)
TINY_DIGEST_BEFORE_CROSS_TIME = "072bcc25cda1db33a4c03152ad26091e178921d8e17a3fcaba154f4a3bc9a28a"
CROSS = dataclasses.replace(TINY, seconds=3.0, cross_time=True)


def test_cross_time_off_leaves_the_sample_byte_identical(tiny: tuple[Path, dict]) -> None:
    import hashlib

    out, meta = tiny
    digest = hashlib.sha256()
    for name in (*S.ANNOTATIONS.values(), S.METADATA):
        digest.update((out / name).read_bytes())
    for spec in P.plan_clips(TINY):
        digest.update(R.render_frames(spec, TINY).tobytes())
    assert digest.hexdigest() == TINY_DIGEST_BEFORE_CROSS_TIME
    assert "cross_time" not in meta["config"] and "conscientiousness_answered" not in meta["counts"]


def test_cross_time_changes_only_its_own_fields_and_conscientiousness() -> None:
    cfg = dataclasses.replace(SampleConfig(), cross_time=True)
    off, on = P.plan_clips(SampleConfig()), P.plan_clips(cfg)
    for a, b in zip(off, on):
        assert dataclasses.replace(b, cue_slots=(), motion_slots=()) == a  # its own seed stream
        events = [*b.cue_slots, *b.motion_slots]
        assert len(events) == len(set(events)) == 2 * P.CROSS_PAIRS and min(events) >= 0 and max(events) < 8
        assert {abs(m - c) for c, m in zip(b.cue_slots, b.motion_slots)} <= set(P.CROSS_LAGS)
        labels_off, labels_on = P.clean_labels(a), P.clean_labels(b)
        assert labels_on["conscientiousness"] == pytest.approx(P.LABEL_LOW + P.LABEL_SPAN * b.answered / 2)
        assert all(labels_on[t] == labels_off[t] for t in ("openness", "extraversion", "agreeableness",
                                                           "neuroticism"))
    share = np.bincount([s.answered for s in on], minlength=3) / len(on)  # binomial(2, 1/2): 1/4, 1/2, 1/4
    assert np.allclose(share, [0.25, 0.5, 0.25], atol=0.06)
    lags = np.array([m - c for s in on for c, m in zip(s.cue_slots, s.motion_slots)])
    assert {int(v) for v in lags} == {-3, -2, -1, 1, 2, 3}


def _divergence(a: np.ndarray, b: np.ndarray, center: tuple[float, float], side: float) -> float:
    """Mean radial DIS flow per unit radius in a square around ``center`` from frame a to b (RGB)."""
    x0, y0 = int(center[0] - side / 2), int(center[1] - side / 2)
    crops = [cv2.cvtColor(f[y0:y0 + int(side), x0:x0 + int(side)], cv2.COLOR_RGB2GRAY) for f in (a, b)]
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST).calc(crops[0], crops[1], None)
    yy, xx = np.mgrid[0:flow.shape[0], 0:flow.shape[1]].astype(np.float32) - (flow.shape[0] - 1) / 2
    return float(((flow[..., 0] * xx + flow[..., 1] * yy) / np.maximum(xx * xx + yy * yy, 1.0)).mean())


def test_cross_time_zoom_shows_in_flow_not_in_the_sampled_frame() -> None:
    spec = dataclasses.replace(P.plan_clips(CROSS)[0], extraversion=0.0, neuroticism=0.0, nod_slots=(),
                               flash_slots=(), cue_slots=(0, 1), motion_slots=(3, 6))
    still = dataclasses.replace(spec, motion_slots=(7, 7))  # zooms in and out at once: no zoom before step 7
    frames, ref = R.render_frames(spec, CROSS), R.render_frames(still, CROSS)
    centers = P.segment_centers(len(frames), CROSS.segments)
    xs, ys = R.face_track(spec, CROSS)
    for kind, step in enumerate(spec.motion_slots):
        c = centers[step]
        assert np.array_equal(frames[c], ref[c])  # the sampled frame is at the neutral scale
        for start in (c - 1, c, c + 1):  # a sampler one frame off sees the same direction
            div = _divergence(frames[start], frames[start + 1], (xs[c], ys[c]), 1.5 * spec.face_height)
            assert (div > 0.03) if kind == 0 else (div < -0.03), (kind, start, div)
        assert abs(_divergence(ref[c], ref[c + 1], (xs[c], ys[c]), 1.5 * spec.face_height)) < 0.01


def test_cross_time_cues_sit_on_the_face_equally_in_both_frames_of_the_pair() -> None:
    spec = dataclasses.replace(P.plan_clips(CROSS)[0], nod_slots=(), flash_slots=(), cue_slots=(2, 5),
                               motion_slots=(0, 7))
    plain = dataclasses.replace(spec, cue_slots=(7, 7), motion_slots=(0, 7))  # no cue before step 7
    frames = R.render_frames(spec, CROSS).astype(np.float64)
    ref = R.render_frames(plain, CROSS).astype(np.float64)
    centers = P.segment_centers(len(frames), CROSS.segments)
    xs, ys = R.face_track(spec, CROSS)
    fh = spec.face_height
    for kind, step in enumerate(spec.cue_slots):
        c = centers[step]
        (dx, dy), *_ = R.CUE_SHAPES[kind]
        at = [(int(round(xs[i] + dx * fh)), int(round(ys[i] + dy * fh))) for i in (c, c + 1)]  # moves with the face
        change = [(frames[i] - ref[i])[y - 1:y + 2, x - 3:x + 4].mean() for i, (x, y) in zip((c, c + 1), at)]
        assert (change[0] < -40) if kind == 0 else (change[0] > 25), (kind, change)  # dark band / bright bar
        assert change[1] == pytest.approx(change[0], rel=0.15)  # no appearance change inside the flow pair
        assert np.array_equal(frames[c + 6], ref[c + 6])  # gone three frames after the pair


def test_mtcnn_finds_the_face_through_cues_and_zooms(mtcnn) -> None:
    specs = P.plan_clips(CROSS)[:4]
    found = total = 0
    for spec in specs:
        frames = R.render_frames(spec, CROSS)
        centers = P.segment_centers(len(frames), CROSS.segments)
        picked = [frames[centers[k] + o] for k in (*spec.cue_slots, *spec.motion_slots) for o in (-1, 0, 1, 2)]
        for boxes in mtcnn.detect(picked)[0]:
            total += 1
            found += boxes is not None and len(boxes) == 1
    assert found >= 0.95 * total, f"MTCNN found exactly one face in {found}/{total} event frames"


def test_cross_time_metadata_and_config(tmp_path: Path) -> None:
    cfg = dataclasses.replace(CROSS, n_train=4, n_val=2, n_test=2)
    specs = P.plan_clips(cfg)
    meta = S.build_metadata(cfg, specs, {})
    assert meta["config"]["cross_time"] is True
    assert "cross-time" in meta["label_model"]["conscientiousness"]
    assert sum(meta["counts"]["conscientiousness_answered"].values()) == len(specs)
    floor = [P.expected_abs_error(P.clean_labels(s)["conscientiousness"], cfg.label_noise) for s in specs]
    assert meta["noise_floor"]["conscientiousness"] == pytest.approx(1 - np.mean(floor))
    with pytest.raises(ConfigError, match=r"sample\.cross_time"):  # 15 frames cannot hold 8 spaced events
        from_dict(SampleConfig, {"cross_time": True, "seconds": 1.0}, "sample")
