"""Temporal receptive field of each stream: how much of token t's gradient comes from input step t + k.

For token t of a stream (the (B, T, D) output before fusion) the gradient of sum(token t) with respect
to the input clip is split by input step; the share of its L2 norm at each offset k = step - t is
averaged over tokens t and random uint8 clips (BatchNorm in eval mode, so clips do not mix). A
time-local stream has all of it at k = 0.

    python pipelines/ablation/receptive_field.py                                  # random-init streams
    python pipelines/ablation/receptive_field.py --checkpoint models/best.pt      # also a trained model

Prints one JSON object per stream and setting; ``--out`` writes them as a JSON list.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from bigfive.config import load_params
from bigfive.models.checkpoint import load_checkpoint, model_from_checkpoint
from bigfive.models.network import TwoStreamNet, build_model


def offset_shares(stream: torch.nn.Module, shape: tuple[int, ...], clips: int) -> dict[int, float]:
    """Mean share of token t's input-gradient norm at input step t + k, for every offset k."""
    frames = shape[0]
    totals = torch.zeros(2 * frames - 1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(clips):
        x = torch.randint(0, 256, (1, *shape), generator=gen).float().requires_grad_(True)
        tokens = stream(x)  # (1, T, D)
        for t in range(frames):
            (grad,) = torch.autograd.grad(tokens[0, t].sum(), x, retain_graph=True)
            norms = grad[0].flatten(1).norm(dim=1)  # one per input step
            totals[torch.arange(frames) - t + frames - 1] += norms / norms.sum().clamp_min(1e-12)
    shares = totals / totals.sum()
    return {k: round(float(shares[k + frames - 1]), 4) for k in range(-(frames - 1), frames)}


def measure(net: TwoStreamNet, label: str, size: int, clips: int) -> list[dict]:
    net.eval()
    out = []
    for name, stream, channels in (("static", net.static, 3), ("dynamic", net.dynamic, net.flow_channels)):
        if stream is None:
            continue
        shares = offset_shares(stream, (net.frames, channels, size, size), clips)
        within = {r: round(sum(v for k, v in shares.items() if abs(k) <= r), 4) for r in (0, 1, 2)}
        out.append({"model": label, "stream": name, "share_within_offset": within, "share_by_offset": shares})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--checkpoint", type=Path, help="also measure this trained model (models/best.pt)")
    p.add_argument("--size", type=int, default=32, help="crop size S (the sample's features use 32)")
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    cfg, frames = load_params(args.params).model, 8
    results = []
    for kernel in (3, 1):
        torch.manual_seed(0)
        net = build_model(dataclasses.replace(cfg, dynamic_temporal_kernel=kernel), frames, 2)
        results += measure(net, f"random init, dynamic_temporal_kernel={kernel}", args.size, args.clips)
    if args.checkpoint:
        net = model_from_checkpoint(load_checkpoint(args.checkpoint))
        results += measure(net, f"trained {args.checkpoint}", args.size, args.clips)
    for r in results:
        print(json.dumps(r))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
