"""End-to-end parity of a derrumbe Wan2.1 text-to-video run with diffusers' WanPipeline.

Everything expected is computed at test time by diffusers itself. The pipeline is built from
tiny components as diffusers' own tests/pipelines/wan/test_wan.py builds it (its transformer and
VAE configs, a base_dim 8 VAE as well, a tiny UMT5 encoder with d_model = the transformer's
text_dim, a T5 tokenizer on a SentencePiece model trained here), every parameter perturbed so
that each one matters. Each component is saved with save_pretrained and derrumbe loads its own
from those directories. Both sides run the same prompt / negative prompt with CFG scale 6 on
the CPU in float32, starting from the same noise:

* diffusers: ``WanPipeline(...)(prompt, negative_prompt, latents=noise, ...)``, once with
  output_type="latent" (the final latents) and once with output_type="pt" (the frames).
* derrumbe: ``encode_prompts`` (cond and negative) -> ``WanDenoiser`` -> ``Guided(cfg)`` ->
  ``sample`` on the matching VE sigmas, from the noise in VE form; at sigma 0 the VE x is the
  flow latent, decoded by ``WanVae.decode(normalized=True)`` (the pipeline un-normalizes with
  latents_mean / latents_std before vae.decode) and post-processed as VideoProcessor does for
  "pt": (x / 2 + 0.5).clamp(0, 1), laid out [B, F, C, H, W].

The flow <-> VE mapping is the one test_parity_diffusers.py uses: derrumbe gets the scheduler's own
flow times t (``scheduler.sigmas``) as VE sigmas t / (1 - t) (t = 1 maps to kFlowSigmaMax = 1e9),
and x_VE = x_t / (1 - t) = x_t (1 + sigma), so the start is noise * (1 + sigma_max); states are
compared in flow space, x_t = x_VE / (1 + sigma). ``schedules.flow_shift`` is checked against the
same t values (rtol 1e-6) but not sampled on: UniPC's first t is 1 - 1e-6, which diffusers keeps
in float32 as 0.99999899, a VE sigma of 986894 instead of 999999 and a transformer timestep of
999.99899 instead of 999.999; through the time embedding and CFG 6 that alone moves the result by
~4e-5 (measured), which would hide the ~1e-6 agreement of everything else.

Schedulers: FlowMatchEulerDiscreteScheduler(shift=7) (diffusers' Wan test) against derrumbe's
"euler", and UniPCMultistepScheduler(flow_prediction, use_flow_sigmas, flow_shift=3) (what Wan
ships; solver_order 2, bh2, corrector on, lower order at the end) against "uni_pc_bh2" with
order 2. UniPC's set_timesteps casts the transformer timesteps to int64 (999, 750, ...):
WanDenoiser(integer_timesteps=True) does the same; a second test keeps the pipeline's
timesteps as floats against the default WanDenoiser.
"""
import random

import pytest
import torch

import derrumbe

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")
from diffusers import (  # noqa: E402
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel  # noqa: E402

TOL = 1e-4

PROMPT = "a building collapses"
NEGATIVE = "blurry"
HEIGHT = WIDTH = 16
NUM_FRAMES = 9
MAX_LENGTH = 16
GUIDANCE = 6.0
LATENT_SHAPE = (1, 16, 3, 2, 2)  # [B, z_dim, 1 + (9 - 1) / 4, 16 / 8, 16 / 8]

# diffusers' tests/pipelines/wan/test_wan.py transformer
TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                   out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                   qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
VAES = {
    # diffusers' test VAE: base_dim 3 makes 1-channel RMS norms (a sign), so also a wider one
    "base3": dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                  temperal_downsample=[False, True, True]),
    "base8": dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=2,
                  temperal_downsample=[False, True, True]),
}
ENCODER = dict(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
               relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu")


# ---- components ----------------------------------------------------------------------------------


def perturbed(model, seed, scale=0.1):
    """Extra noise on every parameter (norm gains, biases, relative-bias tables included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model.eval()


WORDS = ("the a building collapses slowly into dust debris camera pans left right cinematic shot of tower "
         "concrete glass breaks explosion smoke sunset city street night rain slow motion wide angle close "
         "up falling bricks steel beams blurry low quality").split()
SYLLABLES = "ba be bi bo bu ka ke ki ko ku ta te ti to tu ra re ri ro ru sa se si so su str pl gr th sh".split()


def train_tokenizer(directory, vocab_size=300):
    """A SentencePiece unigram model with T5's special ids (pad 0, eos 1, unk 2, no bos)."""
    rng = random.Random(0)
    words = WORDS + ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(300)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(400)]
    directory.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(directory / "spiece"),
                                   vocab_size=vocab_size, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, character_coverage=1.0, minloglevel=2)
    # transformers 5.x: from_pretrained converts the SentencePiece model (T5Tokenizer(vocab_file=...)
    # would silently build a placeholder vocabulary).
    tokenizer = T5Tokenizer.from_pretrained(str(directory))
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1
    return tokenizer


