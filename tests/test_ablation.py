"""Ablation: the variant table, `bigfive compare` on hand-made runs with known statistics, and the
real `dvc repro pipelines/ablation/dvc.yaml` on the tiny pipeline's project (2 variants x 2 seeds)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import HANG_S, ROOT, clean_env, dvc

from bigfive import TRAITS
from bigfive.ablation import compare as C
from bigfive.ablation import figures as F
from bigfive.ablation import runs as R
from bigfive.ablation import stats as S
from bigfive.ablation import summary as SM
from bigfive.ablation import variants as V
from bigfive.config import ConfigError, Params, load_params, params_from_dict, replace, to_dict

# The tiny ablation the end-to-end tests (this file, test_mlflow_server.py, test_notebooks.py) share.
TINY_VARIANTS = ["concat", "cross_attention_bidirectional"]
TINY_SEEDS = [0, 1]


def ablation_project(tiny_pipeline: Path, base: Path) -> Path:
    """A copy of the tiny pipeline's project with a reduced ablation run through DVC, made once per session.

    The copy keeps the session's `tiny_pipeline` project untouched for other tests.
    """
    project = base / "ablation_project"
    done = base / "ablation_project.done"
    if done.exists():
        return project
    if project.exists():
        shutil.rmtree(project)
    shutil.copytree(tiny_pipeline, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ablation"] = reduced_ablation(params, TINY_VARIANTS, TINY_SEEDS, bootstrap=200)
    params["tracking"]["system_metrics"] = False  # a sampling thread per run costs seconds and adds nothing here
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(project, "repro", "pipelines/ablation/dvc.yaml")
    done.touch()
    return project


def reduced_ablation(params: dict, variants: list[str], seeds: list[int], *, bootstrap: int,
                     reference: str = "cross_attention_bidirectional", extra: dict | None = None) -> dict:
    """params.yaml's ablation section cut down to ``variants`` (default definitions, plus ``extra`` ones) x
    ``seeds``, 1 epoch, tested against ``reference``; the flow ablation's model is the reference."""
    defaults = to_dict(Params().ablation)
    section = {**defaults, **params.get("ablation", {})}
    chosen = {v: defaults["variants"][v] for v in variants} | (extra or {})
    # the mechanics run on small seed numbers, which are selection seeds: reuse allowed, as a user would say so
    return {**section, "epochs": 1, "seeds": seeds, "reuse_selection_seeds": True, "variants": chosen,
            "reference": reference, "bootstrap": bootstrap, "test": "hierarchical",
            "flow": {**section["flow"], "variant": reference}}


@pytest.fixture(scope="module")
def ablated(tiny_pipeline, tmp_path_factory) -> Path:
    return ablation_project(tiny_pipeline, tmp_path_factory.getbasetemp())


# --------------------------------------------------------------------------------------------- variants
def test_defaults_cover_every_required_variant_and_build():
    from bigfive.models import build_model

    xattn = "cross_attention"
    required = {"static_only", "dynamic_only", "concat", "late", "framewise_shifted", "framewise",
                f"{xattn}_no_time_bias", f"{xattn}_static_to_dynamic", f"{xattn}_dynamic_to_static",
                f"{xattn}_bidirectional", f"{xattn}_h1", f"{xattn}_h8"}
    cfg = Params().ablation
    assert set(cfg.variants) == required
    assert cfg.reference == f"{xattn}_static_to_dynamic"
    assert cfg.seeds == [200, 201, 202, 203, 204] and cfg.test == "permutation"
    base = Params()
    built = {}
    for name, overrides in cfg.variants.items():
        p = V.run_params(base, overrides, seed=1, epochs=2)
        assert (p.train.seed, p.seed, p.train.epochs) == (1, 1, 2)
        assert p.train.warmup_epochs < p.train.epochs
        built[name] = p.model
        build_model(p.model, frames=4, flow_channels=2)  # every variant is a model that exists
    assert built["static_only"].fusion == "static_only" and built["dynamic_only"].fusion == "dynamic_only"
    assert built["cross_attention_dynamic_to_static"].direction == "dynamic_to_static"
    assert built["cross_attention_no_time_bias"].time_bias is False
    assert built["cross_attention_bidirectional"].time_bias is True
    assert built["cross_attention_bidirectional"].direction == "bidirectional"
    assert [built[f"cross_attention_h{h}"].heads for h in (1, 8)] == [1, 8]
    assert built["framewise"].fusion == "framewise" and built["framewise_shifted"].fusion == "framewise_shifted"
    assert built["framewise"].direction == built["cross_attention_static_to_dynamic"].direction


def test_params_yaml_ablation_section_covers_every_required_variant():
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert "ablation" in raw, "params.yaml needs the ablation section (pipelines/ablation reads it through DVC vars)"
    assert set(V.REQUIRED_VARIANTS) <= set(params.ablation.variants)
    ref = params.ablation.reference  # the full (default) model: cross-attention with the relative-time bias
    ref_model = V.resolved(params, params.ablation.variants[ref], 5)["model"]
    assert ref_model["fusion"] == "cross_attention" and ref_model["time_bias"] is True, ref
    for name in V.REQUIRED_VARIANTS:  # the declared overrides resolve to what the default table means
        got = V.resolved(params, params.ablation.variants[name], 5)["model"]
        want = V.resolved(params, V.DEFAULT_VARIANTS[name], 5)["model"]
        assert got == want, name


