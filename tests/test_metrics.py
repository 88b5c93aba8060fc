"""Metric functions against values worked out by hand, and the figures drawn from synthetic arrays:
what each figure plots (series, labels, titles), and the PNG that ``save`` writes."""

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


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    true = rng.uniform(0.2, 0.8, size=(60, 5))
    pred = np.clip(true + rng.normal(0, 0.05, size=true.shape), 0, 1)
    a = M.bootstrap_ci(pred, true, 2000, seed=3, baseline_means=true.mean(axis=0))
    assert a == M.bootstrap_ci(pred, true, 2000, seed=3, baseline_means=true.mean(axis=0))
    per_clip = 1 - np.abs(pred - true).mean(axis=1)  # each clip's accuracy over the five traits
    se = per_clip.std(ddof=1) / math.sqrt(len(per_clip))
    # 60 clips of near-normal accuracies: the interval is close to the normal one, mean +- 1.96 se
    assert a["mean_accuracy_ci95_low"] == pytest.approx(per_clip.mean() - 1.96 * se, abs=0.25 * se)
    assert a["mean_accuracy_ci95_high"] == pytest.approx(per_clip.mean() + 1.96 * se, abs=0.25 * se)
    assert a["gain_vs_baseline_ci95_low"] > 0  # the noisy truth beats the mean by a wide margin


def test_bootstrap_ci_follows_the_skew_of_a_small_sample():
    """Not a symmetric interval: right-skewed per-clip gains give a longer upper arm."""
    gains = np.array([0.0] * 16 + [0.01, 0.02, 0.05, 0.4])  # one clip gains a lot, most nothing
    true = np.zeros((20, 1))
    pred = np.full((20, 1), 0.5) - gains[:, None]  # model error 0.5 - g; baseline error 0.5
    ci = M.bootstrap_ci(pred, true, 4000, seed=0, baseline_means=np.array([0.5]))
    mean = gains.mean()  # 0.024
    low, high = ci["gain_vs_baseline_ci95_low"], ci["gain_vs_baseline_ci95_high"]
    assert low < mean < high
    assert high - mean > 1.5 * (mean - low)
    assert low > -1e-12  # no resample of non-negative gains has a negative mean


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


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(0)
    true = rng.uniform(0.2, 0.8, size=(40, 5))
    pred = np.clip(0.5 + 0.6 * (true - 0.5) + rng.normal(0, 0.05, size=true.shape), 0, 1)
    return pred, true


def bar_heights(container) -> list[float]:
    return [bar.get_height() for bar in container]


def tick_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def test_save_writes_a_png_of_figsize_times_dpi(tmp_path, synthetic):
    pred, true = synthetic
    path = P.save(P.residuals(pred, true, TRAITS), tmp_path / "res.png")
    assert path == tmp_path / "res.png" and path.stat().st_size > 5000
    assert png_size(path) == (round(2.9 * 5 * P.DPI), round(5.6 * P.DPI))
    assert [p.name for p in tmp_path.iterdir()] == ["res.png"]  # written atomically: no temporary left


def test_pred_vs_true_plots_each_trait_against_its_truth(synthetic):
    pred, true = synthetic
    means = true.mean(axis=0)
    fig = P.pred_vs_true(pred, true, TRAITS, baseline_means=means, split="val")
    assert fig.get_suptitle() == "Predicted vs true trait scores (val split, 40 clips)"
    assert len(fig.axes) == 5
    for j, ax in enumerate(fig.axes):
        assert ax.get_title() == TRAITS[j].capitalize()
        assert ax.get_xlabel() == "true score (0–1)"
        assert ax.get_ylabel() == ("predicted score (0–1)" if j == 0 else "")
        np.testing.assert_array_equal(ax.collections[0].get_offsets(), np.column_stack([true[:, j], pred[:, j]]))
        identity, baseline = ax.lines
        assert list(identity.get_ydata()) == [0, 1]
        assert list(baseline.get_ydata()) == [means[j], means[j]]
        p, t = pred[:, j], true[:, j]
        ccc = 2 * np.cov(p, t, bias=True)[0, 1] / (p.var() + t.var() + (p.mean() - t.mean()) ** 2)
        assert ax.texts[0].get_text() == (f"r = {np.corrcoef(p, t)[0, 1]:.2f}\nCCC = {ccc:.2f}\n"
                                          f"acc = {1 - np.abs(p - t).mean():.3f}")
    assert fig.axes[0].get_legend() is not None and fig.axes[1].get_legend() is None
    assert len(P.pred_vs_true(pred, true, TRAITS).axes[0].lines) == 1  # no baseline line without means


