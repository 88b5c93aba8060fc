"""`bigfive tune`: a real Optuna study on tiny random features, with real MLflow, DVC and optuna-dashboard.

One module-scoped search runs two worker processes on one journal file, then resumes the study
through the DVC stage (`dvc repro pipelines/tune/dvc.yaml`); those tests assert only what cannot depend
on which worker finished which epoch first (every trial kept once, every epoch reported, the top-up).
Pruning itself is tested where its outcome is forced: one worker against a study whose earlier trials
are better than any trial can be, and the pruners on scripted learning curves (no training, no threads).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import psutil
import pytest
import yaml
from conftest import HANG_S, clean_env, serve
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bigfive import TRAITS
from bigfive.cli import main
from bigfive.config import ConfigError, load_params, replace
from bigfive.tuning.apply import apply_best
from bigfive.tuning.objective import Objective, trial_epochs, trial_overrides
from bigfive.tuning.report import trials_table
from bigfive.tuning.space import InvalidTrialParams, fingerprint, suggest, trial_params
from bigfive.tuning.study import (
    FAIL_ATTR,
    METRIC,
    PRUNE_ATTR,
    RUN_ATTR,
    fail_stale_trials,
    make_pruner,
    open_study,
    pruner_spec,
)

ROOT = Path(__file__).resolve().parents[1]
STUDY = "tiny"
WORKER_TRIALS = 3  # per worker process
TOTAL = 8  # tune.n_trials: the DVC stage tops the study up from 2 x WORKER_TRIALS to this

SPACE = {
    "model.fusion": {"type": "categorical", "choices": ["cross_attention", "concat"]},
    # declared before the key it depends on: the order of evaluation follows the conditions
    "model.heads": {"type": "categorical", "choices": [1, 2, 4], "when": {"model.fusion": ["cross_attention"]}},
    "model.direction": {"type": "categorical", "choices": ["bidirectional", "static_to_dynamic"],
                        "when": {"model.fusion": ["cross_attention"]}},
    "model.embed_dim": {"type": "categorical", "choices": [16, 32]},
    "train.lr": {"type": "float", "low": 1.0e-5, "high": 5.0e-2, "log": True},
}
TRAIT_ATTRS = [f"val_acc_{t}" for t in TRAITS]


def make_features(root: Path, n_train: int = 20, n_val: int = 10, frames: int = 4, size: int = 32,
                  channels: int = 2, seed: int = 0) -> None:
    """Random clips whose labels follow the face-crop brightness (learnable in a few epochs)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        level = rng.uniform(0.1, 0.9, size=n)
        noise = rng.normal(0, 20, (n, frames, 3, size, size))
        static = np.clip(level[:, None, None, None, None] * 255 + noise, 0, 255).astype(np.uint8)
        dynamic = rng.integers(0, 256, (n, frames, channels, size, size), dtype=np.uint8)
        labels = np.stack([level, 1 - level, level, np.full(n, 0.5), 1 - level, level], 1).astype(np.float32)
        np.save(d / "static_features.npy", static)
        np.save(d / "dynamic_features.npy", dynamic)
        np.save(d / "labels.npy", labels)
        (d / "clip_ids.txt").write_text("".join(f"{split}{i:03d}.000\n" for i in range(n)))


def write_params(project: Path, **tune) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["preprocess"].update(frames=4, crop_size=32)
    params["train"].update(batch_size=8, warmup_epochs=1, patience=0, min_delta=0.0)
    params["tracking"].update(uri="sqlite:///mlflow.db", system_metrics=False)
    params["tune"] = {"study": STUDY, "storage": "journal:///optuna.journal", "n_trials": TOTAL, "epochs": 2,
                      "sampler_seed": 0, "tpe_startup_trials": 4, "pruner": "hyperband", "pruner_min_resource": 1,
                      "pruner_reduction_factor": 2, "experiment": "bigfive-tune", "results_dir": "results/tune",
                      "space": SPACE, **tune}
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def journal(project: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(project / "optuna.journal")))