def test_duplicate_variants_are_aliases_of_the_first():
    base = Params()
    variants = {**Params().ablation.variants, "cross_attention_h4": {**Params().ablation.variants["cross_attention_h1"],
                                                                    "model.heads": 4}}
    assert V.aliases(base, variants, 3) == {"cross_attention_h4": "cross_attention_static_to_dynamic"}
    # a variant that leaves a setting to the base follows it: framewise without a direction duplicates
    # the declared static->dynamic one only while the base direction is static->dynamic
    loose = {**variants, "framewise_default_direction": {"model.fusion": "framewise"}}
    s2d = replace(base, {"model.direction": "static_to_dynamic"})
    assert V.aliases(s2d, loose, 3)["framewise_default_direction"] == "framewise"
    bidir = replace(base, {"model.direction": "bidirectional"})
    assert "framewise_default_direction" not in V.aliases(bidir, loose, 3)


def test_bad_ablation_config_names_the_key():
    data = to_dict(Params())
    data["ablation"]["variants"]["bad"] = {"preprocess.frames": 4}
    with pytest.raises(ConfigError, match=r"ablation\.variants\.bad\.preprocess\.frames"):
        params_from_dict(data)
    data = to_dict(Params())
    data["ablation"]["reference"] = "nope"
    with pytest.raises(ConfigError, match=r"ablation\.reference"):
        params_from_dict(data)
    # a selection seed in ablation.seeds is refused unless the override says so
    data = to_dict(Params())
    data["ablation"].update(seeds=[4, 200], reuse_selection_seeds=False)
    with pytest.raises(ConfigError, match=r"ablation\.seeds: .*\[4\].*selection seeds"):
        params_from_dict(data)
    data["ablation"]["seeds"] = [200, 201]
    assert params_from_dict(data).ablation.seeds == [200, 201]
    data = to_dict(Params())
    data["ablation"]["primaries"]["bad"] = {"variant": "framewise", "versus": "concat", "kind": "equivalence"}
    with pytest.raises(ConfigError, match=r"ablation\.primaries\.bad\.margin"):
        params_from_dict(data)
    data = to_dict(Params())
    data["ablation"]["variants"]["h3"] = {"model.heads": 3}
    with pytest.raises(ConfigError, match=r"model\.heads"):  # 3 heads do not divide embed_dim 64
        V.run_params(params_from_dict(data), data["ablation"]["variants"]["h3"], seed=0, epochs=1)


def test_preprocessing_variant_gets_its_own_folders_and_settings():
    from bigfive.ablation.execute import preprocess_params, preprocess_spec

    base = Params()
    p = preprocess_params(base, 16, "farneback")
    assert (p.preprocess.frames, p.preprocess.flow.method) == (16, "farneback")
    assert p.preprocess.faces_dir == "data/ablation_flow/t16/faces"  # shared by every method at this T
    assert p.preprocess.flow_dir == "data/ablation_flow/t16_farneback/flow"
    assert p.preprocess.features_dir == "data/ablation_flow/t16_farneback/features"
    assert base.preprocess.features_dir == "data/features"  # the main pipeline's folders are untouched
    spec = preprocess_spec(base, 16, "farneback", 1)
    assert (spec.name, spec.model_variant, spec.study) == ("t16_farneback", base.ablation.flow.variant, "preprocess")
    assert spec.out_dir == Path("results/ablation_flow/runs/t16_farneback/seed1")
    assert spec.experiment == "bigfive-ablation-flow"


def test_run_record_takes_the_best_epochs_validation_row_and_the_interaction_epoch():
    from types import SimpleNamespace

    from bigfive.ablation.execute import best_val_row, interaction_record

    history = [{"epoch": e, "val_mean_accuracy": 0.5 + e / 100, "val_loss": 0.1, "train_loss": 0.2,
                **{f"val_acc_{t}": 0.5 + e / 100 + i / 1000 for i, t in enumerate(TRAITS)}} for e in (1, 2, 3)]
    row = best_val_row(history, 2)
    assert list(row) == list(TRAITS) and row["openness"] == pytest.approx(0.52)
    assert row["neuroticism"] == pytest.approx(0.524)
    assert best_val_row(history[1:], 3)["openness"] == pytest.approx(0.53)  # matched on "epoch", not position
    assert best_val_row([{k: v for k, v in h.items() if k != "epoch"} for h in history], 1)["openness"] == 0.51
    assert best_val_row([], 1) == {}
    assert interaction_record(SimpleNamespace(epochs_to_interaction=7)) == {"epochs_to_interaction": 7}
    assert interaction_record(SimpleNamespace(epochs_to_interaction=None)) == {"epochs_to_interaction": None}
    assert interaction_record(SimpleNamespace()) == {}  # a training loop that does not report it


# -------------------------------------------------------------------------------- compare on known runs
N_CLIPS = 24


