"""The embedded sample dataset (``bigfive sample``), written in the ChaLearn download layout.

Real face photos (``faces_source``) are animated on a plain background; every label is a known
function of latent factors that the renderer controls, plus Gaussian noise. The factors are
chosen so that each model family can learn exactly what it should (docs/sample.md):

- openness, conscientiousness: static colour grading (two chroma axes), constant over a clip;
- extraversion: head-sway *speed* at a fixed amplitude (frame-to-frame motion only);
- neuroticism: amplitude of a fast vertical tremor (alternates every frame: flow only);
- agreeableness: how many of 3 brightness flashes coincide with 3 quick nods (needs both
  streams, aligned in time);
- with ``sample.cross_time``, conscientiousness instead: how many of 2 appearance cues are
  followed (not preceded) by the head zoom of their kind, 1-3 sampled steps away (needs both
  streams and a per-event look across time);
- interview: a fixed mix of the others.

Events are placed on the centre frames of ``segments`` equal segments (segment-based sampling)
and last a few frames, so the sampler sees them even one frame off.

``--preset chalearn`` (:data:`PRESETS`) gives the clips ChaLearn's geometry -- 15 s at 30 fps,
1280x720 H.264, a few clips of other sizes and a portrait one -- with the same label model, for
the real-size rehearsal (pipelines/rehearsal, docs/real_data.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import multiprocessing
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bigfive import ALL_LABELS, SPLITS, TRAITS
from bigfive.config import SampleConfig, load_params
from bigfive.data.chalearn import SAMPLE_COMPLETE
from bigfive.data.sample_plan import (
    CROSS_LAGS,
    CROSS_PAIRS,
    EVENTS,
    INTERVIEW_MIX,
    LABEL_LOW,
    LABEL_SPAN,
    ClipSpec,
    clean_labels,
    load_face_sources_meta,
    n_frames,
    noise_floor,
    noisy_labels,
    plan_clips,
    segment_centers,
)
from bigfive.data.sample_render import (
    FLASH_GAIN,
    NOD_DEPTH,
    SPEED_RANGE,
    SWAY_AMPLITUDE,
    TINT,
    TREMOR_RANGE,
    ZOOM_PROFILE,
    ZOOM_STEP,
    init_worker,
    render_clip,
)
from bigfive.data.zipcrypto import write_zipcrypto
from bigfive.utils.io import atomic_dir, atomic_path, write_json, write_text
from bigfive.utils.progress import progress
from bigfive.utils.text import printable

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"

# ChaLearn's own names: outer archive, nested-zip prefix, annotation pickle.
ARCHIVES = {"train": "train-1.zip", "val": "val-1.zip", "test": "test-1e.zip"}
NESTED_PREFIX = {"train": "training80_", "val": "validation80_", "test": "test80_"}
ANNOTATIONS = {"train": "annotation_training.pkl", "val": "annotation_validation.pkl", "test": "annotation_test.pkl"}
DEMOGRAPHICS = {"dev": "eth_gender_annotations_dev.csv", "test": "eth_gender_annotations_test.csv"}
METADATA = "sample_metadata.json"
CLIPS_PER_NESTED_ZIP = 80
# Key order of the real annotation pickles.
PICKLE_TRAITS = ("extraversion", "neuroticism", "agreeableness", "conscientiousness", "interview", "openness")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: same config -> same archive bytes

# Named sets of `sample` values. chalearn: ChaLearn First Impressions V2's geometry (15 s, 30 fps, mostly
# 1280x720 H.264 from YouTube; some clips of other sizes, a few portrait); segments = the real data's T.
PRESETS: dict[str, dict[str, Any]] = {
    "chalearn": {"seconds": 15.0, "fps": 30, "width": 1280, "height": 720, "codec": "h264", "segments": 16,
                 "other_sizes": [[640, 360], [854, 480], [720, 1280]]},
}

# ---------------------------------------------------------------- archives


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED  # mp4 and nested zips do not compress further
    info.external_attr = 0o644 << 16
    return info


def _nested_zip(members: Sequence[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(_zip_info(name), data)
    return buf.getvalue()


def write_archive(path: Path, members: Sequence[tuple[str, bytes]], password: str | None, salt_seed: int) -> None:
    """Write a stored zip atomically; with ``password`` every entry is ZipCrypto-encrypted."""
    with atomic_path(path) as tmp:
        if password is None:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
                for name, data in members:
                    zf.writestr(_zip_info(name), data)
            return
        write_zipcrypto(tmp, members, password, np.random.default_rng(salt_seed).bytes, date_time=ZIP_DATE)


def write_split_archive(out_dir: Path, split: str, clips: Sequence[tuple[str, bytes]], password: str | None,
                        seed: int) -> list[str]:
    """``train-1.zip`` etc.: nested zips of 80 clips each (the last one partial)."""
    nested = []
    for i in range(0, len(clips), CLIPS_PER_NESTED_ZIP):
        name = f"{NESTED_PREFIX[split]}{i // CLIPS_PER_NESTED_ZIP + 1:02d}.zip"
        nested.append((name, _nested_zip(clips[i:i + CLIPS_PER_NESTED_ZIP])))
    write_archive(out_dir / ARCHIVES[split], nested, password if split != "train" else None,
                  salt_seed=seed * 7 + SPLITS.index(split))
    return [name for name, _ in nested]


def write_annotations(out_dir: Path, split: str, specs: Sequence[ClipSpec]) -> None:
    """Protocol-2 pickle of ``{trait: {"<id>.mp4": float}}`` with builtins only, like ChaLearn's."""
    labels = {s.video_id: noisy_labels(s) for s in specs}
    data = {t: {f"{vid}.mp4": float(v[t]) for vid, v in labels.items()} for t in PICKLE_TRAITS}
    with atomic_path(out_dir / ANNOTATIONS[split]) as tmp, tmp.open("wb") as f:
        pickle.dump(data, f, protocol=2)


