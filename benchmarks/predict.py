"""End-to-end `bigfive predict` speed on a generated 15 s 1280x720 30 fps talking-head clip.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/predict.py [--model models/best.pt] [--repeats 3]

Times the in-process API (`Predictor.predict`: decode, MTCNN face detection + tracking + crops,
DIS flow, the network) against decode-only (`grab()` through every frame) in the same run, on
the same file. Model loading (network + MTCNN) is timed apart. Without ``--model`` a checkpoint
of the default model config at the default params' T and S is built (random weights: speed does
not depend on them). The split's ``decode`` is a separate pass reading exactly the frames
predict reads (the sampled frames and their flow successors); ``faces`` is the rest of the faces
half (detection, tracking, cropping). Medians over ``--repeats`` runs after one warm-up run.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

TARGET_RATIO = 2.5


def talking_clip(path: Path, seconds: float, width: int = 1280, height: int = 720, fps: int = 30) -> Path:
    """The astronaut's head swaying slowly (periods 3 s and 2.2 s, as a talking head) over a textured background."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' clip fixture
    from synth_clips import face_patch

    rng = np.random.default_rng(0)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 5)
    bg = cv2.normalize(bg, None, 40, 200, cv2.NORM_MINMAX)
    patch = cv2.cvtColor(face_patch(), cv2.COLOR_RGB2BGR)
    ph = int(0.55 * height)
    patch = cv2.resize(patch, (int(round(ph * patch.shape[1] / patch.shape[0])), ph), interpolation=cv2.INTER_AREA)
    pw = patch.shape[1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {path} (mp4v)")
    for i in range(int(round(seconds * fps))):
        t = i / fps
        cx = width / 2 + 0.04 * width * np.sin(2 * np.pi * t / 3.0)
        cy = height / 2 + 0.02 * height * np.sin(2 * np.pi * t / 2.2)
        x0, y0 = int(round(cx - pw / 2)), int(round(cy - ph / 2))
        frame = bg.copy()
        frame[y0:y0 + ph, x0:x0 + pw] = patch
        writer.write(frame)
    writer.release()
    return path


def decode_only(path: Path) -> float:
    start = time.perf_counter()
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return time.perf_counter() - start


def decode_plan(path: Path, frames: int, stack: int) -> float:
    """Read what predict reads: centre-sampled frames (colour) and their flow successors (gray)."""
    from bigfive.data.video import probe, read_frames, segment_indices

    start = time.perf_counter()
    n = probe(path).n_frames
    idx = segment_indices(max(1, n - stack), frames, "center")
    follow = np.minimum(idx[:, None] + np.arange(1, stack + 1)[None, :], n - 1)
    read_frames(path, idx.tolist(), gray=follow.ravel().tolist())
    return time.perf_counter() - start


def default_checkpoint(params_path: str, out: Path) -> tuple[Path, int, int]:
    import torch

    from bigfive import ALL_LABELS
    from bigfive.config import load_params, to_dict
    from bigfive.models import build_model, save_checkpoint

    params = load_params(params_path)
    pre = params.preprocess
    torch.manual_seed(0)
    net = build_model(params.model, pre.frames, 2 * pre.flow.stack)
    meta = {**to_dict(pre), "channels": 2 * pre.flow.stack, "labels": list(ALL_LABELS)}
    save_checkpoint(out, net, preprocess=meta, labels=list(ALL_LABELS))
    return out, pre.frames, pre.crop_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint path (default: a default-config checkpoint)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads (default: %(default)s; use 1 on "
                    "a machine shared with other jobs: OpenMP spin-waits make 2 threads on 2 busy cores ~10x slower)")
    ap.add_argument("--keep", default=None, help="keep the generated clip at this path")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from bigfive.inference.predictor import Predictor

    tmp = Path(tempfile.mkdtemp(prefix="bigfive-bench-"))
    clip = Path(args.keep) if args.keep else tmp / "talk_720p.mp4"
    fps = 30
    t0 = time.perf_counter()
    talking_clip(clip, args.seconds, fps=fps)
    print(f"generated {clip} ({args.seconds:.0f} s, 1280x720, {fps} fps) in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)

    ckpt = Path(args.model) if args.model else default_checkpoint(args.params, tmp / "best.pt")[0]
    t0 = time.perf_counter()
    predictor = Predictor(ckpt, device=args.device)
    model_load = time.perf_counter() - t0
    cfg = predictor.cfg

    warm = predictor.predict(clip)  # first call: allocations, MTCNN's first batch
    if not warm.ok:
        print(f"{clip}: {warm.error}", file=sys.stderr)
        return 1
    runs, decodes, plans = [], [], []
    for _ in range(args.repeats):
        decodes.append(decode_only(clip))
        plans.append(decode_plan(clip, cfg.frames, cfg.flow.stack))
        t0 = time.perf_counter()
        pred = predictor.predict(clip)
        runs.append((time.perf_counter() - t0, pred.timings))
    med = statistics.median
    end_to_end = med(r[0] for r in runs)
    decode = med(decodes)
    plan = med(plans)
    faces = med(r[1]["faces"] for r in runs)
    split = {"decode": round(plan, 4), "faces": round(max(faces - plan, 0.0), 4),
             "flow": round(med(r[1]["flow"] for r in runs), 4), "model": round(med(r[1]["model"] for r in runs), 4)}
    result = {
        "clip": {"seconds": args.seconds, "width": 1280, "height": 720, "fps": fps, "codec": "mp4v"},
        "T": cfg.frames, "S": cfg.crop_size, "flow": cfg.flow.method, "detect_width": cfg.detect_width,
        "threads": args.threads, "device": str(predictor.device), "repeats": args.repeats,
        "end_to_end_s": round(end_to_end, 4), "decode_s": round(decode, 4),
        "ratio_to_decode": round(end_to_end / decode, 3), "model_load_s": round(model_load, 3),
        "first_call_s": round(sum(warm.timings.values()), 4), "split": split,
        "detection_rate": pred.detection_rate, "target_ratio": TARGET_RATIO,
        "target_met": bool(end_to_end <= TARGET_RATIO * decode),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