@pytest.fixture(scope="module")
def text_side(tmp_path_factory):
    directory = tmp_path_factory.mktemp("wan_pipe_text")
    tokenizer = train_tokenizer(directory / "tokenizer")
    for text in (PROMPT, NEGATIVE):
        assert 2 not in tokenizer(text).input_ids  # every word is in the vocabulary, none is <unk>
    torch.manual_seed(0)
    encoder = perturbed(UMT5EncoderModel(UMT5Config(**ENCODER)), seed=1)
    encoder.save_pretrained(str(directory / "text_encoder"), safe_serialization=True)
    ours = (derrumbe.Tokenizer.load(str(directory / "tokenizer")),
            derrumbe.UMT5Encoder.load(str(directory / "text_encoder")))
    return tokenizer, encoder, ours


@pytest.fixture(scope="module")
def transformer_pair(tmp_path_factory):
    torch.manual_seed(0)
    model = perturbed(WanTransformer3DModel(**TRANSFORMER), seed=2)
    directory = tmp_path_factory.mktemp("wan_pipe_transformer")
    model.save_pretrained(str(directory), safe_serialization=True)
    return model, derrumbe.WanTransformer.load(str(directory))


@pytest.fixture(scope="module", params=list(VAES))
def vae_pair(request, tmp_path_factory):
    torch.manual_seed(0)
    model = perturbed(AutoencoderKLWan(**VAES[request.param]), seed=3)
    directory = tmp_path_factory.mktemp("wan_pipe_vae_" + request.param)
    model.save_pretrained(str(directory), safe_serialization=True)
    return request.param, model, derrumbe.WanVae.load(str(directory))


def start_noise(seed=4):
    return torch.randn(LATENT_SHAPE, generator=torch.Generator().manual_seed(seed))


# ---- the two runs --------------------------------------------------------------------------------


def run_diffusers(text_side, transformer_pair, vae_pair, scheduler, steps, noise, low_expert=None,
                  boundary_ratio=None):
    """(final latents, frames [B, F, C, H, W], the latents after each step). With a low-noise
    expert and a boundary it is Wan2.2-A14B's two-expert pipeline, else Wan2.1's."""
    tokenizer, encoder, _ = text_side
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=encoder, transformer=transformer_pair[0],
                       transformer_2=low_expert and low_expert[0], boundary_ratio=boundary_ratio,
                       vae=vae_pair[1], scheduler=scheduler)
    assert pipe.config.boundary_ratio == boundary_ratio
    pipe.set_progress_bar_config(disable=True)
    trajectory = []

    def record(pipeline, i, t, kwargs):
        trajectory.append(kwargs["latents"].clone())
        return {}

    call = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH, num_frames=NUM_FRAMES,
                num_inference_steps=steps, guidance_scale=GUIDANCE, max_sequence_length=MAX_LENGTH)
    with torch.no_grad():
        latents = pipe(**call, latents=noise.clone(), output_type="latent",
                       callback_on_step_end=record).frames
        frames = pipe(**call, latents=noise.clone(), output_type="pt").frames
        embeds = pipe.encode_prompt(PROMPT, NEGATIVE, do_classifier_free_guidance=True,
                                    max_sequence_length=MAX_LENGTH)
    return latents, frames, trajectory, embeds


def run_derrumbe(text_side, transformer_pair, vae_pair, sigmas, sampler, noise, integer_timesteps=False,
                 low_expert=None, boundary=None, **options):
    """(final latents, frames [B, F, C, H, W], the VE states after each step, (cond, negative)).
    With a low-noise expert: ExpertSwitch(high, low, boundary) in place of the one transformer."""
    tokenizer, encoder = text_side[2]
    cond = derrumbe.encode_prompts(tokenizer, encoder, [PROMPT], max_length=MAX_LENGTH)
    negative = derrumbe.encode_prompts(tokenizer, encoder, [NEGATIVE], max_length=MAX_LENGTH)
    denoiser = derrumbe.WanDenoiser(transformer_pair[1], cond, negative, integer_timesteps=integer_timesteps)
    if low_expert is not None:
        low = derrumbe.WanDenoiser(low_expert[1], cond, negative, integer_timesteps=integer_timesteps)
        denoiser = derrumbe.ExpertSwitch(denoiser, low, boundary)
    model = derrumbe.Guided(denoiser, method="cfg", scale=GUIDANCE)
    states = []

    def record(info):
        states.append(info["x"].clone())
        return False

    x = noise * (1 + float(sigmas[0]))  # x_VE = x_t / (1 - t); t = 1 is sigma 1e9
    final = derrumbe.sample(model, x, sigmas, sampler, progress=False, callback=record, **options)
    assert float(sigmas[-1]) == 0.0  # at sigma 0 the VE x is the flow latent
    decoded = vae_pair[2].decode(final, normalized=True)  # [B, C, F, H, W] in [-1, 1]
    frames = (decoded * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)  # VideoProcessor, output_type "pt"
    return final, frames, states, (cond, negative)


