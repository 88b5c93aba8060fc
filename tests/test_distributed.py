"""``bigfive train`` under torchrun: 2 CPU processes (gloo), DistributedDataParallel, rank-0 outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from conftest import HANG_S
from synth_features import write_features

from bigfive.models import load_checkpoint, model_from_checkpoint
from bigfive.models.infer import predict_arrays
from bigfive.training.data import split_indices

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_torchrun_two_cpu_processes(tmp_path):
    features = write_features(tmp_path / "features", n=24, frames=4, size=32, channels=2, splits=("train",))
    (tmp_path / "params.yaml").write_text(
        "model: {static_width: 8, dynamic_width: 8, embed_dim: 16, heads: 2, head_hidden: 16}\n"
        "train: {batch_size: 4, warmup_epochs: 0, device: cpu}\n"
        "tracking: {enabled: false}\n")
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "bigfive",
           "train", "--static-features", str(features / "train/static_features.npy"),
           "--dynamic-features", str(features / "train/dynamic_features.npy"),
           "--labels", str(features / "train/labels.npy"), "--val-split", "0.2", "--epochs", "1",
           "--output", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2
    assert (out / "best.pt").is_file()
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())  # one writer, atomic renames
    run = json.loads((out / "run.json").read_text())
    ranks = run["ranks"]
    # 24 clips, 5 held out -> 19 training clips, cut to 18 so both ranks take the same number of steps
    assert ranks["world"] == 2 and ranks["samples_per_rank"] == [9, 9]
    assert ranks["overlap"] == 0 and ranks["rows_sha_per_rank"][0] != ranks["rows_sha_per_rank"][1]
    history = json.loads((out / "history.json").read_text())
    assert history[0]["throughput_clips_s"] > 0

    # validation metrics were all-reduced over the two shards: they equal the full val set's
    train_idx, val_idx = split_indices(24, 0.2, seed=0)
    static = np.load(features / "train/static_features.npy")[val_idx]
    dynamic = np.load(features / "train/dynamic_features.npy")[val_idx]
    labels = np.load(features / "train/labels.npy")[val_idx, :5]
    pred = predict_arrays(model_from_checkpoint(ckpt).eval(), static, dynamic, torch.device("cpu"))
    acc = 1 - np.abs(pred - labels).mean()
    assert abs(acc - history[0]["val_mean_accuracy"]) < 1e-5
