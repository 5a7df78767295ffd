"""Parity of derrumbe's samplers and flow schedules with the real diffusers schedulers.

Every expected value is computed at test time by diffusers itself (no numbers are copied in):

* Samplers. A diffusers scheduler is built and ``set_timesteps`` is called; its noise levels
  (``scheduler.sigmas``, or ``alphas_cumprod`` at its timesteps) are converted into the VE sigmas
  that derrumbe is given, so both sides step through identical noise levels. The diffusers loop
  (model output -> ``scheduler.step(...).prev_sample``) runs with a model wrapper in the
  scheduler's own parameterization (flow velocity, VP epsilon, VP velocity, LCM consistency
  function), all built from one exact analytic denoiser, ``derrumbe.GaussianMixture``; derrumbe
  samples with the same mixture in the VE form x = x0 + sigma * noise. Both trajectories
  (every step, not only the end) are compared in the diffusers space with a relative tolerance
  of 1e-6: max|a - b| <= 1e-6 * max|b|.
* Schedules. ``flow_shift`` and ``linear_quadratic`` are compared with
  ``FlowMatchEulerDiscreteScheduler`` / ``UniPCMultistepScheduler(use_flow_sigmas=True)`` and
  Mochi's ``linear_quadratic_schedule`` as flow t values, elementwise rtol 1e-6.

Everything runs in float64. diffusers keeps its noise tables in float32; after ``set_timesteps``
the tables a step reads (``sigmas``, ``alphas_cumprod``, ...) are cast to float64, which keeps
the float32 noise levels but makes diffusers' per-step coefficient arithmetic float64. (With
the float32 tables, UniPC's coefficients alone leave ~3e-8 relative differences; with float64
ones the samplers agree to ~1e-14, so the tests see the algorithms rather than rounding.) The one
float32 step left is inside ``FlowMatchEulerDiscreteScheduler.step`` (see ``test_flow_match_euler``).
"""
import math

import pytest
import torch

import derrumbe