def _write_run(root: Path, variant: str, seed: int, err: np.ndarray, *, same_as: str | None = None,
               **record: object) -> None:
    """A run folder whose predictions are the labels plus ``err`` (N, 5), signs alternating per clip;
    ``record``: more metrics.json keys (best_val_mean_accuracy, epochs_to_interaction)."""
    d = root / variant / f"seed{seed}"
    d.mkdir(parents=True)
    if same_as:
        (d / "metrics.json").write_text(json.dumps({"variant": variant, "seed": seed, "same_as": same_as}))
        return
    rng = np.random.default_rng(100 + seed)
    true = rng.uniform(0.3, 0.7, size=(N_CLIPS, len(TRAITS)))
    sign = np.where(np.arange(N_CLIPS) % 2 == 0, 1.0, -1.0)[:, None]
    pred = true + sign * err
    (d / "metrics.json").write_text(json.dumps({"variant": variant, "seed": seed, "same_as": None,
                                                "test": {"baseline_mean_accuracy": 0.8}, **record}))
    with (d / "predictions_test.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", *[f"{t}_{k}" for t in TRAITS for k in ("true", "pred")]])
        for i in range(N_CLIPS):
            w.writerow([f"clip{i:03d}", *[f"{v:.10f}" for t in range(len(TRAITS)) for v in (true[i, t], pred[i, t])]])


@pytest.fixture
def known_runs(tmp_path) -> Path:
    runs = tmp_path / "runs"
    ramp = np.linspace(0.0, 0.01, N_CLIPS)[:, None]  # clip-to-clip variation, so ranks are not all tied
    # validation: worse beats full on 3 of the 9 (worse seed, full seed) pairs; full reaches the interaction
    # threshold at epochs 7 and 9 and never on seed 2, worse never; no_bias does not record it
    for s, e, v_full, v_worse, reached in zip((0, 1, 2), (0.01, 0.02, 0.03), (0.95, 0.96, 0.97),
                                              (0.90, 0.91, 0.99), (7, 9, None)):
        _write_run(runs, "full", s, np.full((N_CLIPS, 5), e) + ramp, best_val_mean_accuracy=v_full,
                   epochs_to_interaction=reached)
        _write_run(runs, "worse", s, np.full((N_CLIPS, 5), e + 0.04) + ramp, best_val_mean_accuracy=v_worse,
                   epochs_to_interaction=None)
        agree = np.full((N_CLIPS, 5), e) + ramp
        agree[:, TRAITS.index("agreeableness")] += 0.1  # only the interaction trait gets worse
        _write_run(runs, "no_bias", s, agree)
        _write_run(runs, "full_h4", s, np.zeros((N_CLIPS, 5)), same_as="full")
    _write_run(runs, "same", 0, np.full((N_CLIPS, 5), 0.02) + ramp)  # the reference's average error, one seed
    bad = runs / "broken" / "seed0"
    bad.mkdir(parents=True)
    (bad / "predictions_test.csv").write_text("video_id,openness_true\nclip000,0.5\n")  # no _pred column
    return runs


