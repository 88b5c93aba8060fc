"""The two-stream network: variants, fusions, attention, weights files, freezing, ONNX, checkpoints."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest
import torch

from bigfive.config import ConfigError, ModelConfig
from bigfive.config.model import Fusion
from bigfive.models import build_model, load_checkpoint, model_from_checkpoint, save_checkpoint
from bigfive.models.checkpoint import CheckpointError
from bigfive.models.fusion import FUSIONS, PER_STEP, build_fusion
from bigfive.models.static import STAGES

B, T, S, C = 2, 4, 32, 2
VARIANTS = [("cross_attention", "static_to_dynamic"), ("cross_attention", "dynamic_to_static"),
            ("cross_attention", "bidirectional"), ("concat", "bidirectional"), ("sum", "bidirectional"),
            ("gated", "bidirectional"), ("late", "bidirectional"), ("static_only", "bidirectional"),
            ("dynamic_only", "bidirectional"), ("framewise", "static_to_dynamic"), ("framewise", "bidirectional"),
            ("framewise_shifted", "static_to_dynamic")]
FUSED = [v for v in VARIANTS if v[0] not in ("static_only", "dynamic_only")]


def tiny(**kw) -> ModelConfig:
    base = dict(static_width=8, dynamic_width=8, embed_dim=16, heads=2, head_hidden=16, dropout=0.0)
    return ModelConfig(**{**base, **kw})


def batch(seed: int = 0, b: int = B, t: int = T, c: int = C):
    g = torch.Generator().manual_seed(seed)
    static = torch.randint(0, 256, (b, t, 3, S, S), dtype=torch.uint8, generator=g)
    dynamic = torch.randint(0, 256, (b, t, c, S, S), dtype=torch.uint8, generator=g)
    return static, dynamic


def make(cfg: ModelConfig, seed: int = 0, t: int = T, c: int = C):
    torch.manual_seed(seed)
    return build_model(cfg, t, c)


@pytest.mark.parametrize("fusion,direction", VARIANTS)
def test_every_variant_outputs_traits_in_unit_interval(fusion, direction):
    net = make(tiny(fusion=fusion, direction=direction)).eval()
    static, dynamic = batch()
    traits, attention = net(static, dynamic, return_attention=True)
    assert traits.shape == (B, 5)
    assert torch.all((traits >= 0) & (traits <= 1))
    # uint8 and float on the same 0..255 scale are the same input
    torch.testing.assert_close(net(static.float(), dynamic.float()), traits)
    if fusion in ("cross_attention", "framewise", "framewise_shifted"):
        names = {"bidirectional": {"static_to_dynamic", "dynamic_to_static"}}.get(direction, {direction})
        assert set(attention) == names
        heads = 2 if fusion == "cross_attention" else 1  # the framewise controls have one fixed map
        assert all(len(v) == 1 and v[0].shape == (B, heads, T, T) for v in attention.values())
    else:
        assert attention == {}


def test_six_outputs_with_interview():
    assert make(tiny(outputs=6))(*batch()).shape == (B, 6)


@pytest.mark.parametrize("fusion,direction", FUSED)
def test_gradients_reach_both_streams(fusion, direction):
    net = make(tiny(fusion=fusion, direction=direction))
    net(*batch()).sum().backward()
    for stream in (net.static.backbone, net.dynamic.backbone):
        norm = sum(p.grad.norm() ** 2 for p in stream.parameters() if p.grad is not None) ** 0.5
        assert norm > 0


def test_single_stream_variants_build_only_their_stream():
    assert make(tiny(fusion="static_only")).dynamic is None
    assert make(tiny(fusion="dynamic_only")).static is None


def test_attention_rows_sum_to_one_in_every_layer_and_direction():
    net = make(tiny(layers=2, direction="bidirectional")).eval()  # both directions: their maps are checked
    _, attention = net(*batch(), return_attention=True)
    assert set(attention) == {"static_to_dynamic", "dynamic_to_static"}
    for layers in attention.values():
        assert len(layers) == 2 and not torch.equal(layers[0], layers[1])
        for a in layers:
            assert a.dtype == torch.float32 and torch.all(a > 0)
            torch.testing.assert_close(a.sum(-1), torch.ones(B, 2, T))


@pytest.mark.parametrize("fusion", ["cross_attention", "framewise", "concat", "late", "static_only", "dynamic_only"])
def test_every_frame_of_each_used_stream_reaches_the_prediction(fusion):
    # a fusion that drops, truncates or ignores a time step or a stream shows here; an unused stream must not matter
    net = make(tiny(fusion=fusion)).eval()
    static, dynamic = batch()
    with torch.no_grad():
        before = net(static, dynamic)
        for name, x in (("static", static), ("dynamic", dynamic)):
            for t in range(T):
                changed = x.clone()
                changed[:, t] = 255 - changed[:, t]
                after = net(changed, dynamic) if name == "static" else net(static, changed)
                used = fusion != {"static": "dynamic_only", "dynamic": "static_only"}[name]
                assert torch.equal(after, before) != used, (name, t)


def test_fusion_registry_covers_every_configured_name():
    assert set(FUSIONS) == set(typing.get_args(Fusion))
    assert set(PER_STEP) == {"cross_attention", "framewise", "framewise_shifted", "framewise_conv", "relative_time"}
    with pytest.raises(ConfigError, match="unknown fusion 'nope'") as err:
        build_fusion(dataclasses.replace(tiny(), fusion="nope"), T)
    assert err.value.key == "model.fusion"


@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_every_fusion_returns_one_pooled_vector_per_head_and_an_attention_dict(fusion):
    cfg = tiny(fusion=fusion)
    module = build_fusion(cfg, T)
    g = torch.Generator().manual_seed(0)
    s, d = torch.randn(B, T, 16, generator=g), torch.randn(B, T, 16, generator=g)
    pooled, attention = module(None if fusion == "dynamic_only" else s, None if fusion == "static_only" else d)
    assert isinstance(pooled, tuple) and len(pooled) == len(module.out_dims) == (2 if fusion == "late" else 1)
    assert [p.shape for p in pooled] == [(B, n) for n in module.out_dims]
    assert isinstance(attention, dict) and bool(attention) == (fusion in PER_STEP)


HEAD_KEYS = ["head.0.weight", "head.0.bias", "head.3.weight", "head.3.bias"]
BLOCK_KEYS = ["norm_q.weight", "norm_q.bias", "norm_kv.weight", "norm_kv.bias", "norm_ff.weight", "norm_ff.bias"]
FF_KEYS = {"gelu": ["ff.0.weight", "ff.0.bias", "ff.3.weight", "ff.3.bias"],
           "geglu": ["ff.up.weight", "ff.up.bias", "ff.down.weight", "ff.down.bias"]}
MIX_KEYS = {"cross_attention": ["attn.q.weight", "attn.q.bias", "attn.kv.weight", "attn.kv.bias", "attn.out.weight",
                                "attn.out.bias", "attn.time_bias.table"],
            "framewise": ["attn.v.weight", "attn.v.bias", "attn.out.weight", "attn.out.bias"]}


@pytest.mark.parametrize("ff", ["gelu", "geglu"])
@pytest.mark.parametrize("fusion,direction", VARIANTS)
def test_fusion_and_head_keys_are_those_of_existing_checkpoints(fusion, direction, ff):
    # models/best.pt, the registered models and the ablation runs load only while these names stay
    keys = {k for k in make(tiny(fusion=fusion, direction=direction, ff=ff)).state_dict()
            if not k.startswith(("static.", "dynamic."))}
    expected = set(HEAD_KEYS)
    if fusion == "late":
        expected |= {"head_dynamic" + k.removeprefix("head") for k in HEAD_KEYS}
    if fusion == "gated":
        expected |= {"fusion.gate.weight", "fusion.gate.bias"}
    if fusion in PER_STEP:
        names = ["static_to_dynamic", "dynamic_to_static"] if direction == "bidirectional" else [direction]
        mix = MIX_KEYS[fusion.removesuffix("_shifted")]
        expected |= {"fusion.pos_static", "fusion.pos_dynamic", "fusion.norm.weight", "fusion.norm.bias"}
        expected |= {f"fusion.blocks.{name}.0.{k}" for name in names for k in BLOCK_KEYS + FF_KEYS[ff] + mix}
    assert keys == expected


def test_attention_logits_are_float32_under_bf16_autocast():
    # q @ kT from the bf16 projections, multiplied in float32: bf16 logits would be off by up to 1/32 near 6
    from bigfive.models.attention import CrossAttention

    torch.manual_seed(0)
    attn = CrossAttention(16, 2, T, 0.0, True, 6.0).eval()
    query, context = 3 * torch.randn(B, T, 16), 3 * torch.randn(B, T, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, weights = attn(query, context)
        q, k = attn.q(query), attn.kv(context)[..., :16]
    assert q.dtype == torch.bfloat16 and weights.dtype == torch.float32

    def heads(x):
        return x.float().view(B, T, 2, 8).transpose(1, 2)

    logits = heads(q) @ heads(k).transpose(-2, -1) * 8 ** -0.5 + attn.time_bias().detach()
    torch.testing.assert_close(weights, logits.softmax(-1), rtol=0, atol=1e-6)


def test_time_bias_initialisation():
    net = make(tiny(time_bias_init=6.0))
    table = net.fusion.blocks["static_to_dynamic"][0].attn.time_bias.table
    assert table.shape == (2, 2 * T - 1)
    assert torch.all(table[:, T - 1] == 6.0) and table.abs().sum() == 12.0
    _, attention = net.eval()(*batch(), return_attention=True)
    a = attention["static_to_dynamic"][0]
    assert torch.all(a.diagonal(dim1=-2, dim2=-1).mean(-1) > 0.5)  # same-time keys dominate at init
    assert make(tiny(time_bias=False)).fusion.blocks["static_to_dynamic"][0].attn.time_bias is None


@pytest.mark.parametrize("fusion,direction", VARIANTS)
def test_each_variant_fits_a_fixed_batch(fusion, direction):
    net = make(tiny(fusion=fusion, direction=direction))
    static, dynamic = batch()
    target = torch.rand(B, 5, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.mse_loss(net(static, dynamic), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_same_seed_same_output_different_seed_differs():
    static, dynamic = batch()
    a = make(tiny(), seed=3).eval()(static, dynamic)
    b = make(tiny(), seed=3).eval()(static, dynamic)
    c = make(tiny(), seed=4).eval()(static, dynamic)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("cfg,frames,channels,key", [
    (dict(static_weights="w.pt"), T, C, "model.static_weights"),
    (dict(freeze_until="layer9"), T, C, "model.freeze_until"),
    (dict(fusion="dynamic_only", freeze_until="block1"), T, C, "model.freeze_until"),
    (dict(heads=3), T, C, "model.heads"),
    (dict(), T, 3, "preprocess.flow.stack"),
    (dict(), 0, C, "preprocess.frames"),
])
def test_bad_configs_name_the_key(cfg, frames, channels, key):
    with pytest.raises(ConfigError) as err:
        build_model(tiny(**cfg), frames, channels)
    assert err.value.key == key


def test_freeze_until_lists_valid_stages():
    with pytest.raises(ConfigError, match="block1, block2"):
        build_model(tiny(freeze_until="layer2"), T, C)


@pytest.mark.parametrize("backbone,until", [("compact", "block2"), ("resnet18", "layer2")])
def test_freeze_until_freezes_exactly_the_named_stages(backbone, until):
    net = make(tiny(static_backbone=backbone, freeze_until=until))
    stages = list(STAGES[backbone])
    frozen = stages[: stages.index(until) + 1]
    for stage, paths in STAGES[backbone].items():
        for path in paths:
            params = list(net.static.backbone.get_submodule(path).parameters())
            assert params and all(p.requires_grad == (stage not in frozen) for p in params), stage
    assert all(p.requires_grad for p in net.static.proj.parameters())
    assert all(p.requires_grad for p in net.dynamic.parameters())
    net.train()  # frozen BatchNorm keeps its running statistics
    bns = [m for m in net.static.backbone.get_submodule(STAGES[backbone][until][0]).modules()
           if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    before = [p.clone() for p in net.static.backbone.parameters() if not p.requires_grad]
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net(*batch()).sum().backward()
    opt.step()
    after = [p for p in net.static.backbone.parameters() if not p.requires_grad]
    assert all(torch.equal(x, y) for x, y in zip(before, after))


def test_resnet18_weights_file_loads_and_mismatches_are_named(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(5)
    state = resnet18(weights=None).state_dict()  # includes fc.*, which the stream drops
    good = tmp_path / "resnet18.pt"
    torch.save(state, good)
    net = build_model(tiny(static_backbone="resnet18", static_weights=str(good)), T, C)
    torch.testing.assert_close(net.static.backbone.net.conv1.weight, state["conv1.weight"])

    missing = tmp_path / "nope.pt"
    with pytest.raises(ConfigError, match="nope.pt: weights file not found") as err:
        build_model(tiny(static_backbone="resnet18", static_weights=str(missing)), T, C)
    assert err.value.key == "model.static_weights"

    bad = dict(state)
    bad["layer9.weight"] = bad.pop("layer1.0.conv1.weight")
    bad["conv1.weight"] = torch.zeros(64, 2, 7, 7)
    wrong = tmp_path / "wrong.pt"
    torch.save(bad, wrong)
    with pytest.raises(ConfigError) as err:
        build_model(tiny(static_backbone="resnet18", static_weights=str(wrong)), T, C)
    message = str(err.value)
    assert "wrong.pt" in message and "layer1.0.conv1.weight" in message and "layer9.weight" in message
    assert "conv1.weight (64, 2, 7, 7) vs (64, 3, 7, 7)" in message

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="garbage.pt: not a readable"):
        build_model(tiny(static_backbone="resnet18", static_weights=str(garbage)), T, C)


def test_inception_resnet_v1_with_vggface2_style_weights(tmp_path):
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(6)
    state = InceptionResnetV1(pretrained=None, classify=True, num_classes=7).state_dict()  # logits.* dropped
    path = tmp_path / "vggface2.pt"
    torch.save(state, path)
    net = build_model(tiny(static_backbone="inception_resnet_v1", static_weights=str(path),
                           freeze_until="repeat_1", fusion="static_only"), 2, C)
    torch.testing.assert_close(net.static.backbone.net.last_linear.weight, state["last_linear.weight"])
    static, dynamic = batch(b=1, t=2)
    assert net.eval()(static, dynamic).shape == (1, 5)  # 32 px crops are upsampled to the network's minimum


def test_r2plus1d_keeps_one_token_per_step():
    net = make(tiny(dynamic_backbone="r2plus1d_18", fusion="dynamic_only"), c=4).eval()
    static, dynamic = batch(b=1, c=4)
    assert net.dynamic(dynamic).shape == (1, T, 16)
    assert net(static, dynamic).shape == (1, 5)


def test_torch_compile_matches_eager():
    net = make(tiny()).eval()
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    static, dynamic = batch()
    traits, attention = compiled(static, dynamic, return_attention=True)
    expected, expected_attention = net(static, dynamic, return_attention=True)
    torch.testing.assert_close(traits, expected)
    torch.testing.assert_close(attention, expected_attention)


@pytest.mark.parametrize("kw", [{}, {"fusion": "framewise_conv", "dynamic_temporal_kernel": 1},
                                {"fusion": "relative_time", "value_rel_pos": True},
                                {"value_rel_pos": True, "time_bias_flat_heads": 2}])
def test_onnx_export_with_dynamic_batch_matches_pytorch(tmp_path, kw):
    ort = pytest.importorskip("onnxruntime")
    net = make(ModelConfig(**kw)).eval()
    static, dynamic = batch()
    path = tmp_path / "model.onnx"
    names = ["static", "dynamic"]
    # the legacy exporter takes ~2 s here; dynamo=True also works (see docs/model.md) but takes ~30 s
    torch.onnx.export(net, (static, dynamic), str(path), dynamo=False, input_names=names,
                      output_names=["traits"], dynamic_axes={n: {0: "batch"} for n in [*names, "traits"]})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == names
    for b in (1, 3):
        static, dynamic = batch(seed=b, b=b)
        out = session.run(None, {"static": static.numpy(), "dynamic": dynamic.numpy()})
        assert len(out) == 1 and out[0].shape == (b, 5)
        with torch.no_grad():
            np.testing.assert_allclose(out[0], net(static, dynamic).numpy(), atol=1e-4)


def test_checkpoint_round_trip(tmp_path):
    net = make(tiny(fusion="gated"))
    compiled = torch.compile(net, backend="eager")  # keys of a compiled model carry no _orig_mod. prefix
    path = tmp_path / "best.pt"
    save_checkpoint(path, compiled, epoch=3, labels=["openness"])
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 3 and ckpt["model_config"]["fusion"] == "gated"
    assert not any(k.startswith("_orig_mod.") for k in ckpt["model"])
    restored = model_from_checkpoint(ckpt).eval()
    assert restored.config == net.config and restored.frames == T and restored.flow_channels == C
    static, dynamic = batch()
    torch.testing.assert_close(restored(static, dynamic), net.eval()(static, dynamic))


def test_checkpoint_with_wrong_shapes_is_a_clear_error(tmp_path):
    net = make(tiny())
    save_checkpoint(tmp_path / "best.pt", net)
    ckpt = load_checkpoint(tmp_path / "best.pt")
    ckpt["model_config"]["embed_dim"] = 32  # weights were trained for 64-dim tokens
    ckpt["model_config"]["head_hidden"] = 32
    with pytest.raises(CheckpointError, match="does not fit its model_config: size mismatch"):
        model_from_checkpoint(ckpt)


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    with pytest.raises(CheckpointError, match="other.pt: not a bigfive checkpoint .missing model_config"):
        load_checkpoint(other)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, evil)
    with pytest.raises(CheckpointError, match="evil.pt"):  # the weights-only unpickler refuses it
        load_checkpoint(evil)


def test_model_summary_cli(tmp_path, capsys):
    from bigfive.cli import main

    params = tmp_path / "params.yaml"
    params.write_text("preprocess:\n  frames: 4\n  crop_size: 32\nmodel:\n  fusion: concat\n")
    assert main(["model-summary", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert "T=4 S=32 C=2" in out and "fusion=concat" in out
    rows = {line.split()[0] + line.split()[1]: line.split() for line in out.splitlines()[2:] if "---" not in line}
    net = build_model(dataclasses.replace(ModelConfig(), fusion="concat"), 4, 2)
    total = next(v for k, v in rows.items() if k.startswith("total"))
    assert int(total[1].replace(",", "")) == sum(p.numel() for p in net.parameters())
    assert float(total[3].replace(",", "")) > 0
    parts = [v for k, v in rows.items() if not k.startswith("total")]
    assert {" ".join(v[:-3]) for v in parts} == {"static backbone", "static projection", "dynamic backbone",
                                                  "dynamic projection", "fusion", "head"}
    assert sum(int(v[-3].replace(",", "")) for v in parts) == int(total[1].replace(",", ""))


@pytest.mark.parametrize("ff", ["gelu", "geglu"])
def test_framewise_controls_match_the_cross_attention_model_in_size(ff):
    from bigfive.models import count_parameters

    ref = count_parameters(make(ModelConfig(fusion="cross_attention", direction="static_to_dynamic", ff=ff)))
    for fusion in ("framewise", "framewise_shifted"):
        n = count_parameters(make(ModelConfig(fusion=fusion, direction="static_to_dynamic", ff=ff)))
        assert 0.9 * ref <= n < ref, (fusion, n, ref)  # no query/key projections: slightly smaller, within 10 %


def test_same_time_mix_pairs_step_t_with_t_or_t_plus_half():
    from bigfive.models.attention import SameTimeMix

    t, d = 6, 4
    context = torch.arange(t, dtype=torch.float32).view(1, t, 1).expand(1, t, d)
    for shift, expected in ((0, [0, 1, 2, 3, 4, 5]), (t // 2, [3, 4, 5, 0, 1, 2])):
        mix = SameTimeMix(d, t, shift)
        with torch.no_grad():  # value and output projections as identities: the output shows which step was taken
            for lin in (mix.v, mix.out):
                lin.weight.copy_(torch.eye(d))
                lin.bias.zero_()
        y, weights = mix(torch.zeros(1, t, d), context)
        assert y[0, :, 0].tolist() == expected
        assert weights.shape == (1, 1, t, t) and torch.equal(weights[0, 0].argmax(-1), torch.tensor(expected))


def test_geglu_feed_forward_keeps_the_size_and_multiplies():
    from bigfive.models.attention import FeedForward, GatedFeedForward

    plain, gated = FeedForward(64, 4, 0.0), GatedFeedForward(64, 4, 0.0)
    n = [sum(p.numel() for p in m.parameters()) for m in (plain, gated)]
    assert abs(n[1] - n[0]) / n[0] < 0.01
    x = torch.randn(3, 64)
    # a product of two projections: scaling the input by 2 scales the pre-down-projection output by ~4 for large x
    y1 = gated.down.weight.pinverse() @ (gated(100 * x) - gated.down.bias).T
    y2 = gated.down.weight.pinverse() @ (gated(200 * x) - gated.down.bias).T
    assert torch.allclose(y2.abs().sum(), 4 * y1.abs().sum(), rtol=0.05)


def test_r2plus1d_gives_a_distinct_token_per_sampled_step():
    from bigfive.models.dynamic import DynamicStream

    torch.manual_seed(0)
    stream = DynamicStream("r2plus1d_18", C, 8, 8, 16).eval()
    g = torch.Generator().manual_seed(1)
    flow = torch.randint(0, 256, (1, 8, C, S, S), dtype=torch.uint8, generator=g)  # different at every step
    with torch.no_grad():
        tokens = stream(flow)
    assert tokens.shape == (1, 8, 16)
    # torchvision's temporal strides left one token at T = 8, interpolated into eight equal ones
    steps = (tokens[0, 1:] - tokens[0, :-1]).abs().amax(dim=-1)
    assert bool((steps > 1e-3).all()), steps


def test_weights_file_is_checked_by_sha256_before_loading(tmp_path):
    import hashlib

    from torchvision.models import resnet18

    torch.manual_seed(7)
    state = resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pt"
    torch.save(state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    net = build_model(tiny(static_backbone="resnet18", static_weights=str(path), static_weights_sha256=digest.upper()),
                      T, C)
    torch.testing.assert_close(net.static.backbone.net.conv1.weight, state["conv1.weight"])

    wrong = "0" * 64
    with pytest.raises(ConfigError, match=f"resnet18.pt: SHA-256 is {digest}, expected {wrong}") as err:
        build_model(tiny(static_backbone="resnet18", static_weights=str(path), static_weights_sha256=wrong), T, C)
    assert err.value.key == "model.static_weights_sha256"

    with pytest.raises(ConfigError, match="64 hex digits") as err:
        tiny(static_backbone="resnet18", static_weights=str(path), static_weights_sha256="abc").validate("model")
    assert err.value.key == "model.static_weights_sha256"


# --- issue 23: time-local flow tokens, content-free cross-time controls, attention options ---

def test_new_controls_add_only_their_own_keys():
    def fusion_keys(**kw):
        return {k for k in make(tiny(direction="static_to_dynamic", **kw)).state_dict() if k.startswith("fusion.")}

    framewise, attention = fusion_keys(fusion="framewise"), fusion_keys(fusion="cross_attention")
    block = "fusion.blocks.static_to_dynamic.0."
    assert fusion_keys(fusion="framewise_conv") - framewise == {
        block + k for k in ("temporal.norm.weight", "temporal.norm.bias", "temporal.conv.weight", "temporal.conv.bias")}
    assert fusion_keys(fusion="relative_time") == framewise | {block + "attn.time_bias.table"}
    assert fusion_keys(fusion="cross_attention", value_rel_pos=True) == attention | {block + "attn.rel_values.table"}
    assert fusion_keys(fusion="cross_attention", time_bias_flat_heads=1) == attention


def test_flat_heads_start_without_the_same_time_prior():
    table = make(tiny(heads=4, time_bias_flat_heads=3)).fusion.blocks["static_to_dynamic"][0].attn.time_bias.table
    assert table[0, T - 1] == 6.0 and table[1:].abs().sum() == 0 and table[0].abs().sum() == 6.0


def test_relative_values_add_the_embedding_of_the_attended_offset():
    # one head forced to attend to offset +2: query i reads value i+2 plus table[+2], never another offset's entry
    from bigfive.models.attention import RelativeTimeMix

    torch.manual_seed(0)
    mix = RelativeTimeMix(8, 1, T, 0.0, 0.0, value_rel_pos=True).eval()
    with torch.no_grad():
        mix.time_bias.table.fill_(-1e4)
        mix.time_bias.table[0, T - 1 + 2] = 0.0
    context = torch.randn(B, T, 8)
    y, weights = mix(torch.zeros(B, T, 8), context)
    table = mix.rel_values.table[0]
    expected = mix.out(mix.v(context[:, 2:]) + table[T - 1 + 2])
    torch.testing.assert_close(y[:, :T - 2], expected)
    assert weights.shape == (B, 1, T, T) and torch.all(weights[0, 0, :T - 2].argmax(-1) == torch.arange(2, T))


def test_framewise_conv_reaches_other_steps_and_framewise_does_not():
    g = torch.Generator().manual_seed(0)
    s, d = torch.randn(1, T, 16, generator=g), torch.randn(1, T, 16, generator=g)
    for fusion, kernel, reaches in (("framewise", 7, False), ("framewise_conv", 3, True)):
        torch.manual_seed(0)
        module = build_fusion(tiny(fusion=fusion, direction="static_to_dynamic", conv_kernel=kernel), T).eval()
        d_changed = d.clone()
        d_changed[:, 0] = -d_changed[:, 0]  # step 0 of the context; step 1 of the output is read
        blocks = module.blocks["static_to_dynamic"][0]
        with torch.no_grad():
            before, after = blocks(s, d)[0], blocks(s, d_changed)[0]
        assert (not torch.allclose(before[:, 1], after[:, 1])) == reaches, fusion


@pytest.mark.parametrize("kernel,reach", [(3, 2), (1, 0)])
def test_dynamic_temporal_kernel_sets_how_far_a_flow_token_sees(kernel, reach):
    from bigfive.models.dynamic import DynamicStream

    torch.manual_seed(0)
    stream = DynamicStream("c3d", C, 8, 8, 16, kernel).eval()
    x = torch.randint(0, 256, (1, 8, C, S, S), generator=torch.Generator().manual_seed(0))
    changed = x.clone()
    changed[:, 4] = 255 - changed[:, 4]
    with torch.no_grad():
        moved = (stream(x) - stream(changed)).abs().amax(dim=-1)[0] > 1e-6
    assert moved.tolist() == [abs(t - 4) <= reach for t in range(8)]


@pytest.mark.parametrize("kw,key", [
    ({"dynamic_temporal_kernel": 2}, "model.dynamic_temporal_kernel"),
    ({"dynamic_temporal_kernel": 1, "dynamic_backbone": "r2plus1d_18"}, "model.dynamic_temporal_kernel"),
    ({"time_bias_flat_heads": 3}, "model.time_bias_flat_heads"),
    ({"conv_kernel": 4}, "model.conv_kernel"),
])
def test_new_options_reject_bad_values_naming_the_key(kw, key):
    with pytest.raises(ConfigError) as err:
        tiny(**kw).validate("model")
    assert err.value.key == key


@pytest.mark.parametrize("fusion", ["framewise", "relative_time", "cross_attention"])
def test_without_absolute_positions_a_pooled_fusion_cannot_tell_where_events_sit(fusion: str):
    """model.positions none: no position parameters, and framewise fusion's pooled vector is invariant to moving
    every step of both streams together (so it cannot read a cross-time order); with absolute positions it is not.
    Attention and the offset profile stay sensitive: they see relative time through their bias."""
    torch.manual_seed(0)
    s, d = torch.randn(2, 8, 16), torch.randn(2, 8, 16)
    perm = torch.tensor([3, 0, 6, 1, 7, 2, 5, 4])

    def moved(positions: str) -> float:
        torch.manual_seed(1)
        cfg = tiny(embed_dim=16, heads=2, direction="static_to_dynamic", fusion=fusion, positions=positions)
        module = build_fusion(cfg, 8).eval()
        assert any("pos_" in k for k in module.state_dict()) == (positions == "absolute")
        with torch.no_grad():
            for w in module.parameters():  # any trained weights: a relative-time profile off the initial diagonal
                w.add_(0.5 * torch.randn_like(w))
            return float((module(s, d)[0][0] - module(s[:, perm], d[:, perm])[0][0]).abs().max())

    assert moved("absolute") > 1e-3
    assert (moved("none") < 1e-5) == (fusion == "framewise")
