"""Wan models as users keep them: single safetensors files in the original (Wan repository) and
ComfyUI layouts, in every dtype they ship in, with configs inferred from the tensor shapes, and
bundles of such files (bundle.json, Bundle.load_files).

Everything expected comes from the reference libraries at test time: tiny diffusers / transformers
models (seeded, every parameter perturbed so that each one matters) are converted here to each
layout and dtype, loaded by derrumbe, and compared with the reference model holding exactly the
values the file represents:
- fp32: derrumbe's parameters equal the reference state dict exactly;
- bf16 / fp16: they equal the reference weights cast to that dtype;
- fp8 e4m3fn and e5m2 (plain casts), ComfyUI's legacy scaled fp8 (scale = amax / 448, weight_fp8 =
  (w / scale).to(float8_e4m3fn), <layer>.scale_weight and a scaled_fp8 marker) and its current
  format (<layer>.weight_scale + <layer>.comfy_quant): they equal the dequantized values
  weight_fp8.to(float32) * scale;
and the forward passes match the reference model loaded with those same values.
The conversions to the original layouts are checked against diffusers' own converters
(convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers), and where diffusers reads a
single file itself (from_single_file with a local config) it must read our test file to the same
weights as derrumbe.

Besides the loaders' own entry points (load_wan_transformer_file with a config override,
WanBundle), everything goes through WanTransformer.load / WanVae.load / UMT5Encoder.load (which
accept a single file) and derrumbe.Shot(model=bundle.json).
"""
import json
import os
import re
import shutil

import pytest
import torch

import derrumbe
from derrumbe import _derrumbe

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
from diffusers import AutoencoderKLWan, WanTransformer3DModel  # noqa: E402
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers)
from transformers import UMT5Config, UMT5EncoderModel  # noqa: E402

TOL = 1e-4
FP8 = torch.float8_e4m3fn
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MODEL = os.path.join(ROOT, "assets", "default-model")
SCENE = os.path.join(ROOT, "examples", "scenes", "small.json")

# Real Wan transformers have 128-wide heads, which is what the config inference assumes; this
# tiny one has a single such head. TINY_12 is diffusers' own test config (2 heads of 12), which
# needs the head width given.
T128 = dict(patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=128, in_channels=16, out_channels=16,
            text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
TINY_12 = dict(T128, num_attention_heads=2, attention_head_dim=12)
# The released VAE's structure (4 levels, 2 residual blocks: what diffusers' single-file converter
# handles), narrow; diffusers' test VAE (1 residual block); temporal downsampling on other levels.
VAE_R2 = dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])
VAE_TINY = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
VAE_EARLY_T = dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 2, 2], num_res_blocks=1,
                   temperal_downsample=[True, True, False])
UMT5_TINY = dict(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                 feed_forward_proj="gated-gelu")

DTYPES = ["fp32", "bf16", "fp16", "fp8", "fp8_e5m2", "fp8_scaled", "fp8_comfy_quant"]
TORCH_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def perturbed(model, seed=0):
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def max_abs(a, b):
    return (a.float() - b.float()).abs().max().item()


# ---- layouts: diffusers / transformers names -> the names users' files have ------------------------

TRANSFORMER_TO_ORIGINAL = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn1.", "self_attn."), ("attn2.", "cross_attn."), (".to_out.0.", ".o."), (".to_q.", ".q."),
    (".to_k.", ".k."), (".to_v.", ".v."), ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
    ("norm2", "norm3"), ("scale_shift_table", "modulation")]


def transformer_original_key(key):
    if key == "scale_shift_table":
        return "head.modulation"
    key = key.replace("proj_out", "head.head")
    for a, b in TRANSFORMER_TO_ORIGINAL:
        key = key.replace(a, b)
    return key


RESIDUAL_TO_ORIGINAL = [("norm1.", "residual.0."), ("conv1.", "residual.2."), ("norm2.", "residual.3."),
                        ("conv2.", "residual.6."), ("conv_shortcut.", "shortcut.")]


def vae_original_key(key, num_res_blocks):
    """The Wan repository's name (wan/modules/vae.py: flat encoder.downsamples / decoder.upsamples
    lists, middle, head, conv1 / conv2 for the quant convs) of a diffusers AutoencoderKLWan key."""
    def residual(rest):
        for a, b in RESIDUAL_TO_ORIGINAL:
            if rest.startswith(a):
                return b + rest[len(a):]
        return rest

    if key.startswith("quant_conv."):
        return "conv1." + key[len("quant_conv."):]
    if key.startswith("post_quant_conv."):
        return "conv2." + key[len("post_quant_conv."):]
    side, rest = key.split(".", 1)
    for a, b in [("conv_in.", "conv1."), ("norm_out.", "head.0."), ("conv_out.", "head.2."),
                 ("mid_block.attentions.0.", "middle.1.")]:
        if rest.startswith(a):
            return f"{side}.{b}{rest[len(a):]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.*)", rest):
        return f"{side}.middle.{2 * int(m[1])}.{residual(m[2])}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(.*)", rest):
        return f"{side}.downsamples.{m[1]}.{residual(m[2])}"
    per_level = num_res_blocks + 2
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest):
        return f"{side}.upsamples.{int(m[1]) * per_level + int(m[2])}.{residual(m[3])}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", rest):
        return f"{side}.upsamples.{int(m[1]) * per_level + num_res_blocks + 1}.{m[2]}"
    raise AssertionError(key)


