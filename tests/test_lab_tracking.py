"""Working as a lab (README "Working as a team"): one PostgreSQL server, one S3-compatible artifact store
and one `mlflow server`, all real and on 127.0.0.1, with every `bigfive` command pointed at them only
through MLFLOW_TRACKING_URI (and `--storage` for the shared Optuna study).

The module runs, once, on a copy of the tiny pipeline: train -> evaluate -> tune (two worker processes
on one PostgreSQL study) -> ablate (one variant) -> predict with models:/bigfive-xattn@champion. The
tests then read what landed on the servers, and open the MLflow UI in headless Chromium.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import HANG_S, clean_env, serve, tiny_params
from lab_services import mlflow_server, postgres, s3_endpoint, s3_env, s3_keys

from bigfive import TRAITS
from bigfive.training.tracking import KIND_TAG, NOTE_TAG, TRAINING_KIND, dvc_lock_hash

BUCKET = "lab-artifacts"
STUDY = "lab"
TUNE_SPACE = {
    "model.fusion": {"type": "categorical", "choices": ["cross_attention", "concat"]},
    "model.embed_dim": {"type": "categorical", "choices": [16, 32]},
    "train.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
}


# ------------------------------------------------------------------------------------------ services
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """PostgreSQL -> S3 endpoint -> mlflow server; each stopped by PID when the module ends."""
    logs = tmp_path_factory.mktemp("lab-logs")
    with postgres(logs / "postgres.log") as pg, s3_endpoint(logs / "s3.log", (BUCKET,)) as s3:
        env = {**clean_env(), **s3_env(s3)}
        with mlflow_server(f"{pg}/mlflow", f"s3://{BUCKET}/mlartifacts", logs / "mlflow.log", env) as url:
            yield SimpleNamespace(pg=pg, s3=s3, url=url, env={**env, "MLFLOW_TRACKING_URI": url})


def bigfive(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["bigfive", *args], cwd=project, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert result.returncode == 0, f"bigfive {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return result


def tune_params(project: Path) -> Path:
    """The project's params with a tiny search: 2 epochs a trial, no pruning to wait for."""
    params = tiny_params({"tune": {"study": STUDY, "n_trials": 2, "epochs": 2, "sampler_seed": 0,
                                   "tpe_startup_trials": 4, "pruner": "none", "pruner_min_resource": 1,
                                   "space": TUNE_SPACE}})
    path = project / "lab-tune.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def lab_project(tiny_pipeline, lab, tmp_path_factory) -> SimpleNamespace:
    """The tiny pipeline's project, copied without its local MLflow store, run against the lab's servers."""
    project = tmp_path_factory.mktemp("lab") / "project"
    shutil.copytree(tiny_pipeline, project, symlinks=True, ignore=shutil.ignore_patterns("mlflow.db", "mlruns"))
    env = lab.env
    bigfive(project, env, "train")
    bigfive(project, env, "evaluate")
    params = tune_params(project)
    tune = ["bigfive", "tune", "--params", str(params), "--storage", f"{lab.pg}/optuna", "--n-trials", "1",
            "--threads", "1", "--no-report", "--features", "data/features"]
    workers = [subprocess.Popen(tune, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]
    logs = [w.communicate(timeout=HANG_S)[0] for w in workers]
    for worker, log in zip(workers, logs):
        assert worker.returncode == 0, log[-4000:]
    bigfive(project, env, "ablate", "--variant", "concat", "--seed", "0", "--epochs", "1")
    clip = sorted((project / "data" / "raw" / "test").glob("*.mp4"))[0]
    predicted = bigfive(project, env, "predict", str(clip), "--model", "models:/bigfive-xattn@champion",
                        "--output", "predictions.csv", "--no-progress")
    return SimpleNamespace(dir=project, clip=clip, predict_log=predicted.stderr)


def client(lab):
    from mlflow import MlflowClient

    return MlflowClient(lab.url, registry_uri=lab.url)


def runs_of(lab, experiment: str) -> list:
    c = client(lab)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} on the server"
    return c.search_runs([exp.experiment_id], max_results=1000)


# -------------------------------------------------------------------------------------- the store
def test_nothing_is_stored_locally(lab_project):
    """Runs, models and artifacts went to the servers: no sqlite store, no mlruns/ in the project."""
    assert not (lab_project.dir / "mlflow.db").exists()
    assert not (lab_project.dir / "mlruns").exists()
    run_info = json.loads((lab_project.dir / "models" / "run.json").read_text())
    assert run_info["tracking_uri"].startswith("http://127.0.0.1:")


def test_train_and_evaluate_land_on_the_server(lab, lab_project):
    params = tiny_params()
    (run,) = runs_of(lab, "bigfive")
    m = params["model"]
    assert run.info.run_name == f"train-{m['fusion']}-{m['direction']}-seed{params['train']['seed']}"
    assert run.info.status == "FINISHED"
    assert "test_mean_accuracy" in run.data.metrics  # bigfive evaluate logged into the training run
    assert len(client(lab).get_metric_history(run.info.run_id, "val_mean_accuracy")) == params["train"]["epochs"]
    assert run.data.tags[NOTE_TAG].startswith(f"{m['fusion']} fusion")
    # artifacts go through the server's proxy into the S3 bucket
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    keys = s3_keys(lab.s3, BUCKET, "mlartifacts/")
    assert any(run.info.run_id in k and k.endswith("history.json") for k in keys), keys[:20]