def demographics(youtube_id: str, seed: int) -> tuple[int, int]:
    """Deterministic pseudo-random (ethnicity, gender) codes of a subject."""
    digest = np.frombuffer(youtube_id.encode(), dtype=np.uint8).astype(np.uint32)
    rng = np.random.default_rng([seed, *digest.tolist()])
    ethnicity = int(rng.choice([1, 2, 3], p=[0.15, 0.75, 0.10]))  # 1 Asian, 2 Caucasian, 3 African-American
    gender = int(rng.integers(1, 3))  # 1 male, 2 female
    return ethnicity, gender


def write_demographics(out_dir: Path, specs: Sequence[ClipSpec], seed: int) -> None:
    for name, splits in (("dev", ("train", "val")), ("test", ("test",))):
        lines = ["VideoName;YouTubeID;Ethnicity;Gender"]
        for s in specs:
            if s.split in splits:
                eth, gender = demographics(s.youtube_id, seed)
                lines.append(f"{s.video_id}.mp4;{s.youtube_id};{eth};{gender}")
        write_text(out_dir / DEMOGRAPHICS[name], "\n".join(lines) + "\n")


# ---------------------------------------------------------------- metadata and entry points


def label_model(cross_time: bool = False) -> dict[str, Any]:
    ranges = f"label = clip({LABEL_LOW} + {LABEL_SPAN} * factor + N(0, label_noise), 0, 1)"
    return {
        "formula": ranges,
        "openness": f"warm-cool colour grading of the whole frame, +-{TINT} levels (R up, B down); static",
        "conscientiousness": f"green-magenta colour grading, +-{TINT} levels; static",
        "extraversion": (f"head-sway speed {SPEED_RANGE[0]}-{SPEED_RANGE[1]} face heights/frame, triangle wave of "
                         f"fixed amplitude {SWAY_AMPLITUDE} face heights; dynamic"),
        "neuroticism": (f"vertical tremor alternating every frame, amplitude {TREMOR_RANGE[0]}-{TREMOR_RANGE[1]} "
                        "face heights; dynamic"),
        "agreeableness": (f"factor = (flashes coinciding with nods) / {EVENTS}; {EVENTS} nods (depth {NOD_DEPTH} "
                          f"face heights) and {EVENTS} brightness flashes (gain {FLASH_GAIN}) on segment centres; "
                          "needs time-aligned fusion"),
        "interview": f"factor = weighted mean {INTERVIEW_MIX} (negative weight: 1 - factor)",
        "event_frames": "nod: centre-1..centre+2; flash: centre-1..centre+2 at full, centre-2 and centre+3 half",
    } | (cross_time_model() if cross_time else {})


def cross_time_model() -> dict[str, str]:
    """The label-model entries that ``sample.cross_time`` changes or adds."""
    return {
        "conscientiousness": (f"factor = (pairs whose motion follows its cue) / {CROSS_PAIRS}; {CROSS_PAIRS} cues "
                              f"(kind 0: dark band over the mouth, kind 1: bright forehead bar) and {CROSS_PAIRS} "
                              f"head zooms (kind 0: in, kind 1: out, {ZOOM_STEP} log-scale per frame) on distinct "
                              f"segment centres; cue and zoom of one kind are a pair, lag {list(CROSS_LAGS)} steps "
                              "drawn per pair, order (after / before) 1/2 each; needs cross-time fusion"),
        "cross_time_event_frames": ("cue: like a flash (centre-1..centre+2 full, centre-2 and centre+3 half); zoom "
                                    f"log-scale x {ZOOM_STEP}: {ZOOM_PROFILE} by frame offset"),
    }