def load(project: Path, name: str = STUDY) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=journal(project))


def mlflow_uri(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


def in_process(monkeypatch, project: Path) -> None:
    """Run `bigfive tune` in this process from ``project``. mlflow.set_tracking_uri exports
    MLFLOW_TRACKING_URI, which wins over tracking.uri, so pin it to this project's store."""
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri(project))


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> dict:
    """Two workers share one journal study; then the DVC stage resumes it up to TOTAL trials."""
    project = tmp_path_factory.mktemp("tune") / "project"
    make_features(project / "data" / "features")
    write_params(project)
    env = clean_env()
    cmd = [sys.executable, "-m", "bigfive", "tune", "--n-trials", str(WORKER_TRIALS), "--threads", "1", "--no-report"]
    workers = [subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]
    logs = [w.communicate(timeout=HANG_S)[0] for w in workers]
    for worker, log in zip(workers, logs):
        assert worker.returncode == 0, log[-4000:]
    study = load(project)
    after_workers = {"study_id": journal(project).get_study_id_from_name(STUDY),
                     "trials": [t.number for t in study.trials],
                     "states": {t.state for t in study.trials},
                     "per_worker": Counter(t.user_attrs.get("worker") for t in study.trials)}

    # the DVC stage: wdir is the root, params come from the root params.yaml, the study is resumed
    (project / "pipelines" / "tune").mkdir(parents=True)
    shutil.copy(ROOT / "pipelines" / "tune" / "dvc.yaml", project / "pipelines" / "tune" / "dvc.yaml")
    for pkg in ("tuning", "training", "models", "config", "utils"):  # the stage's code deps
        shutil.copytree(ROOT / "src" / "bigfive" / pkg, project / "src" / "bigfive" / pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
    run = dict(cwd=project, env=env, capture_output=True, text=True, timeout=HANG_S)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], check=True, **run)
    repro = subprocess.run(["dvc", "repro", "pipelines/tune/dvc.yaml"], **run)
    assert repro.returncode == 0, (repro.stdout + repro.stderr)[-4000:]
    return {"project": project, "after_workers": after_workers}


def test_two_workers_share_one_study(searched):
    """What two workers cannot change, whatever their timing: every trial is kept once, with its worker."""
    first = searched["after_workers"]
    assert sorted(first["trials"]) == list(range(2 * WORKER_TRIALS))  # unique numbers, none lost
    assert sorted(first["per_worker"].values()) == [WORKER_TRIALS, WORKER_TRIALS]  # each ran its --n-trials
    assert None not in first["per_worker"]
    assert first["states"] <= {TrialState.COMPLETE, TrialState.PRUNED}  # finished, none failed or left running


def test_dvc_stage_resumes_the_same_study(searched):
    project = searched["project"]
    study = load(project)
    assert journal(project).get_study_id_from_name(STUDY) == searched["after_workers"]["study_id"]
    assert sorted(t.number for t in study.trials) == list(range(TOTAL))
    # the stage's own worker ran exactly the top-up, after the two workers' trials
    stage_workers = {t.user_attrs["worker"] for t in study.trials if t.number >= 2 * WORKER_TRIALS}
    assert len(stage_workers) == 1 and not stage_workers & set(searched["after_workers"]["per_worker"])
    lock = yaml.safe_load((project / "pipelines" / "tune" / "dvc.lock").read_text())
    stage = lock["stages"]["tune"]
    assert stage["params"]["params.yaml"]["tune"]["n_trials"] == TOTAL
    assert {o["path"] for o in stage["outs"]} >= {"results/tune/best_params.yaml", "results/tune/trials.csv"}