def max_abs(a, b):
    return (a.double() - b.double()).abs().max().item()


def compare(name, ours, theirs, sigmas):
    """Assert the embeddings, the trajectory (in flow space), the final latents and the frames."""
    latents, frames, states, embeds = ours
    ref_latents, ref_frames, ref_trajectory, ref_embeds = theirs

    for what, a, b in zip(("prompt", "negative"), embeds, ref_embeds):
        d = max_abs(a, b)
        assert d < TOL, f"{name}: {what} embeddings max abs diff {d:.3e}"

    assert len(states) == len(ref_trajectory) == len(sigmas) - 1
    flow = [x / (1 + float(s)) for x, s in zip(states, sigmas[1:])]  # x_t = x_VE / (1 + sigma)
    step_diffs = [max_abs(a, b) for a, b in zip(flow, ref_trajectory)]

    assert latents.shape == ref_latents.shape == LATENT_SHAPE and latents.dtype == torch.float32
    assert frames.shape == ref_frames.shape == (1, NUM_FRAMES, 3, HEIGHT, WIDTH)
    assert ref_latents.abs().max() > 0.1  # a real signal
    inside = ((ref_frames > 0) & (ref_frames < 1)).float().mean().item()
    assert inside > 0.2, f"{name}: degenerate reference, only {inside:.0%} of the frames are not clamped"

    d_latents = max_abs(latents, ref_latents)
    d_frames = max_abs(frames, ref_frames)
    report = (f"{name}: max abs diff latents {d_latents:.3e} (scale {ref_latents.abs().max().item():.3g}), "
              f"frames {d_frames:.3e}, per step {', '.join(f'{d:.3e}' for d in step_diffs)}")
    print(report)
    assert max(step_diffs) < TOL, report
    assert d_latents < TOL, report
    assert d_frames < TOL, report
    return d_latents, d_frames


def flow_t(sigmas):
    return torch.tensor([derrumbe.schedules.sigma_to_flow_t(float(s)) for s in sigmas], dtype=torch.float64)


def ve_sigmas(scheduler, steps, ours):
    """The scheduler's flow times as derrumbe's VE sigmas, after checking that derrumbe's own
    schedule (``ours``, VE sigmas) gives the same t values."""
    scheduler.set_timesteps(steps)
    t_values = scheduler.sigmas.double()
    torch.testing.assert_close(flow_t(ours), t_values, rtol=1e-6, atol=0)
    return torch.tensor([derrumbe.schedules.flow_t_to_sigma(float(t)) for t in t_values], dtype=torch.float64)


# ---- FlowMatchEulerDiscreteScheduler (diffusers' Wan test) vs euler ------------------------------


def test_euler_matches_wan_pipeline(text_side, transformer_pair, vae_pair):
    steps = 2
    reference = FlowMatchEulerDiscreteScheduler(shift=7.0)
    sigmas = ve_sigmas(FlowMatchEulerDiscreteScheduler(shift=7.0), steps,
                       derrumbe.schedules.flow_shift(steps, shift=7.0, spacing="euler"))
    assert float(sigmas[0]) == 1e9  # t = 1

    noise = start_noise()
    theirs = run_diffusers(text_side, transformer_pair, vae_pair, reference, steps, noise)
    ours = run_derrumbe(text_side, transformer_pair, vae_pair, sigmas, "euler", noise)
    compare(f"euler/{vae_pair[0]}", ours, theirs, sigmas)

    # guidance matters: without it (the cond branch alone) the run ends elsewhere
    tokenizer, encoder = text_side[2]
    cond = derrumbe.encode_prompts(tokenizer, encoder, [PROMPT], max_length=MAX_LENGTH)
    unguided = derrumbe.sample(derrumbe.WanDenoiser(transformer_pair[1], cond), noise * (1 + float(sigmas[0])),
                               sigmas, "euler", progress=False)
    assert max_abs(unguided, theirs[0]) > 1e-2