def test_compare_statistics_on_known_runs(known_runs, tmp_path):
    out = tmp_path / "out"
    resamples = 500
    rows = C.compare(known_runs, out, reference="full", variants=None, seeds=None, resamples=resamples,
                     test="hierarchical")
    by = {r["variant"]: r for r in rows}
    assert set(by) == {"full", "worse", "no_bias", "full_h4", "same"}  # broken is left out, not fatal
    ramp_mean = 0.005  # mean of the per-clip ramp
    # seeds' mean accuracies are 1 - (e + ramp): 0.985, 0.975, 0.965 -> mean 0.975, sample std 0.01
    assert by["full"]["mean_accuracy_mean"] == pytest.approx(1 - 0.02 - ramp_mean)
    assert by["full"]["mean_accuracy_std"] == pytest.approx(0.01)
    assert by["worse"]["mean_accuracy_mean"] == pytest.approx(1 - 0.06 - ramp_mean)
    assert by["worse"]["agreeableness_accuracy_std"] == pytest.approx(0.01)
    assert by["no_bias"]["agreeableness_accuracy_mean"] == pytest.approx(1 - 0.12 - ramp_mean)
    assert by["no_bias"]["openness_accuracy_mean"] == pytest.approx(1 - 0.02 - ramp_mean)
    assert math.isnan(by["same"]["mean_accuracy_std"])  # one seed: no spread
    # the worse variant loses 0.04 on every clip of every seed pair: no resample comes near 0, so the shift-to-null
    # p-value is its floor 1 / (B + 1); the CI is wide by the seeds' spread (a clip-only bootstrap's would be 0 wide)
    worse = by["worse"]
    assert worse["delta_mean_accuracy"] == pytest.approx(-0.04)
    assert -0.06 - 1e-9 <= worse["delta_ci95_low"] < -0.04 < worse["delta_ci95_high"] <= -0.02 + 1e-9
    assert worse["delta_ci95_high"] - worse["delta_ci95_low"] > 0.01
    assert worse["p_value"] == pytest.approx(1 / (resamples + 1))
    assert all(worse[f"p_value_{t}"] == pytest.approx(1 / (resamples + 1)) for t in TRAITS)
    assert worse["delta_agreeableness_accuracy"] == pytest.approx(-0.04)
    assert math.isnan(by["full"]["p_value"]) and by["full"]["delta_mean_accuracy"] == 0.0
    assert by["same"]["p_value"] == pytest.approx(1.0)
    assert by["same"]["delta_mean_accuracy"] == pytest.approx(0.0, abs=1e-9)
    # per trait: only agreeableness differs for no_bias
    assert by["no_bias"]["p_value_agreeableness"] == pytest.approx(1 / (resamples + 1))
    assert by["no_bias"]["delta_agreeableness_accuracy"] == pytest.approx(-0.1)
    assert by["no_bias"]["p_value_openness"] == pytest.approx(1.0)
    # BH over all 18 p-values shown (3 tested variants x (overall + 5 traits); the reference and its duplicate
    # have none): the 8 smallest (worse's 6, no_bias's agreeableness and mean) are tied at 1/501, so each gets
    # q = 18 p / 8; the p = 1 ones stay 1
    q = 18 / 8 / (resamples + 1)
    assert worse["p_value_q"] == pytest.approx(q)
    assert worse["p_value_neuroticism_q"] == pytest.approx(q)
    assert by["no_bias"]["p_value_agreeableness_q"] == pytest.approx(q)
    assert by["no_bias"]["p_value_openness_q"] == pytest.approx(1.0)
    assert math.isnan(by["full"]["p_value_q"]) and math.isnan(by["full_h4"]["p_value_agreeableness_q"])
    assert worse["p_floor"] == pytest.approx(1 / (resamples + 1))
    # validation wins over all seed pairs, and the epochs to the interaction threshold
    assert worse["val_win_share"] == pytest.approx(3 / 9)
    assert worse["val_mean_accuracy_mean"] == pytest.approx(np.mean([0.90, 0.91, 0.99]))
    assert math.isnan(by["full"]["val_win_share"]) and math.isnan(by["no_bias"]["val_win_share"])
    assert (by["full"]["epochs_to_interaction"], by["full"]["epochs_to_interaction_reached"],
            by["full"]["epochs_to_interaction_seeds"]) == (8.0, 2, 3)
    assert math.isnan(worse["epochs_to_interaction"]) and worse["epochs_to_interaction_reached"] == 0
    assert worse["epochs_to_interaction_seeds"] == 3 and by["no_bias"]["epochs_to_interaction_seeds"] == 0
    # the variant's own CI (seeds x clips) covers its mean and has the seeds' width
    assert worse["mean_accuracy_ci95_low"] < worse["mean_accuracy_mean"] < worse["mean_accuracy_ci95_high"]
    # a duplicate repeats its twin's numbers and says so
    assert by["full_h4"]["same_as"] == "full"
    assert by["full_h4"]["mean_accuracy_mean"] == by["full"]["mean_accuracy_mean"]

    with (out / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["variant"] for r in table] == [r["variant"] for r in rows]
    cols = set(table[0])
    for t in TRAITS:
        assert {f"{t}_accuracy_mean", f"{t}_accuracy_std", f"{t}_pcc_mean", f"{t}_ccc_mean", f"p_value_{t}"} <= cols
        assert {f"p_value_{t}_q", f"delta_{t}_accuracy", f"delta_{t}_ci95_low", f"delta_{t}_ci95_high"} <= cols
    assert {"mean_accuracy_mean", "mean_accuracy_std", "p_value", "p_value_q", "same_as", "val_win_share",
            "val_mean_accuracy_mean", "epochs_to_interaction", "epochs_to_interaction_reached",
            "epochs_to_interaction_seeds", "delta_ci95_low", "delta_ci95_high"} <= cols
    csv_worse = next(r for r in table if r["variant"] == "worse")
    assert float(csv_worse["mean_accuracy_mean"]) == pytest.approx(0.935)
    assert float(csv_worse["val_win_share"]) == pytest.approx(1 / 3, abs=1e-6)
    assert float(csv_worse["p_value_q"]) == pytest.approx(q, abs=1e-6)
    assert csv_worse["epochs_to_interaction"] == "" and csv_worse["epochs_to_interaction_reached"] == "0"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == set(by) and {"p_value", "p_value_agreeableness_q"} <= set(metrics["worse"])
    assert metrics["full"]["epochs_to_interaction"] == 8.0
    md = (out / "summary.md").read_text()
    assert "| worse |" in md and "broken" in md  # the left-out run is reported with its reason
    assert "8 (2/3)" in md and "never (0/3)" in md and "all 18 p-values" in md
    # every tested p sits at the bootstrap's floor: the adjusted value is printed as a bound
    assert f"< {q:.2g} (floor)" in md
    assert (out / "summary.png").stat().st_size > 10_000