WAN_T5_NAMES = [("layer.0.layer_norm.", "norm1."), ("layer.0.SelfAttention.relative_attention_bias.",
                                                     "pos_embedding.embedding."),
                ("layer.0.SelfAttention.", "attn."), ("layer.1.layer_norm.", "norm2."),
                ("layer.1.DenseReluDense.wi_0.", "ffn.gate.0."), ("layer.1.DenseReluDense.wi_1.", "ffn.fc1."),
                ("layer.1.DenseReluDense.wo.", "ffn.fc2.")]


def umt5_key(key, layout):
    """transformers' UMT5EncoderModel name -> as a single file names it: `comfy` as ComfyUI's
    umt5_xxl_*.safetensors (the same), `no_encoder` without "encoder.", `checkpoint` under the
    prefix a ComfyUI checkpoint stores its text encoder with, `wan` the Wan repository's T5 names
    (wan/modules/t5.py: token_embedding, blocks.N.{norm1, attn.q, pos_embedding.embedding,
    norm2, ffn.gate.0, ffn.fc1, ffn.fc2}, norm)."""
    if layout == "comfy":
        return key
    if layout == "no_encoder":
        return key[len("encoder."):] if key.startswith("encoder.") else key
    if layout == "checkpoint":
        return "text_encoders.umt5xxl.transformer." + key
    if key == "shared.weight":
        return "token_embedding.weight"
    if key == "encoder.final_layer_norm.weight":
        return "norm.weight"
    m = re.fullmatch(r"encoder\.block\.(\d+)\.(.*)", key)
    for a, b in WAN_T5_NAMES:
        if m[2].startswith(a):
            return f"blocks.{m[1]}.{b}{m[2][len(a):]}"
    raise AssertionError(key)


# ---- dtypes: how the files store the values, and the float32 values they represent ---------------

def quantized_layer(name, tensor):
    """The tensors fp8 files quantize: the matrices and convolution kernels (not biases, norms)."""
    return name.endswith(".weight") and tensor.dim() >= 2


def store(state, dtype, rename, marker_prefix=""):
    """(tensors to write, {model name: float32 value the file represents})."""
    tensors, values = {}, {}
    for i, (name, w) in enumerate(state.items()):
        w = w.detach().float().contiguous()
        key = rename(name)
        if dtype in TORCH_DTYPE:
            tensors[key] = w.to(TORCH_DTYPE[dtype])
            values[name] = tensors[key].float()
        elif not quantized_layer(name, w):
            tensors[key] = w.to(torch.bfloat16)  # ComfyUI's fp8 files keep the rest in 16 bits
            values[name] = tensors[key].float()
        elif dtype in ("fp8", "fp8_e5m2"):  # a plain cast, no scale
            tensors[key] = w.to(FP8 if dtype == "fp8" else torch.float8_e5m2)
            values[name] = tensors[key].float()
        else:
            amax = w.abs().max()
            scale = (amax / 448.0 if amax > 0 else torch.tensor(1.0)).float()
            q = (w / scale).clamp(-448, 448).to(FP8)
            layer = key[:-len(".weight")]
            tensors[key] = q
            if dtype == "fp8_scaled":  # legacy: scale_weight ([] or [1]), scale_input, the marker
                tensors[layer + ".scale_weight"] = scale.reshape([1] if i % 2 else [])
                tensors[layer + ".scale_input"] = torch.tensor(1.0)
            else:  # current: weight_scale + the comfy_quant descriptor
                tensors[layer + ".weight_scale"] = scale.reshape([])
                tensors[layer + ".input_scale"] = torch.tensor(1.0)
                tensors[layer + ".comfy_quant"] = torch.tensor(list(b'{"format": "float8_e4m3fn"}'), dtype=torch.uint8)
            values[name] = q.float() * scale
    if dtype == "fp8_scaled":
        tensors[marker_prefix + "scaled_fp8"] = torch.zeros(2, dtype=FP8)
    return tensors, values


def assert_parameters(ours, values):
    params = ours.parameters()
    assert sorted(params) == sorted(values)
    for name, value in values.items():
        p = params[name]
        assert torch.equal(p, value.to(p.dtype)), f"{name}: max abs diff {max_abs(p, value):.3e}"


# ---- transformer -----------------------------------------------------------------------------------

def make_transformer(config, seed=0):
    torch.manual_seed(seed)
    return perturbed(WanTransformer3DModel(**config), seed)


def transformer_inputs(config, batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config["in_channels"], 3, 16, 16, generator=gen)
    t = torch.tensor([700.0, 31.5])[:batch]
    ctx = torch.randn(batch, 8, config["text_dim"], generator=gen)
    return x, t, ctx


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    model = make_transformer(T128)
    directory = tmp_path_factory.mktemp("wan_t128")
    model.save_pretrained(str(directory), safe_serialization=True)
    return model, str(directory)


def comfy_transformer_name(name):
    return "model.diffusion_model." + transformer_original_key(name)


