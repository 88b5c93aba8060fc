"""The training loop on tiny learnable data: augmentation, loss, checkpoints, resume, early stopping, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from synth_features import write_features

from bigfive.config import Params, replace
from bigfive.models import build_model, load_checkpoint, model_from_checkpoint
from bigfive.models.infer import predict_arrays
from bigfive.training import fit
from bigfive.training.data import ClipDataset, FeaturesError, hflip, load_split
from bigfive.training.loop import warm_start

TINY = {"model.static_width": 8, "model.dynamic_width": 8, "model.embed_dim": 16, "model.heads": 2,
        "model.head_hidden": 16, "train.batch_size": 8, "train.warmup_epochs": 1, "train.lr": 3e-3,
        "train.epochs": 4, "tracking.enabled": False,
        # the plain recipe these tests were calibrated on (a few epochs on tiny arrays visibly lower the loss);
        # params.yaml's (geglu, ff_mult 4, streams at 0.3 x lr) is tuned for the interaction, not for 6 epochs
        "model.ff": "gelu", "model.ff_mult": 2, "model.direction": "bidirectional", "train.stream_lr_mult": 1.0}


def tiny_params(**overrides) -> Params:
    return replace(Params(), {**TINY, **overrides})


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    return write_features(tmp_path_factory.mktemp("features"), n=24, frames=4, size=32, channels=2)


@pytest.fixture(scope="module")
def trained(features, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return fit(tiny_params(**{"train.epochs": 6}), features_dir=features, output_dir=out)


def test_hflip_mirrors_both_streams_and_negates_dx():
    rng = np.random.default_rng(0)
    static = rng.integers(0, 256, (3, 3, 8, 8), dtype=np.uint8)
    dynamic = rng.integers(0, 256, (3, 4, 8, 8), dtype=np.uint8)  # two stacked flows: dx, dy, dx, dy
    s, d = hflip(static, dynamic)
    np.testing.assert_array_equal(s, static[..., ::-1])
    np.testing.assert_array_equal(d[:, 0::2], 255 - dynamic[:, 0::2, :, ::-1])  # dx negated: q -> 255 - q
    np.testing.assert_array_equal(d[:, 1::2], dynamic[:, 1::2, :, ::-1])  # dy only mirrored
    # dequantised, the flipped dx is exactly the negated value (bound b: v = q/255*2b - b)
    b = 8.0
    v = dynamic[:, 0].astype(np.float64) / 255 * 2 * b - b
    v_flip = d[:, 0].astype(np.float64) / 255 * 2 * b - b
    np.testing.assert_allclose(v_flip, -v[..., ::-1], atol=1e-12)


def test_dataset_flip_and_temporal_shuffle_apply_one_decision_to_both_streams(features):
    arrays = load_split(features, "train")
    t = arrays.frames
    # frame t of both streams carries the value t, so the applied permutation is readable
    static = np.broadcast_to(np.arange(t, dtype=np.uint8)[None, :, None, None, None] * 10,
                             arrays.static.shape).copy()
    static[..., 0] += 100  # left column marked: a flip moves it to the right
    dynamic = np.broadcast_to(np.arange(t, dtype=np.uint8)[None, :, None, None, None] * 10 + 1,
                              arrays.dynamic.shape).copy()
    arrays.static, arrays.dynamic = static, dynamic
    ds = ClipDataset(arrays, p_flip=0.5, p_shuffle=1.0, seed=3)
    flips, perms = [], set()
    for i in range(len(ds)):
        s, d, _, _ = (x.numpy() if isinstance(x, torch.Tensor) else x for x in ds[i])
        perm_s = (s[:, 0, 1, 1] // 10).tolist()
        dx, dy = d[:, 0, 1, 1], d[:, 1, 1, 1]
        flipped = bool(s[0, 0, 0, -1] >= 100)
        perm_d = (((255 - dx) if flipped else dx) - 1) // 10
        assert sorted(perm_s) == list(range(t))
        assert perm_s == perm_d.tolist() == ((dy - 1) // 10).tolist()  # same permutation, both streams
        flips.append(flipped)
        perms.add(tuple(perm_s))
    assert any(flips) and not all(flips)  # p_flip=0.5 does both over 24 clips
    assert len(perms) > 1
    # seeded per (seed, epoch, row): the same epoch repeats, another epoch differs
    again = ClipDataset(arrays, p_flip=0.5, p_shuffle=1.0, seed=3)
    assert all(torch.equal(a, b) for i in range(4) for a, b in zip(ds[i][:2], again[i][:2]))
    again.set_epoch(1)
    assert any(not torch.equal(ds[i][0], again[i][0]) for i in range(len(ds)))


def test_training_lowers_loss_and_writes_weights_only_checkpoints(trained):
    losses = [h["train_loss"] for h in trained.history]
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0]
    assert trained.history[-1]["val_loss"] < trained.history[0]["val_loss"]
    out = trained.output_dir
    for name in ("best.pt", "last.pt", "history.json", "run.json", "training_analysis.md", "training_analysis.json"):
        assert (out / name).is_file(), name
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    for key in ("model", "model_config", "frames", "flow_channels", "preprocess", "labels", "optimizer",
                "scheduler", "epoch", "rng", "history", "best_metric"):
        assert key in ckpt, key
    assert ckpt["epoch"] == 6 and ckpt["frames"] == 4 and ckpt["flow_channels"] == 2
    assert ckpt["preprocess"]["crop_size"] == 32
    assert ckpt["labels"] == ["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]
    assert isinstance(ckpt["rng"]["torch"], torch.Tensor) and ckpt["rng"]["torch"].dtype == torch.uint8
    assert isinstance(ckpt["rng"]["numpy"]["keys"], list)
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert best["best_metric"] == pytest.approx(max(h["val_mean_accuracy"] for h in trained.history))
    assert trained.best_val_mean_accuracy == best["best_metric"]
    analysis = json.loads((out / "training_analysis.json").read_text())
    assert analysis["recommendations"] and 0.0 <= analysis["summary"]["data_wait_share"] <= 1.0
    assert "data wait" in (out / "training_analysis.md").read_text()
    assert json.loads((out / "history.json").read_text()) == trained.history


class Interrupt(Exception):
    pass


def test_resume_reproduces_the_uninterrupted_run_exactly(features, tmp_path):
    # augmentation and dropout on, so the RNG state really has to come back
    # exactness is promised on CPU (CUDA kernels and bf16 autocast need not be bitwise reproducible)
    params = tiny_params(**{"train.hflip": 0.5, "train.temporal_shuffle": 0.5, "model.dropout": 0.2,
                            "train.device": "cpu"})
    straight = fit(params, features_dir=features, output_dir=tmp_path / "straight")

    def stop_after_two(epoch, metrics):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(params, features_dir=features, output_dir=tmp_path / "resumed", on_epoch=stop_after_two)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 2
    resumed = fit(params, features_dir=features, output_dir=tmp_path / "resumed", resume=True)

    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [h["val_mean_accuracy"] for h in straight.history] == [h["val_mean_accuracy"] for h in resumed.history]
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]


def test_early_stopping_stops_and_a_resume_does_not_restart(features, tmp_path):
    # no gain can exceed 0.5 accuracy, so only epoch 1 counts as an improvement
    params = tiny_params(**{"train.epochs": 10, "train.patience": 2, "train.min_delta": 0.5})
    result = fit(params, features_dir=features, output_dir=tmp_path)
    assert result.stopped_early
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.best_epoch == 1
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["stopped"] and ckpt["epoch"] == 3
    again = fit(params, features_dir=features, output_dir=tmp_path, resume=True)
    assert len(again.history) == 3


def test_warm_start_loads_compatible_weights(trained, features, tmp_path):
    ckpt = load_checkpoint(trained.best_checkpoint)
    # a different head: the streams load, the head is left at its initialisation
    cfg = tiny_params(**{"model.head_hidden": 24}).model
    net = build_model(cfg, 4, 2)
    report = warm_start(net, str(trained.best_checkpoint))
    assert 0 < report["loaded"] < len(ckpt["model"]) and report["skipped"] > 0
    own = net.state_dict()
    same_shape = [k for k, v in ckpt["model"].items() if own[k].shape == v.shape]
    assert len(same_shape) == report["loaded"]
    assert all(torch.equal(own[k], ckpt["model"][k]) for k in same_shape)
    # fine-tuning with a negligible LR ends where the source model was (a fresh init is nowhere near)
    params = tiny_params(**{"train.epochs": 1, "train.warmup_epochs": 0, "train.lr": 1e-9,
                            "train.weight_decay": 0.0})
    fit(params, features_dir=features, output_dir=tmp_path, init_from=str(trained.best_checkpoint))
    tuned = load_checkpoint(tmp_path / "last.pt")["model"]
    weights = [k for k in ckpt["model"] if "running_" not in k and "num_batches" not in k]  # BN stats do move
    assert all(torch.allclose(tuned[k], ckpt["model"][k], atol=1e-6) for k in weights)
    fresh = build_model(params.model, 4, 2).state_dict()
    assert not all(torch.allclose(fresh[k], ckpt["model"][k], atol=1e-3) for k in weights)


def test_checkpoint_rebuilds_the_model(trained, features):
    """best.pt alone reproduces the validation score the loop recorded for its epoch, on all val clips."""
    net = model_from_checkpoint(load_checkpoint(trained.best_checkpoint)).eval()
    arrays = load_split(features, "val")
    pred = predict_arrays(net, arrays.static, arrays.dynamic, torch.device("cpu"), batch_size=5)
    acc = 1 - np.abs(pred.astype(np.float64) - np.asarray(arrays.labels[:, :5], dtype=np.float64)).mean()
    best = next(row for row in trained.history if row["epoch"] == trained.best_epoch)
    assert best["val_mean_accuracy"] == trained.best_val_mean_accuracy
    assert acc == pytest.approx(trained.best_val_mean_accuracy, abs=1e-6)  # other batches: float rounding only


def test_bad_labels_are_reported_with_the_file(features, tmp_path):
    bad = write_features(tmp_path / "bad", n=6)
    labels = np.load(bad / "val" / "labels.npy")
    labels[2, 1] = 1.7
    np.save(bad / "val" / "labels.npy", labels)
    with pytest.raises(FeaturesError, match=r"val/labels.npy.*outside \[0, 1\].*val-0002.*conscientiousness"):
        fit(tiny_params(), features_dir=bad, output_dir=tmp_path / "out")
    np.save(bad / "train" / "labels.npy", labels[:, :3])
    with pytest.raises(FeaturesError, match=r"train/labels.npy.*needs 5 label columns"):
        fit(tiny_params(), features_dir=bad, output_dir=tmp_path / "out")


def test_direct_entry_cli_with_builtin_defaults(features, tmp_path, monkeypatch, capsys):
    from bigfive.cli import main

    # no params.yaml in the working directory: built-in defaults (the full default model)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "direct"
    argv = ["train", "--static-features", str(features / "train/static_features.npy"),
            "--dynamic-features", str(features / "train/dynamic_features.npy"),
            "--labels", str(features / "train/labels.npy"), "--val-split", "0.25", "--batch-size", "8",
            "--epochs", "2", "--output", str(out), "--no-tracking"]
    assert main(argv) == 0
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["model_config"]["embed_dim"] == Params().model.embed_dim
    assert ckpt["params"]["train"]["batch_size"] == 8 and ckpt["params"]["train"]["warmup_epochs"] == 1
    assert ckpt["preprocess"]["frames"] == 4  # meta.json found two levels above the arrays
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    run = json.loads((out / "run.json").read_text())
    assert run["run_id"] is None and run["best_epoch"] in (1, 2)
    # a bad file is named in a one-line error
    capsys.readouterr()
    assert main([*argv[:2], str(features / "train/labels.npy"), *argv[3:]]) == 1
    err = capsys.readouterr().err
    assert "labels.npy" in err and "5-D" in err


def test_dvc_stage_cli_reads_params_yaml(features, tmp_path, monkeypatch):
    import yaml

    from bigfive.cli import main

    params = tiny_params(**{"train.epochs": 2, "preprocess.features_dir": str(features),
                            "train.models_dir": str(tmp_path / "models")})
    from bigfive.config import to_dict

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(to_dict(params)))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--params", "params.yaml"]) == 0
    models = tmp_path / "models"
    for name in ("best.pt", "last.pt", "history.json", "run.json", "training_analysis.md"):
        assert (models / name).is_file(), name
    assert len(json.loads((models / "history.json").read_text())) == 2


def test_epochs_to_interaction_is_the_first_epoch_at_the_threshold(trained):
    from bigfive.training.loop import first_epoch_reaching

    rows = [{"epoch": 1, "val_acc_agreeableness": 0.80}, {"epoch": 2, "val_acc_agreeableness": 0.905},
            {"epoch": 3, "val_acc_agreeableness": 0.85}, {"epoch": 4, "val_acc_agreeableness": 0.95}]
    assert first_epoch_reaching(rows, "val_acc_agreeableness", 0.90) == 2
    assert first_epoch_reaching(rows, "val_acc_agreeableness", 0.96) is None
    assert first_epoch_reaching(rows, "val_acc_missing", 0.5) is None
    # the fitted run records it from its own history, in the result and in run.json
    reached = [h["epoch"] for h in trained.history if h["val_acc_agreeableness"] >= 0.90]
    assert trained.epochs_to_interaction == (reached[0] if reached else None)
    run = json.loads((trained.output_dir / "run.json").read_text())
    assert run["epochs_to_interaction"] == trained.epochs_to_interaction
    low = first_epoch_reaching(trained.history, "val_acc_agreeableness", 0.0)
    assert low == 1  # every epoch reaches 0: the first one is returned


def test_streams_learn_at_their_multiple_of_the_learning_rate():
    from bigfive.training.loop import make_optimizer

    net = build_model(tiny_params().model, 4, 2)
    opt = make_optimizer(net, 0.01, 0.05, stream_lr_mult=0.25)
    stream_ids = {id(p) for p in [*net.static.parameters(), *net.dynamic.parameters()]}
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert len(lr_of) == sum(1 for p in net.parameters() if p.requires_grad)  # every parameter exactly once
    assert {lr_of[i] for i in stream_ids} == {0.0025}
    assert {v for i, v in lr_of.items() if i not in stream_ids} == {0.01}
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert all(decay[id(p)] == (0.05 if p.ndim >= 2 else 0.0) for p in net.parameters())


def test_frozen_streams_do_not_change_in_the_first_epochs(features, tmp_path):
    seen = []

    def snapshot(epoch, metrics):  # on_epoch: after the epoch's optimizer steps
        seen.append((epoch, net_ref["net"].static.proj.weight.detach().clone(),
                     net_ref["net"].fusion.blocks["static_to_dynamic"][0].ff.down.weight.detach().clone()))

    net_ref = {}

    from bigfive.training.callbacks import Callback

    class Grab(Callback):
        def on_train_begin(self, state):
            net_ref["net"] = state.model
            seen.append((0, state.model.static.proj.weight.detach().clone(),
                         state.model.fusion.blocks["static_to_dynamic"][0].ff.down.weight.detach().clone()))

    params = tiny_params(**{"train.freeze_streams_epochs": 2, "train.epochs": 3, "model.ff": "geglu",
                            "model.direction": "static_to_dynamic"})
    fit(params, features_dir=features, output_dir=tmp_path, callbacks=[Grab()], on_epoch=snapshot)
    (_, s0, f0), (_, s1, f1), (_, s2, f2), (_, s3, f3) = seen
    assert torch.equal(s0, s1) and torch.equal(s1, s2)  # frozen for epochs 1-2
    assert not torch.equal(s2, s3)  # trained from epoch 3
    assert not torch.equal(f0, f1)  # the fusion trains from the start
