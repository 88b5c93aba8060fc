"""``bigfive train``: the DVC stage (features from ``preprocess.features_dir``) or direct arrays.

DVC stage::

    bigfive train                      # params.yaml; writes train.models_dir (models/)
    bigfive train --resume             # continue models/last.pt after an interruption

Direct entry (no DVC; params.yaml supplies defaults when present, else built-in ones)::

    bigfive train --static-features S.npy --dynamic-features D.npy --labels L.npy \\
        --val-split 0.2 --batch-size 32 --epochs 50 --output runs/mine

Data-parallel: the same command under ``torchrun --standalone --nproc_per_node=N -m bigfive train ...``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import yaml

from bigfive.config import ConfigError, Params, apply_overrides, load_params, params_from_dict, to_dict

log = logging.getLogger("bigfive.training")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    direct = parser.add_argument_group("direct entry (instead of the features stage output)")
    direct.add_argument("--static-features", type=Path, help="(N, T, 3, S, S) uint8 .npy")
    direct.add_argument("--dynamic-features", type=Path, help="(N, T, C, S, S) uint8 .npy")
    direct.add_argument("--labels", type=Path, help="(N, 6) float32 .npy in bigfive.ALL_LABELS order")
    direct.add_argument("--val-split", type=float, default=0.2,
                        help="share of clips held out (seeded by train.seed) for validation (default: %(default)s)")
    parser.add_argument("--features-dir", type=Path, help="features stage output (default: preprocess.features_dir)")
    parser.add_argument("--output", type=Path, help="directory for best.pt/last.pt/... (default: train.models_dir)")
    parser.add_argument("--batch-size", type=int, help="overrides train.batch_size")
    parser.add_argument("--epochs", type=int, help="overrides train.epochs")
    parser.add_argument("--lr", type=float, help="overrides train.lr")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any param, e.g. --set model.heads=8 (repeatable; VALUE is YAML)")
    parser.add_argument("--resume", action="store_true", help="continue from <output>/last.pt")
    parser.add_argument("--init-from", metavar="CKPT_OR_URI",
                        help="warm start: a checkpoint path, models:/bigfive-xattn@champion or runs:/<id>/model")
    parser.add_argument("--experiment", help="MLflow experiment (default: tracking.experiment)")
    parser.add_argument("--run-name", help="MLflow run name")
    parser.add_argument("--no-register", action="store_true", help="do not log/register the model in MLflow")
    parser.add_argument("--no-tracking", action="store_true", help="no MLflow logging at all")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    for key, value in (("train.batch_size", args.batch_size), ("train.epochs", args.epochs), ("train.lr", args.lr)):
        if value is not None:
            out[key] = value
    if args.no_tracking:
        out["tracking.enabled"] = False
    return out


def resolve_params(args: argparse.Namespace, direct: bool) -> Params:
    overrides = _overrides(args)
    path = Path(args.params)
    base: dict[str, Any] = {}
    if path.exists():
        base = to_dict(load_params(path))
    elif not direct:
        raise FileNotFoundError(f"{path}: params file not found (run from the repository root, pass --params, "
                                "or use the direct entry --static-features/--dynamic-features/--labels)")
    else:
        log.info("%s not found: using built-in defaults", path)
        base = to_dict(Params())
    epochs = overrides.get("train.epochs")
    warmup = overrides.get("train.warmup_epochs", base["train"]["warmup_epochs"])
    if epochs is not None and warmup >= epochs:
        # a short run asked on the command line should not fail on the default warm-up length
        overrides["train.warmup_epochs"] = max(0, epochs - 1)
        log.info("train.warmup_epochs %d -> %d to fit --epochs %d", warmup, overrides["train.warmup_epochs"], epochs)
    return params_from_dict(apply_overrides(base, overrides))


def run(args: argparse.Namespace) -> int:
    from bigfive.training.data import from_files
    from bigfive.training.loop import fit

    files = (args.static_features, args.dynamic_features, args.labels)
    direct = any(f is not None for f in files)
    if direct and not all(f is not None for f in files):
        raise ConfigError("--static-features/--dynamic-features/--labels", "the direct entry needs all three files")
    params = resolve_params(args, direct)
    data = None
    if direct:
        data = from_files(*files, val_split=args.val_split, seed=params.train.seed,
                          fallback_meta=to_dict(params.preprocess))
    result = fit(params, features_dir=args.features_dir, output_dir=args.output or params.train.models_dir,
                 experiment=args.experiment, run_name=args.run_name, register=not args.no_register,
                 resume=args.resume, init_from=args.init_from, data=data)
    line = (f"best val mean accuracy {result.best_val_mean_accuracy:.4f} at epoch {result.best_epoch} "
            f"({len(result.history)} epochs{', stopped early' if result.stopped_early else ''}); "
            f"checkpoints in {result.output_dir}")
    if result.run_id:
        line += f"; MLflow run {result.run_id}"
    if result.model_version:
        line += f"; registered version {result.model_version}" + (" (champion)" if result.champion_moved else "")
    log.info("%s", line)
    return 0
