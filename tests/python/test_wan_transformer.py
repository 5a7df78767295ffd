"""Parity of derrumbe's native Wan transformer with diffusers' WanTransformer3DModel.

Everything expected is computed at test time by diffusers itself: a model with a tiny config
(the one diffusers' own tests/pipelines/wan/test_wan.py uses, and a larger odd-sized one) is
initialized with torch.manual_seed(0), then every parameter gets extra noise, including the
ones-/zero-initialized norms, so that every weight matters (an unused or swapped parameter
would change the output). It is saved with save_pretrained, loaded by derrumbe from the
directory, and both forwards run on the same random inputs on the CPU in float32.
"""
import json
import os

import pytest
import torch

import derrumbe

diffusers = pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")
from diffusers import WanTransformer3DModel  # noqa: E402
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers  # noqa: E402

TOL = 1e-4

# diffusers' tests/pipelines/wan/test_wan.py transformer
TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
            text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
LARGER = dict(TINY, num_layers=3, num_attention_heads=3, attention_head_dim=16, ffn_dim=64, text_dim=48)
# no cross-attention norm (norm2 is Identity: no parameters), fewer output channels
NO_CROSS_NORM = dict(TINY, cross_attn_norm=False, out_channels=8, attention_head_dim=10)


def make_model(config, seed=0):
    torch.manual_seed(seed)
    model = WanTransformer3DModel(**config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def save(model, directory):
    model.save_pretrained(str(directory), safe_serialization=True)
    return str(directory)


def inputs(config, batch, frames, height, width, text_len=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config["in_channels"], frames, height, width, generator=gen)
    t = torch.tensor([700.0, 31.5, 999.0])[:batch]
    ctx = torch.randn(batch, text_len, config["text_dim"], generator=gen)
    return x, t, ctx


def reference(model, x, t, ctx):
    with torch.no_grad():
        return model(x, t, ctx, return_dict=False)[0]


def max_abs(a, b):
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = make_model(TINY)
    return model, save(model, tmp_path_factory.mktemp("wan_tiny"))


@pytest.mark.parametrize("batch", [1, 2])
def test_tiny_config_matches_diffusers(tiny, batch):
    model, directory = tiny
    ours = derrumbe.WanTransformer.load(directory)
    x, t, ctx = inputs(TINY, batch, 3, 16, 16)
    expected = reference(model, x, t, ctx)
    got = ours(x, t, ctx)
    assert got.shape == expected.shape == x.shape and got.dtype == torch.float32
    assert expected.abs().max() > 0.1  # a real signal, not a degenerate output
    d = max_abs(got, expected)
    assert d < TOL, f"tiny config, batch {batch}: max abs diff {d:.3e}"
    print(f"tiny batch {batch}: max abs diff {d:.3e}")


def test_parameters_are_the_diffusers_state_dict(tiny):
    model, directory = tiny
    ours = derrumbe.WanTransformer.load(directory).parameters()
    sd = model.state_dict()
    assert sorted(ours) == sorted(sd)
    for name, p in sd.items():
        assert torch.equal(ours[name], p), name


def test_per_token_timesteps_match_diffusers(tiny):
    """Wan2.2-TI2V passes timestep [B, tokens]: per-token modulation in the blocks and the head."""
    model, directory = tiny
    ours = derrumbe.WanTransformer.load(directory)
    x, _, ctx = inputs(TINY, 2, 3, 8, 12)
    tokens = 3 * 4 * 6
    t = torch.rand(2, tokens, generator=torch.Generator().manual_seed(5)) * 1000
    expected = reference(model, x, t, ctx)
    d = max_abs(ours(x, t, ctx), expected)
    assert d < TOL, f"per-token timesteps: max abs diff {d:.3e}"


@pytest.mark.parametrize("name,config,shape", [
    ("larger", LARGER, (2, 5, 12, 12)),
    ("no_cross_attn_norm", NO_CROSS_NORM, (2, 4, 10, 6)),
])
def test_other_configs_match_diffusers(tmp_path, name, config, shape):
    model = make_model(config, seed=3)
    ours = derrumbe.WanTransformer.load(save(model, tmp_path))
    x, t, ctx = inputs(config, *shape, text_len=7)
    expected = reference(model, x, t, ctx)
    got = ours(x, t, ctx)
    assert got.shape == expected.shape
    d = max_abs(got, expected)
    assert d < TOL, f"{name} config: max abs diff {d:.3e}"
    print(f"{name}: max abs diff {d:.3e}")


# The inverse of diffusers' convert_wan_transformer_to_diffusers for the text-to-video keys.
TO_ORIGINAL = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn1", "self_attn"),
    ("attn2", "cross_attn"),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("norm2", "norm3"),
]


