"""``bigfive ablate``: train and evaluate one ablation variant with one seed (one DVC matrix stage).

Model ablation (pipelines/ablation)::

    bigfive ablate --variant concat --seed 1
    # -> results/ablation/runs/concat/seed1/{metrics.json, predictions_test.csv, abs_errors_test.npy, model/}

Preprocessing ablation (pipelines/ablation_flow): the same model on features made with another
flow method or T; ``--stage`` runs one preprocessing stage into that variant's folders::

    bigfive ablate --stage faces --frames 16                         # data/ablation_flow/t16/faces
    bigfive ablate --stage flow --frames 16 --flow-method farneback  # data/ablation_flow/t16_farneback/flow
    bigfive ablate --stage features --frames 16 --flow-method farneback
    bigfive ablate --frames 16 --flow-method farneback --seed 0      # results/ablation_flow/runs/t16_farneback/seed0

Every run is an MLflow run in ``ablation.experiment`` (``ablation.flow.experiment``) tagged with
``variant`` and ``seed``; the model is not registered. A variant that trains exactly what an
earlier variant trains (``..._h4`` while the default is 4 heads) is not trained again: its folder
holds a ``metrics.json`` naming the variant it duplicates (``same_as``) and ``bigfive compare``
reports that variant's numbers for it.

On a cluster, ``bigfive ablate --all --slurm`` submits the runs not done yet as one Slurm job array
(:mod:`bigfive.ablation.slurm`), and ``bigfive ablate --collect DIR`` rebuilds the run folders from MLflow
(:mod:`bigfive.ablation.collect`).

This module is the command line; the run itself is :func:`bigfive.ablation.execute.execute`, which
``bigfive ablate --all`` (:mod:`bigfive.ablation.parallel`) calls too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bigfive.ablation.execute import execute, model_spec, preprocess_params, preprocess_spec, run_preprocess_stage
from bigfive.config import ConfigError, load_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", help="a key of ablation.variants (model ablation)")
    parser.add_argument("--seed", type=int, help="seed of the run (model init, shuffling, augmentation)")
    pre = parser.add_argument_group("preprocessing ablation (pipelines/ablation_flow)")
    pre.add_argument("--frames", type=int, help="T of the preprocessing variant")
    pre.add_argument("--flow-method", choices=["dis", "farneback", "tvl1"], help="flow method of the variant")
    pre.add_argument("--stage", choices=["faces", "flow", "features"],
                     help="run this preprocessing stage for the variant instead of training")
    parser.add_argument("--features-dir", type=Path, help="model ablation: features (default: preprocess.features_dir)")
    parser.add_argument("--out", type=Path, help="run folder (default: <results_dir>/runs/<variant>/seed<seed>)")
    parser.add_argument("--epochs", type=int, help="overrides ablation.epochs")
    parser.add_argument("--no-tracking", action="store_true", help="no MLflow logging")
    parser.add_argument("--all", action="store_true",
                        help="every variant x seed without a run folder yet (then: dvc commit -f "
                             "pipelines/ablation/dvc.yaml:ablate); see bigfive.ablation.parallel")
    parser.add_argument("--jobs", type=int, default=1, help="--all: runs at a time, one thread each (default 1)")
    cluster = parser.add_argument_group("on a Slurm cluster (docs/cluster.md; job options: launcher.slurm)")
    cluster.add_argument("--slurm", action="store_true",
                         help="--all: submit every run not done or in flight as one Slurm job array (sbatch)")
    cluster.add_argument("--wait", action="store_true",
                         help="--slurm: wait for the jobs, resubmit killed ones (launcher.slurm.retries times)")
    cluster.add_argument("--collect", type=Path, metavar="DIR",
                         help="write the run folders of every run complete in MLflow into DIR "
                              "(then: bigfive compare --runs-dir DIR)")


def run(args: argparse.Namespace) -> int:
    if args.epochs is not None and args.epochs <= 0:
        raise ConfigError("--epochs", f"must be > 0, got {args.epochs}")
    if args.collect:
        from bigfive.ablation.collect import collect

        return 1 if collect(load_params(args.params), args.collect, epochs=args.epochs) else 0
    if args.slurm and not args.all:
        raise ConfigError("--slurm", "submits the whole ablation: use it with --all")
    if args.wait and not args.slurm:
        raise ConfigError("--wait", "waits for Slurm jobs: use it with --all --slurm")
    if args.all:
        if args.variant or args.seed is not None or args.frames is not None or args.stage:
            raise ConfigError("--all", "runs every variant and seed: give no --variant, --seed, --frames or --stage")
        if args.jobs < 1:
            raise ConfigError("--jobs", f"must be >= 1, got {args.jobs}")
        if args.slurm:
            if args.no_tracking:
                raise ConfigError("--no-tracking", "--slurm decides what is done from MLflow: tracking must be on")
            from bigfive.ablation.slurm import run_slurm

            return run_slurm(args.params, epochs=args.epochs, wait=args.wait)
        from bigfive.ablation.parallel import run_all

        return run_all(args.params, jobs=args.jobs, tracking=not args.no_tracking, epochs=args.epochs)
    params = load_params(args.params)
    if args.stage:
        if args.frames is None:
            raise ConfigError("--frames", f"--stage {args.stage} needs --frames")
        return run_preprocess_stage(params, args.stage, args.frames, args.flow_method)
    if args.seed is None:
        raise ConfigError("--seed", "is required")
    if args.variant and (args.frames is not None or args.flow_method):
        raise ConfigError("--variant", "give either --variant (model ablation) or --frames/--flow-method "
                                       "(preprocessing ablation), not both")
    if args.variant:
        spec = model_spec(params, args.variant, args.seed, features_dir=args.features_dir, out_dir=args.out,
                          epochs=args.epochs)
    elif args.frames is not None and args.flow_method:
        spec = preprocess_spec(params, args.frames, args.flow_method, args.seed, out_dir=args.out, epochs=args.epochs)
        params = preprocess_params(params, args.frames, args.flow_method)  # MLflow logs the variant's preprocessing
    else:
        raise ConfigError("--variant", "give --variant NAME, or --frames T --flow-method M")
    if not spec.features_dir.is_dir():
        how = "dvc repro" if spec.study == "model" else "dvc repro pipelines/ablation_flow/dvc.yaml"
        raise FileNotFoundError(f"{spec.features_dir}: features not found (run the features stage first: {how})")
    execute(params, spec, tracking=not args.no_tracking)
    return 0
