"""``bigfive export --format onnx``: the trained network as an ONNX graph.

Inputs ``static`` uint8 (B, T, 3, S, S) and ``dynamic`` uint8 (B, T, C, S, S), output ``traits``
float32 (B, outputs) in [0, 1]; the batch axis is dynamic, T, C and S are fixed by the model.
The network normalises uint8 inside, so the ONNX model takes exactly what ``bigfive predict``
feeds PyTorch. The exporter first tries ``torch.onnx.export(dynamo=True)`` with
``dynamic_shapes`` and falls back to the TorchScript exporter (``dynamo=False``, ``dynamic_axes``);
the exporter used is reported. Every export is checked with onnxruntime against PyTorch on a
batch of random clips before it is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bigfive.utils.io import atomic_path

log = logging.getLogger("bigfive.inference")

OPSET = 18
PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportResult:
    path: Path
    exporter: str  # "dynamo" | "torchscript"
    max_abs_diff: float  # onnxruntime vs PyTorch on the check batch
    frames: int
    flow_channels: int
    crop_size: int
    fallback_reason: str = ""


def example_inputs(frames: int, channels: int, size: int, batch: int = 2, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (batch, frames, 3, size, size), dtype=torch.uint8, generator=g),
            torch.randint(0, 256, (batch, frames, channels, size, size), dtype=torch.uint8, generator=g))


def _traits_module(net):
    import torch

    class Traits(torch.nn.Module):
        """Only the traits (no attention maps): the serving signature."""

        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.net = inner

        def forward(self, static: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
            return self.net(static, dynamic)

    return Traits(net).eval()


def _export_dynamo(module, args, path: Path) -> None:
    import warnings

    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        # both inputs share the one "batch" Dim on purpose; the exporter notes it once per input
        warnings.filterwarnings("ignore", message=".*shares the same shape constraints.*")
        program = torch.onnx.export(module, args, dynamo=True, input_names=["static", "dynamic"],
                                    output_names=["traits"], opset_version=OPSET, external_data=False, verbose=False,
                                    dynamic_shapes={"static": {0: batch}, "dynamic": {0: batch}})
        program.save(str(path))


def _export_torchscript(module, args, path: Path) -> None:
    import torch

    torch.onnx.export(module, args, str(path), dynamo=False, input_names=["static", "dynamic"],
                      output_names=["traits"], opset_version=OPSET,
                      dynamic_axes={"static": {0: "batch"}, "dynamic": {0: "batch"}, "traits": {0: "batch"}})


def onnx_parity(path: str | Path, module, static, dynamic) -> float:
    """Max |onnxruntime - PyTorch| over a batch; the PyTorch side is the project's one inference path
    (:func:`bigfive.models.infer.infer` on the CPU, where the ONNX model runs)."""
    import onnxruntime as ort
    import torch

    from bigfive.models.infer import infer

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["traits"], {"static": static.numpy(), "dynamic": dynamic.numpy()})[0]
    want = infer(module, static, dynamic, torch.device("cpu"))[0].numpy()
    if got.shape != want.shape:
        raise RuntimeError(f"ONNX output shape {got.shape} != PyTorch {want.shape}")
    return float(np.max(np.abs(got - want)))


def export_onnx(ckpt: dict[str, Any], output: str | Path, *, exporter: str = "auto") -> ExportResult:
    """Write the checkpoint's network as ONNX to ``output`` (atomically), checked against PyTorch."""
    import torch

    from bigfive.models import model_from_checkpoint

    net = model_from_checkpoint(ckpt).eval()
    module = _traits_module(net)
    frames, channels = int(ckpt["frames"]), int(ckpt["flow_channels"])
    size = int((ckpt.get("preprocess") or {}).get("crop_size") or 0)
    if size <= 0:
        raise ValueError("the checkpoint's preprocess record has no crop_size; cannot fix the input size S")
    args = example_inputs(frames, channels, size, batch=2)
    check = example_inputs(frames, channels, size, batch=3, seed=1)  # another batch size: the axis is dynamic
    output = Path(output)
    attempts = {"auto": ("dynamo", "torchscript"), "dynamo": ("dynamo",), "torchscript": ("torchscript",)}[exporter]
    reason = ""
    for name in attempts:
        try:
            with atomic_path(output) as tmp, torch.no_grad():
                (_export_dynamo if name == "dynamo" else _export_torchscript)(module, args, tmp)
                diff = onnx_parity(tmp, module, *check)
                if not diff <= PARITY_TOLERANCE:
                    raise RuntimeError(f"onnxruntime differs from PyTorch by {diff:.2e} > {PARITY_TOLERANCE}")
            return ExportResult(output, name, diff, frames, channels, size, reason)
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            if name == attempts[-1]:
                raise RuntimeError(f"ONNX export failed ({name}): {first}" +
                                   (f"; earlier: {reason}" if reason else "")) from err
            reason = f"{name} exporter failed: {first}"
            log.warning("%s; falling back to the TorchScript exporter", reason)
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default: %(default)s)")
    parser.add_argument("--model", default=None, help="checkpoint path or MLflow model URI (default: "
                        "models:/<tracking.registered_model>@<tracking.champion_alias>)")
    parser.add_argument("--output", "-o", default="models/bigfive.onnx", help="output file (default: %(default)s)")
    parser.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"],
                        help="auto: dynamo, falling back to TorchScript (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from bigfive.inference.loader import default_model_uri, resolve_checkpoint
    from bigfive.inference.predict import params_or_defaults
    from bigfive.models import load_checkpoint
    from bigfive.training.tracking import resolve_tracking_uri

    params = params_or_defaults(args.params)
    model = args.model or default_model_uri(params)
    with tempfile.TemporaryDirectory(prefix="bigfive-model-") as tmp:
        ckpt = load_checkpoint(resolve_checkpoint(model, tracking=resolve_tracking_uri(params.tracking), cache_dir=tmp))
    res = export_onnx(ckpt, args.output, exporter=args.exporter)
    print(f"exported {model} -> {res.path} (ONNX opset {OPSET}, {res.exporter} exporter; inputs static uint8 "
          f"(B,{res.frames},3,{res.crop_size},{res.crop_size}), dynamic uint8 "
          f"(B,{res.frames},{res.flow_channels},{res.crop_size},{res.crop_size}); output traits (B,"
          f"{int(ckpt['model_config'].get('outputs', 5))}); onnxruntime vs PyTorch max |diff| {res.max_abs_diff:.2e})")
    if res.fallback_reason:
        print(f"note: {res.fallback_reason}", file=sys.stderr)
    return 0
