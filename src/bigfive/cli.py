"""The ``bigfive`` command: one subcommand per job; every DVC stage calls one of them.

Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand runs, so ``bigfive
--help`` stays instant (no torch import).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from bigfive import __version__

# name -> (module, one-line help). The order is the pipeline's order.
COMMANDS: dict[str, tuple[str, str]] = {
    "sample": ("bigfive.data.sample", "generate the embedded sample dataset in the ChaLearn download layout"),
    "ingest": ("bigfive.data.ingest", "ingest ChaLearn First Impressions V2 downloads into data/raw"),
    "raw": ("bigfive.data.raw", "DVC stage raw: sample or ChaLearn downloads -> data/raw"),
    "faces": ("bigfive.preprocess.faces", "DVC stage faces: sampled frames -> aligned face crops"),
    "flow": ("bigfive.preprocess.flow", "DVC stage flow: crop pairs -> quantized optical flow"),
    "features": ("bigfive.preprocess.features", "DVC stage features: pack memory-mappable arrays per split"),
    "model-summary": ("bigfive.models.summary", "parameter counts and FLOPs per part of the configured model"),
    "train": ("bigfive.training.train", "DVC stage train: train the two-stream model, log to MLflow"),
    "evaluate": ("bigfive.evaluation.evaluate", "DVC stage evaluate: video-level metrics and figures"),
    "tune": ("bigfive.tuning.tune", "Optuna search over attention and fusion settings"),
    "ablate": ("bigfive.ablation.run", "train and evaluate one ablation variant and seed"),
    "compare": ("bigfive.ablation.compare", "summarise ablation runs: table, figure, significance tests"),
    "predict": ("bigfive.inference.predict", "predict the Big Five traits of raw videos"),
    "export": ("bigfive.inference.export", "export the trained model (ONNX)"),
    "app": ("bigfive.app.main", "a local web page to try the model on a clip (127.0.0.1)"),
}


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    common.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ... (overrides the log config)")
    common.add_argument("--log-config", default=None, help="logging dictConfig YAML (default: bigfive's own)")
    return common


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(prog="bigfive",
                                     description="bigfive: apparent Big Five personality from talking-head video.")
    parser.add_argument("--version", action="version", version=f"bigfive {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common()
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from bigfive.utils.logs import setup_logging

    setup_logging(args.log_config, args.log_level)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("bigfive").error("interrupted")
        return 130
    except Exception as err:  # a clear one-line error for users; --log-level DEBUG shows the traceback
        from bigfive.config.base import ConfigError

        log = logging.getLogger("bigfive")
        if log.isEnabledFor(logging.DEBUG):
            log.exception("bigfive %s failed", args.command)
        kind = "config error" if isinstance(err, ConfigError) else type(err).__name__
        print(f"bigfive {args.command}: {kind}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