def test_every_trial_reports_every_epoch_it_ran(searched):
    """Per-epoch values (the dashboard's learning curves), the metric name and the per-trait attributes,
    checked on every trial whichever the pruner stopped: these hold for any interleaving of the workers."""
    study = load(searched["project"])
    assert study.metric_names == [METRIC]
    epochs = 2
    for t in study.trials:
        steps = sorted(t.intermediate_values)
        assert steps == list(range(1, len(steps) + 1)) and steps, (t.number, steps)  # one value per epoch, from 1
        if t.state == TrialState.COMPLETE:
            assert steps[-1] == epochs  # a complete trial ran its budget (the last epoch is never pruned)
            assert t.value == pytest.approx(max(t.intermediate_values.values()))
            assert t.intermediate_values[t.user_attrs["best_epoch"]] == pytest.approx(t.value)
        else:
            assert t.state == TrialState.PRUNED
            assert steps[-1] < epochs and METRIC in t.user_attrs[PRUNE_ATTR]
        assert set(TRAIT_ATTRS) <= set(t.user_attrs), t.user_attrs  # the best epoch's accuracy per trait
        assert all(0.0 <= t.user_attrs[k] <= 1.0 for k in TRAIT_ATTRS)
        attention = t.params["model.fusion"] == "cross_attention"
        assert ("model.heads" in t.params) == attention and ("model.direction" in t.params) == attention
    if has_interaction_field():
        assert all("epochs_to_interaction" in t.user_attrs for t in study.trials if t.state == TrialState.COMPLETE)


def has_interaction_field() -> bool:
    from bigfive.training import FitResult

    return "epochs_to_interaction" in {f.name for f in dataclasses.fields(FitResult)}


def test_outputs(searched):
    project = searched["project"]
    study = load(project)
    results = project / "results" / "tune"
    import pandas as pd

    table = pd.read_csv(results / "trials.csv")
    assert sorted(table["number"]) == list(range(TOTAL))
    assert set(table["state"]) <= {"COMPLETE", "PRUNED"}
    for column in ("value", "duration_s", "mlflow_run_id", *SPACE, "best_epoch", *TRAIT_ATTRS,
                   "epochs_to_interaction"):
        assert column in table.columns
    by_number = {t.number: t for t in study.trials}
    for row in table.itertuples():
        trial = by_number[row.number]
        assert row.val_acc_agreeableness == pytest.approx(trial.user_attrs["val_acc_agreeableness"])
        assert row.best_epoch == trial.user_attrs["best_epoch"]
    best = yaml.safe_load((results / "best_params.yaml").read_text())
    flat = {f"{s}.{k}": v for s, values in best.items() for k, v in values.items()}
    assert flat == study.best_trial.params
    header = (results / "best_params.yaml").read_text().splitlines()
    assert f"trial {study.best_trial.number}" in header[0] and f"{study.best_value:.4f}" in header[0]
    agreeableness = study.best_trial.user_attrs["val_acc_agreeableness"]
    assert header[1].startswith("# validation accuracy per trait at epoch") and \
        f"agreeableness {agreeableness:.3f}" in header[1]
    for name in ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values"):
        png = results / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nested_mlflow_runs_hold_the_trial_params(searched):
    from mlflow import MlflowClient

    project = searched["project"]
    study = load(project)
    client = MlflowClient(mlflow_uri(project))
    exp = client.get_experiment_by_name("bigfive-tune")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = {r.info.run_id for r in runs if r.data.tags.get("tune.role") == "worker"}
    assert len(parents) == 3  # two workers + the DVC stage
    children = {r.info.run_id: r for r in runs if r.data.tags.get("mlflow.parentRunId") in parents}
    assert len(children) == TOTAL
    for trial in study.trials:
        run = children[trial.user_attrs[RUN_ATTR]]
        assert run.data.tags["optuna.trial"] == str(trial.number)
        assert run.data.tags["optuna.state"] == trial.state.name
        for key, value in trial.params.items():
            assert run.data.params[key] == str(value)
        epochs = client.get_metric_history(run.info.run_id, "val_mean_accuracy")
        assert [m.value for m in sorted(epochs, key=lambda m: m.step)] == pytest.approx(
            [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)])


