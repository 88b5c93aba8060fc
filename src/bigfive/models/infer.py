"""The one inference path: every caller that turns clip arrays into traits goes through ``infer``.

Evaluation, validation in the training loop, the MLflow pyfunc model, the predictor and the ONNX
check all call it, so they share one policy: inputs move to the model's device as given (uint8 or
float on the 0..255 scale; the network normalises inside), the forward pass runs under the device's
autocast (bf16 on CUDA, none on CPU) without autograd, and traits come back as float32. A number
from ``bigfive predict`` and the same clip's row from ``bigfive evaluate`` therefore differ only by
batch composition (tests/test_skew.py requires them equal within 1e-5 on CPU).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from bigfive.models.fusion import Attention
from bigfive.utils.device import autocast


def as_batch(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A (B, T, C, S, S) array or tensor on ``device``, dtype unchanged."""
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
        # a read-only memmap slice is copied: torch would otherwise warn that it cannot own the memory
        x = torch.from_numpy(np.ascontiguousarray(x) if x.flags.writeable else np.array(x))
    return x.to(device, non_blocking=True)


@torch.inference_mode()
def infer(net: nn.Module, static: np.ndarray | torch.Tensor, dynamic: np.ndarray | torch.Tensor,
          device: torch.device, *, return_attention: bool = False) -> tuple[torch.Tensor, Attention]:
    """(B, outputs) float32 traits for one batch, and the attention maps when asked (else ``{}``).

    The caller puts ``net`` in eval mode: the training loop validates a DDP or compiled wrapper whose
    mode it manages itself.
    """
    s, d = as_batch(static, device), as_batch(dynamic, device)
    with autocast(device):
        out = net(s, d, return_attention=True) if return_attention else net(s, d)
    traits, attention = out if return_attention else (out, {})
    return traits.float(), attention or {}


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive row slices of at most ``batch_size`` covering ``range(n)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def predict_arrays(net: nn.Module, static: np.ndarray, dynamic: np.ndarray, device: torch.device,
                   batch_size: int = 32) -> np.ndarray:
    """(N, outputs) float32 traits for (N, T, C, S, S) clip arrays (memory-mapped or not), in batches."""
    net.eval()
    out = [infer(net, static[rows], dynamic[rows], device)[0].cpu().numpy()
           for rows in batches(len(static), batch_size)]
    if not out:
        return np.zeros((0, int(net.config.outputs)), dtype=np.float32)
    return np.concatenate(out)