def test_compare_wilcoxon_option_and_unknown_test(known_runs, tmp_path):
    """ablation.test: wilcoxon keeps the clip-paired test of the seed-averaged errors; the CIs stay hierarchical."""
    rows = C.compare(known_runs, tmp_path / "out", reference="full", test="wilcoxon", resamples=400)
    by = {r["variant"]: r for r in rows}
    assert by["worse"]["p_value"] < 1e-4  # 24 clips, all worse by 0.04
    assert by["same"]["p_value"] == pytest.approx(1.0)
    assert by["worse"]["delta_ci95_high"] - by["worse"]["delta_ci95_low"] > 0.01  # seeds counted in the CI
    assert "Wilcoxon" in (tmp_path / "out" / "summary.md").read_text()
    with pytest.raises(ValueError, match="unknown test"):
        SM.summarize(R.load_runs(known_runs), "full", test="bootstrap")


def test_summary_figure_draws_each_variants_seeds_means_cis_and_delta(known_runs):
    """The figure's data, panel by panel: what a reader takes from it must be the table's numbers."""
    from matplotlib.colors import to_rgba

    rows = SM.summarize(R.load_runs(known_runs), "full", resamples=500, test="hierarchical")  # worse: q < 0.05
    by = {r["variant"]: r for r in rows}
    fig = F.summary_figure(rows, TRAITS, "full")
    axes = fig.axes
    keys = ["mean_accuracy", *(f"{t}_accuracy" for t in TRAITS)]
    assert [ax.get_title() for ax in axes] == ["Δ mean accuracy vs reference", "mean accuracy",
                                               *(t.replace("_", " ") for t in TRAITS)]
    assert "1/3 seeds per variant" in fig.get_suptitle() and "reference full" in fig.get_suptitle()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "one seed", "mean over seeds, 95% CI", "Δ, BH q < 0.05", "Δ, not significant",
        "train-mean baseline"]
    # rows top to bottom in the table's order, the reference bold, its duplicate named
    row_y = {r["variant"]: float(len(rows) - 1 - i) for i, r in enumerate(rows)}
    ticks = sorted(zip(axes[0].get_yticks(), axes[0].get_yticklabels()), key=lambda tl: -tl[0])
    assert [t.get_text() for _, t in ticks] == [r["variant"] + (" (= full)" if r["same_as"] else "") for r in rows]
    assert [t.get_fontweight() for _, t in ticks] == ["bold" if r["variant"] == "full" else "normal" for r in rows]
    for ax in axes:  # the reference and its duplicate are shaded in every panel, nothing else
        shaded = [p for p in ax.patches if p.get_facecolor() == to_rgba(F.REFERENCE_SHADE)]
        assert len(shaded) == 2
    # Δ panel: one point per variant at its Δ, filled exactly when significant, its CI as a bar
    points = {ln.get_ydata()[0]: ln for ln in axes[0].lines if ln.get_marker() == "o"}
    bars = {ln.get_ydata()[0]: ln for ln in axes[0].lines if ln.get_marker() in ("None", None, "")
            and len(ln.get_xdata()) == 2 and ln.get_ydata()[0] == ln.get_ydata()[1]}
    for v, yi in row_y.items():
        r = by[v]
        assert points[yi].get_xdata()[0] == pytest.approx(r["delta_mean_accuracy"])
        assert to_rgba(points[yi].get_markerfacecolor()) == to_rgba("k" if r["p_value_q"] < F.ALPHA else "white")
        if math.isfinite(r["delta_ci95_low"]):
            assert list(bars[yi].get_xdata()) == pytest.approx([r["delta_ci95_low"], r["delta_ci95_high"]])
    assert to_rgba(points[row_y["worse"]].get_markerfacecolor()) == to_rgba("k")  # significant: filled
    assert to_rgba(points[row_y["same"]].get_markerfacecolor()) == to_rgba("white")
    # accuracy panels: every seed as a point near its row, the mean as a tick, the x range holding them all
    for ax, key in zip(axes[1:], keys):
        for v, yi in row_y.items():
            seeds = [c.get_offsets() for c in ax.collections if len(c.get_offsets())
                     and abs(c.get_offsets()[0][1] - yi) <= 0.18]
            assert len(seeds) == 1
            assert sorted(seeds[0][:, 0]) == pytest.approx(sorted(by[v]["per_seed"][key]))
            assert np.all(np.abs(seeds[0][:, 1] - yi) <= 0.18)
            mean = [ln for ln in ax.lines if ln.get_marker() == "|" and ln.get_ydata()[0] == yi]
            assert len(mean) == 1 and mean[0].get_xdata()[0] == pytest.approx(by[v][f"{key}_mean"])
            lo, hi = ax.get_xlim()
            assert 0.0 <= lo <= min(by[v]["per_seed"][key]) and max(by[v]["per_seed"][key]) <= hi <= 1.0
    # the baseline (0.8, mean accuracy only) is far left of the runs: named in the label, not drawn
    assert axes[1].get_xlabel() == "accuracy (1 − MAE)\n(← baseline 0.800)"
    assert not [ln for ax in axes[1:] for ln in ax.lines if ln.get_linestyle() == "--"]
    assert all(ax.get_xlabel() == "accuracy (1 − MAE)" for ax in axes[2:])
    # a baseline near the runs is drawn as a dashed line where it is, and the x range reaches it
    # (0.905: below every run's value and CI, 0.925 and up, but within half their range of them)
    near = [{**r, "baseline_mean_accuracy": 0.905} for r in rows]
    ax = F.summary_figure(near, TRAITS, "full").axes[1]
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [0.905, 0.905]
    assert ax.get_xlim()[0] < 0.905 and ax.get_xlabel() == "accuracy (1 − MAE)"