def test_transformer_test_layout_is_the_original_one(transformer):
    """The test's original-layout names are what diffusers' converter maps back to its own."""
    model, _ = transformer
    sd = model.state_dict()
    original = {comfy_transformer_name(k): v for k, v in sd.items()}
    assert "model.diffusion_model.blocks.0.norm3.weight" in original  # the norm2 / norm3 swap is exercised
    assert sorted(convert_wan_transformer_to_diffusers(dict(original))) == sorted(sd)


@pytest.mark.parametrize("dtype", DTYPES)
def test_transformer_comfy_file(transformer, tmp_path, dtype):
    model, directory = transformer
    tensors, values = store(model.state_dict(), dtype, comfy_transformer_name, "model.diffusion_model.")
    path = str(tmp_path / f"wan_t2v_{dtype}.safetensors")
    safetensors_torch.save_file(tensors, path)

    ours = derrumbe.WanTransformer.load(path)
    config = dict(ours.config)
    assert config["num_attention_heads"] == 1 and config["attention_head_dim"] == 128
    for key in ("in_channels", "out_channels", "text_dim", "freq_dim", "ffn_dim", "num_layers", "cross_attn_norm"):
        assert config[key] == T128[key], key
    assert tuple(config["patch_size"]) == T128["patch_size"]
    assert_parameters(ours, values)

    reference = make_transformer(T128)
    reference.load_state_dict(values)
    x, t, ctx = transformer_inputs(T128)
    with torch.no_grad():
        expected = reference(x, t, ctx, return_dict=False)[0]
    got = ours(x, t, ctx)
    assert max_abs(got, expected) < TOL
    if dtype == "fp32":  # the same model as from the diffusers directory, bit for bit
        assert torch.equal(got, derrumbe.WanTransformer.load(directory)(x, t, ctx))
    if dtype in TORCH_DTYPE and dtype != "fp32":  # in the file's own dtype: the diffusers weights cast
        assert_parameters(derrumbe.WanTransformer.load(path, dtype=TORCH_DTYPE[dtype]),
                          {k: v.to(TORCH_DTYPE[dtype]).float() for k, v in model.state_dict().items()})
    if dtype.startswith("fp8"):  # fp8 upcast to a 16-bit compute dtype: the dequantized values cast
        assert_parameters(derrumbe.WanTransformer.load(path, dtype=torch.bfloat16), values)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_transformer_diffusers_reads_the_test_file_alike(transformer, tmp_path, dtype):
    model, directory = transformer
    tensors, values = store(model.state_dict(), dtype, comfy_transformer_name)
    path = str(tmp_path / "wan.safetensors")
    safetensors_torch.save_file(tensors, path)
    theirs = WanTransformer3DModel.from_single_file(path, config=directory, torch_dtype=torch.float32)
    ours = derrumbe.WanTransformer.load(path)
    for name, p in theirs.state_dict().items():
        assert torch.equal(ours.parameters()[name], p.float()), name


def test_transformer_sharded_original_checkpoint(transformer, tmp_path):
    """A sharded checkpoint (*.safetensors.index.json) in the original layout loads like one file."""
    model, _ = transformer
    tensors, values = store(model.state_dict(), "bf16", transformer_original_key)
    names = sorted(tensors)
    shards = {"wan-00001-of-00002.safetensors": names[: len(names) // 2],
              "wan-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, keys in shards.items():
        safetensors_torch.save_file({k: tensors[k] for k in keys}, str(tmp_path / shard))
    index = tmp_path / "wan.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}))
    assert_parameters(derrumbe.WanTransformer.load(str(index)), values)


def test_transformer_diffusers_keys_single_file(transformer):
    model, directory = transformer
    path = os.path.join(directory, "diffusion_pytorch_model.safetensors")
    assert_parameters(derrumbe.WanTransformer.load(path), {k: v.float() for k, v in model.state_dict().items()})


def test_transformer_heads_not_128_need_the_config(tmp_path):
    model = make_transformer(TINY_12)
    tensors, values = store(model.state_dict(), "fp8_scaled", comfy_transformer_name, "model.diffusion_model.")
    path = str(tmp_path / "tiny.safetensors")
    safetensors_torch.save_file(tensors, path)
    with pytest.raises(ValueError, match=r"patch_embedding\.weight.*inner dim 24 is not a multiple of the head dim "
                                         r"128.*attention_head_dim"):
        derrumbe.WanTransformer.load(path)
    for config in ({"attention_head_dim": 12}, {"num_attention_heads": 2}, json.dumps({"attention_head_dim": 12})):
        ours = derrumbe.load_wan_transformer_file(path, config=config)
        assert ours.config["num_attention_heads"] == 2 and ours.config["attention_head_dim"] == 12
        assert_parameters(ours, values)
    reference = make_transformer(TINY_12)
    reference.load_state_dict(values)
    x, t, ctx = transformer_inputs(TINY_12)
    with torch.no_grad():
        expected = reference(x, t, ctx, return_dict=False)[0]
    assert max_abs(ours(x, t, ctx), expected) < TOL
    with pytest.raises(ValueError, match="does not split into 5 heads"):
        derrumbe.load_wan_transformer_file(path, config={"num_attention_heads": 5})


def test_wan_repository_directory(transformer, tmp_path):
    """The Wan repository's own layout: its WanModel config.json beside original-key weights."""
    model, directory = transformer
    tensors, values = store(model.state_dict(), "bf16", transformer_original_key)
    safetensors_torch.save_file(tensors, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "dim": 128, "eps": 1e-06, "ffn_dim": 32, "freq_dim": 256, "in_dim": 16,
        "model_type": "t2v", "num_heads": 1, "num_layers": 2, "out_dim": 16, "text_len": 512}))
    assert_parameters(derrumbe.WanTransformer.load(str(tmp_path)), values)