def test_dashboard_serves_the_study(searched, tmp_path):
    project = searched["project"]

    def command(port: int) -> list[str]:
        return ["optuna-dashboard", str(project / "optuna.journal"), "--host", "127.0.0.1", "--port", str(port)]

    with serve(command, "/api/studies", tmp_path / "dashboard.log", env=clean_env()) as (base, dashboard):
        with urllib.request.urlopen(f"{base}/api/studies", timeout=HANG_S) as response:
            studies = json.load(response)
        summary = next(s for s in studies["study_summaries"] if s["study_name"] == STUDY)
        with urllib.request.urlopen(f"{base}/api/studies/{summary['study_id']}", timeout=HANG_S) as response:
            detail = json.load(response)
    assert sorted(t["number"] for t in detail["trials"]) == list(range(TOTAL))
    assert detail["objective_names"] == [METRIC]  # the dashboard names the objective, not "Objective 0"
    assert detail["has_intermediate_values"]
    assert dashboard.returncode is not None
    assert not psutil.pid_exists(dashboard.pid) or psutil.Process(dashboard.pid).status() == psutil.STATUS_ZOMBIE


def test_apply_best_params(searched, tmp_path):
    best_file = searched["project"] / "results" / "tune" / "best_params.yaml"
    params_file = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params_file)
    before = load_params(params_file)
    assert main(["tune", "--params", str(params_file), "--apply", str(best_file)]) == 0
    after = load_params(params_file)
    best = load(searched["project"]).best_trial.params
    assert replace(before, best) == after
    # comments survive
    assert "# cross_attention | framewise | framewise_shifted | framewise_conv" in params_file.read_text()

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  heads: 3\n  embed_dim: 64\n")
    text = params_file.read_text()
    with pytest.raises(ConfigError, match=r"model\.heads"):
        apply_best(bad, params_file)
    assert params_file.read_text() == text  # untouched
    bad.write_text("optimizer:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="bad.yaml: optimizer"):
        apply_best(bad, params_file)


def test_space_conditions_and_invalid_combinations(tmp_path):
    params = replace(load_params(write_params(tmp_path)), {"model.embed_dim": 32})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        chosen = suggest(trial, params.tune.space, params)
        seen.add(chosen["model.fusion"])
        assert ("model.heads" in chosen) == (chosen["model.fusion"] == "cross_attention")
        assert trial_params(params, chosen).model.heads == chosen.get("model.heads", params.model.heads)
        study.tell(trial, 0.0)
    assert seen == {"cross_attention", "concat"}
    with pytest.raises(InvalidTrialParams, match=r"model\.heads: 3 heads do not divide"):
        trial_params(params, {"model.heads": 3})
    bad_space = {**SPACE, "model.heads": {**SPACE["model.heads"], "when": {"model.fuson": ["concat"]}}}
    with pytest.raises(ConfigError, match=r"tune\.space\.model\.heads\.when\.model\.fuson: not a params field"):
        replace(params, {"tune.space": bad_space})


def test_resuming_with_another_space_is_refused(tmp_path):
    cfg = load_params(write_params(tmp_path)).tune
    storage = optuna.storages.InMemoryStorage()
    open_study(cfg, storage, fingerprint(cfg.space, cfg.epochs))
    with pytest.raises(ConfigError, match="different tune.space or tune.epochs"):
        open_study(cfg, storage, fingerprint(cfg.space, cfg.epochs + 1))


def test_failing_trial_is_recorded_and_the_worker_goes_on(tmp_path, monkeypatch):
    """An exception inside training (unreadable pretrained weights) fails that trial with its reason."""
    make_features(tmp_path / "data" / "features")
    (tmp_path / "broken.pt").write_text("not a checkpoint")
    space = {"model.static_weights": {"type": "categorical", "choices": ["broken.pt"]}}
    write_params(tmp_path, space=space, study="failing")
    data = yaml.safe_load((tmp_path / "params.yaml").read_text())
    data["model"]["static_backbone"] = "resnet18"
    data["tracking"]["enabled"] = False  # MLflow's share of failures is covered by the Ctrl-C test
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    in_process(monkeypatch, tmp_path)
    assert main(["tune", "--n-trials", "2"]) == 1  # no trial completed
    trials = load(tmp_path, "failing").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]  # the second ran after the first failed
    for t in trials:
        assert t.user_attrs[FAIL_ATTR].startswith("ConfigError: model.static_weights")
        assert "broken.pt" in t.user_attrs[FAIL_ATTR]
    import pandas as pd

    table = pd.read_csv(tmp_path / "results" / "tune" / "trials.csv")
    assert table["fail_reason"].str.contains("broken.pt").all()