diffusers = pytest.importorskip("diffusers")
from diffusers import (  # noqa: E402
    DDIMScheduler,
    DEISMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    IPNDMScheduler,
    LCMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.pipelines.flux.pipeline_flux import calculate_shift  # noqa: E402
from diffusers.pipelines.mochi.pipeline_mochi import linear_quadratic_schedule  # noqa: E402

from conftest import max_rel_diff  # noqa: E402

F64 = torch.float64
RTOL = 1e-6
ITEM_SHAPE = [2, 3, 4, 5]  # [C, F, H, W]
BATCH = 2
# Stable Diffusion's VP training schedule, the default of LCMScheduler.
SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


# ---- helpers ---------------------------------------------------------------------------------


def make_gmm(item_shape=ITEM_SHAPE, seed=0):
    return derrumbe.GaussianMixture.random(item_shape, 4, seed=seed, spread=1.0)


def randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def denoise(gmm, x_ve, sigma):
    """The mixture's x0 at VE noise level ``sigma`` (a float)."""
    return gmm(x_ve, torch.full((x_ve.shape[0],), float(sigma), dtype=F64))


def assert_rel_close(actual, expected, rtol=RTOL, what="result"):
    assert torch.isfinite(expected).all(), f"diffusers {what} is not finite"
    diff = max_rel_diff(actual, expected)
    assert diff <= rtol, f"{what}: max|a-b| / max|b| = {diff:.3e} > {rtol:.0e}"


def assert_trajectories_close(actual, expected, rtol=RTOL):
    assert len(actual) == len(expected)
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert_rel_close(a, e, rtol, what=f"state {k} (after {k} steps)")


def to_float64(scheduler, *names):
    """Cast the scheduler's noise tables to float64 (same values, float64 arithmetic in step())."""
    for name in names:
        setattr(scheduler, name, getattr(scheduler, name).to(F64))


def flow_t_to_sigma(t):
    return derrumbe.schedules.flow_t_to_sigma(float(t))  # t / (1 - t); t = 1 maps to 1e9


def vp_sigma(alpha_cumprod):
    """VE sigma of a VP noise level: sigma_vp / alpha = sqrt((1 - acp) / acp)."""
    acp = float(alpha_cumprod)
    return math.sqrt((1 - acp) / acp)


def sigma_tensor(values):
    return torch.tensor([float(v) for v in values], dtype=F64)


# Model wrappers: the mixture seen through each scheduler's parameterization.


def flow_velocity(gmm, x_t, t):
    """Rectified flow x_t = (1 - t) x0 + t n; velocity n - x0 = (x_t - x0) / t."""
    sigma = flow_t_to_sigma(t)
    x0 = denoise(gmm, x_t * (1 + sigma), sigma)  # x_VE = x_t / (1 - t) = x_t (1 + sigma)
    return (x_t - x0) / t


def vp_epsilon(gmm, x_vp, sigma):
    """VP x_vp = alpha x0 + sigma_vp eps, alpha = 1 / sqrt(1 + sigma^2); returns eps."""
    x_ve = x_vp * math.sqrt(1 + sigma * sigma)
    return (x_ve - denoise(gmm, x_ve, sigma)) / sigma


def vp_velocity(gmm, x_vp, alpha, sigma_vp):
    """v = alpha eps - sigma_vp x0, written as (eps - sigma_vp x_vp) / alpha: the same when
    alpha^2 + sigma_vp^2 = 1, and the form that a scheduler's decoding eps = sigma_vp x_vp + alpha v
    inverts exactly even where a float32 table meets alpha^2 + sigma_vp^2 = 1 only to ~1e-7."""
    sigma = sigma_vp / alpha
    x_ve = x_vp / alpha
    eps = (x_ve - denoise(gmm, x_ve, sigma)) / sigma
    return (eps - sigma_vp * x_vp) / alpha


# Runners: both return the trajectory [x_start, x after step 1, ..., x after the last step].


def run_diffusers(scheduler, x, model_output, timesteps=None, step_kwargs=lambda i: {}):
    """The pipeline loop. ``model_output(x, i, t)`` sees the step index i and the timestep t."""
    timesteps = scheduler.timesteps if timesteps is None else timesteps
    states = [x]
    for i, t in enumerate(timesteps):
        x = scheduler.step(model_output(x, i, t), t, x, **step_kwargs(i)).prev_sample
        states.append(x)
    return states


def run_derrumbe(model, x, sigmas, sampler, **options):
    states = [x]

    def record(info):
        states.append(info["x"].clone())
        return False

    final = derrumbe.sample(model, x, sigmas, sampler, progress=False, callback=record, **options)
    assert torch.equal(final, states[-1])
    return states


def flow_states(ve_states, sigmas):
    """derrumbe's VE states in flow space: x_t = x_VE (1 - t) = x_VE / (1 + sigma)."""
    return [x / (1 + float(s)) for x, s in zip(ve_states, sigmas)]


def vp_states(ve_states, sigmas):
    """derrumbe's VE states in VP space: x_vp = alpha x_VE = x_VE / sqrt(1 + sigma^2)."""
    return [x / math.sqrt(1 + float(s) ** 2) for x, s in zip(ve_states, sigmas)]


# ---- 1, 2: UniPC ---------------------------------------------------------------------------------


def expect_unipc(scheduler, states):
    """diffusers' UniPC final step to sigma 0 with solver_type="bh1" returns NaN: its order-1
    predictor multiplies the (absent, 0) residual by alpha_t B(h) with B(h) = h = -inf. In exact
    arithmetic that step returns its data prediction m0 (sigma_t / sigma_s0 = 0 and
    -alpha_t h_phi_1 = 1), which the scheduler keeps in model_outputs[-1]; that stands in for the
    NaN state. Every other state is diffusers' own. (bh2 has B(h) = expm1(-inf) = -1, finite.)"""
    final_to_zero = float(scheduler.sigmas[-1]) == 0.0
    if scheduler.config.solver_type == "bh1" and final_to_zero and not torch.isfinite(states[-1]).all():
        return states[:-1] + [scheduler.model_outputs[-1]]
    return states


UNIPC_SAMPLER = {"bh1": "uni_pc", "bh2": "uni_pc_bh2"}


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("solver_type", ["bh2", "bh1"])
@pytest.mark.parametrize("solver_order", [2, 3])
@pytest.mark.parametrize("flow_shift", [3.0, 5.0])
def test_unipc_flow(flow_shift, solver_order, solver_type, steps):
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift,
        solver_order=solver_order, solver_type=solver_type,
    )
    scheduler.set_timesteps(steps)
    to_float64(scheduler, "sigmas")
    t_values = scheduler.sigmas  # flow t, the first one 1 - 1e-6
    sigmas = sigma_tensor(flow_t_to_sigma(t) for t in t_values)
    gmm = make_gmm()
    x_t = randn([BATCH, *ITEM_SHAPE], seed=1)

    expected = run_diffusers(scheduler, x_t, lambda x, i, t: flow_velocity(gmm, x, t_values[i]))
    expected = expect_unipc(scheduler, expected)
    actual = run_derrumbe(gmm, x_t * (1 + sigmas[0]), sigmas, UNIPC_SAMPLER[solver_type], order=solver_order)
    assert_trajectories_close(flow_states(actual, sigmas), expected)