# ---- VAE --------------------------------------------------------------------------------------------

VAE_CONFIGS = {"r2": VAE_R2, "tiny": VAE_TINY, "early_t": VAE_EARLY_T}


def make_vae(config, seed=0):
    torch.manual_seed(seed)
    return perturbed(AutoencoderKLWan(**config), seed)


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    out = {}
    for name, config in VAE_CONFIGS.items():
        model = make_vae(config)
        directory = tmp_path_factory.mktemp("wan_vae_" + name)
        model.save_pretrained(str(directory), safe_serialization=True)
        out[name] = (config, model, str(directory))
    return out


def vae_io(seed=1):
    gen = torch.Generator().manual_seed(seed)
    frames = torch.rand(1, 3, 5, 16, 16, generator=gen) * 2 - 1
    latents = torch.randn(1, 16, 2, 2, 2, generator=gen)
    return frames, latents


def vae_reference(config, values):
    model = make_vae(config)
    model.load_state_dict(values)
    frames, latents = vae_io()
    with torch.no_grad():
        mean = model.encode(frames).latent_dist.mode()
        decoded = model.decode(latents).sample.clamp(-1, 1)
    return mean, decoded


def test_vae_test_layout_is_the_original_one(vaes):
    """diffusers' converter (written for the released VAE: 4 levels, 2 residual blocks) maps the
    test's original names back to its own."""
    config, model, _ = vaes["r2"]
    sd = model.state_dict()
    original = {vae_original_key(k, 2): v for k, v in sd.items()}
    assert {"decoder.upsamples.4.shortcut.weight", "decoder.upsamples.7.time_conv.weight",
            "decoder.upsamples.11.resample.1.weight"} <= set(original)
    assert sorted(convert_wan_vae_to_diffusers(original)) == sorted(sd)


@pytest.mark.parametrize("name", list(VAE_CONFIGS))
def test_vae_original_layout_every_structure(vaes, tmp_path, name):
    config, model, directory = vaes[name]
    r = config["num_res_blocks"]
    tensors, values = store(model.state_dict(), "fp32", lambda k: vae_original_key(k, r))
    path = str(tmp_path / "wan_vae.safetensors")
    safetensors_torch.save_file(tensors, path)
    ours = derrumbe.WanVae.load(path)
    for key in ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample"):
        assert ours.config[key] == config[key], key
    assert_parameters(ours, values)
    frames, latents = vae_io()
    ref = derrumbe.WanVae.load(directory)
    assert torch.equal(ours.encode(frames, normalize=False), ref.encode(frames, normalize=False))
    assert torch.equal(ours.decode(latents, normalized=False), ref.decode(latents, normalized=False))
    # the mapping itself, key by key (diffusers keys are fixed points)
    for k in model.state_dict():
        assert _derrumbe.wan_vae_diffusers_key(vae_original_key(k, r), r) == k
        assert _derrumbe.wan_vae_diffusers_key(k, r) == k


@pytest.mark.parametrize("dtype", DTYPES)
def test_vae_comfy_file(vaes, tmp_path, dtype):
    config, model, _ = vaes["r2"]
    tensors, values = store(model.state_dict(), dtype, lambda k: "first_stage_model." + vae_original_key(k, 2)
                            if dtype == "fp8" else vae_original_key(k, 2))
    path = str(tmp_path / f"wan_2.1_vae_{dtype}.safetensors")
    safetensors_torch.save_file(tensors, path)
    ours = derrumbe.WanVae.load(path)
    assert_parameters(ours, values)
    frames, latents = vae_io()
    mean, decoded = vae_reference(config, values)
    assert max_abs(ours.encode(frames, normalize=False), mean) < TOL
    assert max_abs(ours.decode(latents, normalized=False), decoded) < TOL
    if dtype in ("bf16", "fp16"):
        assert_parameters(derrumbe.WanVae.load(path, dtype=TORCH_DTYPE[dtype]),
                          {k: v.to(TORCH_DTYPE[dtype]).float() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_vae_diffusers_reads_the_test_file_alike(vaes, tmp_path, dtype):
    _, model, directory = vaes["r2"]
    tensors, _ = store(model.state_dict(), dtype, lambda k: vae_original_key(k, 2))
    path = str(tmp_path / "wan_2.1_vae.safetensors")
    safetensors_torch.save_file(tensors, path)
    theirs = AutoencoderKLWan.from_single_file(path, config=directory, torch_dtype=torch.float32)
    ours = derrumbe.WanVae.load(path)
    assert sorted(theirs.state_dict()) == sorted(ours.parameters())
    for name, p in theirs.state_dict().items():
        assert torch.equal(ours.parameters()[name], p.float()), name


# ---- umT5 encoder -----------------------------------------------------------------------------------

def make_umt5(config=UMT5_TINY, seed=0):
    torch.manual_seed(seed)
    return perturbed(UMT5EncoderModel(UMT5Config(**config)), seed)


def umt5_state(model):
    """The encoder's tensors once (the tied embedding as shared.weight, as save_pretrained writes)."""
    return {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}


def umt5_inputs(seed=3):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, UMT5_TINY["vocab_size"], (2, 20), generator=gen)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 13:] = 0
    ids[1, 13:] = 0
    return ids, mask


