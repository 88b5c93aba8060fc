"""Metric functions against values worked out by hand, and the figures drawn from synthetic arrays."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest

from bigfive.evaluation import metrics as M
from bigfive.evaluation import plots as P

TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")


# ---------------------------------------------------------------- metrics, by hand


def test_accuracy_mae_rmse_by_hand():
    true = np.array([0.2, 0.5])
    pred = np.array([0.3, 0.1])  # errors 0.1 and 0.4
    assert M.mae(pred, true) == pytest.approx(0.25)
    assert M.accuracy(pred, true) == pytest.approx(0.75)
    assert M.rmse(pred, true) == pytest.approx(math.sqrt((0.01 + 0.16) / 2))


def test_two_column_input_reduces_per_column():
    true = np.array([[0.2, 0.0], [0.5, 1.0]])
    pred = np.array([[0.3, 0.5], [0.1, 0.5]])  # column errors (0.1, 0.4) and (0.5, 0.5)
    np.testing.assert_allclose(M.accuracy(pred, true), [0.75, 0.5])


def test_r2_by_hand():
    true = np.array([1.0, 2.0, 3.0])  # SS_tot = 1 + 0 + 1 = 2
    assert M.r2(np.array([1.0, 3.0, 2.0]), true) == pytest.approx(0.0)  # SS_res = 0 + 1 + 1 = 2
    assert M.r2(np.array([1.0, 2.0, 2.0]), true) == pytest.approx(0.5)  # SS_res = 1
    assert M.r2(np.array([3.0, 2.0, 1.0]), true) == pytest.approx(1 - 8 / 2)  # SS_res = 4 + 0 + 4


def test_pearson_by_hand():
    true = np.array([1.0, 2.0, 3.0])  # deviations -1 0 1
    pred = np.array([1.0, 3.0, 2.0])  # deviations -1 1 0: sum of products 1, norms sqrt(2)*sqrt(2)
    assert M.pearson(pred, true) == pytest.approx(0.5)
    assert M.pearson(-pred, true) == pytest.approx(-0.5)
    assert M.pearson(2 * true + 7, true) == pytest.approx(1.0)


def test_constant_prediction_has_pearson_zero_not_nan():
    true = np.array([0.1, 0.4, 0.9])
    pred = np.full(3, 0.5)
    assert M.pearson(pred, true) == 0.0
    assert M.constant_columns(np.stack([pred, true], axis=1)).tolist() == [True, False]
    # CCC of a constant is also 0 (no covariance), and the accuracy is still defined
    assert M.ccc(pred, true) == pytest.approx(0.0)
    assert M.accuracy(pred, true) == pytest.approx(1 - (0.4 + 0.1 + 0.4) / 3)


def test_ccc_perfect_is_one_and_shift_is_exact():
    true = np.array([0.2, 0.4, 0.6])
    assert M.ccc(true.copy(), true) == pytest.approx(1.0)
    # shift by 0.1: var_p = var_t = 0.08/3 = cov, so CCC = 2v / (2v + 0.01) = 0.16 / 0.19 = 16/19
    assert M.ccc(true + 0.1, true) == pytest.approx(16 / 19)
    assert M.pearson(true + 0.1, true) == pytest.approx(1.0)  # r does not see the shift; CCC does


def test_ccc_scale_change_by_hand():
    true = np.array([0.0, 1.0])  # mean 0.5, population var 0.25
    pred = np.array([0.25, 0.75])  # mean 0.5, var 0.0625, cov 0.125
    assert M.ccc(pred, true) == pytest.approx(2 * 0.125 / (0.0625 + 0.25))  # 0.8


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        M.mae(np.zeros(3), np.zeros(4))


def test_summarize_and_baseline_by_hand():
    true = np.array([[0.2, 0.5], [0.6, 0.5]])
    pred = np.array([[0.3, 0.4], [0.5, 0.7]])  # trait a errors .1 .1, trait b errors .1 .2
    s = M.summarize_with_baseline(pred, true, ["a", "b"], baseline_means=np.array([0.4, 0.6]))
    assert s["n"] == 2
    assert s["traits"]["a"]["accuracy"] == pytest.approx(0.9)
    assert s["traits"]["b"]["accuracy"] == pytest.approx(0.85)
    assert s["mean_accuracy"] == pytest.approx(0.875)
    # baseline errors: trait a .2 .2 -> .8, trait b .1 .1 -> .9
    assert s["traits"]["a"]["baseline_accuracy"] == pytest.approx(0.8)
    assert s["traits"]["b"]["baseline_accuracy"] == pytest.approx(0.9)
    assert s["baseline_mean_accuracy"] == pytest.approx(0.85)
    assert s["traits"]["a"]["pcc"] == pytest.approx(1.0)  # 0.3 -> 0.5 rises with 0.2 -> 0.6
    assert s["traits"]["b"]["pcc"] == 0.0  # constant truth
    assert s["pcc"] == pytest.approx(0.5)


def test_baseline_predictions_repeat_train_means():
    train = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(M.baseline_predictions(train, 2), [[0.5, 0.5], [0.5, 0.5]])


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    true = rng.uniform(0.2, 0.8, size=(60, 5))
    pred = np.clip(true + rng.normal(0, 0.05, size=true.shape), 0, 1)
    a = M.bootstrap_ci(pred, true, 300, seed=3, baseline_means=true.mean(axis=0))
    b = M.bootstrap_ci(pred, true, 300, seed=3, baseline_means=true.mean(axis=0))
    assert a == b
    acc = M.accuracy(pred, true).mean()
    assert a["mean_accuracy_ci95_low"] < acc < a["mean_accuracy_ci95_high"]
    assert a["gain_vs_baseline_ci95_low"] > 0  # the noisy truth beats the mean by a wide margin


def test_bootstrap_of_identical_errors_has_zero_width():
    true = np.zeros((10, 2))
    pred = np.full((10, 2), 0.1)
    ci = M.bootstrap_ci(pred, true, 50, seed=0)
    assert ci["mean_accuracy_ci95_low"] == pytest.approx(0.9)
    assert ci["mean_accuracy_ci95_high"] == pytest.approx(0.9)


def test_group_metrics_by_hand():
    true = np.array([[0.5], [0.5], [0.5], [0.5]])
    pred = np.array([[0.6], [0.4], [0.9], [0.5]])  # errors .1 .1 .4 0
    groups = {"gender": ["male", "male", "female", None], "ethnicity": [None, None, None, None]}
    g = M.group_metrics(pred, true, groups, ["a"], baseline_means=np.array([0.4]))
    assert set(g) == {"gender"}  # an attribute unknown for every clip is left out
    per = g["gender"]["groups"]
    assert per["male"]["n"] == 2 and per["female"]["n"] == 1
    assert per["male"]["mean_accuracy"] == pytest.approx(0.9)
    assert per["female"]["mean_accuracy"] == pytest.approx(0.6)
    assert per["male"]["baseline_mean_accuracy"] == pytest.approx(0.9)
    assert g["gender"]["accuracy_gap"] == pytest.approx(0.3)


def test_attention_entropy_uniform_and_one_hot():
    t = 8
    uniform = np.full((2, 3, t, t), 1.0 / t)
    np.testing.assert_allclose(M.attention_entropy(uniform), [math.log(t)] * 3)
    one_hot = np.broadcast_to(np.eye(t), (2, 3, t, t))
    np.testing.assert_allclose(M.attention_entropy(one_hot), [0.0] * 3, atol=1e-9)
    half = np.zeros((1, 1, 1, 4))
    half[..., :2] = 0.5  # two keys share the attention: ln 2
    assert M.attention_entropy(half)[0] == pytest.approx(math.log(2))


def test_received_attention_averages_to_a_distribution():
    a = np.zeros((2, 2, 2))  # heads, Tq, Tk: every query looks at key 0
    a[..., 0] = 1.0
    b = np.zeros((2, 2, 2))  # every query looks at key 1
    b[..., 1] = 1.0
    np.testing.assert_allclose(M.received_attention([a, b]), [0.5, 0.5])
    np.testing.assert_allclose(M.received_attention([a]), [1.0, 0.0])


# ---------------------------------------------------------------- figures from synthetic arrays


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def expect_png(path: Path, width_in: float, height_in: float) -> None:
    assert path.is_file() and path.stat().st_size > 5000, f"{path} missing or nearly empty"
    assert png_size(path) == (round(width_in * P.DPI), round(height_in * P.DPI))


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(0)
    true = rng.uniform(0.2, 0.8, size=(40, 5))
    pred = np.clip(0.5 + 0.6 * (true - 0.5) + rng.normal(0, 0.05, size=true.shape), 0, 1)
    return pred, true


def test_pred_vs_true_and_residual_figures(tmp_path, synthetic):
    pred, true = synthetic
    P.pred_vs_true(pred, true, TRAITS, tmp_path / "pvt.png", baseline_means=true.mean(axis=0))
    expect_png(tmp_path / "pvt.png", 2.9 * 5, 3.3)
    P.residuals(pred, true, TRAITS, tmp_path / "res.png")
    expect_png(tmp_path / "res.png", 2.9 * 5, 5.6)


def test_accuracy_bars_and_group_figure(tmp_path, synthetic):
    pred, true = synthetic
    s = M.summarize_with_baseline(pred, true, TRAITS, true.mean(axis=0))
    s.update(M.bootstrap_ci(pred, true, 50, seed=0))
    P.accuracy_bars(s, TRAITS, tmp_path / "acc.png", noise_floor=0.97)
    expect_png(tmp_path / "acc.png", 11, 3.9)
    groups = M.group_metrics(pred, true, {"gender": ["male", "female"] * 20}, TRAITS, true.mean(axis=0))
    P.group_accuracy(groups, tmp_path / "groups.png")
    expect_png(tmp_path / "groups.png", 4.2, 3.6)


def test_training_curves_figure(tmp_path):
    history = [{"epoch": e, "train_loss": 0.2 / e, "val_loss": 0.25 / e, "val_mean_accuracy": 0.8 + 0.01 * e,
                "lr": 1e-3 * 0.5 ** e, "val_acc_openness": 0.8 + 0.012 * e} for e in range(1, 6)]
    P.training_curves(history, tmp_path / "curves.png", traits=TRAITS, baseline_mean_accuracy=0.8)
    expect_png(tmp_path / "curves.png", 12, 3.6)


def test_attention_figures(tmp_path):
    rng = np.random.default_rng(0)
    t, heads = 6, 2

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    att = {"static_to_dynamic": [softmax(rng.normal(size=(heads, t, t))) for _ in range(2)],
           "dynamic_to_static": [softmax(rng.normal(size=(heads, t, t))) for _ in range(2)]}
    P.attention_heads(att, tmp_path / "heads.png", clip_id="abc.001")
    expect_png(tmp_path / "heads.png", 2.4 * heads + 0.9, 2.5 * 4 + 0.5)
    entropy = {d: np.stack([M.attention_entropy(w[None]) for w in ws]) for d, ws in att.items()}
    P.attention_entropy(entropy, {d: t for d in att}, tmp_path / "entropy.png")
    assert png_size(tmp_path / "entropy.png")[1] == round(3.8 * P.DPI)
    crops = [rng.integers(0, 256, size=(t, 3, 16, 16), dtype=np.uint8) for _ in range(2)]
    received = [{d: M.received_attention(ws) for d, ws in att.items()}] * 2
    P.attention_strip(crops, received, ["abc.001", "abc.002"], tmp_path / "strip.png")
    expect_png(tmp_path / "strip.png", max(7.5, 1.05 * t + 1.2), 2.6 * 2 + 0.7)
