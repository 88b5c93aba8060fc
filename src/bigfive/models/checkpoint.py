"""Checkpoints as plain dicts of tensors and primitives, readable with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bigfive.config.base import ConfigError, from_dict, to_dict
from bigfive.config.model import ModelConfig
from bigfive.models.network import TwoStreamNet, build_model
from bigfive.utils.io import atomic_path

REQUIRED_KEYS = ("model", "model_config", "frames", "flow_channels")


class CheckpointError(ValueError):
    """A file that is not a readable bigfive checkpoint; the message names the file."""


def unwrap(net: nn.Module) -> TwoStreamNet:
    """The plain module behind torch.compile's wrapper (its state dict keys carry no ``_orig_mod.``)."""
    return getattr(net, "_orig_mod", net)


def checkpoint_state(net: nn.Module) -> dict[str, Any]:
    """What a checkpoint needs to rebuild ``net``; the trainer adds optimizer state, epoch, preprocess, ..."""
    net = unwrap(net)
    return {"model": net.state_dict(), "model_config": to_dict(net.config), "frames": int(net.frames),
            "flow_channels": int(net.flow_channels)}


def save_checkpoint(path: str | Path, net: nn.Module, **extra: Any) -> None:
    """Atomically write ``checkpoint_state(net)`` plus ``extra`` entries to ``path``."""
    with atomic_path(path) as tmp:
        torch.save({**checkpoint_state(net), **extra}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with the restricted (weights-only) unpickler; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable weights-only torch checkpoint ({first})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a bigfive checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a bigfive checkpoint (missing {', '.join(missing)})")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> TwoStreamNet:
    """Rebuild the network from ``model_config``/``frames``/``flow_channels`` and load ``model``."""
    try:
        cfg = from_dict(ModelConfig, ckpt["model_config"], "model_config")
    except ConfigError as err:
        raise CheckpointError(f"checkpoint model_config is invalid: {err}") from None
    # never load pretrained backbone files here: the checkpoint's state dict already holds those weights
    cfg = _without_weights_file(cfg)
    net = build_model(cfg, int(ckpt["frames"]), int(ckpt["flow_channels"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches: keep the first line, which names the tensor
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err))
        raise CheckpointError(f"checkpoint does not fit its model_config: {first}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"checkpoint state dict does not fit the configured model: missing "
                              f"{result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]}")
    net.config = from_dict(ModelConfig, ckpt["model_config"], "model_config")  # keep the original record
    return net


def _without_weights_file(cfg: ModelConfig) -> ModelConfig:
    import dataclasses

    return dataclasses.replace(cfg, static_weights=None)