@pytest.fixture(scope="module")
def umt5(tmp_path_factory):
    model = make_umt5()
    directory = tmp_path_factory.mktemp("umt5")
    model.save_pretrained(str(directory), safe_serialization=True)
    return model, str(directory)


def write_umt5(model, tmp_path, dtype, layout):
    tensors, values = store(umt5_state(model), dtype, lambda k: umt5_key(k, layout),
                            "text_encoders.umt5xxl." if layout == "checkpoint" else "")
    if "scaled_fp8" in tensors:  # ComfyUI's text encoder files carry an empty marker
        tensors["scaled_fp8"] = torch.empty(0, dtype=FP8)
    if layout == "checkpoint":  # a whole ComfyUI checkpoint: other components, the tokenizer's bytes
        tensors["model.diffusion_model.head.modulation"] = torch.zeros(1, 2, 8)
        tensors["first_stage_model.conv1.weight"] = torch.zeros(2, 2, 1, 1, 1)
        tensors["text_encoders.umt5xxl.spiece_model"] = torch.arange(10, dtype=torch.uint8)
    path = str(tmp_path / f"umt5_xxl_{dtype}_{layout}.safetensors")
    safetensors_torch.save_file(tensors, path)
    return path, values


def check_umt5(ours, values):
    assert_parameters(ours, values)
    for key in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                "relative_attention_num_buckets"):
        assert ours.config[key] == UMT5_TINY[key], key
    reference = make_umt5()
    reference.load_state_dict(dict(values, **{"encoder.embed_tokens.weight": values["shared.weight"]}))
    ids, mask = umt5_inputs()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    assert max_abs(ours(ids, mask), expected) < TOL


@pytest.mark.parametrize("dtype", DTYPES)
def test_umt5_comfy_file(umt5, tmp_path, dtype):
    model, directory = umt5
    path, values = write_umt5(model, tmp_path, dtype, "comfy")
    ours = derrumbe.UMT5Encoder.load(path)
    check_umt5(ours, values)
    if dtype == "fp32":
        ids, mask = umt5_inputs()
        assert torch.equal(ours(ids, mask), derrumbe.UMT5Encoder.load(directory)(ids, mask))
    if dtype in ("bf16", "fp16"):  # fp16 keeps wo in float32, as transformers does
        assert_parameters(derrumbe.UMT5Encoder.load(path, dtype=TORCH_DTYPE[dtype]),
                          {k: v.to(TORCH_DTYPE[dtype]).float() for k, v in umt5_state(model).items()})


@pytest.mark.parametrize("layout", ["no_encoder", "checkpoint", "wan"])
def test_umt5_other_layouts(umt5, tmp_path, layout):
    model, _ = umt5
    for dtype in ("fp32", "fp8_scaled"):
        path, values = write_umt5(model, tmp_path, dtype, layout)
        check_umt5(derrumbe.UMT5Encoder.load(path), values)


# ---- bad input ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def comfy_files(transformer, vaes, umt5, tmp_path_factory):
    """A transformer, a VAE and a umT5 file as ComfyUI users have them (scaled fp8, fp32, fp16)."""
    out = tmp_path_factory.mktemp("comfy")
    files = {}
    t, _ = store(transformer[0].state_dict(), "fp8_scaled", comfy_transformer_name, "model.diffusion_model.")
    v, _ = store(vaes["r2"][1].state_dict(), "fp32", lambda k: vae_original_key(k, 2))
    u, _ = store(umt5_state(umt5[0]), "fp16", lambda k: k)
    for name, tensors in [("transformer", t), ("vae", v), ("text_encoder", u)]:
        files[name] = str(out / f"{name}.safetensors")
        safetensors_torch.save_file(tensors, files[name])
    return files


LOADERS = {"transformer": derrumbe.WanTransformer.load, "vae": derrumbe.WanVae.load,
           "text_encoder": derrumbe.UMT5Encoder.load}


@pytest.mark.parametrize("component", list(LOADERS))
def test_truncated_file(comfy_files, tmp_path, component):
    data = open(comfy_files[component], "rb").read()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(ValueError, match="truncated.safetensors"):
        LOADERS[component](str(path))


MISSING = {"transformer": ("model.diffusion_model.blocks.1.cross_attn.k.weight",
                           r"missing 'blocks\.1\.attn2\.to_k\.weight' \('model\.diffusion_model\.blocks\.1\.cross_attn"
                           r"\.k\.weight' in the original layout\)"),
           "vae": ("decoder.upsamples.5.residual.2.weight",
                   r"missing 'decoder\.up_blocks\.1\.resnets\.1\.conv1\.weight' \('decoder\.upsamples\.5\.residual\.2"
                   r"\.weight' in the original layout\)"),
           "text_encoder": ("encoder.block.1.layer.1.DenseReluDense.wo.weight",
                            r"missing 'encoder\.block\.1\.layer\.1\.DenseReluDense\.wo\.weight'")}