def original_key(key):
    if key == "scale_shift_table":
        return "head.modulation"
    key = key.replace("scale_shift_table", "modulation").replace("proj_out", "head.head")
    for a, b in TO_ORIGINAL:
        key = key.replace(a, b)
    return "model.diffusion_model." + key  # as ComfyUI files have it


def test_original_layout_round_trip(tiny, tmp_path):
    model, directory = tiny
    sd = model.state_dict()
    original = {original_key(k): v.clone() for k, v in sd.items()}
    assert "model.diffusion_model.blocks.0.norm3.weight" in original  # the norm2/norm3 swap is exercised
    # the inverse table is right: diffusers' own converter gives the diffusers keys back
    converted = convert_wan_transformer_to_diffusers(dict(original))
    assert sorted(converted) == sorted(sd)
    # derrumbe's key mapping agrees with diffusers' on every key, and keeps diffusers keys
    for k in original:
        assert derrumbe.WanTransformer.diffusers_key(k) == convert_wan_transformer_to_diffusers({k: None}).popitem()[0]
    for k in sd:
        assert derrumbe.WanTransformer.diffusers_key(k) == k

    safetensors_torch.save_file(original, str(tmp_path / "wan_original.safetensors"))
    with open(os.path.join(directory, "config.json")) as f:
        (tmp_path / "config.json").write_text(f.read())
    x, t, ctx = inputs(TINY, 2, 3, 16, 16)
    a = derrumbe.WanTransformer.load(directory)(x, t, ctx)
    b = derrumbe.WanTransformer.load(str(tmp_path))(x, t, ctx)
    assert torch.equal(a, b), f"original layout: max abs diff {max_abs(a, b):.3e}"
    assert sorted(derrumbe.WanTransformer.load(str(tmp_path)).parameters()) == sorted(sd)


# ---- bad input ---------------------------------------------------------------------------------