# Keys added after generator version 1, recorded only when they differ from their defaults: the default
# sample's metadata (copied into data/raw by ingest) stays byte for byte what it was.
LATER_KEYS = {"codec": "mp4v", "other_sizes": [], "cross_time": False}


def _config_record(cfg: SampleConfig) -> dict[str, Any]:
    record = dataclasses.asdict(cfg)
    return {k: v for k, v in record.items() if k not in LATER_KEYS or v != LATER_KEYS[k]}


def build_metadata(cfg: SampleConfig, specs: Sequence[ClipSpec], archives: dict[str, list[str]]) -> dict[str, Any]:
    floor = noise_floor(specs, cfg.label_noise)
    by_split = {sp: [s for s in specs if s.split == sp] for sp in SPLITS}
    subjects = {sp: {s.youtube_id for s in v} for sp, v in by_split.items()}
    train_mean = {t: float(np.mean([noisy_labels(s)[t] for s in by_split["train"]])) for t in ALL_LABELS}
    baseline, realised = {}, {}
    for sp in ("val", "test"):
        labels = [noisy_labels(s) for s in by_split[sp]]
        baseline[sp] = {t: 1.0 - float(np.mean([abs(lab[t] - train_mean[t]) for lab in labels])) for t in ALL_LABELS}
        baseline[sp]["mean"] = float(np.mean([baseline[sp][t] for t in TRAITS]))
        clean = [clean_labels(s) for s in by_split[sp]]
        realised[sp] = {t: 1.0 - float(np.mean([abs(lab[t] - c[t]) for lab, c in zip(labels, clean)]))
                        for t in ALL_LABELS}
        realised[sp]["mean"] = float(np.mean([realised[sp][t] for t in TRAITS]))
    n = n_frames(cfg)
    return {
        "generator": "bigfive.data.sample",
        "generator_version": GENERATOR_VERSION,
        "config": _config_record(cfg),
        "frames_per_clip": n,
        "segment_centers": segment_centers(n, cfg.segments),
        "face_sources": list(load_face_sources_meta()),
        "label_model": label_model(cfg.cross_time),
        "noise_floor": floor,
        "noise_floor_mean_accuracy": float(np.mean([floor[t] for t in TRAITS])),
        "noise_floor_realised": realised,
        "train_mean_baseline": baseline,
        "counts": {
            "clips": {sp: len(v) for sp, v in by_split.items()},
            "subjects": {sp: len(v) for sp, v in subjects.items()},
            "subjects_in_several_splits": sum(1 for y in set.union(*subjects.values())
                                              if sum(y in v for v in subjects.values()) > 1),
            "agreeableness_matches": {str(m): sum(1 for s in specs if s.matches == m) for m in range(EVENTS + 1)},
        } | ({"conscientiousness_answered": {str(m): sum(1 for s in specs if s.answered == m)
                                             for m in range(CROSS_PAIRS + 1)}} if cfg.cross_time else {}),
        "archives": {ARCHIVES[sp]: names for sp, names in archives.items()},
    }


