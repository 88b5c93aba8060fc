"""`bigfive export --format onnx`: onnxruntime answers like PyTorch, with a dynamic batch axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from bigfive import TRAITS
from bigfive.cli import main
from bigfive.config import ModelConfig
from bigfive.models import build_model, load_checkpoint, model_from_checkpoint, save_checkpoint
from bigfive.models.infer import infer

FRAMES, SIZE = 4, 32


def make_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    net = build_model(ModelConfig(), FRAMES, 2)
    meta = {"frames": FRAMES, "crop_size": SIZE, "channels": 2,
            "flow": {"method": "dis", "dis_preset": "fast", "bound": 8.0, "stack": 1}, "labels": list(TRAITS)}
    save_checkpoint(path, net, preprocess=meta, labels=list(TRAITS))
    return path


def test_onnx_export_matches_pytorch(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "best.pt")
    out = tmp_path / "export" / "bigfive.onnx"
    rc = main(["export", "--format", "onnx", "--model", str(ckpt), "--output", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    assert "dynamo exporter" in printed or "torchscript exporter" in printed

    graph = onnx.load(str(out)).graph
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    assert set(inputs) == {"static", "dynamic"} and [o.name for o in graph.output] == ["traits"]
    for name, channels in (("static", 3), ("dynamic", 2)):
        t = inputs[name]
        assert t.elem_type == onnx.TensorProto.UINT8
        dims = t.shape.dim
        assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch axis
        assert [d.dim_value for d in dims[1:]] == [FRAMES, channels, SIZE, SIZE]

    net = model_from_checkpoint(load_checkpoint(ckpt)).eval()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(7)
    for batch in (1, 5):  # batch sizes other than the export example's
        static = torch.randint(0, 256, (batch, FRAMES, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
        dynamic = torch.randint(0, 256, (batch, FRAMES, 2, SIZE, SIZE), dtype=torch.uint8, generator=g)
        (got,) = sess.run(["traits"], {"static": static.numpy(), "dynamic": dynamic.numpy()})
        want = infer(net, static, dynamic, torch.device("cpu"))[0].numpy()  # the one inference path
        assert got.shape == (batch, len(TRAITS))
        assert np.abs(got - want).max() < 1e-4


def test_export_names_a_missing_model(tmp_path, capsys):
    rc = main(["export", "--model", str(tmp_path / "none.pt"), "--output", str(tmp_path / "m.onnx")])
    assert rc == 1
    assert "none.pt" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
