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
from conftest import ROOT, clean_env, dvc

from bigfive import TRAITS
from bigfive.ablation import compare as C
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
    defaults = to_dict(Params().ablation)
    params["ablation"] = {**defaults, **params.get("ablation", {}), "epochs": 1, "seeds": TINY_SEEDS,
                          "variants": {v: defaults["variants"][v] for v in TINY_VARIANTS},
                          "reference": "cross_attention_bidirectional", "bootstrap": 200}
    params["tracking"]["system_metrics"] = False  # a sampling thread per run costs seconds and adds nothing here
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(project, "repro", "pipelines/ablation/dvc.yaml")
    done.touch()
    return project


@pytest.fixture(scope="module")
def ablated(tiny_pipeline, tmp_path_factory) -> Path:
    return ablation_project(tiny_pipeline, tmp_path_factory.getbasetemp())


# --------------------------------------------------------------------------------------------- variants
def test_defaults_cover_every_required_variant_and_build():
    from bigfive.models import build_model

    bidir = "cross_attention_bidirectional"
    required = {"static_only", "dynamic_only", "concat", "sum", "gated", "late", "cross_attention_static_to_dynamic",
                "cross_attention_dynamic_to_static", bidir, f"{bidir}_no_time_bias",
                *(f"{bidir}_h{h}" for h in (1, 2, 4, 8))}
    cfg = Params().ablation
    assert set(cfg.variants) == required
    assert len(cfg.seeds) >= 3
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
    assert built["cross_attention_bidirectional_no_time_bias"].time_bias is False
    assert built["cross_attention_bidirectional"].time_bias is True
    assert [built[f"cross_attention_bidirectional_h{h}"].heads for h in (1, 2, 4, 8)] == [1, 2, 4, 8]


def test_params_yaml_ablation_section_covers_every_required_variant():
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert "ablation" in raw, "params.yaml needs the ablation section (pipelines/ablation reads it through DVC vars)"
    assert set(V.REQUIRED_VARIANTS) <= set(params.ablation.variants)
    assert params.ablation.reference == "cross_attention_bidirectional"
    for name in V.REQUIRED_VARIANTS:  # the declared overrides resolve to what the default table means
        got = V.resolved(params, params.ablation.variants[name], 5)["model"]
        want = V.resolved(params, V.DEFAULT_VARIANTS[name], 5)["model"]
        assert got == want, name


def test_duplicate_variants_are_aliases_of_the_first():
    base = Params()
    variants = Params().ablation.variants
    assert V.aliases(base, variants, 3) == {"cross_attention_bidirectional_h4": "cross_attention_bidirectional"}
    eight = replace(base, {"model.heads": 8})  # with 8 default heads, h8 duplicates the reference instead
    assert V.aliases(eight, variants, 3) == {"cross_attention_bidirectional_h8": "cross_attention_bidirectional"}


def test_bad_ablation_config_names_the_key():
    data = to_dict(Params())
    data["ablation"]["variants"]["bad"] = {"preprocess.frames": 4}
    with pytest.raises(ConfigError, match=r"ablation\.variants\.bad\.preprocess\.frames"):
        params_from_dict(data)
    data = to_dict(Params())
    data["ablation"]["reference"] = "nope"
    with pytest.raises(ConfigError, match=r"ablation\.reference"):
        params_from_dict(data)
    data = to_dict(Params())
    data["ablation"]["variants"]["h3"] = {"model.heads": 3}
    with pytest.raises(ConfigError, match=r"model\.heads"):  # 3 heads do not divide embed_dim 64
        V.run_params(params_from_dict(data), data["ablation"]["variants"]["h3"], seed=0, epochs=1)


def test_preprocessing_variant_gets_its_own_folders_and_settings():
    from bigfive.ablation.run import preprocess_params, preprocess_spec

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


# -------------------------------------------------------------------------------- compare on known runs
N_CLIPS = 24


def _write_run(root: Path, variant: str, seed: int, err: np.ndarray, *, same_as: str | None = None) -> None:
    """A run folder whose predictions are the labels plus ``err`` (N, 5), signs alternating per clip."""
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
                                                "test": {"baseline_mean_accuracy": 0.8}}))
    with (d / "predictions_test.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", *[f"{t}_{k}" for t in TRAITS for k in ("true", "pred")]])
        for i in range(N_CLIPS):
            w.writerow([f"clip{i:03d}", *[f"{v:.10f}" for t in range(len(TRAITS)) for v in (true[i, t], pred[i, t])]])


