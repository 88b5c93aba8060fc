"""The ablation's calibrated statistics: the seed-level t test and its inverted CI, the one-sided and equivalence
tests, the permutation test, BH q-values, the primaries, the calibration and the power table; and the
``bigfive compare --calibrate`` command on run folders."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import ROOT, clean_env

from bigfive import TRAITS
from bigfive.ablation import calibration as K
from bigfive.ablation import power as P
from bigfive.ablation import primaries as PR
from bigfive.ablation import runs as R
from bigfive.ablation import seedtest as T
from bigfive.ablation import stats as S
from bigfive.config.ablation import PrimaryConfig


def _scores(rng: np.random.Generator, seeds: int, clips: int = 40, cols: int = 3, shift: float = 0.0,
            seed_sd: float = 0.01, clip_sd: float = 0.03, noise: float = 0.02, clip_effect: np.ndarray | None = None
            ) -> np.ndarray:
    """(seeds, clips, cols) accuracies: seed effect + shared clip difficulty + seed x clip noise."""
    clip = clip_effect if clip_effect is not None else np.zeros((1, clips, cols))
    return (0.9 + shift + seed_sd * rng.normal(size=(seeds, 1, cols)) + clip
            + noise * rng.normal(size=(seeds, clips, cols)))


# ------------------------------------------------------------------------------------------ seed t test
def test_ci_and_p_agree_by_test_inversion():
    """The CI excludes 0 exactly when p < alpha, on every column of many synthetic datasets; a CI bound moved onto
    0 gives p = alpha."""
    rng = np.random.default_rng(0)
    clip = 0.03 * rng.normal(size=(1, 40, 3))
    agree = 0
    for k in range(200):
        a = _scores(rng, 5, shift=0.01 * (k % 3), clip_effect=clip)
        b = _scores(rng, 5, clip_effect=clip)
        for alpha in (0.05, 0.01):
            res = T.seed_t(a, b, level=1 - alpha)
            excludes = (res.low > 0) | (res.high < 0)
            assert np.array_equal(excludes, res.p < alpha)
            agree += int(excludes.sum())
    assert agree > 50  # both outcomes occur: the equivalence is not vacuous
    res = T.seed_t(a, b)
    on_zero = T.seed_t(a - res.low[None, None, :], b)  # a constant shift moves Δ, not the SE
    np.testing.assert_allclose(on_zero.low, 0.0, atol=1e-12)
    np.testing.assert_allclose(on_zero.p, 0.05, rtol=1e-9)


def test_seed_t_without_clip_term_is_welch_on_seed_means():
    from scipy.stats import ttest_ind

    rng = np.random.default_rng(1)
    a, b = _scores(rng, 5, shift=0.01), _scores(rng, 4)
    res = T.seed_t(a, b, clip_term=False)
    ref = ttest_ind(a.mean(axis=1), b.mean(axis=1), equal_var=False)
    np.testing.assert_allclose(res.p, ref.pvalue, rtol=1e-10)
    np.testing.assert_allclose(res.delta, a.mean(axis=(0, 1)) - b.mean(axis=(0, 1)))


def test_clip_term_widens_the_interval_and_one_seed_gives_nan():
    rng = np.random.default_rng(2)
    a, b = _scores(rng, 5, shift=0.005), _scores(rng, 5)
    with_clip, without = T.seed_t(a, b), T.seed_t(a, b, clip_term=False)
    assert np.all(with_clip.se > without.se) and np.all(with_clip.p > without.p)
    assert np.all(np.isnan(T.seed_t(a[:1], b).p))


def test_superiority_and_equivalence_match_their_intervals():
    rng = np.random.default_rng(3)
    for k in range(60):
        a, b = _scores(rng, 5, shift=0.004 * (k % 5)), _scores(rng, 5)
        res = T.seed_t(a, b, level=0.90)  # 1 - 2 alpha
        sup = T.one_sided_p(res, "superiority", 0.002)
        assert np.array_equal(sup < 0.05, res.low > 0.002)
        eq = T.one_sided_p(res, "equivalence", 0.01)
        assert np.array_equal(eq < 0.05, (res.low > -0.01) & (res.high < 0.01))
    with pytest.raises(ValueError, match="unknown hypothesis"):
        T.one_sided_p(res, "bigger", 0.0)


def test_permutation_is_exact_with_its_floor():
    a = np.full((5, 4, 1), 0.9) + np.arange(5)[:, None, None] * 1e-3
    p, floor = T.permutation_p(a + 0.05, a)
    assert floor == pytest.approx(2 / 252)  # C(10, 5) labelings, two-sided
    assert p[0] == pytest.approx(2 / 252)  # the observed split and its mirror image
    p_same, _ = T.permutation_p(a, a)
    assert p_same[0] == pytest.approx(1.0)


def _brute_p_greater(a: np.ndarray, b: np.ndarray, x: float) -> np.ndarray:
    """One-sided permutation p of H0 Δ <= x, by shifting the variant's seeds by x and counting every labeling."""
    import itertools

    seeds = np.concatenate([a.mean(axis=1) - x, b.mean(axis=1)])
    sv, total = len(a), len(a) + len(b)
    obs = seeds[:sv].mean(axis=0) - seeds[sv:].mean(axis=0)
    stats = [seeds[list(g)].mean(axis=0) - np.delete(seeds, list(g), axis=0).mean(axis=0)
             for g in itertools.combinations(range(total), sv)]
    return np.mean([s >= obs - 1e-12 for s in stats], axis=0)