def write_variant(tiny, tmp_path, edit_tensors=None, edit_config=None):
    _, directory = tiny
    tensors = safetensors_torch.load_file(os.path.join(directory, "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_config:
        edit_config(config)
    safetensors_torch.save_file(tensors, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def test_missing_key_is_named(tiny, tmp_path):
    d = write_variant(tiny, tmp_path, edit_tensors=lambda t: t.pop("blocks.1.attn2.to_k.weight"))
    with pytest.raises(ValueError, match=r"missing 'blocks\.1\.attn2\.to_k\.weight' \(expected shape \[24, 24\]\)"):
        derrumbe.WanTransformer.load(d)


def test_misshaped_key_is_named(tiny, tmp_path):
    def edit(t):
        t["blocks.0.ffn.net.2.weight"] = torch.zeros(24, 31)
    d = write_variant(tiny, tmp_path, edit_tensors=edit)
    with pytest.raises(ValueError, match=r"'blocks\.0\.ffn\.net\.2\.weight' has shape \[24, 31\], expected \[24, 32\]"):
        derrumbe.WanTransformer.load(d)


def test_integer_weights_are_a_dtype_error(tiny, tmp_path):
    def edit(t):
        t["proj_out.bias"] = t["proj_out.bias"].to(torch.int32)
    d = write_variant(tiny, tmp_path, edit_tensors=edit)
    with pytest.raises(ValueError, match=r"'proj_out\.bias' is stored as I32, expected a floating point type"):
        derrumbe.WanTransformer.load(d)


def test_wrong_num_layers(tiny, tmp_path):
    (tmp_path / "more").mkdir()
    d = write_variant(tiny, tmp_path / "more", edit_config=lambda c: c.update(num_layers=3))
    with pytest.raises(ValueError, match=r"missing 'blocks\.2\."):
        derrumbe.WanTransformer.load(d)
    (tmp_path / "fewer").mkdir()
    d = write_variant(tiny, tmp_path / "fewer", edit_config=lambda c: c.update(num_layers=1))
    with pytest.raises(ValueError, match=r"unexpected key.*'blocks\.1\."):
        derrumbe.WanTransformer.load(d)


def test_bad_config(tiny, tmp_path):
    for sub, edit, exc, pattern in [
        ("img", lambda c: c.update(image_dim=1280), NotImplementedError, "image_dim"),
        ("str", lambda c: c.update(num_layers="two"), ValueError, "num_layers"),
        ("patch", lambda c: c.update(patch_size=[1, 2]), ValueError, "patch_size"),
        ("head", lambda c: c.update(attention_head_dim=11), ValueError, "attention_head_dim"),
    ]:
        (tmp_path / sub).mkdir()
        d = write_variant(tiny, tmp_path / sub, edit_config=edit)
        with pytest.raises(exc, match=pattern):
            derrumbe.WanTransformer.load(d)
    with pytest.raises(FileNotFoundError, match="config.json"):
        derrumbe.WanTransformer.load(str(tmp_path / "nowhere"))


def test_bad_inputs(tiny):
    ours = derrumbe.WanTransformer.load(tiny[1])
    x, t, ctx = inputs(TINY, 2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"height \(H\) = 15 is not a positive multiple of the patch size 2"):
        ours(x[..., :15, :], t, ctx)
    with pytest.raises(ValueError, match="8 channels, the model takes in_channels = 16"):
        ours(x[:, :8], t, ctx)
    with pytest.raises(ValueError, match=r"context must be \[B, L, text_dim\] = \[2, L>0, 32\], got \[2, 8, 31\]"):
        ours(x, t, ctx[..., :31])
    with pytest.raises(ValueError, match="timestep must be"):
        ours(x, t[:1], ctx)
    with pytest.raises(ValueError, match="rope_max_seq_len"):
        ours(torch.zeros(1, 16, 33, 2, 2), t[:1], ctx[:1])
    with pytest.raises(ValueError, match=r"\[B, C, F, H, W\]"):
        ours(x[0], t, ctx)


def test_bfloat16_close_to_float32(tiny):
    model, directory = tiny
    x, t, ctx = inputs(TINY, 2, 3, 16, 16)
    f32 = reference(model, x, t, ctx)
    ours = derrumbe.WanTransformer.load(directory, dtype=torch.bfloat16)
    params = ours.parameters()
    # diffusers' _keep_in_fp32_modules stay float32
    assert params["condition_embedder.time_embedder.linear_1.weight"].dtype == torch.float32
    assert params["blocks.0.scale_shift_table"].dtype == torch.float32
    assert params["blocks.0.norm2.weight"].dtype == torch.float32
    assert params["blocks.0.attn1.to_q.weight"].dtype == torch.bfloat16
    got = ours(x.bfloat16(), t, ctx.bfloat16())
    assert got.dtype == torch.bfloat16
    d32 = max_abs(got.float(), f32)
    ref16 = WanTransformer3DModel.from_pretrained(directory, torch_dtype=torch.bfloat16).eval()
    expected16 = reference(ref16, x.bfloat16(), t, ctx.bfloat16())
    d16 = max_abs(got.float(), expected16.float())
    print(f"bf16: vs float32 {d32:.3e}, vs diffusers bf16 {d16:.3e}")
    assert d32 < 1e-1, f"bf16 vs float32: max abs diff {d32:.3e}"
    assert d16 < 5e-2, f"bf16 vs diffusers bf16: max abs diff {d16:.3e}"
