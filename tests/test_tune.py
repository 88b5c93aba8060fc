"""`bigfive tune`: a real Optuna study on tiny random features, with real MLflow, DVC and optuna-dashboard.

One module-scoped search runs two worker processes on one journal file, then resumes the study
through the DVC stage (`dvc repro pipelines/tune/dvc.yaml`); most tests read what it left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import psutil
import pytest
import yaml
from conftest import clean_env, free_port
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bigfive.cli import main
from bigfive.config import ConfigError, load_params, replace
from bigfive.tuning.apply import apply_best
from bigfive.tuning.space import InvalidTrialParams, fingerprint, suggest, trial_params
from bigfive.tuning.study import FAIL_ATTR, PRUNE_ATTR, RUN_ATTR, fail_stale_trials, open_study

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
    # a wide range makes trial quality differ after one epoch, so the median pruner has work
    "train.lr": {"type": "float", "low": 1.0e-5, "high": 5.0e-2, "log": True},
}


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
    params["train"].update(batch_size=8, warmup_epochs=1, patience=0)
    params["tracking"].update(uri="sqlite:///mlflow.db", system_metrics=False)
    params["tune"] = {"study": STUDY, "storage": "journal:///optuna.journal", "n_trials": TOTAL, "epochs": 2,
                      "sampler_seed": 0, "tpe_startup_trials": 4, "pruner": "median", "pruner_startup_trials": 1,
                      "pruner_warmup_epochs": 0, "experiment": "bigfive-tune", "results_dir": "results/tune",
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
    logs = [w.communicate(timeout=600)[0] for w in workers]
    for worker, log in zip(workers, logs):
        assert worker.returncode == 0, log[-4000:]
    study = load(project)
    after_workers = {"study_id": study._study_id, "trials": [t.number for t in study.trials],
                     "workers": {t.user_attrs.get("worker") for t in study.trials}}

    # the DVC stage: wdir is the root, params come from the root params.yaml, the study is resumed
    (project / "pipelines" / "tune").mkdir(parents=True)
    shutil.copy(ROOT / "pipelines" / "tune" / "dvc.yaml", project / "pipelines" / "tune" / "dvc.yaml")
    for pkg in ("tuning", "training", "models"):
        shutil.copytree(ROOT / "src" / "bigfive" / pkg, project / "src" / "bigfive" / pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
    run = dict(cwd=project, env=env, capture_output=True, text=True, timeout=600)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], check=True, **run)
    repro = subprocess.run(["dvc", "repro", "pipelines/tune/dvc.yaml"], **run)
    assert repro.returncode == 0, (repro.stdout + repro.stderr)[-4000:]
    return {"project": project, "after_workers": after_workers}


def test_two_workers_share_one_study(searched):
    first = searched["after_workers"]
    assert sorted(first["trials"]) == list(range(2 * WORKER_TRIALS))  # unique numbers, none lost
    assert len(first["workers"]) == 2 and None not in first["workers"]


def test_dvc_stage_resumes_the_same_study(searched):
    project = searched["project"]
    study = load(project)
    assert study._study_id == searched["after_workers"]["study_id"]
    assert sorted(t.number for t in study.trials) == list(range(TOTAL))
    lock = yaml.safe_load((project / "pipelines" / "tune" / "dvc.lock").read_text())
    stage = lock["stages"]["tune"]
    assert stage["params"]["params.yaml"]["tune"]["n_trials"] == TOTAL
    assert {o["path"] for o in stage["outs"]} >= {"results/tune/best_params.yaml", "results/tune/trials.csv"}


def test_pruning_and_conditional_params(searched):
    study = load(searched["project"])
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.number, t.state.name, t.intermediate_values) for t in study.trials]
    assert all("val_mean_accuracy" in t.user_attrs[PRUNE_ATTR] for t in pruned)
    assert all(len(t.intermediate_values) < 2 for t in pruned)  # stopped before the last epoch
    for t in study.trials:
        attention = t.params["model.fusion"] == "cross_attention"
        assert ("model.heads" in t.params) == attention and ("model.direction" in t.params) == attention


def test_outputs(searched):
    project = searched["project"]
    study = load(project)
    results = project / "results" / "tune"
    import pandas as pd

    table = pd.read_csv(results / "trials.csv")
    assert sorted(table["number"]) == list(range(TOTAL))
    assert set(table["state"]) <= {"COMPLETE", "PRUNED"}
    for column in ("value", "duration_s", "mlflow_run_id", *SPACE):
        assert column in table.columns
    best = yaml.safe_load((results / "best_params.yaml").read_text())
    flat = {f"{s}.{k}": v for s, values in best.items() for k, v in values.items()}
    assert flat == study.best_trial.params
    header = (results / "best_params.yaml").read_text().splitlines()[0]
    assert f"trial {study.best_trial.number}" in header and f"{study.best_value:.4f}" in header
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


def test_dashboard_serves_the_study(searched):
    project = searched["project"]
    port = free_port()
    dashboard = subprocess.Popen(["optuna-dashboard", str(project / "optuna.journal"), "--host", "127.0.0.1",
                                  "--port", str(port)], env=clean_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        studies = None
        while time.monotonic() < deadline and dashboard.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.load(response)
                break
            except OSError:
                time.sleep(0.5)
        assert studies is not None, f"dashboard did not answer: {dashboard.poll()} {dashboard.stderr.read()[-2000:]}"
        summary = next(s for s in studies["study_summaries"] if s["study_name"] == STUDY)
        url = f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}"
        with urllib.request.urlopen(url, timeout=30) as response:
            detail = json.load(response)
        assert sorted(t["number"] for t in detail["trials"]) == list(range(TOTAL))
    finally:
        dashboard.terminate()
        try:
            dashboard.wait(timeout=20)
        except subprocess.TimeoutExpired:
            dashboard.kill()
            dashboard.wait(timeout=20)
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
    assert "# cross_attention | concat" in params_file.read_text()  # comments survive

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
    make_features(tmp_path / "data" / "features")
    write_params(tmp_path, study="interrupted", epochs=30)
    in_process(monkeypatch, tmp_path)
    watcher_storage = journal(tmp_path)

    def interrupt_mid_trial() -> None:  # Ctrl-C once the first epoch of a trial has been reported
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                trials = optuna.load_study(study_name="interrupted", storage=watcher_storage).trials
            except KeyError:
                trials = []
            if any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=interrupt_mid_trial, daemon=True)
    watcher.start()
    assert main(["tune", "--n-trials", "3"]) == 130
    watcher.join(timeout=5)
    trials = load(tmp_path, "interrupted").trials
    assert len(trials) == 1 and trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs[FAIL_ATTR].startswith("interrupted (KeyboardInterrupt)")
    assert 1 <= len(trials[0].intermediate_values) < 30

    from mlflow import MlflowClient

    run = MlflowClient(mlflow_uri(tmp_path)).get_run(trials[0].user_attrs[RUN_ATTR])
    assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "FAIL"


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