def generate(cfg: SampleConfig, out_dir: str | Path, *, password: str | None = None, workers: int = 1,
             progress: bool = True) -> dict:
    """Write the sample in the ChaLearn download layout into ``out_dir``; return the metadata.

    Everything is built in a temporary folder beside ``out_dir`` and renamed into place at the end,
    with :data:`SAMPLE_COMPLETE` (the files and their sizes) written last: a run that is killed
    leaves ``out_dir`` as it was (the next run removes its temporary folder), and ``bigfive ingest``
    refuses a sample folder without that marker. An existing ``out_dir`` is replaced only if it is
    empty or holds nothing but what this generator writes.
    """
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    specs = plan_clips(cfg)
    workers = max(1, workers if workers > 0 else (os.cpu_count() or 1))
    with atomic_dir(out_dir) as build:
        tmp_dir = Path(tempfile.mkdtemp(prefix=".sample-clips.", dir=build))
        clips: dict[str, bytes] = {}
        try:
            jobs = [(s, cfg, str(tmp_dir)) for s in specs]
            bar = _progress_bar(len(jobs), progress)
            if workers == 1:
                init_worker()
                for job in jobs:
                    vid, data = render_clip(job)
                    clips[vid] = data
                    bar.update()
            else:
                ctx = multiprocessing.get_context("spawn" if os.name == "nt" else "fork")
                with ctx.Pool(workers, initializer=init_worker) as pool:
                    for vid, data in pool.imap(render_clip, jobs, chunksize=4):
                        clips[vid] = data
                        bar.update()
            bar.close()
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

        archives: dict[str, list[str]] = {}
        for split in SPLITS:
            split_specs = [s for s in specs if s.split == split]
            members = [(f"{s.video_id}.mp4", clips[s.video_id]) for s in split_specs]
            archives[split] = write_split_archive(build, split, members, password, cfg.seed)
            write_annotations(build, split, split_specs)
        write_demographics(build, specs, cfg.seed)
        meta = build_metadata(cfg, specs, archives)
        meta["encrypted"] = [ARCHIVES["val"], ARCHIVES["test"]] if password is not None else []
        write_json(build / METADATA, meta)
        write_completion_marker(build)
    log.info("sample: %d clips (%s) in %s; noise floor %.3f, train-mean baseline (test) %.3f", len(specs),
             meta["counts"]["clips"], out_dir, meta["noise_floor_mean_accuracy"],
             meta["train_mean_baseline"]["test"]["mean"])
    return meta


def write_completion_marker(folder: Path) -> None:
    """:data:`SAMPLE_COMPLETE`: every file of the finished folder and its size (checked by ingest)."""
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
    write_json(folder / SAMPLE_COMPLETE, {"generator": "bigfive.data.sample", "generator_version": GENERATOR_VERSION,
                                          "files": files})


def _generator_files() -> set[str]:
    return {*ARCHIVES.values(), *ANNOTATIONS.values(), *DEMOGRAPHICS.values(), METADATA, SAMPLE_COMPLETE}


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to replace a folder that holds anything this generator does not write (someone's data)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder; choose another --out")
    ours = _generator_files()
    for entry in out_dir.iterdir():
        name = entry.name
        if name in ours or name.startswith((".sample-clips.", *(f".{f}." for f in ours))):
            continue  # its own files, and the temporary files of an earlier version's interrupted run
        raise FileExistsError(f"{out_dir}: holds {printable(name, 80)}, which `bigfive sample` does not write; "
                              "refusing to replace the folder (choose another --out, or empty it)")


def _progress_bar(total: int, enabled: bool) -> Any:
    return progress(total=total, desc="sample", unit="clip", disable=not enabled)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="output directory (default: params sample.downloads_dir)")
    parser.add_argument("--n-train", type=int, default=None, help="training clips (default: params sample.n_train)")
    parser.add_argument("--n-val", type=int, default=None, help="validation clips (default: params sample.n_val)")
    parser.add_argument("--n-test", type=int, default=None, help="test clips (default: params sample.n_test)")
    parser.add_argument("--seed", type=int, default=None, help="generator seed (default: params sample.seed)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="a named set of sample values over the params' (chalearn: 15 s, 30 fps, 1280x720 "
                             "H.264, a few other sizes and a portrait clip)")
    parser.add_argument("--workers", type=int, default=1, help="render processes; 0 = all cores (default: 1)")
    parser.add_argument("--password-env", default=None, metavar="VAR",
                        help="encrypt val/test archives with the password in environment variable VAR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def sample_config(base: SampleConfig, preset: str | None = None, **overrides: Any) -> SampleConfig:
    """``base`` with a preset's values, then ``overrides`` (None values ignored) on top; validated."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"--preset {preset}: unknown preset (known: {', '.join(sorted(PRESETS))})")
    values = {**(PRESETS[preset] if preset else {}), **{k: v for k, v in overrides.items() if v is not None}}
    cfg = dataclasses.replace(base, **values)
    cfg.validate("sample")
    return cfg


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    cfg = sample_config(params.sample, args.preset, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                        seed=args.seed)
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            raise ValueError(f"--password-env {args.password_env}: environment variable is unset or empty")
    out = args.out or cfg.downloads_dir
    meta = generate(cfg, out, password=password, workers=args.workers, progress=not args.no_progress)
    print(f"wrote {sum(meta['counts']['clips'].values())} clips {meta['counts']['clips']} to {out}; "
          f"noise floor (mean accuracy) {meta['noise_floor_mean_accuracy']:.3f}, "
          f"train-mean baseline on test {meta['train_mean_baseline']['test']['mean']:.3f}")
    return 0
