"""`bigfive evaluate` end to end on a tiny random features dir and tiny real checkpoints (cross-attention
and concat), the reusable `evaluate_checkpoint`, and logging into an existing MLflow run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bigfive import TRAITS
from bigfive.cli import main
from bigfive.config import ModelConfig
from bigfive.evaluation import evaluate_checkpoint
from bigfive.models import build_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
T, S, C = 4, 32, 2
COUNTS = {"train": 6, "val": 4, "test": 5}
# bidirectional: the attention figures and records are checked for both directions
TINY = dict(static_width=8, dynamic_width=8, embed_dim=16, heads=2, layers=1, ff_mult=1, head_hidden=8,
            direction="bidirectional")
GENDERS = ["1", "2", "1", "", "2"]  # test clips; one unknown
ETHNICITIES = ["2", "2", "1", "3", ""]


def make_features(root: Path, frames: int = T) -> Path:
    rng = np.random.default_rng(0)
    for split, n in COUNTS.items():
        d = root / split
        d.mkdir(parents=True)
        np.save(d / "static_features.npy", rng.integers(0, 256, size=(n, frames, 3, S, S), dtype=np.uint8))
        np.save(d / "dynamic_features.npy", rng.integers(0, 256, size=(n, frames, C, S, S), dtype=np.uint8))
        np.save(d / "labels.npy", rng.uniform(0.1, 0.9, size=(n, 6)).astype(np.float32))
        (d / "clip_ids.txt").write_text("".join(f"-{split}{i:02d}.00{i}\n" for i in range(n)))
    return root


def make_checkpoint(path: Path, fusion: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(ModelConfig(fusion=fusion, **TINY), T, C)
    save_checkpoint(path, net, preprocess={"frames": T, "crop_size": S}, labels=list(TRAITS))
    return net.eval()


@pytest.fixture(scope="module")
def project(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("evaluate")
    features = make_features(root / "features")
    models = root / "models"
    models.mkdir()
    net = make_checkpoint(models / "best.pt", "cross_attention")
    make_checkpoint(root / "concat.pt", "concat")
    history = [{"epoch": e, "train_loss": 0.3 / e, "val_loss": 0.3 / e + 0.02, "val_mean_accuracy": 0.8 + 0.01 * e,
                "lr": 1e-3 / e} for e in (1, 2, 3)]
    (models / "history.json").write_text(json.dumps(history))
    raw = root / "raw"
    raw.mkdir()
    ids = (features / "test/clip_ids.txt").read_text().split()
    rows = ["video_id,split,gender,ethnicity"] + [f"{v},test,{g},{e}" for v, g, e in zip(ids, GENDERS, ETHNICITIES)]
    (raw / "manifest.csv").write_text("\n".join(rows) + "\n")
    (raw / "sample_metadata.json").write_text(json.dumps({"noise_floor_mean_accuracy": 0.977}))

    # a real MLflow run to log into, in the supported sqlite store
    import mlflow

    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bigfive-test")
    with mlflow.start_run() as run:
        mlflow.log_metric("val_mean_accuracy", 0.8, step=1)
    (models / "run.json").write_text(json.dumps({"run_id": run.info.run_id, "experiment": "bigfive-test"}))

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["preprocess"].update(features_dir=str(features), frames=T, crop_size=S)
    params["data"]["raw_dir"] = str(raw)
    params["train"]["models_dir"] = str(models)
    params["evaluate"] = {"splits": ["val", "test"], "results_dir": str(root / "results"), "example_clips": 2,
                          "bootstrap": 50, "device": "cpu", "batch_size": 2}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    rc = main(["evaluate", "--params", str(root / "params.yaml")])
    return {"root": root, "rc": rc, "net": net, "features": features, "results": root / "results",
            "run_id": run.info.run_id, "uri": uri}


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def read_predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    ids = [r["video_id"] for r in rows]
    true = np.array([[float(r[f"{t}_true"]) for t in TRAITS] for r in rows])
    pred = np.array([[float(r[f"{t}_pred"]) for t in TRAITS] for r in rows])
    return ids, true, pred


def test_predictions_are_the_model_on_all_frames_of_each_clip(project):
    assert project["rc"] == 0
    for split in ("val", "test"):
        ids, true, pred = read_predictions(project["results"] / f"predictions_{split}.csv")
        d = project["features"] / split
        assert ids == (d / "clip_ids.txt").read_text().split()
        np.testing.assert_allclose(true, np.load(d / "labels.npy")[:, :5], atol=1e-6)
        with torch.no_grad():  # one batch of whole clips (T frames each), independent of the stage's batching
            direct = project["net"](torch.from_numpy(np.load(d / "static_features.npy")),
                                    torch.from_numpy(np.load(d / "dynamic_features.npy"))).numpy()
        np.testing.assert_allclose(pred, direct, atol=2e-6)


def test_metrics_json_structure_and_values(project):
    m = json.loads((project["results"] / "metrics.json").read_text())
    _, true, pred = read_predictions(project["results"] / "predictions_test.csv")
    assert m["n"] == COUNTS["test"]
    assert m["mean_accuracy"] == pytest.approx(1 - np.abs(pred - true).mean(), abs=1e-5)
    train_means = np.load(project["features"] / "train/labels.npy")[:, :5].mean(axis=0)
    assert m["baseline_mean_accuracy"] == pytest.approx(1 - np.abs(train_means - true).mean(), abs=1e-5)
    assert m["noise_floor_mean_accuracy"] == 0.977
    for key in ("pcc", "ccc", "mae", "rmse", "r2", "mean_accuracy_ci95_low", "mean_accuracy_ci95_high",
                "gain_vs_baseline_ci95_low"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), key
    assert m["mean_accuracy_ci95_low"] <= m["mean_accuracy"] <= m["mean_accuracy_ci95_high"]
    assert set(m["traits"]) == set(TRAITS)
    for t in TRAITS:
        assert set(m["traits"][t]) >= {"accuracy", "mae", "rmse", "r2", "pcc", "ccc", "baseline_accuracy"}
    assert m["traits"]["openness"]["accuracy"] == pytest.approx(1 - np.abs(pred[:, 0] - true[:, 0]).mean(), abs=1e-5)
    assert m["val"]["n"] == COUNTS["val"] and "mean_accuracy" in m["val"] and "baseline_mean_accuracy" in m["val"]


def test_group_metrics_from_the_manifest(project):
    groups = json.loads((project["results"] / "metrics.json").read_text())["groups"]
    _, true, pred = read_predictions(project["results"] / "predictions_test.csv")
    gender = groups["gender"]["groups"]
    assert {k: v["n"] for k, v in gender.items()} == {"male": 2, "female": 2}
    male = [i for i, g in enumerate(GENDERS) if g == "1"]
    assert gender["male"]["mean_accuracy"] == pytest.approx(1 - np.abs(pred[male] - true[male]).mean(), abs=1e-5)
    assert set(groups["ethnicity"]["groups"]) == {"Asian", "Caucasian", "African-American"}
    assert groups["ethnicity"]["groups"]["Caucasian"]["n"] == 2


def test_figures_and_tables_are_written(project):
    # what each figure plots is tested on its data in test_metrics.py; here: the stage writes them all
    plots = project["results"] / "plots"
    for name in ("pred_vs_true", "residuals", "accuracy", "training_curves", "groups", "attention_heads_1",
                 "attention_heads_2", "attention_entropy", "attention_strip"):
        data = (plots / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    ids, true, pred = read_predictions(project["results"] / "predictions_test.csv")
    with (plots / "pred_vs_true.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["video_id"], r["trait"]) for r in rows] == [(v, t) for v in ids for t in TRAITS]
    np.testing.assert_allclose([float(r["true"]) for r in rows], true.ravel(), atol=1e-6)
    np.testing.assert_allclose([float(r["predicted"]) for r in rows], pred.ravel(), atol=1e-6)
    m = json.loads((project["results"] / "metrics.json").read_text())
    with (plots / "accuracy.csv").open() as f:
        acc = {r["trait"]: (float(r["model"]), float(r["baseline"])) for r in csv.DictReader(f)}
    assert acc == {t: (pytest.approx(m["traits"][t]["accuracy"], abs=1e-6),
                       pytest.approx(m["traits"][t]["baseline_accuracy"], abs=1e-6)) for t in TRAITS}


def test_test_metrics_and_figures_logged_into_the_training_run(project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(project["uri"])
    run = client.get_run(project["run_id"])
    m = json.loads((project["results"] / "metrics.json").read_text())
    assert run.data.metrics["test_mean_accuracy"] == pytest.approx(m["mean_accuracy"])
    assert run.data.metrics["baseline_mean_accuracy"] == pytest.approx(m["baseline_mean_accuracy"])
    assert run.data.metrics["test_openness_accuracy"] == pytest.approx(m["traits"]["openness"]["accuracy"])
    assert "test_pcc" in run.data.metrics and "test_ccc" in run.data.metrics
    # validation figures must not extend the trainer's per-epoch val_mean_accuracy series
    assert len(client.get_metric_history(run.info.run_id, "val_mean_accuracy")) == 1
    assert "eval_val_mean_accuracy" in run.data.metrics
    assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")} >= {"pred_vs_true.png",
                                                                                           "attention_strip.png"}


def test_model_without_attention_skips_attention_figures(project, tmp_path):
    out = tmp_path / "results"
    rc = main(["evaluate", "--params", str(project["root"] / "params.yaml"), "--checkpoint",
               str(project["root"] / "concat.pt"), "--results-dir", str(out), "--no-tracking"])
    assert rc == 0
    names = {p.name for p in (out / "plots").glob("*.png")}
    assert {"pred_vs_true.png", "accuracy.png", "residuals.png"} <= names
    assert not any(n.startswith("attention") for n in names)
    assert "training_curves.png" not in names  # no history.json beside concat.pt


def test_evaluate_checkpoint_for_ablations(project):
    res = evaluate_checkpoint(project["root"] / "models/best.pt", project["features"], "test", device="cpu",
                              batch_size=3, example_clips=2)
    n = COUNTS["test"]
    assert res.predictions.shape == res.labels.shape == res.abs_errors.shape == (n, 5)
    np.testing.assert_allclose(res.abs_errors, np.abs(res.predictions - res.labels))
    assert res.clip_ids == (project["features"] / "test/clip_ids.txt").read_text().split()
    assert res.metrics["mean_accuracy"] == pytest.approx(1 - res.abs_errors.mean())
    assert res.example_indices == [0, n - 1]
    for att in res.example_attention:
        assert set(att) == {"static_to_dynamic", "dynamic_to_static"}
        w = att["static_to_dynamic"][0]
        assert w.shape == (TINY["heads"], T, T)
        np.testing.assert_allclose(w.sum(axis=-1), 1.0, atol=1e-5)
    for ent in res.entropy.values():
        assert ent.shape == (1, TINY["heads"]) and (ent >= 0).all() and (ent <= math.log(T) + 1e-6).all()


def test_evaluation_infers_through_the_one_inference_path(project):
    from bigfive.evaluation.inference import infer_split
    from bigfive.models import infer

    d = project["features"] / "test"
    static, dynamic = np.load(d / "static_features.npy"), np.load(d / "dynamic_features.npy")
    cpu = torch.device("cpu")
    out = infer_split(project["net"], static, dynamic, device=cpu, batch_size=2)
    # the same batches through bigfive.models.infer: the same numbers, bit for bit
    np.testing.assert_array_equal(out.predictions, infer.predict_arrays(project["net"], static, dynamic, cpu, 2))
    assert out.predictions.dtype == np.float64


def test_attention_statistics_do_not_depend_on_the_batching(project):
    from bigfive.evaluation import metrics as M
    from bigfive.evaluation.inference import infer_split

    d = project["features"] / "test"
    static, dynamic = np.load(d / "static_features.npy"), np.load(d / "dynamic_features.npy")
    rows = [1, 3, 4]  # in the first, second and last (short) batch of 2
    one = infer_split(project["net"], static, dynamic, device=torch.device("cpu"), batch_size=5, example_rows=rows)
    two = infer_split(project["net"], static, dynamic, device=torch.device("cpu"), batch_size=2, example_rows=rows)
    with torch.no_grad():
        _, att = project["net"](torch.from_numpy(static), torch.from_numpy(dynamic), return_attention=True)
    assert sorted(two.examples) == rows and set(two.key_len.values()) == {T}
    for direction, layers in att.items():
        maps = [w.numpy() for w in layers]  # (clips, heads, Tq, Tk) per layer
        expected = np.stack([M.attention_entropy(w) for w in maps])  # mean over all clips at once
        np.testing.assert_allclose(two.entropy[direction], expected, atol=1e-6)
        np.testing.assert_allclose(one.entropy[direction], expected, atol=1e-6)
        for r in rows:  # each example row's own maps, wherever its batch started
            for got, w in zip(two.examples[r][direction], maps):
                np.testing.assert_allclose(got, w[r], atol=1e-6)
    np.testing.assert_allclose(two.predictions, one.predictions, atol=1e-6)


def test_features_that_do_not_fit_the_checkpoint_are_refused(project, tmp_path):
    features = make_features(tmp_path / "features", frames=T + 1)
    with pytest.raises(ValueError, match=r"frames 5 \(model: 4\)"):
        evaluate_checkpoint(project["root"] / "models/best.pt", features, "val", device="cpu")


def test_features_quantized_with_another_flow_bound_are_refused(tmp_path):
    features = make_features(tmp_path / "features")
    (features / "meta.json").write_text(json.dumps({"frames": T, "crop_size": S, "flow": {"bound": 20.0}}))
    net = build_model(ModelConfig(**TINY), T, C)
    save_checkpoint(tmp_path / "m.pt", net, preprocess={"frames": T, "crop_size": S, "flow": {"bound": 8.0}})
    with pytest.raises(ValueError, match=r"flow bound 20.0 \(model: 8.0\)"):
        evaluate_checkpoint(tmp_path / "m.pt", features, "val", device="cpu")


def test_missing_checkpoint_is_a_clear_error(project, tmp_path, capsys):
    rc = main(["evaluate", "--params", str(project["root"] / "params.yaml"), "--checkpoint",
               str(tmp_path / "nope.pt"), "--results-dir", str(tmp_path / "r")])
    assert rc == 1
    assert "nope.pt: checkpoint not found" in capsys.readouterr().err
