"""Parity of derrumbe's native Wan VAE (Wan2.1 and Wan2.2 layouts) with diffusers' AutoencoderKLWan.

Everything expected is computed at test time by diffusers itself: a VAE with a tiny config (the
one diffusers' own Wan tests use, base_dim 3, and a base_dim 8 one, since base_dim 3 makes
1-channel RMS norms that act as a sign: REFERENCES.md §3 pitfall 6) is initialized with
torch.manual_seed(0), then every parameter gets extra noise, including the ones-initialized RMS
gammas, so that every weight matters. It is saved with save_pretrained, loaded by derrumbe from
the directory, and both run on the same random inputs on the CPU in float32: encode (the
posterior mean), decode (chunked with the causal cache, clamped), the pipelines' latent
normalization, and tiled decoding against diffusers' enable_tiling with the same tiles.

The Wan2.2 layout (Wan2.2-TI2V-5B's VAE: is_residual, patch_size 2, decoder_base_dim, 48 latent
channels) is tested the same way with tiny configs of its own (the *_22 tests below), plus the
new fields one at a time (residual without patchify, patchify without residual).
"""
import json

import pytest
import torch

import derrumbe

diffusers = pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")
from diffusers import AutoencoderKLWan  # noqa: E402

TOL = 1e-4

# diffusers' tests/pipelines/wan/test_wan.py VAE
TINY = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
# pitfall 6: wider, with channel changes between levels (conv_shortcut) and 2 residual blocks
BASE8 = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=2, temperal_downsample=[False, True, True])
# the temporal downsamplers on the first two levels instead (upsample3d on the last two)
EARLY_T = dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True, False])
CONFIGS = {"tiny": TINY, "base8": BASE8, "early_t": EARLY_T}