# ----------------------------------------------------------------------------------- statistics that count seeds
def _scores(rng: np.random.Generator, seeds: int, clip_acc: np.ndarray, *, seed_sd: float = 0.002,
            noise_sd: float = 0.003) -> np.ndarray:
    """(seeds, N, 5 traits + mean) per-clip accuracies: the clips' own level, a per-seed offset, per-clip noise."""
    acc = (clip_acc[None] + rng.normal(0.0, seed_sd, size=(seeds, 1, clip_acc.shape[1]))
           + rng.normal(0.0, noise_sd, size=(seeds, *clip_acc.shape)))
    return np.concatenate([acc, acc.mean(axis=2, keepdims=True)], axis=2)


def test_hierarchical_bootstrap_one_bad_seed_is_not_significant_but_clip_averaging_is():
    """The h8 case: the reference misses agreeableness on 1 seed of 5, the variant on none. Averaging over seeds
    and testing over clips calls that significant; resampling seeds does not."""
    rng = np.random.default_rng(0)
    n, agree = 200, TRAITS.index("agreeableness")
    clip_acc = rng.uniform(0.92, 0.98, size=(n, 5))
    variant, reference = _scores(rng, 5, clip_acc), _scores(rng, 5, clip_acc)
    reference[0, :, agree] -= 0.2  # one reference seed stayed at the baseline on agreeableness
    reference[..., -1] = reference[..., :5].mean(axis=2)
    res = S.hierarchical_bootstrap(variant, reference, 2000, seed=0)
    assert res.delta[-1] == pytest.approx(0.2 / 5 / 5, abs=0.002)  # +0.008 mean accuracy, from one seed
    # not significant even before Holm; on agreeableness alone p is lower (0.12 here): with 5 seeds the bootstrap
    # distribution is lumped by how many copies of the bad seed a resample draws, and Δ sits on such a lump
    assert res.p[-1] > 0.3 and res.p[agree] > 0.05
    assert res.low[-1] < 0.0 < res.high[-1]
    clip_averaged = S.wilcoxon_p(reference[..., -1].mean(axis=0) - variant[..., -1].mean(axis=0))
    assert clip_averaged < 1e-6


def test_hierarchical_bootstrap_finds_a_clearly_better_variant():
    rng = np.random.default_rng(1)
    clip_acc = rng.uniform(0.92, 0.98, size=(200, 5))
    variant, reference = _scores(rng, 5, clip_acc + 0.01), _scores(rng, 5, clip_acc)
    res = S.hierarchical_bootstrap(variant, reference, 1000, seed=0)
    assert res.delta[-1] == pytest.approx(0.01, abs=0.002)
    assert res.p[-1] == pytest.approx(1 / 1001) and (res.p[:5] == pytest.approx(1 / 1001))
    assert 0.0 < res.low[-1] < 0.01 < res.high[-1]
    # seeded: the same call gives the same numbers; the sign flips with the roles
    again = S.hierarchical_bootstrap(variant, reference, 1000, seed=0)
    np.testing.assert_array_equal(again.low, res.low)
    flipped = S.hierarchical_bootstrap(reference, variant, 1000, seed=0)
    assert flipped.delta[-1] == pytest.approx(-res.delta[-1]) and flipped.p[-1] == pytest.approx(res.p[-1])


def test_hierarchical_bootstrap_counts_seed_variance_under_the_null():
    """No true difference, but seeds vary (sd 0.01): the clip-averaged Wilcoxon rejects most of the time at 5%,
    the hierarchical bootstrap rarely (few seeds make it somewhat liberal, docs/ablation.md)."""
    rng = np.random.default_rng(2)
    trials, hier, clip_avg = 60, 0, 0
    for t in range(trials):
        clip_acc = rng.uniform(0.92, 0.98, size=(40, 5))
        v = _scores(rng, 5, clip_acc, seed_sd=0.01, noise_sd=0.01)
        r = _scores(rng, 5, clip_acc, seed_sd=0.01, noise_sd=0.01)
        hier += S.hierarchical_bootstrap(v, r, 200, seed=t).p[-1] < 0.05
        clip_avg += S.wilcoxon_p(r[..., -1].mean(axis=0) - v[..., -1].mean(axis=0)) < 0.05
    assert hier / trials <= 0.2
    assert clip_avg / trials >= 0.5