@pytest.mark.parametrize("component", list(LOADERS))
def test_missing_tensor_is_named(comfy_files, tmp_path, component):
    tensors = safetensors_torch.load_file(comfy_files[component])
    key, message = MISSING[component]
    del tensors[key]
    path = tmp_path / "missing.safetensors"
    safetensors_torch.save_file(tensors, str(path))
    with pytest.raises(ValueError, match=message + ".*missing.safetensors"):
        LOADERS[component](str(path))


def test_tensors_needed_for_the_config_are_named(comfy_files, tmp_path):
    for component, key in [("transformer", "model.diffusion_model.patch_embedding.weight"),
                           ("vae", "conv2.weight"), ("text_encoder", "shared.weight")]:
        tensors = safetensors_torch.load_file(comfy_files[component])
        del tensors[key]
        path = tmp_path / f"{component}_incomplete.safetensors"
        safetensors_torch.save_file(tensors, str(path))
        with pytest.raises(ValueError, match=f"missing '{re.escape(key)}' \\(needed to infer the config"):
            LOADERS[component](str(path))


def test_shapes_that_match_no_config(comfy_files, tmp_path):
    cases = [
        # the text projection's width differs from the patch embedding's
        ("transformer", "model.diffusion_model.text_embedding.0.weight", torch.zeros(64, 32),
         r"text_embedding\.0\.weight' has shape \[64, 32\], which matches no config"),
        # proj_out rows not a multiple of the patch volume 4
        ("transformer", "model.diffusion_model.head.head.weight", torch.zeros(63, 128), r"patch volume 4"),
        # one block's FFN narrower than the first's
        ("transformer", "model.diffusion_model.blocks.1.ffn.0.weight", torch.zeros(40, 128),
         r"blocks\.1\.ffn\.0\.weight' has shape \[40, 128\], expected \[32, 128\]"),
        # a level's width that is no multiple of base_dim
        ("vae", "encoder.downsamples.3.residual.2.weight", torch.zeros(7, 4, 3, 3, 3),
         r"downsamples\.3\.residual\.2\.weight' has shape \[7, 4, 3, 3, 3\], which matches no config"),
        # heads (relative bias) that do not divide the query projection
        ("text_encoder", "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
         torch.zeros(32, 5), r"SelfAttention\.q\.weight' has shape \[32, 32\], which matches no config"),
    ]
    for component, key, value, message in cases:
        tensors = safetensors_torch.load_file(comfy_files[component])
        assert key in tensors, key
        tensors[key] = value.to(tensors[key].dtype)
        path = tmp_path / "odd.safetensors"
        safetensors_torch.save_file(tensors, str(path))
        with pytest.raises(ValueError, match=message):
            LOADERS[component](str(path))


def test_files_of_other_models_are_refused(comfy_files, tmp_path):
    # an image-to-video transformer, a T5 (not umT5) encoder, the Wan2.2 VAE, nvfp4 weights
    t = safetensors_torch.load_file(comfy_files["transformer"])
    t["model.diffusion_model.blocks.0.cross_attn.k_img.weight"] = torch.zeros(128, 128)
    safetensors_torch.save_file(t, str(tmp_path / "i2v.safetensors"))
    with pytest.raises(NotImplementedError, match=r"k_img\.weight' belongs to an image-to-video model"):
        derrumbe.WanTransformer.load(str(tmp_path / "i2v.safetensors"))
    u = safetensors_torch.load_file(comfy_files["text_encoder"])
    del u["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"]
    safetensors_torch.save_file(u, str(tmp_path / "t5.safetensors"))
    with pytest.raises(NotImplementedError, match="T5 encoder, not umT5"):
        derrumbe.UMT5Encoder.load(str(tmp_path / "t5.safetensors"))
    v = safetensors_torch.load_file(comfy_files["vae"])
    v["encoder.downsamples.0.downsamples.0.residual.0.gamma"] = torch.ones(4, 1, 1, 1)
    safetensors_torch.save_file(v, str(tmp_path / "vae22.safetensors"))
    with pytest.raises(NotImplementedError, match=r"Wan2\.2 \(residual\) VAE"):
        derrumbe.WanVae.load(str(tmp_path / "vae22.safetensors"))
    t = safetensors_torch.load_file(comfy_files["transformer"])
    t["model.diffusion_model.blocks.0.ffn.0.comfy_quant"] = torch.tensor(list(b'{"format": "nvfp4"}'),
                                                                          dtype=torch.uint8)
    safetensors_torch.save_file(t, str(tmp_path / "nvfp4.safetensors"))
    with pytest.raises(NotImplementedError, match=r"'model\.diffusion_model\.blocks\.0\.ffn\.0' is quantized as 'nvfp4'"):
        derrumbe.WanTransformer.load(str(tmp_path / "nvfp4.safetensors"))
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        derrumbe.WanVae.load(str(tmp_path / "nowhere.safetensors"))


# ---- bundles --------------------------------------------------------------------------------------------