def make_model(config, seed=0):
    torch.manual_seed(seed)
    model = AutoencoderKLWan(**config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def max_abs(a, b):
    return (a - b).abs().max().item()


@pytest.fixture(scope="module", params=list(CONFIGS))
def vae(request, tmp_path_factory):
    model = make_model(CONFIGS[request.param])
    directory = tmp_path_factory.mktemp("wan_vae_" + request.param)
    model.save_pretrained(str(directory), safe_serialization=True)
    return request.param, model, str(directory), derrumbe.WanVae.load(str(directory))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = make_model(TINY)
    directory = tmp_path_factory.mktemp("wan_vae_tiny_errors")
    model.save_pretrained(str(directory), safe_serialization=True)
    return model, str(directory)


def frames(shape, seed=1):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def latents(shape, seed=2):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def reference_mean(model, x):
    with torch.no_grad():
        return model.encode(x).latent_dist.mean


def reference_decode(model, z):
    with torch.no_grad():
        return model.decode(z).sample


def statistics(model):
    z = model.config.z_dim
    mean = torch.tensor(model.config.latents_mean).view(1, z, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(model.config.latents_std).view(1, z, 1, 1, 1)
    return mean, inv_std


def test_parameters_are_the_diffusers_state_dict(vae):
    _, model, _, ours = vae
    expected = model.state_dict()
    got = ours.parameters()
    assert sorted(got) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


def test_config(vae):
    name, model, _, ours = vae
    c = ours.config
    for key in ("base_dim", "z_dim", "num_res_blocks", "in_channels", "out_channels"):
        assert c[key] == model.config[key], key
    assert c["dim_mult"] == list(model.config.dim_mult)
    assert c["temperal_downsample"] == list(model.config.temperal_downsample)
    assert c["latents_mean"] == pytest.approx(model.config.latents_mean)
    assert c["latents_std"] == pytest.approx(model.config.latents_std)


@pytest.mark.parametrize("shape", [(1, 3, 9, 32, 32), (1, 3, 5, 16, 24), (2, 3, 1, 16, 16), (1, 3, 13, 8, 16)])
def test_encode_matches_diffusers(vae, shape):
    name, model, _, ours = vae
    x = frames(shape)
    expected = reference_mean(model, x)
    got = ours.encode(x, normalize=False)
    k = (shape[2] - 1) // 4
    assert got.shape == expected.shape == (shape[0], 16, 1 + k, shape[3] // 8, shape[4] // 8)
    assert got.dtype == torch.float32
    assert expected.abs().max() > 0.05  # a real signal
    diff = max_abs(got, expected)
    assert diff < TOL, f"{name} encode {shape}: max abs diff {diff:.3g}"


@pytest.mark.parametrize("shape", [(1, 16, 3, 4, 4), (1, 16, 1, 2, 3), (2, 16, 2, 3, 2)])
def test_decode_matches_diffusers(vae, shape):
    name, model, _, ours = vae
    z = latents(shape)
    expected = reference_decode(model, z)
    got = ours.decode(z, normalized=False)
    assert got.shape == expected.shape == (shape[0], 3, 1 + 4 * (shape[2] - 1), 8 * shape[3], 8 * shape[4])
    inside = (expected.abs() < 1).float().mean().item()
    assert inside > 0.2, f"degenerate reference: only {inside:.0%} of the output is not clamped"
    assert got.abs().max() <= 1.0  # clamped
    diff = max_abs(got, expected)
    assert diff < TOL, f"{name} decode {shape}: max abs diff {diff:.3g}"


def test_latent_normalization_as_the_pipelines(vae):
    name, model, _, ours = vae
    mean, inv_std = statistics(model)
    x = frames((1, 3, 5, 16, 16))
    mu = reference_mean(model, x)
    got = ours.encode(x)  # normalize=True by default
    diff = max_abs(got, (mu - mean) * inv_std)  # pipeline_wan_video2video
    assert diff < TOL, f"{name} normalized encode: max abs diff {diff:.3g}"
    raw = ours.encode(x, normalize=False)
    assert torch.allclose(got, (raw - mean) * inv_std, atol=1e-6, rtol=0)
    std = torch.tensor(ours.config["latents_std"]).view(1, 16, 1, 1, 1)
    assert torch.allclose(got, (raw - mean) / std, atol=1e-5, rtol=1e-5)

    z = latents((1, 16, 2, 3, 3))
    expected = reference_decode(model, z / inv_std + mean)  # pipeline_wan before vae.decode
    diff = max_abs(ours.decode(z), expected)
    assert diff < TOL, f"{name} normalized decode: max abs diff {diff:.3g}"


@pytest.mark.parametrize(
    "shape, tile_height, tile_width, overlap",
    [((1, 16, 2, 8, 12), 32, 32, 16), ((1, 16, 3, 7, 9), 32, 48, 8), ((1, 16, 2, 5, 6), 24, 24, 16)],
)
def test_tiled_decode_matches_diffusers(vae, shape, tile_height, tile_width, overlap):
    name, _, directory, ours = vae
    model = AutoencoderKLWan.from_pretrained(directory).eval()
    model.enable_tiling(tile_sample_min_height=tile_height, tile_sample_min_width=tile_width,
                        tile_sample_stride_height=tile_height - overlap, tile_sample_stride_width=tile_width - overlap)
    z = latents(shape, seed=3)
    expected = reference_decode(model, z)
    got = ours.decode(z, normalized=False, tile_height=tile_height, tile_width=tile_width, overlap=overlap)
    assert got.shape == expected.shape
    untiled = ours.decode(z, normalized=False)
    assert max_abs(got, untiled) > 1e-3  # tiling really happened (the receptive field crosses tiles)
    diff = max_abs(got, expected)
    tiles = f"{tile_height}x{tile_width}/{overlap}"
    assert diff < TOL, f"{name} tiled decode {shape} tiles {tiles}: max abs diff {diff:.3g}"


def test_tiles_larger_than_the_frame_decode_untiled(tiny):
    _, directory = tiny
    ours = derrumbe.WanVae.load(directory)
    z = latents((1, 16, 2, 4, 5))
    untiled = ours.decode(z)
    assert torch.equal(ours.decode(z, tile_height=32, tile_width=40, overlap=8), untiled)
    # one dimension tiled, the other whole
    only_w = ours.decode(z, tile_height=0, tile_width=16, overlap=8)
    assert only_w.shape == untiled.shape and not torch.equal(only_w, untiled)


def test_bfloat16_close_to_float32(tiny):
    _, directory = tiny
    ours32 = derrumbe.WanVae.load(directory)
    ours16 = derrumbe.WanVae.load(directory, dtype=torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for t in ours16.parameters().values())
    x = frames((1, 3, 5, 16, 16))
    a, b = ours32.encode(x), ours16.encode(x)
    assert b.dtype == torch.float32  # the input's dtype
    assert max_abs(a, b) < 0.1 * a.abs().max().item()


def test_bad_inputs(tiny):
    _, directory = tiny
    ours = derrumbe.WanVae.load(directory)
    with pytest.raises(ValueError, match=r"frames must be 1 \+ 4k.*got 4"):
        ours.encode(frames((1, 3, 4, 16, 16)))
    with pytest.raises(ValueError, match="height = 20 is not a positive multiple of 8"):
        ours.encode(frames((1, 3, 5, 20, 16)))
    with pytest.raises(ValueError, match="width = 12 is not a positive multiple of 8"):
        ours.encode(frames((1, 3, 5, 16, 12)))
    with pytest.raises(ValueError, match="4 channels, the VAE takes in_channels = 3"):
        ours.encode(frames((1, 4, 5, 16, 16)))
    with pytest.raises(ValueError, match=r"\[B, C, F, H, W\]"):
        ours.encode(frames((3, 5, 16, 16)))
    with pytest.raises(ValueError, match="floating point"):
        ours.encode(torch.zeros(1, 3, 5, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="8 channels, the VAE takes z_dim = 16"):
        ours.decode(latents((1, 8, 2, 2, 2)))
    with pytest.raises(ValueError, match="empty dimension"):
        ours.decode(latents((1, 16, 0, 2, 2)))
    with pytest.raises(ValueError, match="multiples of 8 with overlap < tile"):
        ours.decode(latents((1, 16, 1, 4, 4)), tile_height=20, tile_width=16)
    with pytest.raises(ValueError, match="multiples of 8 with overlap < tile"):
        ours.decode(latents((1, 16, 1, 4, 4)), tile_height=16, tile_width=16, overlap=16)
    with pytest.raises(ValueError, match=">= 0"):
        ours.decode(latents((1, 16, 1, 4, 4)), tile_height=-8)


def write_variant(tiny, tmp_path, edit_tensors=None, edit_config=None):
    _, directory = tiny
    tensors = safetensors_torch.load_file(f"{directory}/diffusion_pytorch_model.safetensors")
    config = json.loads(open(f"{directory}/config.json").read())
    if edit_tensors:
        edit_tensors(tensors)
    if edit_config:
        edit_config(config)
    tmp_path.mkdir(exist_ok=True)
    safetensors_torch.save_file(tensors, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def test_missing_key_is_named(tiny, tmp_path):
    d = write_variant(tiny, tmp_path, edit_tensors=lambda t: t.pop("decoder.up_blocks.1.upsamplers.0.time_conv.weight"))
    with pytest.raises(ValueError, match=r"missing 'decoder\.up_blocks\.1\.upsamplers\.0\.time_conv\.weight' "
                                         r"\(expected shape \[6, 3, 3, 1, 1\]\)"):
        derrumbe.WanVae.load(d)


def test_misshaped_key_is_named(tiny, tmp_path):
    def edit(t):
        t["encoder.mid_block.attentions.0.to_qkv.weight"] = torch.zeros(9, 3, 1, 2)
    d = write_variant(tiny, tmp_path, edit_tensors=edit)
    with pytest.raises(ValueError, match=r"'encoder\.mid_block\.attentions\.0\.to_qkv\.weight' has shape "
                                         r"\[9, 3, 1, 2\], expected \[9, 3, 1, 1\]"):
        derrumbe.WanVae.load(d)


def test_unexpected_key_is_named(tiny, tmp_path):
    d = write_variant(tiny, tmp_path, edit_tensors=lambda t: t.update({"encoder.extra.weight": torch.zeros(2)}))
    with pytest.raises(ValueError, match=r"unexpected key.*'encoder\.extra\.weight'"):
        derrumbe.WanVae.load(d)


def test_bad_config(tiny, tmp_path):
    for sub, edit, exc, pattern in [
        # the Wan2.2 fields load now; with the Wan2.1 weights they do not match
        ("residual", lambda c: c.update(is_residual=True), ValueError,
         r"missing 'encoder\.down_blocks\.0\.resnets\.0\..*is_residual"),
        ("patch", lambda c: c.update(patch_size=2), ValueError, "multiples of patch_size\\^2 = 4"),
        ("decoder_dim", lambda c: c.update(decoder_base_dim=6), ValueError, r"'decoder\.conv_in\.weight' has shape"),
        ("spatial", lambda c: c.update(scale_factor_spatial=16), NotImplementedError, "scale_factor_spatial"),
        ("attn", lambda c: c.update(attn_scales=[0.5]), NotImplementedError, "attn_scales"),
        ("str", lambda c: c.update(base_dim="three"), ValueError, "base_dim"),
        ("tds", lambda c: c.update(temperal_downsample=[True, True]), ValueError, "temperal_downsample"),
        ("mean", lambda c: c.update(latents_mean=[0.0] * 15), ValueError, "latents_mean"),
        ("std0", lambda c: c.update(latents_std=[0.0] * 16), ValueError, "latents_std"),
        ("wider", lambda c: c.update(base_dim=4), ValueError, r"has shape .* expected"),
    ]:
        d = write_variant(tiny, tmp_path / sub, edit_config=edit)
        with pytest.raises(exc, match=pattern):
            derrumbe.WanVae.load(d)
    with pytest.raises(FileNotFoundError, match="config.json"):
        derrumbe.WanVae.load(str(tmp_path / "nowhere"))


# ---- Wan2.2 layout (AutoencoderKLWan with is_residual / patch_size / decoder_base_dim) ----------

def stats(z):
    return dict(latents_mean=[0.3 * ((i * 7) % 11 - 5) / 5 for i in range(z)],
                latents_std=[0.5 + 0.1 * ((i * 5) % 13) for i in range(z)])


# Wan2.2-TI2V-5B's layout shrunk: 48 latent channels, a narrower encoder than decoder, 2x2 patches
# (12 = 3 x 2 x 2 channels), 16 pixels per latent.
WAN22 = dict(base_dim=8, decoder_base_dim=12, z_dim=48, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
             temperal_downsample=[False, True, True], is_residual=True, patch_size=2, in_channels=12,
             out_channels=12, scale_factor_spatial=16, **stats(48))
# temporal levels first (DupUp3D with factor_t 2 on the last two decoder levels, a spatial-only
# one first), channel changes inside levels, 2 residual blocks, decoder_base_dim left null, and
# attn_scales (ignored by the residual layout)
WAN22_EARLY_T = dict(base_dim=8, z_dim=8, dim_mult=[1, 1, 2, 2], num_res_blocks=2, attn_scales=[1.0, 0.5],
                     temperal_downsample=[True, True, False], is_residual=True, patch_size=2, in_channels=12,
                     out_channels=12, scale_factor_spatial=16, **stats(8))
# the new fields one at a time: residual blocks without patchify, patchify (and a wider decoder)
# with the Wan2.1 blocks
RESIDUAL_P1 = dict(base_dim=8, decoder_base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                   temperal_downsample=[False, True, True], is_residual=True)
PATCH_21 = dict(base_dim=8, decoder_base_dim=12, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                temperal_downsample=[False, True, True], patch_size=2, in_channels=12, out_channels=12,
                scale_factor_spatial=16)
CONFIGS22 = {"wan22": WAN22, "wan22_early_t": WAN22_EARLY_T, "residual_p1": RESIDUAL_P1, "patch_21": PATCH_21}


def layout(config):
    """(frame channels, pixels per latent, latent channels) of a config."""
    p = config.get("patch_size") or 1
    s = p * 2 ** (len(config["dim_mult"]) - 1)
    return config.get("in_channels", 3) // (p * p), s, config["z_dim"]


@pytest.fixture(scope="module", params=list(CONFIGS22))
def vae22(request, tmp_path_factory):
    config = CONFIGS22[request.param]
    model = make_model(config)
    directory = tmp_path_factory.mktemp("wan_vae22_" + request.param)
    model.save_pretrained(str(directory), safe_serialization=True)
    return request.param, config, model, str(directory), derrumbe.WanVae.load(str(directory))


def test_parameters_are_the_diffusers_state_dict_22(vae22):
    _, config, model, _, ours = vae22
    expected = model.state_dict()
    got = ours.parameters()
    assert sorted(got) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    if config.get("is_residual"):  # the residual modules really are there
        assert "encoder.down_blocks.1.downsampler.resample.1.weight" in got
        assert "decoder.up_blocks.0.upsampler.resample.1.weight" in got
    ddim = config.get("decoder_base_dim") or config["base_dim"]
    assert got["decoder.conv_in.weight"].shape[0] == ddim * config["dim_mult"][-1]


def test_config_22(vae22):
    _, config, model, _, ours = vae22
    c = ours.config
    for key in ("base_dim", "z_dim", "num_res_blocks", "in_channels", "out_channels"):
        assert c[key] == model.config[key], key
    assert c["latents_mean"] == pytest.approx(model.config.latents_mean)
    assert c["latents_std"] == pytest.approx(model.config.latents_std)


# (batch, frames, latent height, latent width)
@pytest.mark.parametrize("shape", [(1, 9, 2, 2), (1, 5, 1, 3), (2, 1, 2, 1), (1, 13, 1, 1)])
def test_encode_matches_diffusers_22(vae22, shape):
    name, config, model, _, ours = vae22
    channels, s, z = layout(config)
    b, f, h, w = shape
    x = frames((b, channels, f, h * s, w * s))
    expected = reference_mean(model, x)
    got = ours.encode(x, normalize=False)
    assert got.shape == expected.shape == (b, z, 1 + (f - 1) // 4, h, w)
    assert expected.abs().max() > 0.05  # a real signal
    diff = max_abs(got, expected)
    print(f"{name} encode {tuple(x.shape)}: max abs diff {diff:.3g}")
    assert diff < TOL, f"{name} encode {tuple(x.shape)}: max abs diff {diff:.3g}"


# (batch, latent frames, latent height, latent width)
@pytest.mark.parametrize("shape", [(1, 3, 2, 2), (1, 1, 1, 3), (2, 2, 2, 1)])
def test_decode_matches_diffusers_22(vae22, shape):
    name, config, model, _, ours = vae22
    channels, s, z_dim = layout(config)
    b, f, h, w = shape
    z = latents((b, z_dim, f, h, w))
    expected = reference_decode(model, z)
    got = ours.decode(z, normalized=False)
    assert got.shape == expected.shape == (b, channels, 1 + 4 * (f - 1), s * h, s * w)
    inside = (expected.abs() < 1).float().mean().item()
    assert inside > 0.2, f"degenerate reference: only {inside:.0%} of the output is not clamped"
    assert got.abs().max() <= 1.0  # clamped
    diff = max_abs(got, expected)
    print(f"{name} decode {tuple(z.shape)}: max abs diff {diff:.3g}")
    assert diff < TOL, f"{name} decode {tuple(z.shape)}: max abs diff {diff:.3g}"


def test_latent_normalization_as_the_pipelines_22(vae22):
    name, config, model, _, ours = vae22
    channels, s, z_dim = layout(config)
    mean, inv_std = statistics(model)
    x = frames((1, channels, 5, s, 2 * s))
    mu = reference_mean(model, x)
    diff = max_abs(ours.encode(x), (mu - mean) * inv_std)
    assert diff < TOL, f"{name} normalized encode: max abs diff {diff:.3g}"
    z = latents((1, z_dim, 2, 2, 1))
    expected = reference_decode(model, z / inv_std + mean)
    diff = max_abs(ours.decode(z), expected)
    assert diff < TOL, f"{name} normalized decode: max abs diff {diff:.3g}"


# (batch, latent frames, latent height, latent width), tile height, tile width, overlap in units
# of the pixels per latent (16 with patch_size 2)
@pytest.mark.parametrize(
    "shape, tile_height, tile_width, overlap",
    [((1, 2, 4, 6), 2, 2, 1), ((1, 3, 5, 4), 2, 3, 1), ((1, 2, 4, 5), 3, 3, 2)],
)
def test_tiled_decode_matches_diffusers_22(vae22, shape, tile_height, tile_width, overlap):
    name, config, _, directory, ours = vae22
    _, s, z_dim = layout(config)
    tile_height, tile_width, overlap = tile_height * s, tile_width * s, overlap * s
    model = AutoencoderKLWan.from_pretrained(directory).eval()
    model.enable_tiling(tile_sample_min_height=tile_height, tile_sample_min_width=tile_width,
                        tile_sample_stride_height=tile_height - overlap, tile_sample_stride_width=tile_width - overlap)
    b, f, h, w = shape
    z = latents((b, z_dim, f, h, w), seed=3)
    expected = reference_decode(model, z)
    got = ours.decode(z, normalized=False, tile_height=tile_height, tile_width=tile_width, overlap=overlap)
    assert got.shape == expected.shape
    untiled = ours.decode(z, normalized=False)
    assert max_abs(got, untiled) > 1e-3  # tiling really happened
    diff = max_abs(got, expected)
    tiles = f"{tile_height}x{tile_width}/{overlap}"
    print(f"{name} tiled decode {tuple(z.shape)} tiles {tiles}: max abs diff {diff:.3g}")
    assert diff < TOL, f"{name} tiled decode {tuple(z.shape)} tiles {tiles}: max abs diff {diff:.3g}"


@pytest.fixture(scope="module")
def wan22(tmp_path_factory):
    model = make_model(WAN22)
    directory = tmp_path_factory.mktemp("wan_vae22_errors")
    model.save_pretrained(str(directory), safe_serialization=True)
    return model, str(directory)


def test_bfloat16_close_to_float32_22(wan22):
    _, directory = wan22
    ours32 = derrumbe.WanVae.load(directory)
    ours16 = derrumbe.WanVae.load(directory, dtype=torch.bfloat16)
    x = frames((1, 3, 5, 32, 32))
    a, b = ours32.encode(x), ours16.encode(x)
    assert b.dtype == torch.float32
    assert max_abs(a, b) < 0.1 * a.abs().max().item()
    z = latents((1, 48, 2, 2, 2))
    a, b = ours32.decode(z), ours16.decode(z)
    assert max_abs(a, b) < 0.2


def test_bad_inputs_22(wan22):
    _, directory = wan22
    ours = derrumbe.WanVae.load(directory)
    with pytest.raises(ValueError, match=r"12 channels, the VAE takes in_channels / patch_size\^2 = 3"):
        ours.encode(frames((1, 12, 5, 32, 32)))
    with pytest.raises(ValueError, match="height = 24 is not a positive multiple of 16"):
        ours.encode(frames((1, 3, 5, 24, 32)))
    with pytest.raises(ValueError, match="16 channels, the VAE takes z_dim = 48"):
        ours.decode(latents((1, 16, 2, 2, 2)))
    with pytest.raises(ValueError, match="multiples of 16 with overlap < tile"):
        ours.decode(latents((1, 48, 1, 4, 4)), tile_height=40, tile_width=32, overlap=16)
    with pytest.raises(ValueError, match="multiples of 16 with overlap < tile"):
        ours.decode(latents((1, 48, 1, 4, 4)), tile_height=32, tile_width=32, overlap=8)


def test_bad_config_22(wan22, tmp_path):
    for sub, edit, exc, pattern in [
        # AvgDown3D of the last encoder level: 16 -> 32 channels with factor 1 (diffusers raises too)
        ("avgdown", lambda c: c.update(dim_mult=[1, 2, 2, 4]), ValueError, r"encoder level 3 \(AvgDown3D 16 -> 32"),
        # DupUp3D of the last upsampling decoder level: 96 -> 12 channels, factor 4 (diffusers asserts)
        ("dupup", lambda c: c.update(dim_mult=[1, 1, 8, 8]), ValueError, r"decoder level 2 \(DupUp3D 96 -> 12"),
        ("patch3", lambda c: c.update(patch_size=3), ValueError, "multiples of patch_size\\^2 = 9"),
        ("spatial", lambda c: c.update(scale_factor_spatial=8), NotImplementedError,
         r"scale_factor_spatial = 8 differs from the network's patch_size x 2\^\(levels - 1\) = 16"),
        ("residual_off", lambda c: c.update(is_residual=False), ValueError, "missing|has shape"),
        ("dec_str", lambda c: c.update(decoder_base_dim="12"), ValueError, "decoder_base_dim"),
        ("dec_0", lambda c: c.update(decoder_base_dim=0), ValueError, "decoder_base_dim"),
        ("res_str", lambda c: c.update(is_residual="yes"), ValueError, "is_residual"),
    ]:
        d = write_variant(wan22, tmp_path / sub, edit_config=edit)
        with pytest.raises(exc, match=pattern):
            derrumbe.WanVae.load(d)
    with pytest.raises(ValueError, match="must be divisible by `out_channels`"):  # diffusers agrees
        AutoencoderKLWan(**{**WAN22, "dim_mult": [1, 2, 2, 4]})
    with pytest.raises(AssertionError):
        AutoencoderKLWan(**{**WAN22, "dim_mult": [1, 1, 8, 8]})
