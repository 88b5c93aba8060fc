"""``bigfive predict VIDEO|DIR [...]``: Big Five traits of raw videos with the trained model.

Each clip is decoded, its face found and tracked, cropped and its optical flow computed exactly as
the training preprocessing did (the parameters travel in the checkpoint), then the network runs.
Output: a table on stdout (one row per clip: traits, face-detection quality, a warning when the
quality is below what the model was trained on), optionally ``--output x.json|x.csv`` and
``--explain DIR`` figures. A clip that fails prints ``<file>: <reason>`` on stderr and the others
are still predicted. Exit code: 0 when every clip was predicted, 1 when any failed.

Python API::

    from bigfive.inference import predict_videos
    results = predict_videos(["talk.mp4"], model="models/best.pt")   # list[ClipPrediction]
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import multiprocessing as mp
import os
import stat
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from bigfive.inference.predictor import Predictor
from bigfive.inference.results import ClipPrediction
from bigfive.utils.io import write_json, write_text

log = logging.getLogger("bigfive.inference")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts")
# Below this many clips, spawning workers (each imports torch and loads MTCNN) costs more than it saves.
MIN_CLIPS_FOR_WORKERS = 4


# --------------------------------------------------------------------------- inputs


def expand_inputs(inputs: Sequence[str | Path]) -> tuple[list[str], list[ClipPrediction]]:
    """Files stay as given; a directory becomes its video files (by extension, sorted, not recursive).

    Returns ``(clips, failures)``: an empty directory is a failure of its own.
    """
    clips: list[str] = []
    failures: list[ClipPrediction] = []
    for item in inputs:
        p = Path(item)
        if _is_stdin(item):
            failures.append(ClipPrediction(str(item), status="error", error=STDIN_UNSUPPORTED))
            continue
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                failures.append(ClipPrediction(str(p), status="error", error="directory holds no video files "
                                               f"({', '.join(VIDEO_EXTENSIONS)})"))
            clips.extend(found)
        else:
            clips.append(str(p))
    return clips, failures


STDIN_UNSUPPORTED = ("reading a video from standard input (a pipe) is not supported: the decoder needs a file it "
                     "can seek in; save the video to a file and pass its path")


def _is_stdin(item: str | Path) -> bool:
    """``-``, or a path naming a pipe or character device (``/dev/stdin`` piped, ``<(cat x.mp4)``)."""
    if str(item) == "-":
        return True
    try:
        mode = os.stat(item).st_mode
    except (OSError, ValueError):
        return False  # missing: the predictor says "file not found"
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def figure_names(clips: Sequence[str]) -> list[str]:
    """``<name>.png`` per clip (``talk.mp4.png``), numbered when two clips share a file name."""
    seen: dict[str, int] = {}
    out = []
    for c in clips:
        name = Path(c).name
        k = seen.get(name, 0)
        seen[name] = k + 1
        out.append(f"{name}.png" if k == 0 else f"{name}.{k}.png")
    return out


# --------------------------------------------------------------------------- workers

_WORKER: dict[str, Predictor] = {}


def _init_worker(checkpoint: str, device: str, threads: int, caps: Any) -> None:
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    _WORKER["predictor"] = Predictor(checkpoint, device=device, caps=caps)


def _work(clip: str, figure: str | None) -> ClipPrediction:
    return _WORKER["predictor"].predict(clip, explain_to=figure)


def resolve_workers(workers: int, n_clips: int) -> int:
    if workers > 0:
        return min(workers, max(n_clips, 1))
    if n_clips < MIN_CLIPS_FOR_WORKERS:
        return 1
    return max(1, min(os.cpu_count() or 1, n_clips))


# --------------------------------------------------------------------------- API


def predict_videos(videos: Sequence[str | Path], model: str | Path | None = None, *, params: Any = None,
                   workers: int = 1, explain_dir: str | Path | None = None, device: str = "auto",
                   show_progress: bool = True, on_error: Callable[[ClipPrediction], None] | None = None,
                   predictor: Predictor | None = None) -> list[ClipPrediction]:
    """Predict every video (files, or directories of videos): empty-directory errors, then clips in input order.

    ``model``: a checkpoint path or an MLflow model URI (default ``models:/<registered>@<alias>``
    from ``params``); ``workers``: processes (0 = automatic, 1 = in this process); ``on_error`` is
    called with each failed clip as it happens. Never raises for a bad clip. The input caps
    (``preprocess.max_frame_pixels``, ``max_duration_s``, ``max_decode_pixels``) are ``params``'s: a clip over
    one fails with its reason before it is decoded, and the others are still predicted.
    """
    from bigfive.inference.loader import default_model_uri
    from bigfive.training.tracking import resolve_tracking_uri

    if params is None:
        from bigfive.config import Params

        params = Params()
    clips, failures = expand_inputs(videos)
    for f in failures:
        if on_error:
            on_error(f)
    figures: list[str | None] = [None] * len(clips)
    if explain_dir is not None:
        Path(explain_dir).mkdir(parents=True, exist_ok=True)
        figures = [str(Path(explain_dir) / n) for n in figure_names(clips)]
    n_workers = resolve_workers(workers, len(clips))
    model = str(model or default_model_uri(params))
    if clips and predictor is None and n_workers == 1:
        predictor = Predictor.from_model(model, tracking=resolve_tracking_uri(params.tracking), device=device,
                                         caps=params.preprocess)
    results: list[ClipPrediction | None] = [None] * len(clips)

    from bigfive.utils.progress import progress

    bar = progress(total=len(clips), desc="predict", unit="clip", disable=not show_progress or len(clips) < 2)

    def done(i: int, pred: ClipPrediction) -> None:
        results[i] = pred
        bar.update()
        if not pred.ok and on_error:
            on_error(pred)

    try:
        if predictor is not None:
            for i, clip in enumerate(clips):
                done(i, predictor.predict(clip, explain_to=figures[i]))
        elif clips:
            _run_pool(clips, figures, model, resolve_tracking_uri(params.tracking), device, n_workers, done,
                      params.preprocess)
    finally:
        bar.close()
    return failures + [r for r in results if r is not None]


def _run_pool(clips: list[str], figures: list[str | None], model: str, tracking: str, device: str, n_workers: int,
              done: Callable[[int, ClipPrediction], None], caps: Any) -> None:
    """Spawned workers, each loading the model once; an MLflow model is downloaded once, here."""
    import tempfile

    from bigfive.inference.loader import resolve_checkpoint

    threads = max(1, (os.cpu_count() or 1) // n_workers)
    with tempfile.TemporaryDirectory(prefix="bigfive-model-") as tmp:
        checkpoint = resolve_checkpoint(model, tracking=tracking, cache_dir=tmp)
        with ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                 initargs=(str(checkpoint), device, threads, caps)) as pool:
            futures = {pool.submit(_work, clip, figures[i]): i for i, clip in enumerate(clips)}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    pred = fut.result()
                except Exception as err:  # a worker died (e.g. killed for memory): only its clip fails
                    pred = ClipPrediction(clips[i], status="error", error=f"worker failed: {err}")
                done(i, pred)


# --------------------------------------------------------------------------- output


def trait_names(results: Sequence[ClipPrediction]) -> list[str]:
    for r in results:
        if r.ok:
            return list(r.traits)
    from bigfive import TRAITS

    return list(TRAITS)


def format_table(results: Sequence[ClipPrediction]) -> str:
    """A fixed-width text table: clip, the traits, detection rate, confidence, warning."""
    names = trait_names(results)
    header = ["clip", *names, "det_rate", "confidence", "warning"]
    rows = []
    for r in results:
        traits = [f"{r.traits[n]:.3f}" if r.ok else "-" for n in names]
        quality = [f"{r.detection_rate:.2f}" if r.detection_rate == r.detection_rate else "-",
                   f"{r.mean_confidence:.3f}" if r.mean_confidence == r.mean_confidence else "-"]
        warn = r.warning if r.ok else f"ERROR: {r.error}"
        rows.append([Path(r.clip).name, *traits, *quality, warn])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    widths[-1] = 0  # the last column is free text
    lines = ["  ".join(str(x).ljust(w) if i < len(header) - 1 else str(x) for i, (x, w) in
                       enumerate(zip(line, widths))).rstrip() for line in [header, *rows]]
    return "\n".join(lines)


CSV_QUALITY = ("detection_rate", "mean_confidence", "warning", "notes", "error")


def to_csv(results: Sequence[ClipPrediction]) -> str:
    names = trait_names(results)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["clip", "status", *names, *CSV_QUALITY])
    for r in results:
        rec = r.record()
        q = rec["quality"]
        w.writerow([r.clip, r.status, *[rec.get("traits", {}).get(n, "") for n in names],
                    "" if q["detection_rate"] is None else q["detection_rate"],
                    "" if q["mean_confidence"] is None else q["mean_confidence"], r.warning, r.notes, r.error])
    return buf.getvalue()


def write_results(path: str | Path, results: Sequence[ClipPrediction], *, model: str,
                  info: dict[str, Any] | None = None) -> None:
    """JSON (``{"model", "clips": [...]}``) or CSV (one row per clip), chosen by the extension."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        write_text(path, to_csv(results))
    else:
        write_json(path, {"model": model, **(info or {}), "clips": [r.record() for r in results]})


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("A clip that fails prints '<file>: <reason>' on stderr; the others are still predicted. "
                     "Exit status: 0 when every clip was predicted, 1 when any failed (or the model could not be "
                     "loaded), 2 for bad options. See docs/inference.md.")
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or directories of videos "
                        f"({' '.join(VIDEO_EXTENSIONS)})")
    parser.add_argument("--model", default=None, help="checkpoint path (models/best.pt) or MLflow model URI "
                        "(default: models:/<tracking.registered_model>@<tracking.champion_alias>)")
    parser.add_argument("--output", "-o", default=None, help="also write the results to FILE.json or FILE.csv")
    parser.add_argument("--explain", default=None, metavar="DIR", help="write one figure per clip into DIR "
                        "(face crops with attention, flow magnitudes, trait bars)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0 = one per CPU core when "
                        f"there are {MIN_CLIPS_FOR_WORKERS}+ clips, else 1; 1 = in-process)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def params_or_defaults(path: str) -> Any:
    from bigfive.config import Params, load_params

    # predict needs params only for the default model URI and tracking store; outside the repository
    # (no params.yaml) the defaults serve, unless a file was asked for explicitly.
    if path == "params.yaml" and not Path(path).exists():
        return Params()
    return load_params(path)


def run(args: argparse.Namespace) -> int:
    from bigfive.inference.loader import default_model_uri
    from bigfive.training.tracking import resolve_tracking_uri

    out = Path(args.output) if args.output else None
    if out is not None and out.suffix.lower() not in (".json", ".csv"):
        print(f"bigfive predict: --output {out}: use a .json or .csv file name", file=sys.stderr)
        return 2
    if args.workers < 0:
        print(f"bigfive predict: --workers must be >= 0, got {args.workers}", file=sys.stderr)
        return 2
    params = params_or_defaults(args.params)
    model = args.model or default_model_uri(params)
    log.info("model %s (tracking %s)", model, resolve_tracking_uri(params.tracking))

    def report(pred: ClipPrediction) -> None:
        from tqdm import tqdm

        tqdm.write(f"{pred.clip}: {pred.error}", file=sys.stderr)

    results = predict_videos(args.videos, model, params=params, workers=args.workers, explain_dir=args.explain,
                             device=args.device, show_progress=not args.no_progress, on_error=report)
    print(format_table(results))
    if out is not None:
        write_results(out, results, model=model)
    failed = sum(not r.ok for r in results)
    flagged = sum(bool(r.warning) for r in results if r.ok)
    if flagged:
        print(f"{flagged} clip(s) flagged: face detection quality below the training data's", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(results)} clip(s) failed", file=sys.stderr)
    return 1 if failed else 0
