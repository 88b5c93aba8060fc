"""Selection reads validation only: every path that chooses something (fit's best epoch and early stopping, the
tune objective, the interaction and recipe sweeps, the ablation's validation wins) runs with the test split made
unreadable, and their sources do not name the test split. docs/statistics.md lists the commands that do read test."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from bigfive.config import Params, replace

N_TRAIN, N_VAL, T, S = 12, 6, 8, 32


def _split(d: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    np.save(d / "static_features.npy", rng.integers(0, 256, (n, T, 3, S, S), dtype=np.uint8))
    np.save(d / "dynamic_features.npy", rng.integers(0, 256, (n, T, 2, S, S), dtype=np.uint8))
    np.save(d / "labels.npy", rng.uniform(0.2, 0.8, (n, 6)).astype(np.float32))
    (d / "clip_ids.txt").write_text("".join(f"{d.name}{i:03d}.000\n" for i in range(n)))


@pytest.fixture
def poisoned(tmp_path) -> Path:
    """train and val features, and a test split whose every file raises when read."""
    root = tmp_path / "features"
    _split(root / "train", N_TRAIN, 0)
    _split(root / "val", N_VAL, 1)
    test = root / "test"
    test.mkdir()
    for name in ("static_features.npy", "dynamic_features.npy", "labels.npy", "clip_ids.txt"):
        (test / name).mkdir()  # a directory where a file should be: any open() fails
    return root


def _params() -> Params:
    return replace(Params(), {"train.epochs": 2, "train.warmup_epochs": 0, "train.batch_size": 4,
                              "train.device": "cpu", "tracking.enabled": False, "tracking.system_metrics": False})


def test_fit_selects_on_validation_with_test_unreadable(poisoned, tmp_path):
    from bigfive.training import fit

    result = fit(_params(), features_dir=poisoned, output_dir=tmp_path / "out", experiment=None, register=False)
    assert 1 <= result.best_epoch <= 2 and np.isfinite(result.best_val_mean_accuracy)


def test_tune_objective_reads_validation_only(poisoned):
    import optuna

    from bigfive.training import fit
    from bigfive.tuning.objective import Objective

    base = _params()
    cfg = replace(base, {"tune.epochs": 2, "tune.pruner_min_resource": 1}).tune  # a 2-epoch trial: first rung at 1
    study = optuna.create_study(direction="maximize")
    study.optimize(Objective(base, cfg, poisoned, fit, tracking=False), n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert 0 < study.best_value <= 1


# the modules and scripts that choose a recipe, a trial or a default; none may name the test split
SELECTION_SOURCES = ["src/bigfive/tuning", "pipelines/ablation/interaction_sweep.py",
                     "pipelines/ablation/interaction_probe.py", "pipelines/ablation/recipe_sweep.py",
                     "src/bigfive/training/loop.py", "src/bigfive/training/callbacks.py",
                     "src/bigfive/training/registry.py"]
TEST_SPLIT = re.compile(r"""["'](?:test|test_[a-z_]*)["']|/ ?["']test["']|predictions_test|test_mean_accuracy""")


def test_selection_sources_do_not_name_the_test_split():
    offenders = []
    for entry in SELECTION_SOURCES:
        path = ROOT / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        assert files and all(f.is_file() for f in files), entry
        for f in files:
            for no, line in enumerate(f.read_text().splitlines(), 1):
                if TEST_SPLIT.search(line):
                    offenders.append(f"{f.relative_to(ROOT)}:{no}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