# ---- Wan2.2-A14B: two experts switched at a boundary (ExpertSwitch) -----------------------------


def test_expert_switch_matches_two_expert_wan_pipeline(text_side, transformer_pair, vae_pair, tmp_path):
    """WanPipeline(transformer_2=low, boundary_ratio) runs the high-noise expert while the
    transformer timestep t * 1000 >= boundary_ratio * 1000, then the low-noise one, with the same
    CFG scale (guidance_scale_2 defaults to guidance_scale). Euler with shift 7 over 4 steps
    visits t = 1, 0.955, 0.875, 0.7: a boundary of 0.9 gives each expert two steps, none of them
    near the boundary."""
    torch.manual_seed(1)
    low_model = perturbed(WanTransformer3DModel(**TRANSFORMER), seed=6)
    low_model.save_pretrained(str(tmp_path / "low"), safe_serialization=True)
    low_expert = (low_model, derrumbe.WanTransformer.load(str(tmp_path / "low")))
    steps, boundary = 4, 0.9
    sigmas = ve_sigmas(FlowMatchEulerDiscreteScheduler(shift=7.0), steps,
                       derrumbe.schedules.flow_shift(steps, shift=7.0, spacing="euler"))
    t = flow_t(sigmas)
    assert (t[:-1] >= boundary).sum() == 2 and (t[:-1] - boundary).abs().min() > 0.02

    noise = start_noise(seed=6)
    theirs = run_diffusers(text_side, transformer_pair, vae_pair, FlowMatchEulerDiscreteScheduler(shift=7.0), steps,
                           noise, low_expert=low_expert, boundary_ratio=boundary)
    ours = run_derrumbe(text_side, transformer_pair, vae_pair, sigmas, "euler", noise, low_expert=low_expert,
                        boundary=boundary)
    compare(f"two experts/{vae_pair[0]}", ours, theirs, sigmas)

    # each expert matters: the high-noise one alone ends elsewhere, and so does the low-noise one
    high_only = run_derrumbe(text_side, transformer_pair, vae_pair, sigmas, "euler", noise)[0]
    low_only = run_derrumbe(text_side, low_expert, vae_pair, sigmas, "euler", noise)[0]
    assert max_abs(high_only, theirs[0]) > 1e-2 and max_abs(low_only, theirs[0]) > 1e-2


# ---- UniPCMultistepScheduler (what Wan ships) vs uni_pc_bh2 --------------------------------------


def unipc(**overrides):
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                   **overrides)


class FloatTimestepUniPC(UniPCMultistepScheduler):
    """UniPC whose timesteps stay t * 1000 as floats (set_timesteps casts them to int64)."""

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        self.timesteps = self.sigmas[:-1] * self.config.num_train_timesteps


def unipc_sigmas(steps):
    check = unipc()
    assert check.config.solver_order == 2 and check.config.solver_type == "bh2"
    assert check.config.lower_order_final and not check.config.disable_corrector
    return ve_sigmas(check, steps, derrumbe.schedules.flow_shift(steps, shift=3.0, spacing="unipc"))


@pytest.mark.parametrize("steps", [2, 3])
def test_unipc_matches_wan_pipeline(text_side, transformer_pair, vae_pair, steps):
    sigmas = unipc_sigmas(steps)
    noise = start_noise(seed=5)
    theirs = run_diffusers(text_side, transformer_pair, vae_pair, unipc(), steps, noise)
    ours = run_derrumbe(text_side, transformer_pair, vae_pair, sigmas, "uni_pc_bh2", noise, integer_timesteps=True,
                        order=2)
    compare(f"unipc/{steps} steps/{vae_pair[0]}", ours, theirs, sigmas)


@pytest.mark.parametrize("steps", [2, 3])
def test_unipc_with_float_timesteps_matches_wan_pipeline(text_side, transformer_pair, vae_pair, steps):
    """The same run with the pipeline's transformer timesteps kept unrounded (t * 1000): everything
    else (UniPC bh2 order 2 with its corrector, CFG, text encoder, VAE) must agree."""
    sigmas = unipc_sigmas(steps)
    reference = FloatTimestepUniPC.from_config(unipc().config)
    noise = start_noise(seed=5)
    theirs = run_diffusers(text_side, transformer_pair, vae_pair, reference, steps, noise)
    ours = run_derrumbe(text_side, transformer_pair, vae_pair, sigmas, "uni_pc_bh2", noise, order=2)
    compare(f"unipc float timesteps/{steps} steps/{vae_pair[0]}", ours, theirs, sigmas)
