"""``bigfive ablate --all --slurm`` on a real one-node Slurm cluster (tests/slurm_cluster.py) with a real MLflow
server: every run lands once, a killed job is reported and rerun (never recorded as done), a second submission
submits nothing, and the comparison is built from MLflow alone."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import HANG_S, ROOT, tiny_params
from lab_services import mlflow_server
from slurm_cluster import cancel, slurm_cluster
from synth_features import write_features

from bigfive.ablation.execute import PREDICTIONS_FILE
from bigfive.ablation.ledger import COMPLETE_TAG, JOB_TAG, KEY_TAG
from bigfive.ablation.slurm import JOB_NAME, job_script
from bigfive.config import ConfigError, load_params, params_from_dict

VARIANTS = {"concat": {"model.fusion": "concat"},
            "framewise": {"model.fusion": "framewise", "model.direction": "static_to_dynamic"}}
SEEDS = [0, 1]


def _params(tmp: Path) -> Path:
    params = tiny_params({
        "preprocess": {"features_dir": str(write_features(tmp / "features", n=32, splits=("train", "val", "test")))},
        "tracking": {"system_metrics": False},
        "ablation": {"epochs": 1, "seeds": SEEDS, "reuse_selection_seeds": True,
                     "variants": VARIANTS, "reference": "framewise", "bootstrap": 200,
                     "flow": {"variant": "framewise"}},
        "launcher": {"slurm": {"cpus": 1, "mem_gb": 1, "time": "10:00", "max_concurrent": 2,
                               "job_dir": str(tmp / "jobs"), "retries": 1}},
    })
    params["ablation"]["variants"] = VARIANTS  # replaced, not merged into the defaults
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _bigfive(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "bigfive", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=HANG_S)
    assert done.returncode == 0, f"bigfive {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return done


def _runs(url: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    exp = client.get_experiment_by_name("bigfive-ablation")
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def _arrays(jobs: Path) -> list[str]:
    return sorted(p.stem.removeprefix(f"{JOB_NAME}-") for p in jobs.glob(f"{JOB_NAME}-*.json"))


def _queue(env: dict[str, str]) -> str:
    return subprocess.run(["squeue", "--noheader"], env=env, capture_output=True, text=True, check=True).stdout


def _until(what: str, check, timeout: float = HANG_S, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _task_state(env: dict[str, str], task: str) -> str:
    return subprocess.run(["squeue", "--noheader", "--job", task, "--format=%T"], env=env, capture_output=True,
                          text=True).stdout.strip()


def _kill_mid_run(env: dict[str, str], url: str, task: str, jobs: Path) -> str:
    """Cancel array task ``task`` while its MLflow run is RUNNING; returns that run's id.

    Each look at MLflow happens with the task frozen (SIGSTOP to all its processes, SIGCONT after), so a
    short run cannot complete between the look that finds it RUNNING and the kill, however slow the look."""
    _until(f"{task} to start", lambda: _task_state(env, task) == "RUNNING", every=0.1)
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        cancel(env, task, signal.SIGSTOP)
        runs = [r for r in _runs(url) if r.data.tags.get(JOB_TAG) == task]
        if any(r.data.tags.get(COMPLETE_TAG) for r in runs):
            raise AssertionError(f"{task} completed before it could be killed (log: {list(jobs.glob('*.out'))})")
        run_id = next((r.info.run_id for r in runs if r.info.status == "RUNNING"), None)
        if run_id:
            cancel(env, task)
            return run_id
        cancel(env, task, signal.SIGCONT)
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for the MLflow run of {task}")


def test_ablation_on_slurm_lands_each_run_once_reruns_a_killed_job_and_compares_from_mlflow(tmp_path):
    params = _params(tmp_path)
    jobs, project = tmp_path / "jobs", tmp_path / "project"
    project.mkdir()
    with slurm_cluster(cpus=2) as slurm_env, \
            mlflow_server(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"), tmp_path / "mlflow.log",
                          slurm_env) as url:
        env = {**slurm_env, "MLFLOW_TRACKING_URI": url, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
        _bigfive(env, project, "ablate", "--all", "--slurm", "--params", str(params))
        [job] = _arrays(jobs)
        assert json.loads((jobs / f"{JOB_NAME}-{job}.json").read_text())["runs"] == \
            [[v, s] for v in VARIANTS for s in SEEDS]
        # while the array is queued or running, a second submission finds every run in flight
        again = _bigfive(env, project, "ablate", "--all", "--slurm", "--params", str(params))
        assert "queued or running, 0 to submit" in again.stderr, again.stderr[-2000:]
        assert _arrays(jobs) == [job]

        killed = _kill_mid_run(env, url, f"{job}_0", jobs)
        _until("the first array to end", lambda: not _queue(env).strip(), every=1)
        runs = _runs(url)
        complete = {(r.data.tags["variant"], r.data.tags["seed"]) for r in runs if r.data.tags.get(COMPLETE_TAG)}
        assert complete == {("concat", "1"), ("framewise", "0"), ("framewise", "1")}
        assert not any(r.data.tags.get(COMPLETE_TAG) for r in runs if r.info.run_id == killed)

        # resubmission: the killed run is reported, marked KILLED in MLflow, and run again (only it)
        resub = _bigfive(env, project, "ablate", "--all", "--slurm", "--wait", "--params", str(params))
        assert f"Slurm job {job}_0 ended without finishing the run" in resub.stderr, resub.stderr[-3000:]
        assert len(_arrays(jobs)) == 2
        assert json.loads((jobs / f"{JOB_NAME}-{_arrays(jobs)[-1]}.json").read_text())["runs"] == [["concat", 0]]
        runs = _runs(url)
        assert next(r for r in runs if r.info.run_id == killed).info.status == "KILLED"
        complete = [r for r in runs if r.data.tags.get(COMPLETE_TAG)]
        assert sorted((r.data.tags["variant"], int(r.data.tags["seed"])) for r in complete) == \
            sorted((v, s) for v in VARIANTS for s in SEEDS), "every run lands exactly once"
        assert len({r.data.tags[KEY_TAG] for r in complete}) == 4

        # all done: nothing is submitted
        last = _bigfive(env, project, "ablate", "--all", "--slurm", "--params", str(params))
        assert "4 of 4 ablation runs done, 0 queued or running, 0 to submit" in last.stderr, last.stderr[-2000:]
        assert len(_arrays(jobs)) == 2 and not _queue(env).strip()

        # the comparison from MLflow alone, on a machine without the run folders
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        _bigfive(env, elsewhere, "compare", "--from-mlflow", "--runs-dir", "runs", "--results-dir", "summary",
                 "--params", str(params))
    for v in VARIANTS:
        for s in SEEDS:
            rel = Path(v) / f"seed{s}" / PREDICTIONS_FILE
            assert (elsewhere / "runs" / rel).read_bytes() == (project / "results/ablation/runs" / rel).read_bytes()
    summary = (elsewhere / "summary" / "summary.csv").read_text()
    assert all(v in summary for v in VARIANTS)


def test_job_script_is_the_stage_command_per_task_with_the_configured_resources(tmp_path):
    from bigfive.ablation.parallel import all_runs

    params = load_params(_params(tmp_path))
    cfg = params.launcher.slurm
    script = job_script(cfg, all_runs(params), params_path="params.yaml", epochs=None, workdir=tmp_path)
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --cpus-per-task=1", "#SBATCH --mem=1G", "#SBATCH --time=10:00",
                 f"#SBATCH --chdir={tmp_path}", "    'concat 0'", "    'framewise 1'"):
        assert line in script.splitlines(), line
    assert "--gres" not in script and "--partition" not in script
    assert script.rstrip().endswith(f'bigfive ablate --params {Path("params.yaml").resolve()} '
                                    '--variant "$VARIANT" --seed "$SEED"')
    gpu = params_from_dict({"launcher": {"slurm": {"gpus": 1, "partition": "gpu", "extra": ["--account=lab"]}}})
    script = job_script(gpu.launcher.slurm, all_runs(params)[:1], params_path="p.yaml", epochs=3, workdir=tmp_path)
    assert {"#SBATCH --gres=gpu:1", "#SBATCH --partition=gpu", "#SBATCH --account=lab",
            "#SBATCH --array=0-0%8"} <= set(script.splitlines())
    assert script.rstrip().endswith("--epochs 3")
    # the script runs in bash as Slurm would run it: task 3 picks the fourth run
    probe = script.replace("exec bigfive", "echo bigfive")
    out = subprocess.run(["bash", "-c", probe], env={"SLURM_ARRAY_TASK_ID": "0", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True).stdout
    assert "--variant concat --seed 0 --epochs 3" in out


@pytest.mark.parametrize(("key", "value", "message"), [
    ("time", "4 hours", "is not a Slurm time limit"),
    ("cpus", 0, "must be > 0"),
    ("extra", ["account=lab"], "is not an sbatch option"),
])
def test_bad_launcher_config_names_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message) as err:
        params_from_dict({"launcher": {"slurm": {key: value}}})
    assert f"launcher.slurm.{key}" in str(err.value)


def test_tuning_workers_as_a_job_array_join_one_study(tmp_path):
    """docs/cluster.md's tuning command on the real cluster: each array task is one more worker of the study."""
    import optuna

    params = tiny_params({
        "preprocess": {"features_dir": str(write_features(tmp_path / "features", n=16))},
        "tracking": {"enabled": False},
        "tune": {"epochs": 1, "n_trials": 2, "pruner": "none", "pruner_min_resource": 1, "timeout_s": None},
    })
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    journal = tmp_path / "optuna.journal"
    with slurm_cluster(cpus=2) as env:
        env = {**env, "PYTHONPATH": str(ROOT / "src")}
        command = (f"bigfive tune --params {tmp_path}/params.yaml --storage journal:///{journal} --n-trials 1 "
                   "--threads 1 --no-report")
        subprocess.run(["sbatch", "--job-name=bigfive-tune", "--array=1-2", "--cpus-per-task=1", "--mem=1G",
                        "--time=10:00", f"--chdir={tmp_path}", f"--output={tmp_path}/%x-%A_%a.out", "--export=ALL",
                        "--wrap", command], env=env, check=True, capture_output=True, timeout=60)
        _until("the tuning array to end", lambda: not _queue(env).strip(), every=1)
    logs = sorted(tmp_path.glob("bigfive-tune-*.out"))
    assert len(logs) == 2
    worker_logs = "\n".join(p.read_text()[-1500:] for p in logs)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    studies = optuna.get_all_study_summaries(storage)
    assert len(studies) == 1, worker_logs
    [study] = studies
    trials = optuna.load_study(study_name=study.study_name, storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"], worker_logs
    assert trials[0].params != trials[1].params, "the two workers ran the same trial"
