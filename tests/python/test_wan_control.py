"""Control-video conditioning as the public Wan control models take it, against diffusers.

* VACE (Wan2.1-VACE): derrumbe's transformer with VACE blocks against diffusers'
  WanVACETransformer3DModel (tiny configs, every parameter perturbed so that each matters),
  ``vace_context`` against WanVACEPipeline.prepare_video_latents + prepare_masks, and a 2-step
  UniPC run against WanVACEPipeline itself (text encoder, VACE transformer, VAE, CFG).
* Channel concatenation (Wan2.1-Fun-Control: in_channels 48 = noisy latents, control latents,
  an empty reference-image slot): WanDenoiser's input against diffusers' WanTransformer3DModel
  called on the concatenation ComfyUI's WanFunControlToVideo builds.
"""
import pytest
import torch
from PIL import Image

import derrumbe

diffusers = pytest.importorskip("diffusers")
from diffusers import WanTransformer3DModel, WanVACEPipeline, WanVACETransformer3DModel  # noqa: E402

from test_wan_pipeline import (  # noqa: E402,F401  (fixtures and helpers of the plain pipeline's parity test)
    GUIDANCE, HEIGHT, MAX_LENGTH, NEGATIVE, NUM_FRAMES, PROMPT, TRANSFORMER, WIDTH, max_abs, perturbed, text_side,
    unipc, unipc_sigmas, vae_pair)

TOL = 1e-4
VACE = dict(TRANSFORMER, num_layers=3, vace_layers=[0, 2], vace_in_channels=96)
VACE_EVERY_LAYER = dict(TRANSFORMER, num_layers=2, vace_layers=[0, 1], vace_in_channels=40, attention_head_dim=10)


def vace_model(config, seed=2):
    torch.manual_seed(0)
    return perturbed(WanVACETransformer3DModel(**config), seed=seed)


def saved(model, directory):
    model.save_pretrained(str(directory), safe_serialization=True)
    return str(directory)


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---- the VACE transformer ------------------------------------------------------------------------


@pytest.mark.parametrize("config,batch,scale", [(VACE, 1, 1.0), (VACE, 2, 0.6), (VACE_EVERY_LAYER, 1, 1.7)])
def test_vace_transformer_matches_diffusers(tmp_path, config, batch, scale):
    model = vace_model(config)
    ours = derrumbe.WanTransformer.load(saved(model, tmp_path))
    assert ours.config["vace_layers"] == config["vace_layers"]
    assert sorted(ours.parameters()) == sorted(model.state_dict())
    x = randn(batch, 16, 3, 8, 12, seed=1)
    control = randn(batch, config["vace_in_channels"], 3, 8, 12, seed=2)
    t = torch.tensor([700.0, 31.0])[:batch]
    ctx = randn(batch, 8, config["text_dim"], seed=3)
    with torch.no_grad():
        expected = model(x, t, ctx, control_hidden_states=control,
                         control_hidden_states_scale=torch.full((len(config["vace_layers"]),), scale),
                         return_dict=False)[0]
    got = ours(x, t, ctx, control=control, control_scale=scale)
    d = max_abs(got, expected)
    assert d < TOL, f"VACE transformer {config['vace_layers']}, batch {batch}: max abs diff {d:.3e}"
    # the control matters, and without it the model is its text-to-video self (no hints)
    assert max_abs(ours(x, t, ctx, control=control * 0.5, control_scale=scale), expected) > 1e-3
    with torch.no_grad():
        no_hints = model(x, t, ctx, control_hidden_states=control,
                         control_hidden_states_scale=torch.zeros(len(config["vace_layers"])), return_dict=False)[0]
    assert max_abs(ours(x, t, ctx), no_hints) < TOL


