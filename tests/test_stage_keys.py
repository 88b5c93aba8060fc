"""The persistent stages redo every clip when anything their outputs depend on changes (params or code),
and dvc.yaml lists exactly what they key on (real MTCNN and OpenCV on one tiny clip)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import HANG_S, clean_env
from synth_clips import write_clip

from bigfive import ALL_LABELS
from bigfive.config import params_from_dict, replace
from bigfive.preprocess.faces import run_faces_stage
from bigfive.preprocess.flow import run_flow_stage
from bigfive.preprocess.keys import FACES, FLOW, STAGES, stage_key

ROOT = Path(__file__).resolve().parents[1]
OLD = 1_000_000_000 * 10**9  # 2001-09-09 in ns: a rewrite gets the current time, however coarse the clock
VID = "a.001"


def test_dvc_yaml_lists_what_each_stage_keys_on():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, declared in STAGES.items():
        stage = stages[name]
        assert stage["params"] == list(declared.all_params()), name
        code = [d for d in stage["deps"] if isinstance(d, str) and d.startswith("src/")]
        assert code == list(declared.all_code()), name


def _project(root: Path) -> dict:
    raw = root / "raw"
    path = write_clip(raw / "train" / f"{VID}.mp4", frames=24)
    with (raw / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["video_id", "split", "path", *ALL_LABELS])
        w.writeheader()
        w.writerow({"video_id": VID, "split": "train", "path": str(path.relative_to(raw)),
                    **{name: "0.5" for name in ALL_LABELS}})
    return {"seed": 0, "data": {"raw_dir": str(raw)},
            "preprocess": {"device": "cpu", "workers": 1, "faces_dir": str(root / "faces"),
                           "flow_dir": str(root / "flow"), "features_dir": str(root / "features")}}


def _faces_npz(params) -> Path:
    return Path(params.preprocess.faces_dir) / "train" / f"{VID}.npz"


def _stamp_old(path: Path) -> None:
    os.utime(path, ns=(OLD, OLD))


def _redone(path: Path) -> bool:
    return path.exists() and path.stat().st_mtime_ns != OLD


def _changes(root: Path) -> dict:
    """A valid other value for every key the faces stage declares (the test fails when one is added)."""
    shutil.copytree(root / "raw", root / "raw2")
    return {
        "seed": 1, "data.raw_dir": str(root / "raw2"), "preprocess.faces_dir": str(root / "faces2"),
        "preprocess.frames": 6, "preprocess.sampling": "random", "preprocess.crop_size": 24,
        "preprocess.margin": 0.3, "preprocess.detect_width": 256, "preprocess.min_face_size": 16,
        "preprocess.coarse_frames": 0, "preprocess.roi_face_size": 48, "preprocess.roi_pad": 0.4,
        "preprocess.roi_pnet_threshold": 0.7, "preprocess.box_smoothing": 1, "preprocess.max_missing_share": 0.6,
        "preprocess.flow.stack": 2, "preprocess.max_frame_pixels": 8_000_000, "preprocess.max_duration_s": 30.0,
        "preprocess.max_decode_pixels": 10**10, "preprocess.shrink_pixels": 100_000,
    }


def test_faces_redoes_every_clip_when_any_declared_param_changes(tmp_path):
    base = params_from_dict(_project(tmp_path))
    assert run_faces_stage(base) == 0
    _stamp_old(_faces_npz(base))
    assert run_faces_stage(base) == 0
    assert not _redone(_faces_npz(base))  # same key: kept
    assert FACES.checks == ("preprocess.max_failed_share",)  # the pass mark of the stage, no output's input
    assert run_faces_stage(replace(base, {"preprocess.max_failed_share": 0.5})) == 0
    assert not _redone(_faces_npz(base))

    # the seed draws only random sampling's jitter: with centre sampling a new seed keeps every clip
    assert base.preprocess.sampling == "center"
    assert run_faces_stage(replace(base, {"seed": 1})) == 0
    assert not _redone(_faces_npz(base))

    changes = _changes(tmp_path)
    assert set(changes) == set(FACES.key_params())
    for key, value in changes.items():
        if key == "seed":  # under random sampling, where it decides the frames
            base_random = replace(base, {"preprocess.sampling": "random"})
            assert run_faces_stage(base_random) == 0
            _stamp_old(_faces_npz(base_random))
            changed = replace(base_random, {key: value})
        else:
            changed = replace(base, {key: value})
        npz = _faces_npz(changed)
        if npz.exists():
            _stamp_old(npz)
        assert run_faces_stage(changed) == 0, key
        assert _redone(npz), f"{key} changed but the faces output was kept"
        with np.load(npz) as z:
            assert str(z["settings"]) == stage_key(changed, FACES), key


def _flow_npy(params) -> Path:
    return Path(params.preprocess.flow_dir) / "train" / f"{VID}.npy"


def test_flow_redoes_every_clip_when_its_params_or_the_faces_change(tmp_path):
    base = params_from_dict(_project(tmp_path))
    assert run_faces_stage(base) == 0 and run_flow_stage(base) == 0
    _stamp_old(_flow_npy(base))
    assert run_flow_stage(base) == 0
    assert not _redone(_flow_npy(base))

    own = {"preprocess.flow_dir": str(tmp_path / "flow2"), "preprocess.flow.method": "farneback",
           "preprocess.flow.dis_preset": "medium", "preprocess.flow.bound": 4.0}
    assert {k.rsplit(".", 1)[0] if k.startswith("preprocess.flow.") else k for k in own} | set(FACES.key_params()) \
        >= set(FLOW.key_params())
    for key, value in own.items():
        changed = replace(base, {key: value})
        if _flow_npy(changed).exists():
            _stamp_old(_flow_npy(changed))
        assert run_flow_stage(changed) == 0, key
        assert _redone(_flow_npy(changed)), f"{key} changed but the flow output was kept"

    # a faces param: new crops, so the flow made from the old ones is stale too
    margin = replace(base, {"preprocess.margin": 0.4})
    assert run_faces_stage(margin) == 0
    _stamp_old(_flow_npy(margin))
    assert run_flow_stage(margin) == 0
    assert _redone(_flow_npy(margin))


def test_an_edit_to_the_stage_code_redoes_every_clip(tmp_path):
    """`bigfive faces` from a copy of the package: editing one of its source files changes the key."""
    shutil.copytree(ROOT / "src" / "bigfive", tmp_path / "src" / "bigfive",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_project(tmp_path)))
    env = {**clean_env(), "PYTHONPATH": str(tmp_path / "src")}

    def faces() -> None:
        run = subprocess.run([sys.executable, "-m", "bigfive", "faces"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=HANG_S)
        assert run.returncode == 0, run.stderr[-3000:]

    faces()
    npz = tmp_path / "faces" / "train" / f"{VID}.npz"
    _stamp_old(npz)
    with (tmp_path / "src" / "bigfive" / "preprocess" / "detect.py").open("a") as f:
        f.write("# an edit that changes no behaviour still changes the code the crops were made by\n")
    faces()
    assert _redone(npz)


@pytest.mark.parametrize("path", ["src/bigfive/preprocess/nope.py", "bigfive/preprocess"])
def test_a_declared_code_path_must_exist_under_the_package(path):
    from bigfive.preprocess.keys import code_hash

    with pytest.raises((FileNotFoundError, ValueError), match="code dep"):
        code_hash((path,))


@pytest.mark.slow
def test_dvc_repro_redoes_every_clip_after_a_param_or_code_change(tmp_path):
    """The user's view: in a fresh DVC project, `dvc repro` after a change leaves no output of the old run."""
    from conftest import make_project, tiny_params

    project = make_project(tmp_path / "project", tiny_params())
    # the stages run the project's own copy of the code, as in a clone installed with `pip install -e .`
    env = {**clean_env(), "PYTHONPATH": str(project / "src")}

    def repro() -> None:
        run = subprocess.run(["dvc", "repro", "flow"], cwd=project, env=env, capture_output=True, text=True,
                             timeout=HANG_S)
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]

    def outputs() -> list[Path]:
        found = sorted([*(project / "data/faces").glob("*/*.npz"), *(project / "data/flow").glob("*/*.npy")])
        assert found
        return found

    repro()
    before = outputs()
    for path in before:
        _stamp_old(path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["preprocess"]["roi_pnet_threshold"] = 0.75
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repro()
    assert outputs() == before and all(_redone(p) for p in before)

    for path in before:
        _stamp_old(path)
    with (project / "src/bigfive/preprocess/detect.py").open("a") as f:
        f.write("# an edit\n")
    repro()
    assert outputs() == before and all(_redone(p) for p in before)
