"""``bigfive app``: a local web page to try the model on a clip (see :mod:`bigfive.app.server`).

The model (the registered champion unless ``--model``) and its preprocessing are loaded once, before
the server starts listening, so the page is ready as soon as it answers. It listens on 127.0.0.1
unless ``--host`` says otherwise: the page runs a model on uploaded files and has no authentication.

Its temporary folder (uploads while they wait, results until they expire) is removed on every exit the
process can see: Ctrl+C, SIGTERM, an error; one left by a killed process (SIGKILL) is removed by the
next start (:func:`sweep_orphans`). Uvicorn re-raises the signal it caught once it has shut
down; the handler installed here turns that into ``SystemExit``, so the ``finally`` blocks run.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("bigfive.app")

# Why a page about faces needs a note: the numbers are easy to read as a verdict on a person.
NOTE = ("These are perceived (apparent) personality scores: how ChaLearn First Impressions annotators would "
        "rate the person in the clip, on a 0-1 scale. They are not a measurement of the person's personality.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Open the printed address in a browser; Ctrl+C stops the server. See the README's 'Try it'."
    parser.add_argument("--model", default=None, help="checkpoint path (models/best.pt) or MLflow model URI "
                        "(default: models:/<tracking.registered_model>@<tracking.champion_alias>)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this "
                        "machine only; the page has no authentication)")
    parser.add_argument("--port", type=int, default=8050, help="port (default: %(default)s)")
    parser.add_argument("--max-upload-mb", type=float, default=200.0, help="largest clip accepted, in MB "
                        "(default: %(default)s)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="another name this "
                        "server may be reached by (its Host header); repeatable. Default: --host, and the loopback "
                        "names when it is a loopback address")
    parser.add_argument("--max-queue", type=int, default=4, help="clips waiting or running at once; an upload "
                        "beyond gets 503 and Retry-After (default: %(default)s)")
    parser.add_argument("--job-timeout", type=float, default=300.0, metavar="S", help="a prediction running longer "
                        "is stopped (default: %(default)s s)")
    parser.add_argument("--result-ttl", type=float, default=600.0, metavar="S", help="a result (traits, quality, "
                        "figure) is deleted this long after it is done (default: %(default)s s)")
    parser.add_argument("--body-timeout", type=float, default=30.0, metavar="S", help="an upload that sends nothing "
                        "for this long is dropped (default: %(default)s s)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    parser.add_argument("--labels", default=None, help="training labels (.npy) whose distribution the bars are "
                        "shown against (default: <preprocess.features_dir>/train/labels.npy)")
    parser.add_argument("--model-card", default=None, help="model card shown when the model is not a registered "
                        "version (default: <evaluate.results_dir>/model_card.md)")


def check_args(args: argparse.Namespace) -> str | None:
    if not 0 < args.port < 65536:
        return f"--port must be between 1 and 65535, got {args.port}"
    for flag in ("max_upload_mb", "max_queue", "job_timeout", "result_ttl", "body_timeout"):
        if not getattr(args, flag) > 0:
            return f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}"
    return None


def build_state(args: argparse.Namespace, params: Any, workdir: Path) -> Any:
    """Load the model (the slow part, with its log lines) and everything the page shows beside it."""
    from bigfive.app import reference
    from bigfive.app.guard import allowed_hosts
    from bigfive.app.jobs import JobQueue
    from bigfive.app.server import AppState
    from bigfive.inference.loader import default_model_uri
    from bigfive.inference.predictor import Predictor
    from bigfive.training.tracking import resolve_tracking_uri

    model = args.model or default_model_uri(params)
    tracking = resolve_tracking_uri(params.tracking)
    log.info("loading %s (tracking %s) and the face detector ...", model, tracking)
    predictor = Predictor.from_model(model, tracking=tracking, device=args.device, caps=params.preprocess)
    # Import matplotlib (the --explain figure) here, at start, in the main thread: the first clip then does not
    # wait for it, and the prediction thread runs no first-time imports while request threads serve.
    import matplotlib

    matplotlib.use("Agg")  # what explain.write_figure selects: no display needed
    import matplotlib.pyplot  # noqa: F401
    traits = list(predictor.labels)
    labels = Path(args.labels or Path(params.preprocess.features_dir) / "train" / "labels.npy")
    samples = reference.sample_clips(Path(params.data.raw_dir))
    card = reference.model_card(model, tracking, Path(args.model_card or Path(params.evaluate.results_dir)
                                                      / "model_card.md"))
    limit = int(args.max_upload_mb * 1e6)
    info = {"model": model, "traits": traits, "note": NOTE,
            "distribution": reference.label_distribution(labels, traits), "samples": list(samples),
            "max_upload_bytes": limit, "model_card": card is not None, "result_ttl_s": args.result_ttl,
            "job_timeout_s": args.job_timeout,
            "quality_floor": {"detection_rate": predictor.floor.min_detection_rate,
                              "mean_confidence": predictor.floor.min_confidence}}
    queue = JobQueue(predictor, workdir, max_queue=args.max_queue, job_timeout_s=args.job_timeout,
                     result_ttl_s=args.result_ttl)
    hosts = allowed_hosts(args.host, args.port, args.allow_host)
    return AppState(queue, info, samples, limit, card, hosts, args.body_timeout)


PREFIX = "bigfive-app-"


def sweep_orphans(tmp_root: Path) -> list[Path]:
    """Remove the temporary folders of app processes that are gone (killed with SIGKILL, a power cut):
    the only exits the server cannot clean up after itself. A folder names its process (``bigfive-app-<pid>-``)."""
    import shutil

    import psutil

    removed = []
    for folder in tmp_root.glob(f"{PREFIX}*-*"):
        pid = folder.name[len(PREFIX):].split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: the temporary folder is removed


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from bigfive.app.server import create_app
    from bigfive.inference.predict import params_or_defaults

    bad = check_args(args)
    if bad:
        print(f"bigfive app: {bad}", file=sys.stderr)
        return 2
    params = params_or_defaults(args.params)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    for folder in sweep_orphans(Path(tempfile.gettempdir())):
        log.info("removed %s, left by an app process that was killed", folder)
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-") as tmp:
        state = build_state(args, params, Path(tmp))
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("listening on %s: anyone who can reach this address can upload clips; requests are "
                        "answered only for Host %s (add the names clients use with --allow-host)", args.host,
                        ", ".join(sorted(state.hosts)))
        log.info("bigfive app: http://%s:%d (Ctrl+C stops it)", args.host, args.port)
        try:
            # timeout_graceful_shutdown: a stalled upload must not hold the exit (and the folder) open
            uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="warning",
                        timeout_graceful_shutdown=3)
        finally:
            state.queue.close()
    return 0