def test_ctrl_c_fails_the_running_trial(tmp_path, monkeypatch):
    """A real SIGINT (Python's own handler raises KeyboardInterrupt) while a trial trains. It is sent right
    after the first epoch is reported, from the training loop itself, rather than from a thread that polls
    the study: then where it lands does not depend on how fast the machine trains or schedules threads."""
    make_features(tmp_path / "data" / "features")
    write_params(tmp_path, study="interrupted", epochs=5)
    in_process(monkeypatch, tmp_path)
    import bigfive.training

    real_fit = bigfive.training.fit

    def fit(*args, on_epoch, **kwargs):
        def on_epoch_then_ctrl_c(epoch, metrics):
            on_epoch(epoch, metrics)
            if epoch == 1:
                signal.raise_signal(signal.SIGINT)

        return real_fit(*args, on_epoch=on_epoch_then_ctrl_c, **kwargs)

    monkeypatch.setattr(bigfive.training, "fit", fit)
    # Python turns SIGINT into KeyboardInterrupt only if the process did not inherit SIGINT ignored, which
    # it does when a shell without job control starts it in the background (`pytest ... &` in a script):
    # Ctrl-C in a terminal is what is tested, so the terminal's handler is set for the call.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main(["tune", "--n-trials", "3"]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    trials = load(tmp_path, "interrupted").trials
    assert len(trials) == 1 and trials[0].state == TrialState.FAIL  # the worker stopped: no second trial
    assert trials[0].user_attrs[FAIL_ATTR].startswith("interrupted (KeyboardInterrupt) after epoch 1 ")
    assert sorted(trials[0].intermediate_values) == [1]

    from mlflow import MlflowClient

    run = MlflowClient(mlflow_uri(tmp_path)).get_run(trials[0].user_attrs[RUN_ATTR])
    assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "FAIL"
    assert (tmp_path / "results" / "tune" / "trials.csv").is_file()  # the report is still written