def test_hierarchical_bootstrap_resamples_seeds_independently_and_clips_jointly():
    """One seed each: only clips are resampled, and jointly, so a constant per-clip difference has no spread."""
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.8, 1.0, size=(1, 30, 1))
    res = S.hierarchical_bootstrap(ref + 0.01, ref, 300, seed=0)
    assert res.low[0] == pytest.approx(0.01) and res.high[0] == pytest.approx(0.01)
    # two seeds of the variant differing by 0.02: the CI spans the seed level (+0.00 .. +0.02)
    var = np.concatenate([ref, ref + 0.02])
    res = S.hierarchical_bootstrap(var, ref, 2000, seed=0)
    assert res.low[0] == pytest.approx(0.0) and res.high[0] == pytest.approx(0.02)
    assert res.p[0] > 0.2
    with pytest.raises(ValueError, match="same clips"):
        S.hierarchical_bootstrap(var, ref[:, :20], 10)


def test_holm_matches_hand_computed_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = S.holm([math.nan, 0.01, 0.04])  # NaN is not counted: m = 2
    assert math.isnan(out[0]) and out[1:] == pytest.approx([0.02, 0.04])
    assert S.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert S.holm([0.2]) == pytest.approx([0.2])


def test_share_greater_counts_all_pairs():
    assert S.share_greater([0.90, 0.91, 0.99], [0.95, 0.96, 0.97]) == pytest.approx(3 / 9)
    assert S.share_greater([0.5, 0.7], [0.5]) == pytest.approx(0.75)  # a tie counts one half
    assert math.isnan(S.share_greater([0.9], [math.nan]))


def test_compare_without_usable_runs_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="no usable ablation runs"):
        C.compare(tmp_path / "nothing", tmp_path / "out", reference="full")


def test_ablate_cli_rejects_unknown_variant(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(Params())))
    result = subprocess.run(["bigfive", "ablate", "--params", str(params), "--variant", "nope", "--seed", "0"],
                            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=HANG_S)
    assert result.returncode == 1
    assert "nope" in result.stderr and "ablation.variants" in result.stderr


# ------------------------------------------------------------------------------------------ end to end
def test_ablation_pipeline_end_to_end(ablated):
    project = ablated
    results = project / "results" / "ablation"
    with (results / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["variant"] for r in table] == TINY_VARIANTS
    assert all(r["seeds"] == "2" and r["epochs_to_interaction_seeds"] == "2" for r in table)
    # each run folder holds its metrics (the evaluator's), predictions and the model it scored; the table's
    # per-variant numbers are the runs' own, averaged over seeds
    records: dict[str, list[dict]] = {}
    threshold = load_params(project / "params.yaml").train.interaction_threshold
    assert load_params(project / "params.yaml").train.interaction_trait == "agreeableness"
    for v in TINY_VARIANTS:
        for s in TINY_SEEDS:
            d = results / "runs" / v / f"seed{s}"
            record = json.loads((d / "metrics.json").read_text())
            assert (record["variant"], record["seed"], record["epochs"]) == (v, s, 1)
            assert (d / "model" / "best.pt").is_file() and not (d / "model" / "last.pt").exists()
            errors = np.load(d / "abs_errors_test.npy")
            assert record["test"]["mean_accuracy"] == pytest.approx(1 - errors.mean())
            # the best epoch's validation row: per-trait accuracies whose mean is the monitored best value
            assert set(record["val"]) == set(TRAITS)
            assert np.mean(list(record["val"].values())) == pytest.approx(record["best_val_mean_accuracy"])
            # one epoch: reached at epoch 1 exactly when that epoch's agreeableness accuracy is at the threshold
            reached = record["val"]["agreeableness"] >= threshold
            assert record["epochs_to_interaction"] == (1 if reached else None), record["val"]
            records.setdefault(v, []).append(record)
        row = next(r for r in table if r["variant"] == v)
        accs = [r["test"]["mean_accuracy"] for r in records[v]]
        assert float(row["mean_accuracy_mean"]) == pytest.approx(np.mean(accs), abs=1e-5)
        assert float(row["mean_accuracy_std"]) == pytest.approx(np.std(accs, ddof=1), abs=1e-5)
        # (the table reads predictions_test.csv, 6 decimals: PCC of a 1-epoch model's near-constant output is not
        # reproducible from it, accuracy and CCC are)
        for kind, tol in (("accuracy", 1e-5), ("ccc", 1e-3)):
            per_seed = [r["test"]["traits"]["agreeableness"][kind] for r in records[v]]
            assert float(row[f"agreeableness_{kind}_mean"]) == pytest.approx(np.mean(per_seed), abs=tol), kind
        assert float(row["val_mean_accuracy_mean"]) == pytest.approx(
            np.mean([r["best_val_mean_accuracy"] for r in records[v]]), abs=1e-5)
    ref, concat = (next(r for r in table if r["variant"] == v) for v in ("cross_attention_bidirectional", "concat"))
    assert ref["p_value"] == "" and float(ref["delta_mean_accuracy"]) == 0.0
    assert float(concat["delta_mean_accuracy"]) == pytest.approx(
        float(concat["mean_accuracy_mean"]) - float(ref["mean_accuracy_mean"]), abs=1e-5)
    # the hierarchical bootstrap with B = 200: p is a count over 201; BH over the 6 p-values of the only tested row
    assert (float(concat["p_value"]) * 201) == pytest.approx(round(float(concat["p_value"]) * 201), abs=1e-3)
    ps = [float(concat["p_value"]), *(float(concat[f"p_value_{t}"]) for t in TRAITS)]
    assert float(concat["p_value_q"]) == pytest.approx(S.bh(ps)[0], abs=1e-5)
    vals = {v: [r["best_val_mean_accuracy"] for r in records[v]] for v in TINY_VARIANTS}
    assert float(concat["val_win_share"]) == pytest.approx(
        S.share_greater(vals["concat"], vals["cross_attention_bidirectional"]), abs=1e-6)
    shown = dvc(project, "metrics", "show", "--json").stdout
    for v in TINY_VARIANTS:
        assert v in shown
    # nothing left to do: a second repro is a no-op
    status = dvc(project, "status", "pipelines/ablation/dvc.yaml").stdout
    assert "changed" not in status, status


