"""``bigfive model-summary``: parameters and forward FLOPs per clip for each part of the configured model."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bigfive.config import ConfigError, load_params, replace
from bigfive.models.network import TwoStreamNet, build_model, count_parameters

# (row label, submodule path inside TwoStreamNet); missing submodules (single-stream variants) are skipped
PARTS = (("static backbone", "static.backbone"), ("static projection", "static.proj"),
         ("dynamic backbone", "dynamic.backbone"), ("dynamic projection", "dynamic.proj"),
         ("fusion", "fusion"), ("head", "head"), ("dynamic head (late)", "head_dynamic"))


@dataclass(frozen=True)
class PartSummary:
    part: str
    params: int
    trainable: int
    flops: int  # forward FLOPs for one clip (a multiply-add counts as 2)


def summarize(net: TwoStreamNet, crop_size: int) -> list[PartSummary]:
    """One row per part, then a ``total`` row; FLOPs are counted for a single clip (B=1) in eval mode."""
    was_training = net.training
    net.eval()
    static = torch.zeros(1, net.frames, 3, crop_size, crop_size, dtype=torch.uint8)
    dynamic = torch.zeros(1, net.frames, net.flow_channels, crop_size, crop_size, dtype=torch.uint8)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(static, dynamic)
    net.train(was_training)
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(net).__name__
    rows = []
    for label, path in PARTS:
        try:
            module: nn.Module = net.get_submodule(path)
        except AttributeError:
            continue
        if module is None:
            continue
        rows.append(PartSummary(label, count_parameters(module), count_parameters(module, trainable_only=True),
                                counts.get(f"{root}.{path}", 0)))
    rows.append(PartSummary("total", count_parameters(net), count_parameters(net, trainable_only=True),
                            counts.get("Global", 0)))
    return rows


def format_table(rows: list[PartSummary], title: str) -> str:
    lines = [title, f"{'part':<22}{'params':>12}{'trainable':>12}{'MFLOPs/clip':>14}"]
    for r in rows:
        if r.part == "total":
            lines.append("-" * 60)
        lines.append(f"{r.part:<22}{r.params:>12,}{r.trainable:>12,}{r.flops / 1e6:>14,.1f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=None, help="T (default: preprocess.frames)")
    parser.add_argument("--crop-size", type=int, default=None, help="S (default: preprocess.crop_size)")
    parser.add_argument("--flow-channels", type=int, default=None,
                        help="C (default: 2 x preprocess.flow.stack)")
    parser.add_argument("--variant", default=None,
                        help="an ablation.variants name: show that variant instead of the model section "
                             "(e.g. framewise, to compare its size with the default model)")


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    if args.variant is not None:
        variants = params.ablation.variants
        if args.variant not in variants:
            raise ConfigError("--variant", f"{args.variant!r} is not in ablation.variants ({', '.join(variants)})")
        params = replace(params, variants[args.variant])
    frames = args.frames or params.preprocess.frames
    crop = args.crop_size or params.preprocess.crop_size
    channels = args.flow_channels or 2 * params.preprocess.flow.stack
    net = build_model(params.model, frames, channels)
    m = params.model
    per_step = {"cross_attention": f" ({m.direction}, {m.layers} layer(s), {m.heads} heads)",
                "framewise": f" ({m.direction}, {m.layers} layer(s), fixed same-time weights)",
                "framewise_shifted": f" ({m.direction}, {m.layers} layer(s), fixed weights shifted T/2)"}
    variant = m.fusion + per_step.get(m.fusion, "")
    title = (f"model: static={m.static_backbone} dynamic={m.dynamic_backbone} fusion={variant}; "
             f"T={frames} S={crop} C={channels}")
    print(format_table(summarize(net, crop), title))
    return 0
