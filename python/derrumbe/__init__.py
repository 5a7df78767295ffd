"""derrumbe: physics-conditioned video diffusion inference.

Samplers follow k-diffusion's conventions: a model is any callable ``model(x, sigma) -> x0``
on torch tensors (``sigma`` a tensor of shape ``[B]``), in the variance-exploding form
``x = x0 + sigma * noise``; sigmas are a decreasing 1-D float64 tensor, usually ending in 0.
"""
import math

import torch  # loads LibTorch before the native module

from . import _derrumbe, schedules
from ._derrumbe import io
from .shot import Shot, ShotResult, StageRecord
from ._derrumbe import (
    AOVs,
    Cancelled,
    Composite,
    ConditionalDenoiser,
    Denoiser,
    Energy,
    EnergyGuided,
    ExpertSwitch,
    FlowWarpEnergy,
    GaussianMixture,
    Guided,
    MaskEnergy,
    NoiseWarper,
    Parameterized,
    SamplerState,
    Scene,
    SimTrack,
    StepHook,
    Tokenizer,
    UMT5Encoder,
    WanBundle,
    WanDenoiser,
    WanTransformer,
    WanVae,
    aov_channel_names,
    aovs_to_tensor,
    cfg_combine,
    cfg_zero_combine,
    default_model_path,
    encode_prompts,
    latent_flow,
    load_aoti,
    load_umt5_file,
    load_wan_transformer_file,
    load_wan_vae_file,
    load_torchscript,
    prepare_mask,
    randn,
    reduce_frames,
    samplers,
    start_state,
    vace_context,
    warp_noise,
)

__version__ = _derrumbe.version()
__all__ = [
    "AOVs", "Cancelled", "Composite", "ConditionalDenoiser", "Denoiser", "Energy", "EnergyGuided",
    "ExpertSwitch", "FlowWarpEnergy", "GaussianMixture", "Guided", "MaskEnergy", "NoiseWarper",
    "Parameterized", "SamplerState", "Scene", "SimTrack", "StepHook", "Tokenizer", "UMT5Encoder",
    "WanBundle", "WanDenoiser", "WanTransformer", "WanVae", "aov_channel_names", "aovs_to_tensor", "cfg_combine",
    "cfg_zero_combine", "default_model_path", "encode_prompts", "io", "latent_flow", "load_aoti", "load_torchscript", "load_umt5_file",
    "load_wan_transformer_file", "load_wan_vae_file", "prepare_mask",
    "randn", "reduce_frames", "run", "sample", "samplers", "schedules", "sdedit_start", "Shot", "ShotResult",
    "StageRecord", "start_state", "vace_context", "warp_noise",
]


def _as_sigmas(sigmas):
    if isinstance(sigmas, torch.Tensor):
        return sigmas
    return torch.tensor(list(sigmas), dtype=torch.float64)


def _with_progress(num_steps, progress, callback):
    """A per-step callback that advances a tqdm bar and forwards to the user's callback."""
    if not progress and callback is None:
        return None, None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps)

    def step(info):
        if bar is not None:
            bar.update(1)
        return bool(callback(info)) if callback is not None else False

    return step, bar


def sample(model, x, sigmas, sampler="dpmpp_2m", *, progress=True, callback=None, **options):
    """Sample from ``x`` (already scaled to ``sigmas[0]``) and return the final ``x``.

    ``callback(info)`` gets a dict (step, num_steps, sigma, sigma_next, x, denoised) after each
    step and returns a true value to cancel (raising :class:`Cancelled`). Options: eta, s_noise,
    s_churn, s_tmin, s_tmax, order, uni_pc_corrector, dpmpp_sde_r, seed, batch_offset,
    ``noise(like, step, draw, sigma, sigma_next)`` to supply the noise of stochastic steps, and
    ``hooks``: step hooks run after each step (a :class:`Composite`, or callables
    ``hook(info) -> x`` getting the callback's dict).
    """
    sigmas = _as_sigmas(sigmas)
    step, bar = _with_progress(max(len(sigmas) - 1, 0), progress, callback)
    try:
        return _derrumbe.sample(model, x, sigmas, sampler, callback=step, **options)
    finally:
        if bar is not None:
            bar.close()


def run(model, state, sigmas, *, progress=True, callback=None, **options):
    """Continue a :class:`SamplerState` (from :func:`start_state`, a cancelled run or
    ``SamplerState.load``) to the end of ``sigmas``; returns the new state."""
    sigmas = _as_sigmas(sigmas)
    step, bar = _with_progress(max(len(sigmas) - 1 - state.step, 0), progress, callback)
    try:
        return _derrumbe.run(model, state, sigmas, callback=step, **options)
    finally:
        if bar is not None:
            bar.close()


def sdedit_start(latent, noise, sigmas, strength, *, encoder=None):
    """SDEdit start: ``(x, sigmas_to_run)`` with ``x = E(latent) + sigmas_to_run[0] * noise``.

    ``strength`` in [0, 1] is the fraction of the schedule that runs (0: x is the encoded input
    and nothing runs). ``encoder`` (frames -> latents, e.g. a VAE's encode) is applied to
    ``latent`` first when given; ``noise`` may be warped noise (:func:`warp_noise`)."""
    if encoder is not None:
        latent = encoder(latent)
        if not isinstance(latent, torch.Tensor):
            raise ValueError(f"sdedit_start: the encoder must return a torch.Tensor, got {type(latent).__name__}")
    return _derrumbe.sdedit_start(latent, noise, _as_sigmas(sigmas), strength)


def _simulate(scene, *, progress=True, callback=None):
    """Fracture and simulate the scene on Bullet; returns a :class:`SimTrack`.

    ``callback(frame, num_frames)`` runs after each frame and returns a true value to cancel
    (raising :class:`Cancelled`). Deterministic: the same scene gives identical tracks."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max(scene.num_frames - 1, 0), unit="frame")

    def step(frame, num_frames):
        if bar is not None:
            bar.update(1)
        return bool(callback(frame, num_frames)) if callback is not None else False

    try:
        return scene._simulate(step if (progress or callback is not None) else None)
    finally:
        if bar is not None:
            bar.close()


Scene.simulate = _simulate


def _render(track, camera=0, first=0, last=None, *, width=832, height=480, supersample=1, threads=0, dust=True):
    """Render frames [first, last) of the track from camera `camera` (an index into the
    scene's cameras): a list of :class:`AOVs` (depth, ids, normals, alpha, proxy RGB, dust,
    exact forward/backward optical flow, occlusion). ``aovs_to_tensor(frames, channels)`` turns
    them into a [F, C, H, W] tensor; ``frame.write_exr(path)`` writes a multi-channel EXR."""
    last = track.num_frames if last is None else last
    return track._render(camera, first, last, width, height, supersample, threads, dust)


SimTrack.render = _render
