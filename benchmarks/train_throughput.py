"""Training-loop throughput (``bigfive.training.fit``) vs model-only steps, at T = 16, S = 112.

    PYTHONPATH=src python benchmarks/train_throughput.py              # CPU: ~4 min on 2 cores
    PYTHONPATH=src python benchmarks/train_throughput.py --device cuda --num-workers 4 --clips 2048 --batch-size 32

Both sides train the model of ``params.yaml`` (compact static + c3d dynamic: ``configs/chalearn.yaml``'s
InceptionResnetV1 needs a local weights file) on the same synthetic memory-mapped features, written
in the features stage's layout to a temporary folder, at the same batch size and autocast policy.

- model-only: forward, loss, backward, grad clip, AdamW and LR-schedule step on batches already on the
  device (the loop's optimizer, loss and schedule), after ``--warmup`` steps; the clock is read after
  a CUDA synchronize.
- loop: ``fit`` (tracking off, nothing registered) for ``--epochs`` epochs of ``--clips`` clips; a
  callback times each epoch's training pass, from the end of ``on_epoch_begin`` to the last batch's
  ``on_batch_end`` (synchronized on CUDA): data loading with the params' augmentation, host-to-device
  copies and the loop's own overheads count, validation and checkpoints do not. Epoch 1 is warm-up
  and not counted (model-only leaves as many steps untimed). ``loop_reported_clips_s`` is the loop's
  own ``throughput_clips_s`` (its history), for comparison.

Each is measured with ``train.deterministic`` on and off, both sides under the loop's own policy
(``bigfive.training.loop.deterministic``: deterministic algorithms without torch's NaN-filling of
new tensors), and model-only once more under torch's default deterministic mode, NaN fill included
(what the loop did before; ``on_nanfill``), ``--rounds`` times in alternation; the medians are
reported. The headline ratio is loop / model-only with the params' ``deterministic``; the target is
>= 0.85. No bf16-vs-fp32 accuracy check: CPU has no bf16 autocast here and ``fit`` has no fp32
switch on CUDA. The last line of stdout is one JSON object (``fit``'s report goes to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bigfive.config import Params, load_params, replace
from bigfive.models import build_model, count_parameters
from bigfive.training import fit
from bigfive.training.callbacks import Callback, TrainState
from bigfive.training.loop import deterministic, loss_fn, make_optimizer, train_step
from bigfive.training.schedule import warmup_cosine
from bigfive.utils.device import resolve_device

TARGET_RATIO = 0.85
QUICK = {"frames": 4, "size": 32, "clips": 16, "val_clips": 8, "batch_size": 8, "epochs": 2, "warmup": 1,
         "rounds": 1}


def write_features(root: Path, splits: dict[str, int], frames: int, size: int, channels: int) -> Path:
    """Random uint8 clips and labels in ``<root>/<split>/*.npy`` (written chunk by chunk, as memmaps)."""
    rng = np.random.default_rng(0)
    for split, n in splits.items():
        d = root / split
        d.mkdir(parents=True)
        for name, c in (("static_features.npy", 3), ("dynamic_features.npy", channels)):
            arr = np.lib.format.open_memmap(d / name, mode="w+", dtype=np.uint8, shape=(n, frames, c, size, size))
            for i in range(0, n, 16):
                arr[i:i + 16] = rng.integers(0, 256, size=arr[i:i + 16].shape, dtype=np.uint8)
            arr.flush()
            del arr
        np.save(d / "labels.npy", rng.uniform(0.1, 0.9, size=(n, 5)).astype(np.float32))
        (d / "clip_ids.txt").write_text("".join(f"{split}-{i:05d}\n" for i in range(n)))
    meta = {"frames": frames, "crop_size": size, "channels": channels, "source": "benchmarks/train_throughput.py"}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def bench_params(args: argparse.Namespace, device: torch.device, deterministic: bool) -> Params:
    """The params file with the benchmark's sizes; no tracking, no early stop, no frozen epochs."""
    base = load_params(args.params)
    tc = base.train
    return replace(base, {
        "train.batch_size": args.batch_size, "train.epochs": args.epochs,
        "train.warmup_epochs": min(tc.warmup_epochs, args.epochs - 1), "train.patience": 0,
        "train.freeze_streams_epochs": 0, "train.deterministic": deterministic, "train.device": str(device),
        "train.num_workers": tc.num_workers if args.num_workers is None else args.num_workers,
        "tracking.enabled": False,
    })


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_batches(features: Path, batch_size: int, n_batches: int, outputs: int, device: torch.device):
    """The first ``n_batches`` training batches, copied to the device once."""
    d = features / "train"
    static = np.load(d / "static_features.npy", mmap_mode="r")
    dynamic = np.load(d / "dynamic_features.npy", mmap_mode="r")
    labels = np.load(d / "labels.npy")[:, :outputs]
    return [tuple(torch.from_numpy(np.array(a[i * batch_size:(i + 1) * batch_size])).to(device)
                  for a in (static, dynamic, labels)) for i in range(n_batches)]


@contextlib.contextmanager
def torch_default_deterministic(device: torch.device):
    """torch's own deterministic mode, NaN fill of new tensors included (the reference ``on_nanfill``)."""
    import torch.utils.deterministic as det

    before, fill_before = torch.are_deterministic_algorithms_enabled(), det.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    det.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        det.fill_uninitialized_memory = fill_before


def model_only(params: Params, batches: list, device: torch.device, steps: int, warmup: int,
               nan_fill: bool = False) -> float:
    """Clips/s of the loop's step (forward, loss, backward, clip, AdamW, schedule) without data loading."""
    tc = params.train
    torch.manual_seed(tc.seed)
    frames, channels = batches[0][0].shape[1], batches[0][1].shape[2]
    model = build_model(params.model, frames, channels).to(device)
    net = torch.compile(model) if tc.compile else model
    optimizer = make_optimizer(model, tc.lr, tc.weight_decay, tc.stream_lr_mult)
    scheduler = warmup_cosine(optimizer, warmup, warmup + steps)  # the LR value does not change the speed
    criterion = loss_fn(tc.loss)
    params_list = [p for p in model.parameters() if p.requires_grad]
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    net.train()
    clips, start = 0, 0.0
    with torch_default_deterministic(device) if nan_fill else deterministic(tc, device):
        for i in range(warmup + steps):
            if i == warmup:
                sync(device)
                clips, start = 0, time.perf_counter()
            static, dynamic, y = batches[i % len(batches)]
            loss = train_step(net, static, dynamic, y, optimizer, scheduler, criterion, params_list, tc.grad_clip,
                              device)
            loss_sum += loss.double() * len(y)
            clips += len(y)
        sync(device)
    return clips / (time.perf_counter() - start)


class TrainWall(Callback):
    """Wall seconds of each epoch's training pass: end of ``on_epoch_begin`` to the last ``on_batch_end``."""

    def __init__(self, device: torch.device, steps_per_epoch: int):
        self.device, self.steps_per_epoch = device, steps_per_epoch
        self.seconds: dict[int, float] = {}

    def on_epoch_begin(self, state: TrainState) -> None:
        self._batches, self._t0 = 0, time.perf_counter()

    def on_batch_end(self, state: TrainState) -> None:
        self._batches += 1
        if self._batches == self.steps_per_epoch:  # one synchronize per epoch: the loop's own steps stay async
            sync(self.device)
            self.seconds[state.epoch] = time.perf_counter() - self._t0


def loop(params: Params, features: Path, clips: int, device: torch.device) -> dict[str, float]:
    """``fit`` on ``features``: clips/s of epochs 2.. by wall clock, and the loop's own throughput_clips_s."""
    timer = TrainWall(device, math.ceil(clips / params.train.batch_size))
    with tempfile.TemporaryDirectory(prefix="bigfive-bench-fit-") as out, contextlib.redirect_stdout(sys.stderr):
        result = fit(params, features_dir=features, output_dir=out, register=False, callbacks=[timer])
    steady = [e for e in sorted(timer.seconds) if e > 1]
    if len(result.history) != params.train.epochs or len(steady) != params.train.epochs - 1:
        raise RuntimeError(f"fit ran {len(result.history)} epochs ({len(timer.seconds)} timed), "
                           f"expected {params.train.epochs}")
    reported = [row["throughput_clips_s"] for row in result.history[1:] if "throughput_clips_s" in row]
    return {"clips_s": clips * len(steady) / sum(timer.seconds[e] for e in steady),
            "reported_clips_s": statistics.mean(reported) if reported else None}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    with contextlib.suppress(OSError, ValueError):
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    return None


# deterministic mode -> (train.deterministic, torch's NaN fill of new tensors, sides measured)
MODES = {"on": (True, False, ("model", "loop")), "off": (False, False, ("model", "loop")),
         "on_nanfill": (True, True, ("model",))}


def measure(args: argparse.Namespace, device: torch.device, features: Path) -> dict[tuple[str, str], list[float]]:
    """Clips/s per (side, mode), ``--rounds`` times; keys ``("model" | "loop" | "reported", mode)``."""
    per_epoch = math.ceil(args.clips / args.batch_size)
    steps = (args.epochs - 1) * per_epoch  # as many steps as the loop's timed ones
    runs: dict[tuple[str, str], list[float]] = {}
    order = [(mode, side) for mode, (_, _, sides) in MODES.items() for side in sides]
    for r in range(args.rounds):
        # reversed every other round, so a drift in machine load does not favour one side or mode
        for mode, side in (order if r % 2 == 0 else order[::-1]):
            det_on, nan_fill, _ = MODES[mode]
            params = bench_params(args, device, det_on)
            if side == "model":
                # up to 16 distinct batches, cycled: a large --clips must not have to fit in device memory
                batches = device_batches(features, args.batch_size, min(per_epoch, 16), params.model.outputs, device)
                value = model_only(params, batches, device, steps, args.warmup, nan_fill)
                del batches
            else:
                out = loop(params, features, args.clips, device)
                runs.setdefault(("reported", mode), []).append(out["reported_clips_s"])
                value = out["clips_s"]
            runs.setdefault((side, mode), []).append(value)
            print(f"round {r + 1}: {side} deterministic={mode}: {value:.3f} clips/s", file=sys.stderr)
    return runs


def summary(runs: dict[tuple[str, str], list[float]], deterministic: bool) -> dict:
    # the loop's own throughput may be absent from its history (None): then it is reported as null
    med = {key: statistics.median(values) for key, values in runs.items() if None not in values}
    mode = "on" if deterministic else "off"
    loop_s, model_s = med[("loop", mode)], med[("model", mode)]
    ratio = loop_s / model_s
    return {
        "loop_clips_s": round(loop_s, 3), "model_only_clips_s": round(model_s, 3), "ratio": round(ratio, 4),
        "target_ratio": TARGET_RATIO, "target_met": bool(ratio >= TARGET_RATIO),
        "loop_reported_clips_s": round(med[("reported", mode)], 3) if ("reported", mode) in med else None,
        "deterministic": {
            "default": deterministic,
            "loop_clips_s": {"on": round(med[("loop", "on")], 3), "off": round(med[("loop", "off")], 3)},
            "model_only_clips_s": {m: round(med[("model", m)], 3) for m in MODES},
            "loop_cost": round(1 - med[("loop", "on")] / med[("loop", "off")], 4),
            "model_only_cost": round(1 - med[("model", "on")] / med[("model", "off")], 4),
            "model_only_cost_with_torch_nan_fill": round(1 - med[("model", "on_nanfill")] / med[("model", "off")], 4),
            "ratio_off": round(med[("loop", "off")] / med[("model", "off")], 4),
        },
        "rounds_clips_s": {f"{side}_{m}": [round(v, 3) for v in values]
                           for (side, m), values in runs.items() if side != "reported"},
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml", help="model and train config (default: %(default)s)")
    p.add_argument("--frames", type=int, default=16, help="T (default: %(default)s)")
    p.add_argument("--size", type=int, default=112, help="S, the crop size (default: %(default)s)")
    p.add_argument("--clips", type=int, default=64, help="training clips = one epoch (default: %(default)s)")
    p.add_argument("--val-clips", type=int, default=16, help="validation clips (not timed; default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="default: %(default)s (params.yaml's train.batch_size)")
    p.add_argument("--epochs", type=int, default=3, help="fit epochs; the first is warm-up (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed model-only steps (default: one epoch's, as the loop's untimed epoch 1)")
    p.add_argument("--rounds", type=int, default=2, help="repetitions of every measurement (default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: train.num_workers)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the params' train.device)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's own choice)")
    p.add_argument("--quick", action="store_true", help=f"smoke-test sizes: {QUICK}")
    args = p.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.epochs < 2 or args.rounds < 1 or args.clips < args.batch_size:
        p.error("need --epochs >= 2 (epoch 1 is warm-up), --rounds >= 1 and --clips >= --batch-size")
    if args.warmup is None:
        args.warmup = math.ceil(args.clips / args.batch_size)
    return args


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device or load_params(args.params).train.device)
    params = bench_params(args, device, load_params(args.params).train.deterministic)
    channels = 2 * params.preprocess.flow.stack
    load_before, start = loadavg(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bigfive-bench-features-") as tmp:
        features = write_features(Path(tmp), {"train": args.clips, "val": args.val_clips}, args.frames, args.size,
                                  channels)
        runs = measure(args, device, features)
    model = params.model
    result = {
        "device": str(device), "device_name": device_name(device), "cpu_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "T": args.frames, "S": args.size, "channels": channels, "batch_size": args.batch_size,
        "train_clips": args.clips, "epochs": args.epochs, "timed_epochs": args.epochs - 1,
        "model_only_steps": (args.epochs - 1) * math.ceil(args.clips / args.batch_size),
        "model_only_warmup_steps": args.warmup, "rounds": args.rounds,
        "num_workers": params.train.num_workers, "compile": params.train.compile,
        "autocast": "bf16" if device.type == "cuda" else "none (fp32)",
        "model": {"static_backbone": model.static_backbone, "dynamic_backbone": model.dynamic_backbone,
                  "fusion": model.fusion, "parameters": count_parameters(build_model(model, args.frames, channels)),
                  "source": f"{args.params} (configs/chalearn.yaml's inception_resnet_v1 needs a weights file)"},
        **summary(runs, params.train.deterministic),
        "bf16_vs_fp32_accuracy": "not measured: no bf16 on CPU (autocast is off there)" if device.type != "cuda"
        else "not measured: fit has no fp32 switch on CUDA (bigfive.utils.device.autocast is always bf16)",
        "quick": args.quick, "loadavg_before": load_before, "loadavg_after": loadavg(),
        "wall_s": round(time.perf_counter() - start, 1),
        "measured": "clips/s = clips / wall seconds, medians over rounds; loop: fit's training passes of epochs 2.. "
                    "(data loading included, validation and checkpoints not); model-only: the same step on batches "
                    "already on the device; *_cost = 1 - (deterministic on) / (off); on: the loop's policy "
                    "(deterministic algorithms, torch.utils.deterministic.fill_uninitialized_memory off); "
                    "on_nanfill: torch's default deterministic mode (NaN fill on)",
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