def default_model_as_single_files(out, transformer_dtype="fp16"):
    """The default model (a diffusers directory) as a ComfyUI user would hold it: the transformer in
    original keys (16 bits), wan_2.1_vae-style VAE, the umT5 file, spiece.model, and a bundle.json."""
    sd = safetensors_torch.load_file(os.path.join(DEFAULT_MODEL, "transformer", "diffusion_pytorch_model.safetensors"))
    t, t_values = store(sd, transformer_dtype, comfy_transformer_name, "model.diffusion_model.")
    vae_config = json.load(open(os.path.join(DEFAULT_MODEL, "vae", "config.json")))
    sd = safetensors_torch.load_file(os.path.join(DEFAULT_MODEL, "vae", "diffusion_pytorch_model.safetensors"))
    v, _ = store(sd, "fp32", lambda k: vae_original_key(k, vae_config["num_res_blocks"]))
    sd = safetensors_torch.load_file(os.path.join(DEFAULT_MODEL, "text_encoder", "model.safetensors"))
    u, _ = store(sd, "fp32", lambda k: k)
    os.makedirs(out / "models", exist_ok=True)
    safetensors_torch.save_file(t, str(out / "models" / "wan_tiny_t2v.safetensors"))
    safetensors_torch.save_file(v, str(out / "models" / "wan_tiny_vae.safetensors"))
    safetensors_torch.save_file(u, str(out / "models" / "umt5_tiny.safetensors"))
    shutil.copy(os.path.join(DEFAULT_MODEL, "tokenizer", "spiece.model"), out / "models" / "spiece.model")
    transformer_config = json.load(open(os.path.join(DEFAULT_MODEL, "transformer", "config.json")))
    scheduler = json.load(open(os.path.join(DEFAULT_MODEL, "scheduler", "scheduler_config.json")))
    bundle = {"transformer": "models/wan_tiny_t2v.safetensors", "vae": "models/wan_tiny_vae.safetensors",
              "text_encoder": "models/umt5_tiny.safetensors", "tokenizer": "models/spiece.model",
              "flow_shift": scheduler.get("flow_shift") or scheduler.get("shift"),
              "scheduler": scheduler["_class_name"],
              # the head width and RoPE length, which the file's shapes do not tell
              "transformer_config": {"attention_head_dim": transformer_config["attention_head_dim"],
                                     "rope_max_seq_len": transformer_config["rope_max_seq_len"]},
              # and the latent statistics of this VAE, which a file without config would take from Wan2.1
              "vae_config": {k: vae_config[k] for k in ("latents_mean", "latents_std")}}
    (out / "bundle.json").write_text(json.dumps(bundle))
    return str(out / "bundle.json"), t_values


def test_a_shot_from_bundle_json_equals_the_diffusers_directory(tmp_path):
    """fp32 single files hold the directory's exact weights: the shot is bit-identical, and its
    sidecar names the single files."""
    bundle, _ = default_model_as_single_files(tmp_path / "bundle", transformer_dtype="fp32")
    small = dict(frames=5, width=64, height=48, steps=2, progress=False)
    a = derrumbe.Shot(SCENE, model=DEFAULT_MODEL, output={"dir": str(tmp_path / "a")}, **small).render()
    b = derrumbe.Shot(SCENE, model=bundle, output={"dir": str(tmp_path / "b")}, **small).render()
    assert torch.equal(a.frames, b.frames)
    sidecar = json.load(open(b.sidecar))
    assert sidecar["model"]["path"] == bundle
    assert sorted(sidecar["model"]["files"]) == ["text_encoder/umt5_tiny.safetensors", "tokenizer/spiece.model",
                                                 "transformer/wan_tiny_t2v.safetensors",
                                                 "vae/wan_tiny_vae.safetensors"]