def test_residuals_show_bias_and_shrinkage_per_trait(synthetic):
    pred, true = synthetic
    res = pred - true
    fig = P.residuals(pred, true, TRAITS, split="test")
    top, bottom = fig.axes[:5], fig.axes[5:]  # row-major: histograms first
    for j in range(5):
        assert top[j].get_title() == TRAITS[j].capitalize()
        assert sum(bar_heights(top[j].patches)) == len(res)  # every clip in the histogram
        assert top[j].get_legend().get_texts()[0].get_text() == f"mean {res[:, j].mean():+.3f}"
        np.testing.assert_array_equal(bottom[j].collections[0].get_offsets(), np.column_stack([true[:, j], res[:, j]]))
        slope, _ = np.polyfit(true[:, j], res[:, j], 1)
        assert bottom[j].get_legend().get_texts()[0].get_text() == f"fit slope {slope:+.2f}"
        assert slope < 0  # the synthetic predictions shrink toward the mean (factor 0.6)
    lim = np.abs(res).max() * 1.05
    np.testing.assert_allclose(bottom[0].get_ylim(), (-lim, lim))
    assert "(test split)" in fig.get_suptitle()


def test_accuracy_bars_plot_model_baseline_and_correlations(synthetic):
    pred, true = synthetic
    s = M.summarize_with_baseline(pred, true, TRAITS, true.mean(axis=0))
    s.update(M.bootstrap_ci(pred, true, 50, seed=0))
    fig = P.accuracy_bars(s, TRAITS, noise_floor=0.97, split="val")
    ax_acc, ax_r = fig.axes
    names = [*(t.capitalize() for t in TRAITS), "Mean"]
    assert tick_labels(ax_acc) == names and tick_labels(ax_r) == names
    model, baseline = ax_acc.containers[:2]
    assert bar_heights(model) == [s["traits"][t]["accuracy"] for t in TRAITS] + [s["mean_accuracy"]]
    base = [s["traits"][t]["baseline_accuracy"] for t in TRAITS] + [s["baseline_mean_accuracy"]]
    assert bar_heights(baseline) == base
    assert [line.get_ydata()[0] for line in ax_acc.lines if line.get_label().startswith("noise floor")] == [0.97]
    ci = ax_acc.containers[2].lines[2][0].get_segments()[0]  # the error bar on the mean
    np.testing.assert_allclose(ci[:, 1], [s["mean_accuracy_ci95_low"], s["mean_accuracy_ci95_high"]])
    assert ax_acc.get_title() == "Accuracy per trait (val)"
    r, c = ax_r.containers
    assert bar_heights(r) == [s["traits"][t]["pcc"] for t in TRAITS] + [s["pcc"]]
    assert bar_heights(c) == [s["traits"][t]["ccc"] for t in TRAITS] + [s["ccc"]]


def test_group_figure_plots_each_groups_accuracy(synthetic):
    pred, true = synthetic
    groups = M.group_metrics(pred, true, {"gender": ["male", "female"] * 20}, TRAITS, true.mean(axis=0))
    fig = P.group_accuracy(groups, split="test")
    (ax,) = fig.axes
    per = groups["gender"]["groups"]
    assert tick_labels(ax) == [f"{g}\n(n=20)" for g in per]
    model, baseline = ax.containers
    assert bar_heights(model) == [per[g]["mean_accuracy"] for g in per]
    assert bar_heights(baseline) == [per[g]["baseline_mean_accuracy"] for g in per]
    assert ax.get_title() == f"Gender (gap {groups['gender']['accuracy_gap']:.3f})"


def test_training_curves_plot_the_history():
    history = [{"epoch": e, "train_loss": 0.2 / e, "val_loss": 0.25 / e, "val_mean_accuracy": 0.8 + 0.01 * e,
                "lr": 1e-3 * 0.3 ** e, "val_acc_openness": 0.8 + 0.012 * e} for e in range(1, 6)]
    history[2]["val_mean_accuracy"] = 0.9  # the best epoch is 3, not the last
    fig = P.training_curves(history, traits=TRAITS, baseline_mean_accuracy=0.8, loss="mse")
    ax_loss, ax_acc, ax_lr = fig.axes
    epochs = [1, 2, 3, 4, 5]
    train, val = ax_loss.lines
    assert list(train.get_xdata()) == epochs and list(train.get_ydata()) == [h["train_loss"] for h in history]
    assert list(val.get_ydata()) == [h["val_loss"] for h in history]
    assert ax_loss.get_title() == "Loss (MSE)" and ax_loss.get_ylabel() == "loss (mean squared error, score²)"
    mean, openness, baseline = ax_acc.lines  # only openness has a per-trait key
    assert list(mean.get_ydata()) == [h["val_mean_accuracy"] for h in history]
    assert list(openness.get_ydata()) == [h["val_acc_openness"] for h in history]
    assert openness.get_label() == "Openness" and list(baseline.get_ydata()) == [0.8, 0.8]
    assert ax_acc.collections[0].get_offsets().tolist() == [[3, 0.9]]
    assert ax_acc.collections[0].get_label() == "best 0.9000 (epoch 3)"
    assert list(ax_lr.lines[0].get_ydata()) == [h["lr"] for h in history]
    assert ax_lr.get_yscale() == "log"  # the rate spans more than 20x
    assert fig.get_suptitle() == "Training history (5 epochs)"