@pytest.fixture
def known_runs(tmp_path) -> Path:
    runs = tmp_path / "runs"
    ramp = np.linspace(0.0, 0.01, N_CLIPS)[:, None]  # clip-to-clip variation, so ranks are not all tied
    for s, e in zip((0, 1, 2), (0.01, 0.02, 0.03)):
        _write_run(runs, "full", s, np.full((N_CLIPS, 5), e) + ramp)
        _write_run(runs, "worse", s, np.full((N_CLIPS, 5), e + 0.04) + ramp)
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
    rows = C.compare(known_runs, out, reference="full", variants=None, seeds=None, resamples=500)
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
    # paired differences: the worse variant loses 0.04 on every clip; the test finds it, the reference gets none
    assert by["worse"]["delta_mean_accuracy"] == pytest.approx(-0.04)
    assert by["worse"]["delta_ci95_low"] - 1e-9 <= -0.04 <= by["worse"]["delta_ci95_high"] + 1e-9
    assert by["worse"]["p_value"] < 1e-4
    assert math.isnan(by["full"]["p_value"]) and by["full"]["delta_mean_accuracy"] == 0.0
    assert by["same"]["p_value"] == pytest.approx(1.0)
    assert by["same"]["delta_mean_accuracy"] == pytest.approx(0.0, abs=1e-9)
    # per trait: only agreeableness differs for no_bias
    assert by["no_bias"]["p_value_agreeableness"] < 1e-4
    assert by["no_bias"]["p_value_openness"] == pytest.approx(1.0)
    assert by["worse"]["p_value_holm"] >= by["worse"]["p_value"]
    # a duplicate repeats its twin's numbers and says so
    assert by["full_h4"]["same_as"] == "full"
    assert by["full_h4"]["mean_accuracy_mean"] == by["full"]["mean_accuracy_mean"]

    with (out / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["variant"] for r in table] == [r["variant"] for r in rows]
    cols = set(table[0])
    for t in TRAITS:
        assert {f"{t}_accuracy_mean", f"{t}_accuracy_std", f"{t}_pcc_mean", f"{t}_ccc_mean", f"p_value_{t}"} <= cols
    assert {"mean_accuracy_mean", "mean_accuracy_std", "p_value", "p_value_holm", "same_as"} <= cols
    assert float(next(r for r in table if r["variant"] == "worse")["mean_accuracy_mean"]) == pytest.approx(0.935)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == set(by) and "p_value" in metrics["worse"]
    md = (out / "summary.md").read_text()
    assert "| worse |" in md and "broken" in md  # the left-out run is reported with its reason
    assert (out / "summary.png").stat().st_size > 10_000


def test_compare_bootstrap_test_agrees_in_direction(known_runs, tmp_path):
    rows = C.compare(known_runs, tmp_path / "out", reference="full", test="bootstrap", resamples=400)
    by = {r["variant"]: r for r in rows}
    assert by["worse"]["p_value"] <= 1 / 400 + 1e-12
    assert by["same"]["p_value"] == pytest.approx(1.0)


def test_compare_without_usable_runs_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="no usable ablation runs"):
        C.compare(tmp_path / "nothing", tmp_path / "out", reference="full")


def test_ablate_cli_rejects_unknown_variant(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(Params())))
    result = subprocess.run(["bigfive", "ablate", "--params", str(params), "--variant", "nope", "--seed", "0"],
                            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "nope" in result.stderr and "ablation.variants" in result.stderr


# ------------------------------------------------------------------------------------------ end to end
def test_ablation_pipeline_end_to_end(ablated):
    project = ablated
    results = project / "results" / "ablation"
    with (results / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["variant"] for r in table] == TINY_VARIANTS
    for r in table:
        assert r["seeds"] == "2"
        for key in ("mean_accuracy_mean", "mean_accuracy_std", "agreeableness_accuracy_mean", "agreeableness_pcc_mean",
                    "agreeableness_ccc_mean"):
            assert 0.0 <= abs(float(r[key])) <= 1.0, key
    concat = next(r for r in table if r["variant"] == "concat")
    assert 0.0 <= float(concat["p_value"]) <= 1.0
    # each run folder holds its metrics (the evaluator's), predictions and the model it scored
    for v in TINY_VARIANTS:
        accs = []
        for s in TINY_SEEDS:
            d = results / "runs" / v / f"seed{s}"
            record = json.loads((d / "metrics.json").read_text())
            assert (record["variant"], record["seed"], record["epochs"]) == (v, s, 1)
            assert (d / "model" / "best.pt").is_file() and not (d / "model" / "last.pt").exists()
            errors = np.load(d / "abs_errors_test.npy")
            assert record["test"]["mean_accuracy"] == pytest.approx(1 - errors.mean())
            accs.append(record["test"]["mean_accuracy"])
        row = next(r for r in table if r["variant"] == v)
        assert float(row["mean_accuracy_mean"]) == pytest.approx(np.mean(accs), abs=1e-5)
        assert float(row["mean_accuracy_std"]) == pytest.approx(np.std(accs, ddof=1), abs=1e-5)
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
    defaults = to_dict(Params().ablation)
    variants = ["concat", "cross_attention_bidirectional", "cross_attention_bidirectional_h4"]
    params["ablation"] = {**defaults, **params.get("ablation", {}), "epochs": 1, "seeds": [0],
                          "variants": {v: defaults["variants"][v] for v in variants},
                          "reference": "cross_attention_bidirectional", "bootstrap": 100}
    params["tracking"]["system_metrics"] = False
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run = subprocess.run(["bigfive", "ablate", "--all", "--jobs", "2"], cwd=project, env=clean_env(),
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    runs = project / "results" / "ablation" / "runs"
    for v in variants:
        assert (runs / v / "seed0" / "metrics.json").is_file(), v
    assert json.loads((runs / variants[2] / "seed0" / "metrics.json").read_text())["same_as"] == variants[1]
    # a second call finds nothing left to do
    again = subprocess.run(["bigfive", "ablate", "--all", "--jobs", "2"], cwd=project, env=clean_env(),
                           capture_output=True, text=True, timeout=300)
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
    assert tags == ["concat", "cross_attention_bidirectional"]


def test_ablate_all_rejects_a_single_run_flag(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(Params())))
    result = subprocess.run(["bigfive", "ablate", "--params", str(params), "--all", "--seed", "0"],
                            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "--all" in result.stderr


def test_both_ablation_pipelines_parse_with_the_project_params(tmp_path):
    """DVC expands the matrices from params.yaml: one ablate stage per variant x seed (and T x method x seed)."""
    for name in ("dvc.yaml", ".dvcignore", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines")
    run = dict(cwd=tmp_path, env=clean_env(), check=True, capture_output=True, text=True, timeout=120)
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
    dvc(tmp_path, "stage", "list", "--name-only")  # the main pipeline still parses beside them