def test_parallel_runs_then_dvc_commit_leave_only_compare(tiny_pipeline, tmp_path):
    """`bigfive ablate --all --jobs 2` writes the stage folders; `dvc commit` records them, `dvc repro` compares."""
    project = tmp_path / "parallel_project"
    shutil.copytree(tiny_pipeline, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    variants = ["concat", "cross_attention_static_to_dynamic", "cross_attention_h4"]
    h4 = {**Params().ablation.variants["cross_attention_h1"], "model.heads": 4}  # = the default model: a duplicate
    params["ablation"] = reduced_ablation(params, variants[:2], [0], bootstrap=100, reference=variants[1],
                                          extra={variants[2]: h4})
    params["tracking"]["system_metrics"] = False
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run = subprocess.run(["bigfive", "ablate", "--all", "--jobs", "2"], cwd=project, env=clean_env(),
                         capture_output=True, text=True, timeout=HANG_S)
    assert run.returncode == 0, run.stderr[-3000:]
    runs = project / "results" / "ablation" / "runs"
    for v in variants:
        assert (runs / v / "seed0" / "metrics.json").is_file(), v
    assert json.loads((runs / variants[2] / "seed0" / "metrics.json").read_text())["same_as"] == variants[1]
    # a second call finds nothing left to do
    again = subprocess.run(["bigfive", "ablate", "--all", "--jobs", "2"], cwd=project, env=clean_env(),
                           capture_output=True, text=True, timeout=HANG_S)
    assert again.returncode == 0 and "0 of 3 ablation runs to do" in again.stderr, again.stderr[-2000:]
    dvc(project, "commit", "-f", "pipelines/ablation/dvc.yaml:ablate")
    out = dvc(project, "repro", "pipelines/ablation/dvc.yaml").stdout
    assert "Running stage 'pipelines/ablation/dvc.yaml:compare'" in out, out
    assert "Running stage 'pipelines/ablation/dvc.yaml:ablate" not in out, out
    assert "changed" not in dvc(project, "status", "pipelines/ablation/dvc.yaml").stdout
    assert (project / "results" / "ablation" / "summary.csv").is_file()
    # the runs are in MLflow, tagged like the stage's own
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name(params["ablation"]["experiment"])
    tags = sorted(r.data.tags["variant"] for r in client.search_runs([exp.experiment_id]))
    assert tags == ["concat", "cross_attention_static_to_dynamic"]


def test_ablate_all_rejects_a_single_run_flag(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(Params())))
    result = subprocess.run(["bigfive", "ablate", "--params", str(params), "--all", "--seed", "0"],
                            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=HANG_S)
    assert result.returncode == 1 and "--all" in result.stderr


def test_both_ablation_pipelines_parse_with_the_project_params(tmp_path):
    """DVC expands the matrices from params.yaml: one ablate stage per variant x seed (and T x method x seed)."""
    for name in ("dvc.yaml", ".dvcignore", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines")
    run = dict(cwd=tmp_path, env=clean_env(), check=True, capture_output=True, text=True, timeout=HANG_S)
    subprocess.run(["git", "init", "-q"], **run)
    subprocess.run(["dvc", "init", "-q"], **run)
    params = load_params(tmp_path / "params.yaml").ablation
    listed = dvc(tmp_path, "stage", "list", "--name-only", "pipelines/ablation/dvc.yaml").stdout.split()
    want = {f"ablate@{v}-{s}" for v in params.variants for s in params.seeds} | {"compare"}
    assert {s.rsplit(":", 1)[-1] for s in listed} == want
    listed = dvc(tmp_path, "stage", "list", "--name-only", "pipelines/ablation_flow/dvc.yaml").stdout.split()
    names = {s.rsplit(":", 1)[-1] for s in listed}
    f = params.flow
    assert {f"faces@{t}" for t in f.frames} <= names
    assert {f"ablate@{t}-{m}-{s}" for t in f.frames for m in f.methods for s in f.seeds} <= names
    assert "compare" in names
    listed = dvc(tmp_path, "stage", "list", "--name-only", "pipelines/ablation_calibration/dvc.yaml").stdout.split()
    want = {f"calibration_run@{s}" for s in params.calibration.seeds} | {"calibrate"}
    assert {s.rsplit(":", 1)[-1] for s in listed} == want
    dvc(tmp_path, "stage", "list", "--name-only")  # the main pipeline still parses beside them