def test_training_curves_say_what_was_not_recorded():
    fig = P.training_curves([{"epoch": 1, "train_loss": 0.2}])
    _, ax_acc, ax_lr = fig.axes
    assert [t.get_text() for t in ax_acc.texts] == ["not recorded"] and not ax_acc.lines
    assert [t.get_text() for t in ax_lr.texts] == ["not recorded"]


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def attention():
    rng = np.random.default_rng(0)
    t, heads = 6, 2
    return {"static_to_dynamic": [softmax(rng.normal(size=(heads, t, t))) for _ in range(2)],
            "dynamic_to_static": [softmax(rng.normal(size=(heads, t, t))) for _ in range(2)]}


def test_attention_heads_show_each_map_by_direction_layer_and_head(attention):
    fig = P.attention_heads(attention, clip_id="abc.001")
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 4 * 2  # (2 directions x 2 layers) rows, 2 heads
    expected = [(d, layer, h) for d, ws in attention.items() for layer in range(len(ws)) for h in range(2)]
    for ax, (d, layer, h) in zip(maps, expected):
        q, k = d.split("_to_")
        assert ax.get_title() == f"{q}→{k}, layer {layer + 1}, head {h + 1}"
        assert ax.get_xlabel() == f"{k} token (frame t)"
        np.testing.assert_array_equal(ax.images[0].get_array(), attention[d][layer][h])
    vmax = max(float(w.max()) for ws in attention.values() for w in ws)
    assert {ax.images[0].get_clim() for ax in maps} == {(0, vmax)}  # one colour scale for all maps
    assert fig.get_suptitle().startswith("Cross-attention per head, clip abc.001")


def test_attention_entropy_bars_per_head_against_ln_t(attention):
    entropy = {d: np.stack([M.attention_entropy(w[None]) for w in ws]) for d, ws in attention.items()}
    fig = P.attention_entropy(entropy, {d: 6 for d in attention})
    (ax,) = fig.axes
    assert bar_heights(ax.containers[0]) == [float(v) for ent in entropy.values() for v in ent.ravel()]
    assert tick_labels(ax)[:2] == ["static→dynamic\nL1 H1", "static→dynamic\nL1 H2"]
    assert tick_labels(ax)[4] == "dynamic→static\nL1 H1"
    assert [line.get_ydata()[0] for line in ax.lines if line.get_label().startswith("uniform")] == [math.log(6)]


def test_attention_strip_fades_crops_and_bars_the_received_attention(attention):
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, size=(6, 3, 16, 16), dtype=np.uint8) for _ in range(2)]
    received = [{d: M.received_attention(ws) for d, ws in attention.items()}, {d: np.full(6, 1 / 6) for d in attention}]
    fig = P.attention_strip(crops, received, ["abc.001", "abc.002"])
    strip, bars = fig.axes[0], fig.axes[1]
    assert strip.get_ylabel() == "abc.001"
    image = strip.images[0].get_array()
    pad = 16 // 10
    shares = np.mean(list(received[0].values()), axis=0)
    top = int(np.argmax(shares))  # the most attended frame is drawn unfaded
    x0 = top * (16 + 2 * pad) + pad
    np.testing.assert_array_equal(image[:, x0:x0 + 16], np.transpose(crops[0][top], (1, 2, 0)))
    for container, (d, share) in zip(bars.containers, received[0].items()):
        np.testing.assert_allclose(bar_heights(container), share)
        assert container.get_label() == f"{d.split('_to_')[1]} token t, queried by {d.split('_to_')[0]}"
    assert [line.get_ydata()[0] for line in bars.lines] == [1 / 6]
    assert fig.axes[2].get_ylabel() == "abc.002"