def test_the_dataset_input_names_the_features_version(lab, lab_project):
    (run,) = runs_of(lab, "bigfive")
    (dataset_input,) = run.inputs.dataset_inputs
    ds = dataset_input.dataset
    assert ds.name == "sample-features"
    assert ds.digest == dvc_lock_hash(lab_project.dir / "data" / "features", lab_project.dir / "dvc.lock")
    sample = tiny_params()["sample"]
    assert json.loads(ds.profile) == {"train": sample["n_train"], "val": sample["n_val"], "test": sample["n_test"]}
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"


def test_experiments_are_training_experiments_with_descriptions(lab, lab_project):
    c = client(lab)
    for name in ("bigfive", "bigfive-tune", "bigfive-ablation"):
        tags = c.get_experiment_by_name(name).tags
        assert tags[KIND_TAG] == TRAINING_KIND, (name, tags)
        assert len(tags[NOTE_TAG]) > 40, (name, tags)


def test_registry_champion_resolves_through_the_server(lab, lab_project):
    version = client(lab).get_model_version_by_alias("bigfive-xattn", "champion")
    (run,) = runs_of(lab, "bigfive")
    assert version.run_id == run.info.run_id
    with (lab_project.dir / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and Path(rows[0]["clip"]).name == lab_project.clip.name, rows
    assert rows[0]["status"] == "ok", rows
    assert all(0.0 <= float(rows[0][t]) <= 1.0 for t in TRAITS)


# ------------------------------------------------------------------------------------------- tuning
def load_study(lab):
    import optuna

    return optuna.load_study(study_name=STUDY, storage=f"{lab.pg}/optuna")


def test_two_tune_workers_share_one_postgres_study(lab, lab_project):
    study = load_study(lab)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == [0, 1]
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # one trial from each worker process
    assert {t.state.name for t in trials} == {"COMPLETE"}
    runs = {r.info.run_id: r for r in runs_of(lab, "bigfive-tune")}
    parents = {i for i, r in runs.items() if r.data.tags.get("tune.role") == "worker"}
    assert len(parents) == 2
    for trial in trials:
        run = runs[trial.user_attrs["mlflow_run_id"]]  # the trial's nested run is on the shared server
        assert run.info.run_name == f"trial-{trial.number}"
        assert run.data.tags["mlflow.parentRunId"] in parents
        assert run.data.metrics["val_mean_accuracy"] == pytest.approx(trial.intermediate_values[2])


def test_dashboard_serves_the_shared_study(lab, lab_project, tmp_path):
    def command(port: int) -> list[str]:
        return ["optuna-dashboard", f"{lab.pg}/optuna", "--host", "127.0.0.1", "--port", str(port)]

    with serve(command, "/api/studies", tmp_path / "dashboard.log", env=clean_env()) as (base, dashboard), \
            urllib.request.urlopen(f"{base}/api/studies", timeout=HANG_S) as response:
        studies = json.load(response)["study_summaries"]
    assert [s["study_name"] for s in studies] == [STUDY]
    assert dashboard.returncode is not None


def test_ablation_run_lands_on_the_server(lab, lab_project):
    (run,) = runs_of(lab, "bigfive-ablation")
    assert run.info.run_name == "concat-seed0"
    assert "test_mean_accuracy" in run.data.metrics
    assert run.inputs.dataset_inputs[0].dataset.name == "sample-features"


# ----------------------------------------------------------------------------------------------- UI
def test_mlflow_ui_opens_on_the_training_runs(lab, lab_project, chromium, tmp_path):
    """The link bigfive prints for a run's experiment opens the Model training view with the run table:
    descriptive run names, the Dataset column naming the features version, the experiment's description."""
    from bigfive.training.tracking import ui_url

    (run,) = runs_of(lab, "bigfive")
    digest = run.inputs.dataset_inputs[0].dataset.digest
    page = chromium.new_page(viewport={"width": 1600, "height": 1000})
    try:
        page.goto(ui_url(lab.url, run.info.experiment_id), timeout=HANG_S * 1000)
        table = page.get_by_role("grid")  # the run table (ag-grid)
        table.get_by_text(run.info.run_name).first.wait_for(timeout=HANG_S * 1000)
        page.get_by_text("sample-features", exact=False).first.wait_for(timeout=HANG_S * 1000)
        page.screenshot(path=str(tmp_path / "mlflow_ui.png"))
        text = page.inner_text("body")
    finally:
        page.close()
    assert "workflowType=machine_learning" in page.url and "/runs" in page.url
    assert "Dataset" in text and f"sample-features ({digest[:8]}" in text
    assert "Main pipeline" in text  # the experiment's description
    assert "Traces" not in text.split("Runs", 1)[0]  # the GenAI overview is not what opens