@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("solver_type", ["bh2", "bh1"])
@pytest.mark.parametrize("solver_order", [2, 3])
def test_unipc_vp_epsilon(solver_order, solver_type, steps):
    scheduler = UniPCMultistepScheduler(
        **SD_BETAS, prediction_type="epsilon", solver_order=solver_order, solver_type=solver_type
    )
    scheduler.set_timesteps(steps)
    to_float64(scheduler, "sigmas")
    sigmas = scheduler.sigmas.clone()  # VE sigmas sqrt((1 - acp) / acp), ending in 0
    gmm = make_gmm(seed=2)
    x_vp = randn([BATCH, *ITEM_SHAPE], seed=3)

    expected = run_diffusers(scheduler, x_vp, lambda x, i, t: vp_epsilon(gmm, x, float(sigmas[i])))
    expected = expect_unipc(scheduler, expected)
    x_ve = x_vp * math.sqrt(1 + float(sigmas[0]) ** 2)
    actual = run_derrumbe(gmm, x_ve, sigmas, UNIPC_SAMPLER[solver_type], order=solver_order)
    assert_trajectories_close(vp_states(actual, sigmas), expected)


def test_unipc_wan_latent():
    """A Wan-shaped 5-D latent [B, C, F, H, W] with Wan's scheduler config."""
    item_shape = [16, 3, 4, 6]
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0, solver_order=2, solver_type="bh2"
    )
    scheduler.set_timesteps(30)
    to_float64(scheduler, "sigmas")
    t_values = scheduler.sigmas
    sigmas = sigma_tensor(flow_t_to_sigma(t) for t in t_values)
    gmm = make_gmm(item_shape, seed=4)
    x_t = randn([1, *item_shape], seed=5)

    expected = run_diffusers(scheduler, x_t, lambda x, i, t: flow_velocity(gmm, x, t_values[i]))
    actual = run_derrumbe(gmm, x_t * (1 + sigmas[0]), sigmas, "uni_pc_bh2", order=2)
    assert actual[-1].shape == (1, *item_shape)
    assert_trajectories_close(flow_states(actual, sigmas), expected)


# ---- 3: flow-matching Euler and the flow schedules -----------------------------------------------