def test_permutation_ci_is_its_own_inversion():
    """The permutation CI excludes 0 exactly when its p < alpha; its one-sided p at any shift equals a brute-force
    recount; each CI bound is where the shifted test's p crosses alpha; superiority and TOST match their intervals."""
    rng = np.random.default_rng(5)
    clip = 0.03 * rng.normal(size=(1, 40, 3))
    both = set()
    for k in range(150):
        a = _scores(rng, 5, shift=0.006 * (k % 4), clip_effect=clip)
        b = _scores(rng, 4 + k % 2, clip_effect=clip)
        for alpha in (0.05, 0.1):
            res = T.permutation(a, b, level=1 - alpha)
            excludes = (res.low > 0) | (res.high < 0)
            assert np.array_equal(excludes, res.p < alpha)
            both |= set(excludes.tolist())
        res = T.permutation(a, b, level=0.90)
        assert np.array_equal(T.one_sided_p(res, "superiority", 0.002) < 0.05, res.low > 0.002)
        eq = T.one_sided_p(res, "equivalence", 0.01) < 0.05
        assert np.array_equal(eq, (res.low > -0.01) & (res.high < 0.01))
    assert both == {True, False}  # not vacuous
    for x in (-0.01, 0.0, 0.004):
        np.testing.assert_allclose(res.p_greater(x), _brute_p_greater(a, b, x), atol=1e-12)
    eps = 1e-9  # just inside the lower bound the one-sided test does not reject at alpha / 2, just outside it does
    assert np.all(_brute_p_greater(a, b, res.low[0] - eps)[0] < 0.05)
    assert np.all(_brute_p_greater(a, b, res.low[0] + eps)[0] >= 0.05)