def test_trials_of_dead_workers_are_failed(tmp_path):
    study = optuna.create_study(study_name="stale", storage=journal(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = f"{socket.gethostname()}:{proc.pid}:{psutil.Process(proc.pid).create_time():.0f}"
    finally:
        proc.kill()
        proc.wait(timeout=10)
    from bigfive.tuning.study import WORKER_ATTR, worker_id

    orphan, alive = study.ask(), study.ask()
    orphan.set_user_attr(WORKER_ATTR, dead)
    alive.set_user_attr(WORKER_ATTR, worker_id())
    assert fail_stale_trials(study) == [orphan.number]
    trials = {t.number: t for t in study.trials}
    assert trials[orphan.number].state == TrialState.FAIL
    assert "ended without finishing the trial" in trials[orphan.number].user_attrs[FAIL_ATTR]
    assert trials[alive.number].state == TrialState.RUNNING


# ------------------------------------------------------------------ pruners and epochs from the config
def first_pruned_step(pruner: optuna.pruners.BasePruner, steps: int = 9) -> int | None:
    """The epoch at which a trial worse than three finished ones is first pruned (None: never)."""
    study = optuna.create_study(direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(0))
    for value in (0.9, 0.8, 0.7):
        trial = study.ask()
        for step in range(1, steps + 1):
            trial.report(value, step)
            trial.should_prune()
        study.tell(trial, value)
    bad = study.ask()
    for step in range(1, steps + 1):
        bad.report(0.1, step)
        if bad.should_prune():
            return step
    return None


def test_pruner_and_epochs_come_from_the_config(tmp_path):
    params = replace(load_params(write_params(tmp_path)), {"train.epochs": 9, "train.warmup_epochs": 2})
    cfg = dataclasses.replace(params.tune, epochs=None, pruner="hyperband", pruner_min_resource=2,
                              pruner_reduction_factor=3)
    assert trial_epochs(cfg, params) == 9  # tune.epochs: null = train.epochs
    assert trial_overrides(cfg, params) == {"train.epochs": 9, "train.warmup_epochs": 2}
    assert pruner_spec(cfg, 9) == (optuna.pruners.HyperbandPruner,
                                   {"min_resource": 2, "max_resource": 9, "reduction_factor": 3})
    assert isinstance(make_pruner(cfg, 9), optuna.pruners.HyperbandPruner)
    halving_cfg = dataclasses.replace(cfg, pruner="successive_halving")
    assert pruner_spec(halving_cfg, 9) == (optuna.pruners.SuccessiveHalvingPruner,
                                           {"min_resource": 2, "reduction_factor": 3, "min_early_stopping_rate": 0})
    assert first_pruned_step(make_pruner(halving_cfg, 9)) == 2  # the first comparison: after min_resource epochs
    assert isinstance(make_pruner(dataclasses.replace(cfg, pruner="median"), 9), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner(dataclasses.replace(cfg, pruner="none"), 9), optuna.pruners.NopPruner)
    with pytest.raises(ConfigError, match=r"tune\.pruner_min_resource: must be <= the epochs of a trial \(1\)"):
        make_pruner(cfg, 1)

    fixed = dataclasses.replace(cfg, epochs=3)  # an int still works: it caps the trials and the pruner
    assert trial_epochs(fixed, params) == 3 and pruner_spec(fixed)[1]["max_resource"] == 3
    assert trial_overrides(fixed, params) == {"train.epochs": 3, "train.warmup_epochs": 2}
    with pytest.raises(ConfigError, match=r"tune\.pruner_reduction_factor: must be >= 2"):
        replace(params, {"tune.pruner_reduction_factor": 1})
    with pytest.raises(ConfigError, match=r"tune\.pruner_min_resource: must be <= tune\.epochs \(2\)"):
        replace(params, {"tune.pruner_min_resource": 3})
    assert replace(params, {"tune.epochs": None}).tune.epochs is None


# ------------------------------------------------------------------ the objective on scripted curves
def scripted_fit(curve, interaction=True):
    """A stand-in for bigfive.training.fit: per-epoch metrics ``curve(trial number, epoch)``, no training."""

    def fit(params, *, on_epoch, run_name, **_):
        number = int(run_name.rsplit("-", 1)[1])
        history = []
        for epoch in range(1, params.train.epochs + 1):
            metrics = curve(number, epoch)
            history.append({"epoch": epoch, **metrics})
            on_epoch(epoch, metrics)
        best = max(history, key=lambda row: row[METRIC])  # the first of equals, as fit keeps
        extra = {"epochs_to_interaction": next((r["epoch"] for r in history if r["val_acc_agreeableness"] >= 0.9),
                                               None)} if interaction else {}
        return SimpleNamespace(best_val_mean_accuracy=best[METRIC], best_epoch=best["epoch"], history=history,
                               run_id=None, **extra)

    return fit


def traits_at(epoch: int, quality: float) -> dict[str, float]:
    """Metrics of one epoch: four traits follow ``quality``; agreeableness jumps after epoch 3."""
    traits = {t: quality * (1 - 0.5 ** epoch) for t in TRAITS}
    traits["agreeableness"] = 0.95 if epoch > 3 else 0.75
    return {METRIC: float(np.mean(list(traits.values()))), **{f"val_acc_{t}": v for t, v in traits.items()},
            "val_loss": 1 - quality}


def scripted_study(tmp_path, fit, **tune) -> tuple[optuna.Study, Objective]:
    params = load_params(write_params(tmp_path, **tune))
    cfg = params.tune
    epochs = trial_epochs(cfg, params)
    study = open_study(cfg, optuna.storages.InMemoryStorage(), fingerprint(cfg.space, epochs), epochs=epochs)
    return study, Objective(params, cfg, tmp_path, fit, tracking=False, worker="test:1:0")


def test_objective_reports_each_epoch_and_records_the_traits(tmp_path):
    study, objective = scripted_study(tmp_path, scripted_fit(lambda n, e: traits_at(e, 0.9)), epochs=5,
                                      pruner="none")
    study.optimize(objective, n_trials=2)
    assert study.metric_names == [METRIC]
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        assert t.intermediate_values == pytest.approx({e: traits_at(e, 0.9)[METRIC] for e in range(1, 6)})
        assert t.user_attrs["best_epoch"] == 5 and t.value == pytest.approx(traits_at(5, 0.9)[METRIC])
        assert t.user_attrs["val_acc_agreeableness"] == 0.95  # read at the best epoch, not the first
        assert t.user_attrs["val_acc_openness"] == pytest.approx(0.9 * (1 - 0.5 ** 5))
        assert t.user_attrs["epochs_to_interaction"] == 4
    table = trials_table(study)
    assert list(table["epochs_to_interaction"]) == [4, 4] and list(table["val_acc_agreeableness"]) == [0.95, 0.95]

    # a training result without the field records nothing (an older FitResult): no made-up value
    (tmp_path / "old").mkdir()
    study, objective = scripted_study(tmp_path / "old", scripted_fit(lambda n, e: traits_at(e, 0.9), False),
                                      epochs=2, pruner="none")
    study.optimize(objective, n_trials=1)
    assert "epochs_to_interaction" not in study.trials[0].user_attrs
    assert trials_table(study)["epochs_to_interaction"].isna().all()


def test_hyperband_gives_the_full_budget_only_to_trials_that_stay_ahead(tmp_path):
    """Scripted curves that never cross (a better trial is better at every epoch), one thread: the outcome
    of Hyperband (9 epochs, first rung after 1, factor 3: rungs at epochs 1 and 3) is fixed."""
    quality = np.random.default_rng(0).uniform(0.5, 1.0, 30)
    fit = scripted_fit(lambda n, e: traits_at(e, float(quality[n])))
    study, objective = scripted_study(tmp_path, fit, epochs=9, pruner="hyperband", pruner_min_resource=1,
                                      pruner_reduction_factor=3, space={})
    study.optimize(objective, n_trials=30)
    trials = study.trials
    ran = {t.number: max(t.intermediate_values) for t in trials}
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and {ran[t.number] for t in pruned} <= {1, 3}  # stopped at a rung, never later
    assert all(ran[t.number] == 9 for t in trials if t.state == TrialState.COMPLETE)
    best = int(np.argmax(quality))
    assert trials[best].state == TrialState.COMPLETE  # the best is ahead at every rung
    assert study.best_trial.number == best
    assert sum(ran.values()) < 30 * 9


# ------------------------------------------------------------------ pruning, forced (one worker, real training)
def stronger_study(project: Path, name: str, epochs: int, **tune) -> None:
    """The study ``bigfive tune`` will resume, holding two finished trials better than any trial can be:
    validation accuracy 1.0 (zero error) at every epoch, played through the configured pruner."""
    cfg = load_params(write_params(project, study=name, epochs=epochs, **tune)).tune
    study = open_study(cfg, journal(project), fingerprint(cfg.space, epochs), epochs=epochs)
    for _ in range(2):
        trial = study.ask()
        for epoch in range(1, epochs + 1):
            trial.report(1.0, epoch)
            assert not trial.should_prune()
        study.tell(trial, 1.0)


@pytest.mark.parametrize("pruner", ["median", "successive_halving"])
def test_a_trial_behind_the_study_is_pruned(pruner, tmp_path, monkeypatch):
    make_features(tmp_path / "data" / "features")
    stronger_study(tmp_path, "forced", 3, pruner=pruner, pruner_startup_trials=1, pruner_warmup_epochs=0,
                   pruner_min_resource=1, pruner_reduction_factor=2)
    data = yaml.safe_load((tmp_path / "params.yaml").read_text())
    data["tracking"]["enabled"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    in_process(monkeypatch, tmp_path)
    assert main(["tune", "--n-trials", "2"]) == 0  # the seeded trials are complete
    new = load(tmp_path, "forced").trials[2:]
    assert [t.state for t in new] == [TrialState.PRUNED, TrialState.PRUNED]
    for t in new:
        assert sorted(t.intermediate_values) == [1]  # pruned at the first comparison, epoch 1 of 3
        assert t.user_attrs[PRUNE_ATTR].startswith(f"epoch 1: {METRIC} ")
        assert set(TRAIT_ATTRS) <= set(t.user_attrs)  # a pruned trial still shows what it read
    table = pd.read_csv(tmp_path / "results" / "tune" / "trials.csv")
    assert list(table["state"]) == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]


def test_the_last_epoch_is_never_pruned(tmp_path, monkeypatch):
    """Behind the study at its only epoch, the trial has still run its budget: it completes, with its value."""
    make_features(tmp_path / "data" / "features")
    stronger_study(tmp_path, "one-epoch", 1, pruner="median", pruner_startup_trials=1, pruner_warmup_epochs=0)
    data = yaml.safe_load((tmp_path / "params.yaml").read_text())
    data["tracking"]["enabled"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    in_process(monkeypatch, tmp_path)
    assert main(["tune", "--n-trials", "1"]) == 0
    (trial,) = load(tmp_path, "one-epoch").trials[2:]
    assert trial.state == TrialState.COMPLETE and trial.value < 1.0
    assert trial.intermediate_values == {1: pytest.approx(trial.value)}


def test_a_worker_that_loses_a_create_race_retries_and_other_errors_are_raised(tmp_path, caplog):
    import sqlalchemy as sa

    from bigfive.tuning.study import retry_race

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'race.db'}")
    with engine.begin() as db:
        db.execute(sa.text("CREATE TABLE studies (name TEXT UNIQUE)"))
        db.execute(sa.text("INSERT INTO studies VALUES ('s')"))
    calls = []

    def create_then_find() -> str:  # the first call loses: the row is there already (a real UNIQUE violation)
        calls.append(1)
        if len(calls) == 1:
            with engine.begin() as db:
                db.execute(sa.text("INSERT INTO studies VALUES ('s')"))
        return "opened"

    with caplog.at_level("INFO", logger="bigfive.tuning.study"):
        assert retry_race(create_then_find, "creating the study") == "opened"
    assert len(calls) == 2 and "another worker was creating the study" in caplog.text

    def bad_sql() -> None:  # not a race: raised at once, not retried
        calls.append(1)
        with engine.begin() as db:
            db.execute(sa.text("SELECT * FROM no_such_table"))

    calls.clear()
    with pytest.raises(sa.exc.OperationalError, match="no_such_table"):
        retry_race(bad_sql, "x")
    assert len(calls) == 1