FLOW_EULER_CONFIGS = {
    "shift3": (dict(shift=3.0), {}),
    "dynamic": (dict(use_dynamic_shifting=True), dict(mu=1.15)),
    # LTX-Video: dynamic shifting stretched to end at t = 0.1.
    "dynamic_terminal": (dict(use_dynamic_shifting=True, shift_terminal=0.1), dict(mu=2.05)),
}


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("config", list(FLOW_EULER_CONFIGS))
def test_flow_match_euler(config, steps):
    init, timestep_args = FLOW_EULER_CONFIGS[config]
    scheduler = FlowMatchEulerDiscreteScheduler(**init)
    scheduler.set_timesteps(steps, **timestep_args)
    to_float64(scheduler, "sigmas")
    t_values = scheduler.sigmas  # flow t, starting at exactly 1 (sigma 1e9 on the derrumbe side)
    sigmas = sigma_tensor(flow_t_to_sigma(t) for t in t_values)
    gmm = make_gmm(seed=6)
    x_t = randn([BATCH, *ITEM_SHAPE], seed=7)

    expected = run_diffusers(scheduler, x_t, lambda x, i, t: flow_velocity(gmm, x, t_values[i]))
    actual = run_derrumbe(gmm, x_t * (1 + sigmas[0]), sigmas, "euler")
    # FlowMatchEulerDiscreteScheduler.step rounds the incoming sample to float32
    # (`sample = sample.to(torch.float32)`) before its float64 update, so each diffusers state
    # carries a fresh rounding of up to 2^-24 ~ 6e-8 relative, accumulating over the steps:
    # measured up to ~1.1e-7 on the final states and ~2.8e-7 along the trajectories here (the
    # other samplers agree to ~1e-14), inside the 1e-6 tolerance.
    assert_trajectories_close(flow_states(actual, sigmas), expected)


def flow_t_values(sigmas):
    return torch.tensor([derrumbe.schedules.sigma_to_flow_t(float(s)) for s in sigmas], dtype=F64)


def assert_t_close(actual_sigmas, expected_t):
    torch.testing.assert_close(flow_t_values(actual_sigmas), expected_t.to(F64), rtol=RTOL, atol=0)


@pytest.mark.parametrize("steps", [2, 4, 10, 30])
@pytest.mark.parametrize(
    "init, timestep_args, ours",
    [
        (dict(shift=1.0), {}, dict(shift=1.0)),
        (dict(shift=3.0), {}, dict(shift=3.0)),
        (dict(shift=5.0, shift_terminal=0.1), {}, dict(shift=5.0, shift_terminal=0.1)),
        (dict(use_dynamic_shifting=True), dict(mu=0.5), dict(mu=0.5)),
        (dict(use_dynamic_shifting=True, shift_terminal=0.1), dict(mu=2.05), dict(mu=2.05, shift_terminal=0.1)),
    ],
)
def test_flow_shift_matches_flow_match_euler(init, timestep_args, ours, steps):
    scheduler = FlowMatchEulerDiscreteScheduler(**init)
    scheduler.set_timesteps(steps, **timestep_args)
    assert_t_close(derrumbe.schedules.flow_shift(steps, spacing="euler", **ours), scheduler.sigmas)


@pytest.mark.parametrize("steps", [2, 4, 10, 30])
@pytest.mark.parametrize(
    "init, timestep_args, ours",
    [
        (dict(flow_shift=1.0), {}, dict(shift=1.0)),
        (dict(flow_shift=3.0), {}, dict(shift=3.0)),
        (dict(flow_shift=5.0), {}, dict(shift=5.0)),
        (dict(flow_shift=5.0, shift_terminal=0.1), {}, dict(shift=5.0, shift_terminal=0.1)),
        (dict(use_dynamic_shifting=True), dict(mu=1.15), dict(mu=1.15)),
    ],
)
def test_flow_shift_matches_unipc(init, timestep_args, ours, steps):
    scheduler = UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", **init)
    scheduler.set_timesteps(steps, **timestep_args)
    assert_t_close(derrumbe.schedules.flow_shift(steps, spacing="unipc", **ours), scheduler.sigmas)


