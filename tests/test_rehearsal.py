"""Ready for the real data: the sample's chalearn preset, the recommended configuration and its documented
command, and the rehearsal's composition, measurement and projection (tiny sizes; no timing asserted)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import ROOT
from test_sample import _decode

from bigfive.config import ConfigError, SampleConfig, load_params, to_dict
from bigfive.config.base import flatten, load_yaml
from bigfive.data import sample as S
from bigfive.data import sample_plan as P
from bigfive.data import sample_render as R

sys.path.insert(0, str(ROOT / "benchmarks"))
rehearsal = importlib.import_module("rehearsal")
rehearsal_report = importlib.import_module("rehearsal_report")


# ------------------------------------------------------------------ the chalearn preset


def test_chalearn_preset_has_chalearns_geometry_and_one_clip_of_each_other_size():
    cfg = S.sample_config(SampleConfig(), "chalearn", n_train=32, n_val=4, n_test=4)
    assert (cfg.seconds, cfg.fps, cfg.width, cfg.height, cfg.codec) == (15.0, 30, 1280, 720, "h264")
    specs = S.plan_clips(cfg)
    sizes = [P.clip_size(s, cfg) for s in specs]
    assert sizes.count((1280, 720)) == 37
    for other in [(640, 360), (854, 480), (720, 1280)]:
        assert sizes.count(other) == 1, other
    for spec, (w, h) in zip(specs, sizes):  # the face fits the frame, the portrait one too
        assert spec.face_height < 0.7 * min(w, h)
        assert 0 < spec.center[0] < w and 0 < spec.center[1] < h


def test_other_sizes_change_only_their_own_clips():
    base = SampleConfig(n_train=10, n_val=3, n_test=3, seconds=1.0)
    plain, odd = S.plan_clips(base), S.plan_clips(dataclasses.replace(base, other_sizes=[[96, 128]]))
    changed = [i for i, (a, b) in enumerate(zip(plain, odd)) if a != b]
    assert len(changed) == 1 and odd[changed[0]].size == (96, 128)
    a, b = plain[changed[0]], odd[changed[0]]
    # same subject, factors, events and label noise: only the geometry follows the frame size
    assert dataclasses.replace(b, size=None, center=a.center, face_height=a.face_height) == a


def test_sample_config_applies_preset_then_overrides_and_validates():
    cfg = S.sample_config(SampleConfig(), "chalearn", n_train=7, seed=None)
    assert cfg.n_train == 7 and cfg.seed == SampleConfig().seed and cfg.segments == 16
    with pytest.raises(ValueError, match="--preset nope: unknown preset"):
        S.sample_config(SampleConfig(), "nope")
    with pytest.raises(ConfigError, match=r"sample\.other_sizes\[0\].*even"):
        S.sample_config(SampleConfig(), None, other_sizes=[[97, 128]])


def test_h264_clips_of_every_size_decode_with_their_frames(tmp_path: Path):
    cfg = S.sample_config(SampleConfig(n_train=2, n_val=1, n_test=1, seconds=0.5, fps=16, width=128, height=96,
                                       segments=6, codec="h264", other_sizes=[[96, 128]]))
    seen = set()
    for spec in S.plan_clips(cfg):
        _, data = R.render_clip((spec, cfg, str(tmp_path)))
        frames = _decode(data, tmp_path)
        cap = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode().lower()
        cap.release()
        assert fourcc in ("avc1", "h264"), fourcc
        assert len(frames) == 8 and frames[0].shape[1::-1] == P.clip_size(spec, cfg)
        rendered = R.render_frames(spec, cfg)
        assert np.abs(rendered.astype(int) - np.stack(frames).astype(int)).mean() < 8  # lossy, not wrong
        seen.add(P.clip_size(spec, cfg))
    assert seen == {(128, 96), (96, 128)}


# ------------------------------------------------------------------ the recommended configuration


def _documented_flags() -> list[str]:
    text = (ROOT / "docs" / "real_data.md").read_text()
    block = re.search(r"<!-- chalearn-command.*?```bash\n(.*?)```", text, re.S)
    assert block, "docs/real_data.md lost its chalearn-command block"
    words = shlex.split(block.group(1).replace("\\\n", " "))
    assert words[:3] == ["dvc", "exp", "run"]
    return [words[i + 1] for i, w in enumerate(words) if w == "-S"]


def test_documented_dvc_command_applies_exactly_configs_chalearn(tmp_path: Path):
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` itself calls

    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    apply_overrides(params, _documented_flags())
    via_dvc = load_params(params)
    via_file = load_params(ROOT / "params.yaml", overrides=flatten(load_yaml(ROOT / "configs" / "chalearn.yaml")))
    assert via_dvc == via_file
    assert via_file.preprocess.frames == 16 and via_file.preprocess.crop_size == 112
    assert via_file.data.source == "chalearn" and via_file.model.static_backbone == "inception_resnet_v1"
    assert re.fullmatch(r"[0-9a-f]{64}", via_file.model.static_weights_sha256)


# ------------------------------------------------------------------ the rehearsal


def test_compose_keeps_everything_under_the_rehearsal_dir_and_checks_the_weights(tmp_path: Path):
    from bigfive.models import build_model
    from bigfive.models.static import file_sha256

    base = tmp_path / "reh"
    settings = tmp_path / "rehearsal.yaml"
    settings.write_text(yaml.safe_dump({"rehearsal": {"clips": 5, "held_out": 1, "dir": str(base)},
                                        "overrides": {"data.source": "sample", "train.epochs": 2,
                                                      "train.warmup_epochs": 0}}))
    data = rehearsal.compose(ROOT / "params.yaml", ROOT / "configs" / "chalearn.yaml", settings)
    params = rehearsal.params_from_dict(data)
    for path in (params.data.raw_dir, params.sample.downloads_dir, params.preprocess.faces_dir,
                 params.preprocess.flow_dir, params.preprocess.features_dir, params.train.models_dir,
                 params.evaluate.results_dir, params.model.static_weights, params.tracking.uri.split("///")[1]):
        assert Path(path).is_relative_to(base), path
    assert (params.sample.n_train, params.sample.n_val, params.sample.n_test) == (3, 1, 1)
    assert params.sample.width == 1280 and params.preprocess.frames == 16 and params.train.epochs == 2
    assert params.model.static_weights_sha256 == file_sha256(Path(params.model.static_weights))
    net = build_model(dataclasses.replace(params.model, fusion="static_only", freeze_until=None), 2, 2)
    assert net.static.backbone_name == "inception_resnet_v1"  # the hash check passed and the file loaded

    settings.write_text(yaml.safe_dump({"rehearsal": {"clips": 2, "held_out": 1, "dir": str(base)}}))
    with pytest.raises(ValueError, match="leaves no training clip"):
        rehearsal.compose(ROOT / "params.yaml", ROOT / "configs" / "chalearn.yaml", settings)


def test_measure_counts_cpu_and_memory_of_the_whole_process_tree():
    # the child starts a grandchild that burns 0.5 CPU-seconds and holds 200 MB, as pool workers do
    burn = ("import time, numpy as np; a = np.ones(200 * 2**20, np.uint8); "
            "t = time.process_time()\nwhile time.process_time() - t < 0.5: pass")
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}], check=True)"
    record = rehearsal.run_measured([sys.executable, "-c", child])
    assert record["returncode"] == 0
    assert record["cpu_s"] >= 0.5
    assert any(c["mb"] >= 200 for c in record["peak_rss_mb_children"]), record["peak_rss_mb_children"]


def _measure(folder: Path, name: str, wall: float, cpu: float, nbytes: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({
        "wall_s": wall, "cpu_s": cpu, "peak_rss_mb_main": 100.0, "cpu_count": 2, "load_average": [1.0, 1.0, 1.0],
        "peak_rss_mb_children": [{"name": "python", "mb": 700.0}, {"name": "python", "mb": 650.0}],
        "bytes": {"out": nbytes}}))


def test_report_subtracts_fixed_costs_and_projects_pooled_stages_over_the_cores(tmp_path: Path):
    base = tmp_path / "reh"
    (base).mkdir()
    params = load_params(ROOT / "params.yaml", overrides={
        "sample.n_train": 8, "sample.n_val": 1, "sample.n_test": 1, "preprocess.workers": 0,
        "preprocess.faces_dir": str(base / "faces"), "evaluate.results_dir": str(base / "results")})
    (base / "params.yaml").write_text(yaml.safe_dump(to_dict(params)))
    m = base / "measure"
    _measure(m, "probe_main", 1, 2.0)
    _measure(m, "probe_faces_worker", 1, 5.0)
    _measure(m, "probe_flow_worker", 1, 3.0)
    _measure(m, "generate", 100, 180.0, nbytes=10 * 400_000)
    _measure(m, "raw", 2, 3.0, nbytes=10 * 400_000)
    _measure(m, "faces", 20, 32.0, nbytes=10 * 1_000_000)  # fixed 2 + 2 x 5 = 12 -> 2 CPU-s per clip
    _measure(m, "flow", 5, 9.0, nbytes=10 * 400_000)       # fixed 2 + 2 x 3 = 8 -> 0.1 per clip
    _measure(m, "features", 4, 4.0, nbytes=10 * 2_000_000)  # fixed 2 -> 0.2 per clip, one core
    _measure(m, "train", 50, 90.0)
    _measure(m, "evaluate", 10, 15.0)
    # the per-step probe bounds a stage from below: flow's 0.15 beats its 0.1; faces' steps sum to 1.5 < 2.0
    (m / "parts.json").write_text(json.dumps({"clips": 2, "sizes": ["1280x720"] * 2, "cpu_s_per_clip": {
        "decode": 0.8, "detect": 0.5, "crops": 0.1, "save_npz": 0.1, "flow": 0.15}}))
    report = rehearsal_report.build({"dir": str(base), "full_clips": 10_000, "target_hours": 1.5})
    faces, features = report["stages"]["faces"], report["stages"]["features"]
    assert faces["fixed_cpu_s"] == 12.0 and faces["marginal_cpu_s_per_clip"] == 2.0
    assert faces["projected_hours_full"] == pytest.approx((12 + 10_000 * 2.0) / 2 / 3600, abs=1e-3)
    assert features["projected_hours_full"] == pytest.approx((2 + 10_000 * 0.2) / 3600, abs=1e-3)
    assert faces["peak_rss_mb_per_worker"] == 700.0 and faces["bytes_per_clip"] == 1_000_000
    pre = report["preprocessing"]
    assert report["stages"]["flow"]["marginal_cpu_s_per_clip"] == 0.15
    assert pre["cpu_s_per_clip"] == pytest.approx(0.1 + 2.0 + 0.15 + 0.2)
    assert pre["target_met"] is False  # ~2.9 h > 1.5 h
    assert report["largest_on_disk"] == "features" and report["disk_gb_full"]["features"] == 20.0
    text = rehearsal_report.markdown(report)
    assert "NOT met" in text and "| decode | detect | crops | save_npz | flow | sum |" in text