def test_bad_bundle_json_names_the_file_and_the_key(tmp_path):
    bundle, _ = default_model_as_single_files(tmp_path)
    good = json.load(open(bundle))
    cases = [
        (dict(good, vea="x"), ValueError, r"'vea' is not a bundle key"),
        ({k: v for k, v in good.items() if k != "vae"}, ValueError, r"'vae' is missing"),
        (dict(good, flow_shift=-1), ValueError, r"'flow_shift' must be a positive number"),
        (dict(good, text_encoder="models/nowhere.safetensors"), FileNotFoundError,
         r"'text_encoder'.*nowhere\.safetensors"),
        (dict(good, transformer_config={"attention_head_dim": 96}), ValueError,
         r"'transformer'.*inner dim \d+ is not a multiple of the head dim 96"),
        (dict(good, vae="models/wan_tiny_t2v.safetensors"), ValueError,
         r"'vae'.*the file holds no Wan VAE \(its \d+ tensors start 'model\.diffusion_model\..*wan_tiny_t2v"),
        (dict(good, transformer_config=7), ValueError, r"'transformer_config' must be a config object"),
    ]
    for i, (doc, error, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.json"
        path.write_text(json.dumps(doc))
        # through the shot (which reports any failure to load its model as a RuntimeError) ...
        with pytest.raises(RuntimeError, match="loading the model: .*" + re.escape(str(path)) + ".*" + message):
            derrumbe.Shot(SCENE, model=str(path), frames=5, width=64, height=48, steps=1, progress=False,
                          output={"dir": str(tmp_path / f"out{i}")}).render()
        # ... and directly, with the error's own type
        with pytest.raises(error, match=re.escape(str(path)) + ".*" + message):
            derrumbe.WanBundle.load(str(path))


def test_bundle_load_files_and_json(tmp_path):
    bundle_json, t_values = default_model_as_single_files(tmp_path)
    models = tmp_path / "models"
    directory = derrumbe.WanBundle.load(DEFAULT_MODEL)
    from_json = derrumbe.WanBundle.load(bundle_json)
    assert from_json.path == bundle_json and from_json.scheduler == directory.scheduler
    assert from_json.flow_shift == directory.flow_shift
    assert_parameters(from_json.transformer, t_values)
    for attr in ("spatial_factor", "temporal_factor", "latent_channels", "patch_height", "patch_width"):
        assert getattr(from_json, attr) == getattr(directory, attr), attr
    # the VAE and the text encoder: the directory's own weights
    for part in ("vae", "text_encoder"):
        a, b = getattr(from_json, part).parameters(), getattr(directory, part).parameters()
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a), part

    # load_files infers every config (heads 128 wide, as Wan's, unless bundle.json says
    # otherwise): a transformer file with 128-wide heads loads by itself beside this umT5
    text_width = json.load(open(os.path.join(DEFAULT_MODEL, "text_encoder", "config.json")))["d_model"]
    heads128 = make_transformer(dict(T128, text_dim=text_width))
    t, _ = store(heads128.state_dict(), "bf16", comfy_transformer_name)
    safetensors_torch.save_file(t, str(models / "wan_t128.safetensors"))
    files = derrumbe.WanBundle.load_files(str(models / "wan_t128.safetensors"), str(models / "wan_tiny_vae.safetensors"),
                                           str(models / "umt5_tiny.safetensors"), str(models / "spiece.model"),
                                           flow_shift=5.0)
    assert files.flow_shift == 5.0 and files.scheduler == "UniPCMultistepScheduler"
    assert files.path == str(models / "wan_t128.safetensors")
    names = [name for name, _ in files.files]
    assert names == ["text_encoder/umt5_tiny.safetensors", "tokenizer/spiece.model",
                     "transformer/wan_t128.safetensors", "vae/wan_tiny_vae.safetensors"]
    import hashlib
    for name, digest in files.files:
        assert digest == hashlib.sha256(open(models / name.split("/")[1], "rb").read()).hexdigest()
    assert files.component_hash("vae") == from_json.component_hash("vae")
    assert files.component_hash("transformer") != from_json.component_hash("transformer")
    # a sharded transformer: the index and its shards are the component's files
    names = sorted(t)
    shards = {"t-1.safetensors": names[:5], "t-2.safetensors": names[5:]}
    for shard, keys in shards.items():
        safetensors_torch.save_file({k: t[k] for k in keys}, str(models / shard))
    (models / "t.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}))
    sharded = derrumbe.WanBundle.load_files(str(models / "t.safetensors.index.json"),
                                             str(models / "wan_tiny_vae.safetensors"),
                                             str(models / "umt5_tiny.safetensors"), str(models / "spiece.model"))
    assert [n for n, _ in sharded.files if n.startswith("transformer/")] == [
        "transformer/t-1.safetensors", "transformer/t-2.safetensors", "transformer/t.safetensors.index.json"]
    # a diffusers directory's model_index.json names the directory
    assert derrumbe.WanBundle.load(os.path.join(DEFAULT_MODEL, "model_index.json")).files == directory.files
    # a component directory is fine too (its files listed under the component)
    mixed = derrumbe.WanBundle.load_files(str(models / "wan_t128.safetensors"), os.path.join(DEFAULT_MODEL, "vae"),
                                           os.path.join(DEFAULT_MODEL, "text_encoder"),
                                           os.path.join(DEFAULT_MODEL, "tokenizer"))
    assert [n for n, _ in mixed.files] == ["text_encoder/config.json", "text_encoder/model.safetensors",
                                           "tokenizer/spiece.model", "transformer/wan_t128.safetensors",
                                           "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
    assert mixed.component_hash("vae") == directory.component_hash("vae")
    # mismatched parts are named
    with pytest.raises(ValueError, match=rf"wan model \(text_encoder\): the text encoder's width \({text_width}\) "
                                         r"differs from the transformer's text_dim \(32\)"):
        small = make_transformer(T128)
        t, _ = store(small.state_dict(), "bf16", comfy_transformer_name)
        safetensors_torch.save_file(t, str(models / "wan_t128_text32.safetensors"))
        derrumbe.WanBundle.load_files(str(models / "wan_t128_text32.safetensors"),
                                       str(models / "wan_tiny_vae.safetensors"), str(models / "umt5_tiny.safetensors"),
                                       str(models / "spiece.model"))
    with pytest.raises(FileNotFoundError, match=r"wan model \(tokenizer\).*nowhere\.model"):
        derrumbe.WanBundle.load_files(str(models / "wan_t128.safetensors"), str(models / "wan_tiny_vae.safetensors"),
                                       str(models / "umt5_tiny.safetensors"), str(models / "nowhere.model"))