@pytest.mark.parametrize("seq_len", [256, 1024, 4096, 6000])
def test_flow_mu_matches_calculate_shift(seq_len):
    expected = calculate_shift(seq_len, 256, 4096, 0.5, 1.15)
    assert derrumbe.schedules.flow_mu(seq_len, 256, 4096, 0.5, 1.15) == pytest.approx(expected, rel=1e-12)


# ---- 4: DEIS --------------------------------------------------------------------------------------

# diffusers' lower_order_final (order 1 at the last step, <= 2 at the one before) applies below
# 15 steps only; from 15 steps on, both take the last step (to sigma_min, never 0) at full order.
@pytest.mark.parametrize("steps", [5, 10, 14, 15, 25])
@pytest.mark.parametrize("solver_order", [2, 3])
def test_deis(solver_order, steps):
    scheduler = DEISMultistepScheduler(**SD_BETAS, prediction_type="epsilon", solver_order=solver_order)
    scheduler.set_timesteps(steps)
    to_float64(scheduler, "sigmas")
    sigmas = scheduler.sigmas.clone()  # VE sigmas; DEIS ends at the training sigma_min, not 0
    assert float(sigmas[-1]) > 0
    gmm = make_gmm(seed=8)
    x_vp = randn([BATCH, *ITEM_SHAPE], seed=9)

    expected = run_diffusers(scheduler, x_vp, lambda x, i, t: vp_epsilon(gmm, x, float(sigmas[i])))
    x_ve = x_vp * math.sqrt(1 + float(sigmas[0]) ** 2)
    actual = run_derrumbe(gmm, x_ve, sigmas, "deis", order=solver_order)
    assert_trajectories_close(vp_states(actual, sigmas), expected)


# ---- 5: iPNDM -------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [5, 10, 25])
def test_ipndm(steps):
    """IPNDMScheduler uses sigma_vp = sin^2(pi/2 s), alpha = sqrt(1 - sigma_vp^2) on s = linspace(1, 0)
    (its ``betas`` / ``alphas``), and its model output is a v-prediction: step() forms
    eps = sigma_vp * x + alpha * v (crowsonkb's v-diffusion PLMS). Its first level has alpha = 0,
    an infinite VE sigma at which step() ignores the model (pred = (x - eps) / 1e-8 = 0), which a
    finite-sigma VE sampler cannot reproduce; so both runs start at the second level: diffusers
    via set_begin_index(1) (as img2img does), with an empty multistep history on both sides."""
    scheduler = IPNDMScheduler()
    scheduler.set_timesteps(steps)
    to_float64(scheduler, "betas", "alphas")
    scheduler.set_begin_index(1)
    sigma_vp, alpha = scheduler.betas, scheduler.alphas
    assert float(alpha[0]) == 0.0  # the infinite first level
    sigmas = sigma_vp[1:] / alpha[1:]  # VE sigmas from the second level on, ending in 0
    gmm = make_gmm(seed=10)
    x_vp = randn([BATCH, *ITEM_SHAPE], seed=11)

    expected = run_diffusers(
        scheduler, x_vp,
        lambda x, i, t: vp_velocity(gmm, x, float(alpha[i + 1]), float(sigma_vp[i + 1])),
        timesteps=scheduler.timesteps[1:],
    )
    x_ve = x_vp / float(alpha[1])
    actual = run_derrumbe(gmm, x_ve, sigmas, "ipndm")
    vp = [x * float(a) for x, a in zip(actual, alpha[1:])]
    assert_trajectories_close(vp, expected)