def test_vace_single_file_in_the_original_layout(tmp_path):
    """The Wan repository's / ComfyUI's VACE file: vace_blocks.N.before_proj/after_proj, the layers
    inferred from the block count (every 3rd of 6 here, as 1.3B has every 2nd of 30)."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    config = dict(TRANSFORMER, num_layers=6, vace_layers=[0, 3], vace_in_channels=96)
    model = vace_model(config)
    original = {}
    for name, p in model.state_dict().items():
        key = name
        for ours_, theirs in (("attn1.", "self_attn."), ("attn2.", "cross_attn."), (".to_out.0.", ".o."),
                              (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."), ("ffn.net.0.proj", "ffn.0"),
                              ("ffn.net.2", "ffn.2"), ("norm2", "norm3"), ("proj_in", "before_proj")):
            key = key.replace(ours_, theirs)
        if key.startswith("vace_blocks."):
            key = key.replace("proj_out", "after_proj").replace("scale_shift_table", "modulation")
        elif key.startswith("blocks."):
            key = key.replace("scale_shift_table", "modulation")
        key = {"scale_shift_table": "head.modulation", "proj_out.weight": "head.head.weight",
               "proj_out.bias": "head.head.bias"}.get(key, key)
        for d, o in (("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
                     ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
                     ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
                     ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
                     ("condition_embedder.time_proj", "time_projection.1")):
            key = key.replace(d, o)
        original["model.diffusion_model." + key] = p.contiguous()
    assert "model.diffusion_model.vace_blocks.0.before_proj.weight" in original
    assert "model.diffusion_model.vace_blocks.1.after_proj.weight" in original
    file = tmp_path / "wan2.1_vace_tiny.safetensors"
    safetensors_torch.save_file(original, str(file))
    ours = derrumbe.load_wan_transformer_file(str(file), config='{"attention_head_dim": 12}')
    assert ours.config["vace_layers"] == [0, 3] and ours.config["vace_in_channels"] == 96
    x, control, ctx = randn(1, 16, 2, 4, 4, seed=1), randn(1, 96, 2, 4, 4, seed=2), randn(1, 5, 32, seed=3)
    t = torch.tensor([500.0])
    with torch.no_grad():
        expected = model(x, t, ctx, control_hidden_states=control, return_dict=False)[0]
    assert max_abs(ours(x, t, ctx, control=control), expected) < TOL


def test_vace_control_errors_name_what_is_wrong(tmp_path):
    ours = derrumbe.WanTransformer.load(saved(vace_model(VACE), tmp_path / "vace"))
    x, t, ctx = randn(1, 16, 2, 4, 4, seed=1), torch.tensor([500.0]), randn(1, 5, 32, seed=3)
    with pytest.raises(ValueError, match=r"control must be floating point \[B, vace_in_channels, F, H, W\]"):
        ours(x, t, ctx, control=randn(1, 95, 2, 4, 4, seed=2))
    with pytest.raises(ValueError, match="control must be"):
        ours(x, t, ctx, control=randn(1, 96, 3, 4, 4, seed=2))
    torch.manual_seed(0)
    plain = derrumbe.WanTransformer.load(saved(WanTransformer3DModel(**TRANSFORMER), tmp_path / "plain"))
    with pytest.raises(ValueError, match="the model has no VACE blocks"):
        plain(x, t, ctx, control=randn(1, 96, 2, 4, 4, seed=2))
    with pytest.raises(ValueError, match="control.vace was given, but the transformer has no VACE blocks"):
        derrumbe.WanDenoiser(plain, ctx, vace_context=randn(1, 96, 2, 4, 4, seed=2))
    with pytest.raises(ValueError, match="must be finite"):
        derrumbe.WanDenoiser(ours, ctx, vace_context=torch.full((1, 96, 2, 4, 4), float("nan")))


# ---- the VACE context and a whole VACE run -------------------------------------------------------


def control_frames(seed=7):
    """A control video as PIL frames (what WanVACEPipeline takes) and as [1, 3, F, H, W] in [-1, 1]."""
    pixels = (torch.rand(NUM_FRAMES, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(seed)) * 255).to(
        torch.uint8)
    frames = [Image.fromarray(p.numpy()) for p in pixels]
    return frames, (pixels.permute(3, 0, 1, 2).float() / 255 * 2 - 1).unsqueeze(0)


def vace_pipeline(text_side, transformer, vae):
    tokenizer, encoder, _ = text_side
    pipe = WanVACEPipeline(tokenizer=tokenizer, text_encoder=encoder, transformer=transformer, vae=vae,
                           scheduler=unipc())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("with_mask", [False, True])
def test_vace_context_matches_the_pipeline(text_side, vae_pair, with_mask):
    torch.manual_seed(0)
    pipe = vace_pipeline(text_side, WanVACETransformer3DModel(**VACE), vae_pair[1])
    _, video = control_frames()
    # a soft mask: the latents see it binarized, the mask channels its values
    mask = torch.rand(1, NUM_FRAMES, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(8)) if with_mask else None
    pipe_mask = (mask if with_mask else torch.ones(1, NUM_FRAMES, HEIGHT, WIDTH)).unsqueeze(1).expand(1, 3, -1, -1, -1)
    with torch.no_grad():
        latents = pipe.prepare_video_latents(video, pipe_mask, [[]], device=torch.device("cpu"))
        expected = torch.cat([latents, pipe.prepare_masks(pipe_mask, [[]])], dim=1)
    got = derrumbe.vace_context(vae_pair[2], video, mask)
    assert got.shape == expected.shape == (1, 96, 3, 2, 2)
    d = max_abs(got, expected)
    assert d < TOL, f"vace_context ({vae_pair[0]}, mask {with_mask}): max abs diff {d:.3e}"


def test_vace_context_errors(vae_pair):
    _, video = control_frames()
    with pytest.raises(ValueError, match=r"video must be \[B, 3, F, H, W\]"):
        derrumbe.vace_context(vae_pair[2], video[:, :2])
    with pytest.raises(ValueError, match="multiples of the VAE's factor 8"):
        derrumbe.vace_context(vae_pair[2], video[..., :12])
    with pytest.raises(ValueError, match=r"mask must be floating point \[B, F, H, W\]"):
        derrumbe.vace_context(vae_pair[2], video, torch.ones(1, NUM_FRAMES, HEIGHT, 8))
    with pytest.raises(ValueError, match="finite"):
        derrumbe.vace_context(vae_pair[2], video * float("nan"))


def test_two_step_vace_run_matches_the_pipeline(text_side, vae_pair, tmp_path):
    """WanVACEPipeline (UniPC, CFG, conditioning_scale 0.8) against encode_prompts -> vace_context ->
    WanDenoiser(vace_context) -> Guided(cfg) -> uni_pc_bh2, from the same noise."""
    steps, scale = 2, 0.8
    model = vace_model(VACE)
    pipe = vace_pipeline(text_side, model, vae_pair[1])
    frames, video = control_frames()
    noise = randn(1, 16, 3, 2, 2, seed=4)
    with torch.no_grad():
        expected = pipe(video=frames, prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH,
                        num_frames=NUM_FRAMES, num_inference_steps=steps, guidance_scale=GUIDANCE,
                        conditioning_scale=scale, max_sequence_length=MAX_LENGTH, latents=noise.clone(),
                        output_type="latent").frames
    tokenizer, encoder = text_side[2]
    cond = derrumbe.encode_prompts(tokenizer, encoder, [PROMPT], max_length=MAX_LENGTH)
    negative = derrumbe.encode_prompts(tokenizer, encoder, [NEGATIVE], max_length=MAX_LENGTH)
    transformer = derrumbe.WanTransformer.load(saved(model, tmp_path))
    context = derrumbe.vace_context(vae_pair[2], video)
    denoiser = derrumbe.WanDenoiser(transformer, cond, negative, integer_timesteps=True, vace_context=context,
                                    control_scale=scale)
    sigmas = unipc_sigmas(steps)
    got = derrumbe.sample(derrumbe.Guided(denoiser, method="cfg", scale=GUIDANCE), noise * (1 + float(sigmas[0])),
                          sigmas, "uni_pc_bh2", order=2, progress=False)
    assert expected.abs().max() > 0.1
    d = max_abs(got, expected)
    assert d < TOL, f"2-step VACE run ({vae_pair[0]}): max abs diff {d:.3e}"
    # the control steers the run
    plain = derrumbe.WanDenoiser(transformer, cond, negative, integer_timesteps=True)
    other = derrumbe.sample(derrumbe.Guided(plain, method="cfg", scale=GUIDANCE), noise * (1 + float(sigmas[0])),
                            sigmas, "uni_pc_bh2", order=2, progress=False)
    assert max_abs(other, expected) > 1e-2


# ---- channel concatenation (Fun-Control) ---------------------------------------------------------


@pytest.fixture(scope="module")
def fun_control(tmp_path_factory):
    torch.manual_seed(0)
    model = perturbed(WanTransformer3DModel(**dict(TRANSFORMER, in_channels=48, out_channels=16)), seed=5)
    return model, derrumbe.WanTransformer.load(saved(model, tmp_path_factory.mktemp("fun_control")))


def flow_x0(model, x_ve, sigma, model_input_channels, context=None):
    """The x0 WanDenoiser gives for flow prediction: x_t = x / (1 + sigma), D = x_t - t v."""
    t = sigma / (1 + sigma)
    x_t = x_ve / (1 + sigma)
    with torch.no_grad():
        v = model(model_input_channels(x_t), torch.tensor([t * 1000.0]), CONTEXT if context is None else context,
                  return_dict=False)[0]
    return x_t - t * v


CONTEXT = randn(1, 6, 32, seed=9)


def test_fun_control_concatenation_matches_comfyui_layout(fun_control):
    model, ours = fun_control
    x, sigma = randn(1, 16, 3, 4, 6, seed=1), 2.5
    control = randn(1, 16, 3, 4, 6, seed=2)
    zeros = torch.zeros_like(control)
    # WanFunControlToVideo: [noisy latents, control latents, reference-image latents (none: zeros)]
    expected = flow_x0(model, x, sigma, lambda x_t: torch.cat([x_t, control, zeros], 1))
    got = derrumbe.WanDenoiser(ours, CONTEXT, control_latents=control)(x, sigma)
    d = max_abs(got, expected)
    assert d < TOL, f"Fun-Control concatenation: max abs diff {d:.3e}"
    # no control: zeros in both slots, and it differs from the controlled output
    unconditioned = flow_x0(model, x, sigma, lambda x_t: torch.cat([x_t, zeros, zeros], 1))
    assert max_abs(derrumbe.WanDenoiser(ours, CONTEXT)(x, sigma), unconditioned) < TOL
    assert max_abs(unconditioned, expected) > 1e-3
    # a batch of two with one control for both, through CFG's two branches
    x2 = randn(2, 16, 3, 4, 6, seed=3)
    guided = derrumbe.Guided(derrumbe.WanDenoiser(ours, CONTEXT, CONTEXT * 0, control_latents=control), scale=3.0)
    out = guided(x2, sigma)
    single = guided(x2[1:], sigma)
    assert max_abs(out[1:], single) < TOL


def test_fun_control_errors(fun_control, tmp_path):
    _, ours = fun_control
    with pytest.raises(ValueError, match=r"control.concat must be \[B, C <= 32, F, H, W\]"):
        derrumbe.WanDenoiser(ours, CONTEXT, control_latents=randn(1, 48, 3, 4, 6, seed=2))
    denoiser = derrumbe.WanDenoiser(ours, CONTEXT, control_latents=randn(1, 16, 2, 4, 6, seed=2))
    with pytest.raises(ValueError, match="frames, height and width must agree"):
        denoiser(randn(1, 16, 3, 4, 6, seed=1), 1.0)
    torch.manual_seed(0)
    plain = derrumbe.WanTransformer.load(saved(WanTransformer3DModel(**TRANSFORMER), tmp_path))
    with pytest.raises(ValueError, match="takes no channels beyond the latents"):
        derrumbe.WanDenoiser(plain, CONTEXT, control_latents=randn(1, 16, 3, 4, 6, seed=2))


def test_control_guidance_runs_the_negative_branch_without_the_control(fun_control, tmp_path):
    """control_in_uncond=False: CFG = uncond(no control, negative prompt) + s (cond(control) - uncond)."""
    model, ours = fun_control
    x, sigma, scale = randn(1, 16, 3, 4, 6, seed=1), 1.5, 4.0
    control, negative = randn(1, 16, 3, 4, 6, seed=2), randn(1, 6, 32, seed=10)
    zeros = torch.zeros_like(control)
    cond = flow_x0(model, x, sigma, lambda x_t: torch.cat([x_t, control, zeros], 1))
    uncond = flow_x0(model, x, sigma, lambda x_t: torch.cat([x_t, zeros, zeros], 1), negative)
    uncond_with_control = flow_x0(model, x, sigma, lambda x_t: torch.cat([x_t, control, zeros], 1), negative)
    guided = derrumbe.Guided(derrumbe.WanDenoiser(ours, CONTEXT, negative, control_latents=control,
                                                  control_in_uncond=False), scale=scale)
    expected = uncond + scale * (cond - uncond)
    assert max_abs(guided(x, sigma), expected) < TOL
    plain = derrumbe.Guided(derrumbe.WanDenoiser(ours, CONTEXT, negative, control_latents=control), scale=scale)
    assert max_abs(plain(x, sigma), uncond_with_control + scale * (cond - uncond_with_control)) < TOL
    assert max_abs(plain(x, sigma), expected) > 1e-3

    # VACE: the negative branch runs without hints
    vace = vace_model(VACE)
    transformer = derrumbe.WanTransformer.load(saved(vace, tmp_path / "vace"))
    context = randn(1, 96, 3, 4, 6, seed=11)
    t = sigma / (1 + sigma)
    with torch.no_grad():
        def x0(ctx, scales):
            v = vace(x / (1 + sigma), torch.tensor([t * 1000]), ctx, control_hidden_states=context,
                     control_hidden_states_scale=torch.full((2,), scales), return_dict=False)[0]
            return x / (1 + sigma) - t * v
        expected = x0(negative, 0.0) + scale * (x0(CONTEXT, 0.7) - x0(negative, 0.0))
    guided = derrumbe.Guided(derrumbe.WanDenoiser(transformer, CONTEXT, negative, vace_context=context,
                                                  control_scale=0.7, control_in_uncond=False), scale=scale)
    assert max_abs(guided(x, sigma), expected) < TOL
