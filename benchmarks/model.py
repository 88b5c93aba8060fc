"""Training and inference throughput of the default model vs resnet18 as the static backbone.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/model.py [--compile] [--device cuda]

B=8, T=8, S=112, C=2, torch.set_num_threads(2); both configurations differ only in
``model.static_backbone``. Warm-up iterations are excluded. The last line is one JSON object.
On CUDA the steps run under bf16 autocast, as training does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from bigfive.config import ModelConfig
from bigfive.models import build_model, count_parameters
from bigfive.utils.device import autocast

TARGET_SPEEDUP = 2.5


def inputs(b: int, t: int, s: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (b, t, 3, s, s), dtype=torch.uint8, generator=g),
            torch.randint(0, 256, (b, t, c, s, s), dtype=torch.uint8, generator=g))


def throughput(cfg: ModelConfig, args: argparse.Namespace, compile_model: bool) -> dict[str, float]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = build_model(cfg, args.frames, args.channels).to(device)
    params = count_parameters(net)
    model = torch.compile(net) if compile_model else net
    static, dynamic = (x.to(device) for x in inputs(args.batch, args.frames, args.crop_size, args.channels))
    target = torch.rand(args.batch, cfg.outputs, device=device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def train_step() -> None:
        with autocast(device):
            loss = torch.nn.functional.l1_loss(model(static, dynamic).float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer_step() -> None:
        with autocast(device):
            model(static, dynamic)

    def timed(step, iters: int) -> float:
        for _ in range(args.warmup):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return iters * args.batch / (time.perf_counter() - start)

    net.train()
    train = timed(train_step, args.iters)
    net.eval()
    with torch.inference_mode():
        infer = timed(infer_step, args.iters)
    return {"train": train, "infer": infer, "params": params}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--crop-size", type=int, default=112)
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu | cuda (bf16 autocast)")
    p.add_argument("--compile", action="store_true", help="also time the default model under torch.compile (inductor)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    default = ModelConfig()
    ours = throughput(default, args, False)
    ref = throughput(dataclasses.replace(default, static_backbone="resnet18"), args, False)
    speedup = ours["train"] / ref["train"]
    result = {
        "batch": args.batch, "frames": args.frames, "crop_size": args.crop_size, "channels": args.channels,
        "threads": args.threads, "device": args.device,
        "train_clips_per_s": round(ours["train"], 2), "infer_clips_per_s": round(ours["infer"], 2),
        "resnet18_train_clips_per_s": round(ref["train"], 2), "resnet18_infer_clips_per_s": round(ref["infer"], 2),
        "train_speedup_vs_resnet18": round(speedup, 2), "params": ours["params"], "resnet18_params": ref["params"],
        "target_met": bool(speedup >= TARGET_SPEEDUP),
    }
    if args.compile:
        start = time.perf_counter()
        compiled = throughput(default, args, True)
        result.update({"compiled_train_clips_per_s": round(compiled["train"], 2),
                       "compiled_infer_clips_per_s": round(compiled["infer"], 2),
                       "compile_and_run_s": round(time.perf_counter() - start, 1)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