def test_bh_matches_hand_computed_values():
    assert S.bh([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    out = S.bh([math.nan, 0.01, 0.04])  # NaN is not counted: m = 2
    assert math.isnan(out[0]) and out[1:] == pytest.approx([0.02, 0.04])
    assert S.bh([0.9, 0.95]) == pytest.approx([0.95, 0.95])


# ---------------------------------------------------------------------------------------- calibration
def test_calibration_measures_the_rate_and_can_fail():
    """On nulls drawn like the ablation's (seed + clip + noise), the t test's rejection rate is near alpha, the
    bootstrap's is above it with few seeds; with a real difference the rate is high (the measurement can fail)."""
    rng = np.random.default_rng(4)
    null = _scores(rng, 10, clip_effect=0.03 * rng.normal(size=(1, 40, 3)))
    rec, pvals = K.calibrate(null, ["a", "b", "c"], 3, 300, resamples=199, seed=0)
    t_rate = np.mean([rec["seed_t_no_clip"]["alpha=0.05"][c]["rate"] for c in "abc"])
    boot_rate = np.mean([rec["hierarchical"]["alpha=0.05"][c]["rate"] for c in "abc"])
    assert 0.01 <= t_rate <= 0.10 and boot_rate > t_rate
    assert set(pvals) == set(K.CANDIDATES) and pvals["seed_t"].shape == (300, 3)
    # with 2 seeds per arm the bootstrap sees half the seed variance: the measurement flags it as liberal
    rec2, _ = K.calibrate(null, ["a", "b", "c"], 2, 200, resamples=199, seed=0)
    assert np.mean([rec2["hierarchical"]["alpha=0.05"][c]["rate"] for c in "abc"]) > 0.12
    assert not rec2["hierarchical"]["calibrated"]
    r = K.rejection(np.array([0.01] * 5 + [0.5] * 95), 0.05)
    assert (r["rejected"], r["datasets"], r["rate"]) == (5, 100, 0.05)
    assert r["ci95"][0] < 0.05 < r["ci95"][1]


# -------------------------------------------------------------------------------------------- power
def test_fisher_rejection_matrix_matches_scipy():
    from scipy.stats import fisher_exact

    n = 6
    rej = P.fisher_rejects(n, 0.05)
    for i in range(n + 1):
        for j in range(n + 1):
            assert rej[i, j] == (fisher_exact([[i, n - i], [j, n - j]]).pvalue < 0.05)


def test_power_table_is_consistent():
    # 4/5 vs 5/5 learning the interaction: about 40 seeds per arm (the estimate)
    assert 30 <= P.rate_seeds_needed(0.8, 1.0, 0.05) <= 45
    mdds = [P.mdd(n, 0.01, 0.01, 4e-4, 4e-4, 50, 0.05) for n in (3, 5, 10)]
    assert mdds[0] > mdds[1] > mdds[2] > 0
    se, df = P.se_df(5, 0.01, 0.01, 4e-4, 4e-4, 50)
    assert P.power_t(mdds[1], se, df, 0.05) == pytest.approx(0.8, abs=1e-6)
    n = P.seeds_needed(0.01, 0.01, 0.01, 4e-4, 4e-4, 50, 0.05)
    assert P.power_t(0.01, *P.se_df(n, 0.01, 0.01, 4e-4, 4e-4, 50), 0.05) >= 0.8
    assert P.power_t(0.01, *P.se_df(n - 1, 0.01, 0.01, 4e-4, 4e-4, 50), 0.05) < 0.8
    comp = P.components(_scores(np.random.default_rng(5), 10, seed_sd=0.01, noise=0.02))
    assert comp["seed_sd"] == pytest.approx([0.01] * 3, rel=0.6)
    assert comp["interaction_var"] == pytest.approx([4e-4] * 3, rel=0.2)


# --------------------------------------------------------------------------------- runs on disk, CLI
def _write_runs(root, variant: str, seeds: list[int], rng: np.random.Generator, shift: float = 0.0,
                agree_shift: float = 0.0, reached: int | None = 8) -> None:
    import csv

    clip_true = np.random.default_rng(99).uniform(0.3, 0.7, size=(30, len(TRAITS)))
    for s in seeds:
        d = root / variant / f"seed{s}"
        d.mkdir(parents=True)
        err = np.abs(0.04 - shift + 0.01 * rng.normal() + 0.01 * rng.normal(size=clip_true.shape))
        err[:, TRAITS.index("agreeableness")] -= agree_shift
        pred = clip_true + np.abs(err)
        (d / "metrics.json").write_text(json.dumps({"variant": variant, "seed": s, "same_as": None,
                                                    "best_val_mean_accuracy": 0.95, "epochs_to_interaction": reached,
                                                    "train_seconds": 40.0}))
        with (d / "predictions_test.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video_id", *[f"{t}_{k}" for t in TRAITS for k in ("true", "pred")]])
            for i in range(len(clip_true)):
                w.writerow([f"clip{i:03d}", *[f"{v:.6f}" for t in range(len(TRAITS))
                                              for v in (clip_true[i, t], pred[i, t])]])


def test_primaries_holm_and_decisions(tmp_path):
    rng = np.random.default_rng(6)
    _write_runs(tmp_path, "framewise", [0, 1, 2, 3, 4], rng, agree_shift=0.02)
    _write_runs(tmp_path, "concat", [0, 1, 2, 3, 4], rng)
    runs = R.load_runs(tmp_path)
    prim = {"aligned": PrimaryConfig("framewise", "concat", "agreeableness", "superiority", 0.0),
            "same_mean": PrimaryConfig("framewise", "concat", "openness", "equivalence", 0.05),
            "missing": PrimaryConfig("cross_attention_static_to_dynamic", "framewise", "mean", "superiority", 0.0)}
    rows = {r["primary"]: r for r in PR.evaluate(runs, prim, 0.05)}
    assert rows["aligned"]["delta"] > 0.01 and rows["aligned"]["decision"] == "framewise better"
    assert rows["same_mean"]["decision"] == "equivalent within ±0.05"
    assert rows["missing"]["decision"] == "not run" and math.isnan(rows["missing"]["p_value_holm"])
    ps = [rows["aligned"]["p_value"], rows["same_mean"]["p_value"]]
    assert [rows["aligned"]["p_value_holm"], rows["same_mean"]["p_value_holm"]] == pytest.approx(S.holm(ps))
    assert rows["aligned"]["ci_level"] == pytest.approx(0.9) and rows["aligned"]["ci_low"] > 0
    with pytest.raises(Exception, match=r"ablation\.primaries\.bad\.trait"):
        PR.evaluate(runs, {"bad": PrimaryConfig("framewise", "concat", "charisma")}, 0.05)


def test_compare_calibrate_command_writes_its_record(tmp_path):
    """`bigfive compare --calibrate` on 6 calibration runs of the reference, 3 seeds per arm."""
    rng = np.random.default_rng(7)
    ref = "cross_attention_static_to_dynamic"
    runs = tmp_path / "cal_runs"
    _write_runs(runs, ref, [100, 101, 102, 103, 104, 105], rng)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ablation"].update(seeds=[200, 201, 202], results_dir=str(tmp_path / "results"))
    params["ablation"]["calibration"].update(seeds=[100, 101, 102, 103, 104, 105], datasets=120, bootstrap=99,
                                             runs_dir=str(runs))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "bigfive", "compare", "--params", str(tmp_path / "params.yaml"),
                           "--calibrate"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "results"
    record = json.loads((out / "calibration.json").read_text())
    assert record["runs"]["seeds"] == [100, 101, 102, 103, 104, 105] and record["per_arm"] == 3
    main = record["by_seed_count"]["3"]
    assert set(main) == set(K.CANDIDATES)
    rate = main["seed_t"]["alpha=0.05"]["mean"]
    assert rate["datasets"] == 120 and 0 <= rate["ci95"][0] <= rate["rate"] <= rate["ci95"][1] <= 1
    assert record["summary_test"] == "permutation" and isinstance(record["calibrated"], bool)
    assert "Minimum detectable difference" in (out / "power.md").read_text()
    assert (out / "calibration.png").stat().st_size > 5_000
    # too few calibration runs for two arms of the ablation's seed count: one line saying what to run
    params["ablation"]["seeds"] = [200, 201, 202, 203]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "bigfive", "compare", "--params", str(tmp_path / "params.yaml"),
                           "--calibrate"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "need 2 x 4" in proc.stderr
    params["ablation"]["seeds"] = [200]  # one seed per arm: no seed variance to test with
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "bigfive", "compare", "--params", str(tmp_path / "params.yaml"),
                           "--calibrate"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "ablation.seeds" in proc.stderr and "2 or more per arm" in proc.stderr


def test_shifted_power_sees_a_large_shift_and_not_none():
    rng = np.random.default_rng(7)
    scores = _scores(rng, 10, cols=2)
    rate = K.shifted_power(scores, 5, np.array([0.05, 0.0]), 100)
    assert rate[0] == 1.0 and rate[1] < 0.2