# ---- 6: DDIM --------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim(eta, steps):
    scheduler = DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=True, steps_offset=1)
    scheduler.set_timesteps(steps)
    to_float64(scheduler, "alphas_cumprod", "final_alpha_cumprod")
    acp = scheduler.alphas_cumprod
    timesteps = [int(t) for t in scheduler.timesteps]
    # step() goes from t to t - 1000 // steps, the next timestep (the last one to alpha_cumprod 1).
    assert all(a - b == 1000 // steps for a, b in zip(timesteps, timesteps[1:]))
    sigmas = sigma_tensor([vp_sigma(acp[t]) for t in timesteps] + [vp_sigma(scheduler.final_alpha_cumprod)])
    assert float(sigmas[-1]) == 0.0
    gmm = make_gmm(seed=12)
    shape = [BATCH, *ITEM_SHAPE]
    x_vp = randn(shape, seed=13)
    noises = [randn(shape, seed=100 + i) for i in range(steps)]

    expected = run_diffusers(
        scheduler, x_vp, lambda x, i, t: vp_epsilon(gmm, x, float(sigmas[i])), timesteps=timesteps,
        step_kwargs=lambda i: dict(eta=eta, variance_noise=noises[i]),
    )

    def noise(like, step, draw, sigma, sigma_next):
        assert draw == 0  # one draw per step, as diffusers' variance_noise
        return noises[step]

    x_ve = x_vp * math.sqrt(1 + float(sigmas[0]) ** 2)
    actual = run_derrumbe(gmm, x_ve, sigmas, "ddim", eta=eta, noise=noise)
    assert_trajectories_close(vp_states(actual, sigmas), expected)


# ---- 7: LCM ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [2, 4, 8])
def test_lcm(steps):
    """LCMScheduler's x0 is the consistency function c_skip(t) x_vp + c_out(t) x0_pred, with the
    boundary-condition scalings of the discrete timestep t; those belong to the model (Luo et al.
    2023, eq. 9), so derrumbe's model applies them, taking them from the scheduler itself. The
    re-noising draws come from identically seeded generators on both sides."""
    scheduler = LCMScheduler()  # SD's betas, epsilon prediction, 50 original steps
    scheduler.set_timesteps(steps)
    to_float64(scheduler, "alphas_cumprod", "final_alpha_cumprod")
    acp = scheduler.alphas_cumprod
    timesteps = [int(t) for t in scheduler.timesteps]  # python ints keep c_skip / c_out in float64
    sigmas = sigma_tensor([vp_sigma(acp[t]) for t in timesteps] + [0.0])
    timestep_of = {float(s): t for s, t in zip(sigmas, timesteps)}
    gmm = make_gmm(seed=14)
    shape = [BATCH, *ITEM_SHAPE]
    x_vp = randn(shape, seed=15)

    generator = torch.Generator().manual_seed(16)
    expected = run_diffusers(
        scheduler, x_vp, lambda x, i, t: vp_epsilon(gmm, x, float(sigmas[i])), timesteps=timesteps,
        step_kwargs=lambda i: dict(generator=generator),
    )

    def consistency_model(x_ve, sigma):
        s = float(sigma[0])
        c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(timestep_of[s])
        return c_out * denoise(gmm, x_ve, s) + c_skip * x_ve / math.sqrt(1 + s * s)

    ours = torch.Generator().manual_seed(16)
    noises = [torch.randn(shape, generator=ours, dtype=F64) for _ in range(steps - 1)]
    x_ve = x_vp * math.sqrt(1 + float(sigmas[0]) ** 2)
    actual = run_derrumbe(consistency_model, x_ve, sigmas, "lcm", noise=lambda like, step, *_: noises[step])
    assert_trajectories_close(vp_states(actual, sigmas), expected)


# ---- 8: Mochi's linear-quadratic schedule ---------------------------------------------------------


@pytest.mark.parametrize(
    "steps, threshold_noise, linear_steps", [(2, 0.025, None), (10, 0.025, None), (64, 0.025, None), (30, 0.1, 7)]
)
def test_linear_quadratic_matches_mochi(steps, threshold_noise, linear_steps):
    expected = torch.tensor(linear_quadratic_schedule(steps, threshold_noise, linear_steps) + [0.0], dtype=F64)
    ours = derrumbe.schedules.linear_quadratic(steps, threshold_noise=threshold_noise, linear_steps=linear_steps)
    assert_t_close(ours, expected)
