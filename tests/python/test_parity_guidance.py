"""Parity of derrumbe's classifier-free-guidance family with the diffusers guiders.

Every expected value is computed at test time by diffusers itself (``diffusers.guiders``); the
guiders' ``forward(pred_cond, pred_uncond)`` is called after ``set_state(step, num_steps,
timestep)`` and ``prepare_inputs({})`` (which is where a pipeline resets APG's momentum buffer at
step 0), exactly as a diffusers modular pipeline drives them.

Mapping between the two libraries (checked by the tests below):

* CFG. ``derrumbe.cfg_combine(c, u, w)`` and ``Guided(method="cfg", scale=w)`` ==
  ``ClassifierFreeGuidance(guidance_scale=w)`` (diffusers-native formulation
  ``u + w (c - u)``; ``guidance_rescale`` left at its default 0 and ``use_original_formulation``
  at its default False). diffusers' ``start``/``stop`` (fractions of the step count; CFG runs for
  steps ``int(start N) <= i < int(stop N)``) corresponds to derrumbe's sigma interval
  ``[sigma_end, sigma_start]`` (inclusive) = ``[sigmas[int(stop N) - 1], sigmas[int(start N)]]``;
  outside it both return the conditional prediction, and both evaluate only the conditional
  branch there (diffusers: ``num_conditions == 1``).
* APG. derrumbe implements the APG paper's form ``c + (w - 1) (orth + eta par)`` (Sadat et al.
  2024, Algorithm 1). diffusers' default formulation is ``u + w (orth + eta par)``, which is a
  different function unless eta = 1 with no clipping and no momentum; the paper's form is
  diffusers' ``use_original_formulation=True`` with ``guidance_scale = w - 1``. So
  ``Guided(method="apg", scale=w, apg_eta=e, apg_norm_threshold=r, apg_momentum=m)`` ==
  ``AdaptiveProjectedGuidance(guidance_scale=w - 1, use_original_formulation=True, eta=e,
  adaptive_projected_guidance_rescale=r, adaptive_projected_guidance_momentum=m)``. (diffusers'
  "rescale" is APG's norm threshold r; diffusers' default eta is 1.0 and rescale 15.0, derrumbe's
  eta 0.0 and threshold 0.) Both store the *unclipped* running average in the momentum buffer,
  start it from the first guided call after step 0 (running = diff), and project per batch item
  over all non-batch dimensions (diffusers ``adaptive_projected_guidance_norm_dim=None``).
* CFG-Zero*. ``ClassifierFreeZeroStarGuidance`` computes alpha = <c, u> / (||u||^2 + 1e-8)
  *per batch item* (``flatten(1)``) and returns ``alpha u + w (c - alpha u)``, as
  ``derrumbe.cfg_zero_combine`` does. diffusers applies it to whatever the model predicts (flow
  velocity for Wan); derrumbe's ``Guided(method="cfg_zero")`` converts its x0 predictions to flow
  velocities v = (x_t - x0) / t (t = sigma / (1 + sigma), x_t = x / (1 + sigma)), combines those
  and converts back: x0_guided = x_t - t v_guided. diffusers' zero-init (``step <
  zero_init_steps`` -> prediction 0) is derrumbe's ``zero_init_steps`` (-> x0 = x_t, zero
  velocity). Defaults differ: diffusers ``zero_init_steps=1``, derrumbe 0.
  diffusers computes alpha in float32 (``cfg_zero_star_scale`` calls ``.float()``): its ~6e-8
  relative rounding is amplified by about (w - 1) in c - alpha u (cond and uncond velocities are
  close), so against the unmodified guider the agreement is up to ~7e-7 at w = 7.5 (inside the
  1e-6 tolerance); with ``cfg_zero_star_scale`` swapped for a float64 copy of the same formula it
  is ~1e-15 (both are checked, see the ``zero_star`` fixture).

Tolerance: max|a - b| <= 1e-6 * max|b| over the tensor (float64), as in test_parity_diffusers.py.
Tensors have shape [2, 4, 3, 5, 6] ([B, C, F, H, W]).
"""
import math

import pytest
import torch

import derrumbe

diffusers = pytest.importorskip("diffusers")
from diffusers.guiders import (  # noqa: E402
    AdaptiveProjectedGuidance,
    ClassifierFreeGuidance,
    ClassifierFreeZeroStarGuidance,
)
from diffusers.guiders import classifier_free_zero_star_guidance as zero_star_module  # noqa: E402

from conftest import max_rel_diff  # noqa: E402

F64 = torch.float64
RTOL = 1e-6
RTOL32 = 1e-5  # the few float32 checks: float32 rounding alone is ~1e-7 .. 6e-7 here
SHAPE = (2, 4, 3, 5, 6)
SIGMAS = derrumbe.schedules.karras(8, 0.05, 12.0)  # 8 steps, decreasing, ending in 0


# ---- helpers ---------------------------------------------------------------------------------


def randn(shape, seed, dtype=F64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def predictions(seed, dtype=F64, small_second_item=False):
    """A (cond, uncond) pair shaped like a video latent batch, correlated like real model outputs.

    With ``small_second_item`` the second batch item's cond - uncond is 5x smaller, so a norm
    threshold between the two items' ||diff|| clips one item and leaves the other alone."""
    cond = randn(SHAPE, seed)
    uncond = 0.7 * cond + 0.5 * randn(SHAPE, seed + 1000)
    if small_second_item:
        uncond[1] = cond[1] + 0.2 * (uncond[1] - cond[1])
    return cond.to(dtype), uncond.to(dtype)


def assert_rel_close(actual, expected, rtol=RTOL, what="result"):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (actual.shape, actual.dtype)
    assert torch.isfinite(expected).all(), f"diffusers {what} is not finite"
    diff = max_rel_diff(actual.to(F64), expected.to(F64))
    assert diff <= rtol, f"{what}: max|a-b| / max|b| = {diff:.3e} > {rtol:.0e}"


class Branches:
    """A conditional model for derrumbe.Guided: returns preset x0 predictions per branch.

    ``model(x, sigma, branches)`` checks what Guided passes (len(branches) equal chunks of x, one
    sigma for every row) and records the branch list of every call."""

    def __init__(self):
        self.cond = self.uncond = None
        self.calls = []

    def set(self, cond, uncond):
        self.cond, self.uncond = cond, uncond

    def __call__(self, x, sigma, branches):
        branches = list(branches)
        self.calls.append(branches)
        k = len(branches)
        b = x.shape[0] // k
        assert x.shape[0] == k * b and b == self.cond.shape[0]
        for i in range(1, k):
            assert torch.equal(x[i * b:(i + 1) * b], x[:b])
        assert sigma.shape == (x.shape[0],) and torch.all(sigma == sigma[0])
        return torch.cat([self.cond if br == "cond" else self.uncond for br in branches])


class MixtureBranches:
    """A conditional model built from two exact Gaussian-mixture denoisers (cond / uncond)."""

    def __init__(self, item_shape, seed=3):
        self.cond = derrumbe.GaussianMixture.random(list(item_shape), 3, seed=seed)
        self.uncond = derrumbe.GaussianMixture.random(list(item_shape), 3, seed=seed + 1, spread=0.7)
        self.calls = []

    def __call__(self, x, sigma, branches):
        branches = list(branches)
        self.calls.append(branches)
        b = x.shape[0] // len(branches)
        return torch.cat([(self.cond if br == "cond" else self.uncond)(x[i * b:(i + 1) * b], sigma[i * b:(i + 1) * b])
                          for i, br in enumerate(branches)])

    def both(self, x, sigma):
        s = torch.full((x.shape[0],), float(sigma), dtype=x.dtype)
        return self.cond(x, s), self.uncond(x, s)


def diffusers_step(guider, step, num_steps, cond, uncond, timestep=0.0):
    """One diffusers guider step, as a modular pipeline runs it; returns (pred, guided?)."""
    guider.set_state(step, num_steps, torch.tensor(float(timestep)))
    guider.prepare_inputs({})  # APG: a new MomentumBuffer at step 0
    if guider.num_conditions == 1:
        return guider.forward(cond).pred, False
    return guider.forward(cond, uncond).pred, True


def float64_zero_star_scale(cond, uncond, eps=1e-8):
    """diffusers' cfg_zero_star_scale, line for line, without its float32 cast."""
    dot_product = torch.sum(cond * uncond, dim=1, keepdim=True)
    squared_norm = torch.sum(uncond**2, dim=1, keepdim=True) + eps
    return dot_product / squared_norm


@pytest.fixture(params=["float32 alpha (diffusers as is)", "float64 alpha"])
def zero_star(request, monkeypatch):
    """Runs a CFG-Zero* test against the unmodified guider and against one whose alpha is float64.

    Returns the tolerance for the comparison: 1e-6 for the real guider, 1e-12 for the float64 one."""
    if request.param == "float64 alpha":
        monkeypatch.setattr(zero_star_module, "cfg_zero_star_scale", float64_zero_star_scale)
        return 1e-12
    return RTOL


def flow(x, sigma):
    """derrumbe's VE x at noise level sigma seen as a rectified-flow state: (t, x_t)."""
    t = sigma / (1 + sigma)
    return t, x / (1 + sigma)


# ---- CFG ---------------------------------------------------------------------------------------


def test_diffusers_guider_defaults_are_the_plain_formulas():
    """The mapping above relies on these defaults (no rescale, diffusers-native formulation)."""
    for guider in [ClassifierFreeGuidance(), ClassifierFreeZeroStarGuidance(), AdaptiveProjectedGuidance()]:
        assert guider.guidance_rescale == 0.0
        assert guider.use_original_formulation is False
    assert ClassifierFreeZeroStarGuidance().zero_init_steps == 1
    apg = AdaptiveProjectedGuidance()
    assert apg.eta == 1.0 and apg.adaptive_projected_guidance_momentum is None
    assert apg.adaptive_projected_guidance_norm_dim is None  # all non-batch dims, as derrumbe


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0, 3.0, 7.5, -1.5])
def test_cfg_combine_matches_classifier_free_guidance(scale, dtype):
    cond, uncond = predictions(1, dtype)
    expected, _ = diffusers_step(ClassifierFreeGuidance(guidance_scale=scale), 0, 10, cond, uncond)
    actual = derrumbe.cfg_combine(cond, uncond, scale)
    assert_rel_close(actual, expected, RTOL if dtype == F64 else RTOL32)


@pytest.mark.parametrize("scale", [1.0, 2.5, 7.5])
def test_guided_cfg_matches_classifier_free_guidance_with_start_stop(scale):
    """A sampling loop: diffusers' start/stop step window == derrumbe's sigma interval."""
    n = len(SIGMAS) - 1
    start, stop = 0.25, 0.75  # diffusers guides steps int(0.25 * 8) = 2 .. int(0.75 * 8) - 1 = 5
    first, last = int(start * n), int(stop * n) - 1
    model = Branches()
    guided = derrumbe.Guided(model, method="cfg", scale=scale, sigma_start=float(SIGMAS[first]),
                             sigma_end=float(SIGMAS[last]))
    guider = ClassifierFreeGuidance(guidance_scale=scale, start=start, stop=stop)
    x = randn(SHAPE, 99)
    for step in range(n):
        sigma = float(SIGMAS[step])
        cond, uncond = predictions(10 + step)
        model.set(cond, uncond)
        model.calls.clear()
        guided.begin_step(step, n, sigma)
        actual = guided(x, sigma)
        expected, guided_by_diffusers = diffusers_step(guider, step, n, cond, uncond, sigma)
        assert_rel_close(actual, expected, what=f"step {step}")
        assert guided_by_diffusers == (scale != 1.0 and first <= step <= last)
        assert model.calls == ([["cond", "uncond"]] if guided_by_diffusers else [["cond"]]), f"step {step}"
        if not guided_by_diffusers:
            assert torch.equal(actual, cond)


# ---- APG ---------------------------------------------------------------------------------------


def apg_pair(scale, eta, threshold, momentum, model):
    guided = derrumbe.Guided(model, method="apg", scale=scale, apg_eta=eta, apg_norm_threshold=threshold,
                             apg_momentum=momentum)
    guider = AdaptiveProjectedGuidance(guidance_scale=scale - 1, use_original_formulation=True, eta=eta,
                                       adaptive_projected_guidance_rescale=threshold,
                                       adaptive_projected_guidance_momentum=momentum)
    return guided, guider


CLIP = 5.0  # between the two items' ||cond - uncond|| (about 11 and 2.2): clips item 0 only


@pytest.mark.parametrize("momentum", [0.0, -0.5])
@pytest.mark.parametrize("threshold", [0.0, CLIP])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("scale", [2.0, 4.5, 7.5])
def test_apg_matches_adaptive_projected_guidance_over_steps(scale, eta, threshold, momentum):
    """Two runs of 6 steps each through the same objects: the momentum state is carried across
    steps and reset at step 0 on both sides."""
    n = 6
    model = Branches()
    guided, guider = apg_pair(scale, eta, threshold, momentum, model)
    x = randn(SHAPE, 5)
    for run in range(2):
        for step in range(n):
            cond, uncond = predictions(100 * run + step, small_second_item=True)
            if threshold and step == 0:  # the threshold does clip one item and not the other
                norms = (cond - uncond).flatten(1).norm(dim=1)
                assert norms[0] > threshold > norms[1]
            model.set(cond, uncond)
            sigma = float(SIGMAS[step])
            guided.begin_step(step, n, sigma)
            actual = guided(x, sigma)
            expected, _ = diffusers_step(guider, step, n, cond, uncond, sigma)
            assert_rel_close(actual, expected, what=f"run {run} step {step}")


@pytest.mark.parametrize("momentum", [0.0, -0.5])
def test_apg_float32(momentum):
    """float32 in, float32 out on both sides (both project in float64)."""
    model = Branches()
    guided, guider = apg_pair(5.0, 0.0, CLIP, momentum, model)
    x = randn(SHAPE, 5, torch.float32)
    for step in range(3):
        cond, uncond = predictions(step, torch.float32, small_second_item=True)
        model.set(cond, uncond)
        guided.begin_step(step, 3, 1.0)
        expected, _ = diffusers_step(guider, step, 3, cond, uncond)
        assert_rel_close(guided(x, 1.0), expected, RTOL32, what=f"step {step}")


def test_apg_momentum_skips_unguided_steps_like_diffusers():
    """Steps outside the guidance window neither use nor update the momentum, on both sides."""
    n = 8
    start, stop = 0.25, 0.75
    first, last = int(start * n), int(stop * n) - 1
    model = Branches()
    guided = derrumbe.Guided(model, method="apg", scale=6.0, apg_eta=0.0, apg_norm_threshold=CLIP,
                             apg_momentum=-0.5, sigma_start=float(SIGMAS[first]), sigma_end=float(SIGMAS[last]))
    guider = AdaptiveProjectedGuidance(guidance_scale=5.0, use_original_formulation=True, eta=0.0,
                                       adaptive_projected_guidance_rescale=CLIP,
                                       adaptive_projected_guidance_momentum=-0.5, start=start, stop=stop)
    x = randn(SHAPE, 5)
    for step in range(n):
        cond, uncond = predictions(step, small_second_item=True)
        model.set(cond, uncond)
        sigma = float(SIGMAS[step])
        guided.begin_step(step, n, sigma)
        expected, was_guided = diffusers_step(guider, step, n, cond, uncond, sigma)
        assert was_guided == (first <= step <= last)
        assert_rel_close(guided(x, sigma), expected, what=f"step {step}")


@pytest.mark.parametrize("scale", [1.0, 3.0, 7.5])
def test_apg_with_eta_1_and_no_clipping_is_cfg_in_diffusers_default_formulation(scale):
    """The one case where diffusers' default APG formulation and the paper's coincide."""
    model = Branches()
    cond, uncond = predictions(3)
    model.set(cond, uncond)
    guided = derrumbe.Guided(model, method="apg", scale=scale, apg_eta=1.0)
    guided.begin_step(0, 1, 1.0)
    guider = AdaptiveProjectedGuidance(guidance_scale=scale, eta=1.0, adaptive_projected_guidance_rescale=0.0)
    expected, _ = diffusers_step(guider, 0, 1, cond, uncond)
    actual = guided(randn(SHAPE, 1), 1.0)
    assert_rel_close(actual, expected)
    assert_rel_close(actual, derrumbe.cfg_combine(cond, uncond, scale))


def test_apg_in_a_sampler_matches_a_diffusers_guided_euler_loop():
    """derrumbe.sample calls begin_step itself; the reference is an Euler loop whose guidance is
    the diffusers guider (state set per step), on two analytic mixture denoisers."""
    n = len(SIGMAS) - 1
    model = MixtureBranches(SHAPE[1:])
    guided, guider = apg_pair(4.0, 0.0, 3.0, -0.5, model)
    x0 = randn(SHAPE, 21) * SIGMAS[0]
    for run in range(2):  # the second run must start with a fresh momentum buffer
        actual = derrumbe.sample(guided, x0, SIGMAS, "euler", progress=False)
        x = x0
        for step in range(n):
            sigma, sigma_next = float(SIGMAS[step]), float(SIGMAS[step + 1])
            cond, uncond = model.both(x, sigma)
            denoised, _ = diffusers_step(guider, step, n, cond, uncond, sigma)
            x = x + (x - denoised) / sigma * (sigma_next - sigma)
        assert_rel_close(actual, x, what=f"run {run}")


# ---- CFG-Zero* ---------------------------------------------------------------------------------


def per_item_zero_star_pair(seed):
    """Velocity-like predictions whose two batch items have very different optimal alphas
    (about 1.9 and -0.45), so a batch-global alpha would give a different answer."""
    cond = randn(SHAPE, seed)
    uncond = torch.stack([0.5 * cond[0] + 0.1 * randn(SHAPE[1:], seed + 1),
                          -2.0 * cond[1] + 0.3 * randn(SHAPE[1:], seed + 2)])
    return cond, uncond


@pytest.mark.parametrize("scale", [0.0, 1.5, 4.0, 7.5, -1.0])
def test_cfg_zero_combine_matches_zero_star_guidance(scale, zero_star):
    cond, uncond = per_item_zero_star_pair(7)
    guider = ClassifierFreeZeroStarGuidance(guidance_scale=scale, zero_init_steps=0)
    expected, _ = diffusers_step(guider, 3, 10, cond, uncond)
    actual = derrumbe.cfg_zero_combine(cond, uncond, scale)
    assert_rel_close(actual, expected, zero_star)
    # alpha is per batch item on both sides: a single alpha over the batch is far off.
    alpha = float((cond * uncond).sum() / ((uncond**2).sum() + 1e-8))
    global_alpha = alpha * uncond + scale * (cond - alpha * uncond)
    if scale != 1.0:
        assert max_rel_diff(global_alpha, expected) > 1e-2


def test_cfg_zero_combine_float32():
    cond, uncond = per_item_zero_star_pair(8)
    cond, uncond = cond.float(), uncond.float()
    expected, _ = diffusers_step(ClassifierFreeZeroStarGuidance(guidance_scale=5.0, zero_init_steps=0), 0, 1,
                                 cond, uncond)
    assert_rel_close(derrumbe.cfg_zero_combine(cond, uncond, 5.0), expected, RTOL32)


@pytest.mark.parametrize("zero_init_steps", [0, 1, 3])
@pytest.mark.parametrize("scale", [1.0, 4.0, 7.5])
def test_guided_cfg_zero_matches_zero_star_guidance_on_velocities(scale, zero_init_steps, zero_star):
    """derrumbe's x0 in == diffusers' guider applied to the flow velocities of the same x0
    predictions, converted back to x0; zero-init steps give x_t (zero velocity) on both sides."""
    n = len(SIGMAS) - 1
    model = Branches()
    guided = derrumbe.Guided(model, method="cfg_zero", scale=scale, zero_init_steps=zero_init_steps)
    guider = ClassifierFreeZeroStarGuidance(guidance_scale=scale, zero_init_steps=zero_init_steps)
    x = randn(SHAPE, 50) * SIGMAS[0]
    for step in range(n):
        sigma = float(SIGMAS[step])
        cond, uncond = predictions(30 + step)
        model.set(cond, uncond)
        model.calls.clear()
        t, x_t = flow(x, sigma)
        v_guided, _ = diffusers_step(guider, step, n, (x_t - cond) / t, (x_t - uncond) / t, t)
        expected = x_t - t * v_guided
        guided.begin_step(step, n, sigma)
        actual = guided(x, sigma)
        assert_rel_close(actual, expected, zero_star, what=f"step {step}")
        if step < zero_init_steps:
            assert model.calls == []  # no model call at all during zero-init
            assert torch.equal(actual, x / (1 + sigma))
        else:
            assert model.calls == ([["cond"]] if scale == 1.0 else [["cond", "uncond"]])
        x = x * 0.8  # a different x each step


def test_cfg_zero_in_a_sampler_matches_a_diffusers_guided_euler_loop(zero_star):
    n = len(SIGMAS) - 1
    model = MixtureBranches(SHAPE[1:], seed=11)
    guided = derrumbe.Guided(model, method="cfg_zero", scale=5.0, zero_init_steps=2)
    guider = ClassifierFreeZeroStarGuidance(guidance_scale=5.0, zero_init_steps=2)
    x = randn(SHAPE, 22) * SIGMAS[0]
    actual = derrumbe.sample(guided, x, SIGMAS, "euler", progress=False)
    for step in range(n):
        sigma, sigma_next = float(SIGMAS[step]), float(SIGMAS[step + 1])
        cond, uncond = model.both(x, sigma)
        t, x_t = flow(x, sigma)
        v_guided, _ = diffusers_step(guider, step, n, (x_t - cond) / t, (x_t - uncond) / t, t)
        denoised = x_t - t * v_guided
        x = x + (x - denoised) / sigma * (sigma_next - sigma)
    assert_rel_close(actual, x, zero_star)


# ---- guidance interval, scale schedule, batching (derrumbe only) ------------------------------


@pytest.mark.parametrize("method", ["cfg", "cfg_zero", "apg"])
def test_outside_the_interval_only_the_cond_branch_runs(method):
    model = Branches()
    cond, uncond = predictions(4)
    model.set(cond, uncond)
    guided = derrumbe.Guided(model, method=method, scale=6.0, sigma_start=5.0, sigma_end=0.5, apg_momentum=-0.5)
    x = randn(SHAPE, 2)
    for step, sigma in enumerate([12.0, 5.000001, 0.4999999, 0.1]):
        guided.begin_step(step, 10, sigma)
        model.calls.clear()
        assert guided.current_scale(sigma) == 1.0
        out = guided(x, sigma)
        assert model.calls == [["cond"]]
        assert torch.equal(out, cond)
    for step, sigma in enumerate([5.0, 2.0, 0.5]):  # the interval is closed
        guided.begin_step(step, 10, sigma)
        model.calls.clear()
        assert guided.current_scale(sigma) == 6.0
        out = guided(x, sigma)
        assert model.calls == [["cond", "uncond"]]
        assert not torch.allclose(out, cond)


def test_cfg_inside_the_interval_is_cfg_combine():
    model = Branches()
    cond, uncond = predictions(5)
    model.set(cond, uncond)
    guided = derrumbe.Guided(model, scale=3.5, sigma_start=5.0, sigma_end=0.5)
    guided.begin_step(0, 4, 2.0)
    assert torch.equal(guided(randn(SHAPE, 3), 2.0), derrumbe.cfg_combine(cond, uncond, 3.5))


@pytest.mark.parametrize("method", ["cfg", "cfg_zero", "apg"])
def test_unbatched_calls_each_branch_separately_with_the_same_result(method):
    cond, uncond = predictions(6)
    x = randn(SHAPE, 3)
    outs = []
    for batched in [True, False]:
        model = Branches()
        model.set(cond, uncond)
        guided = derrumbe.Guided(model, method=method, scale=4.0, batched=batched, apg_momentum=-0.5)
        guided.begin_step(0, 2, 2.0)
        outs.append(guided(x, 2.0))
        assert model.calls == ([["cond", "uncond"]] if batched else [["cond"], ["uncond"]])
    assert torch.equal(outs[0], outs[1])


def test_scale_schedule_is_indexed_by_step_and_clamped():
    model = Branches()
    cond, uncond = predictions(7)
    model.set(cond, uncond)
    schedule = [7.0, 5.0, 1.0, 3.0]
    guided = derrumbe.Guided(model, scale=99.0, scale_schedule=schedule, sigma_start=10.0, sigma_end=0.1)
    x = randn(SHAPE, 3)
    for step in range(7):
        expected_scale = schedule[min(step, len(schedule) - 1)]
        guided.begin_step(step, 7, 2.0)
        assert guided.current_scale(2.0) == expected_scale
        assert guided.current_scale(20.0) == 1.0 and guided.current_scale(0.05) == 1.0  # interval wins
        model.calls.clear()
        out = guided(x, 2.0)
        if expected_scale == 1.0:  # a scale of 1 skips the unconditional branch
            assert model.calls == [["cond"]] and torch.equal(out, cond)
        else:
            assert model.calls == [["cond", "uncond"]]
            assert torch.equal(out, derrumbe.cfg_combine(cond, uncond, expected_scale))


def test_scale_schedule_and_interval_through_the_sampler():
    """The sampler's begin_step drives the schedule: count the branches per step."""
    n = len(SIGMAS) - 1
    model = MixtureBranches(SHAPE[1:])
    schedule = [6.0, 1.0, 4.0, 4.0, 1.0, 2.0]
    sigma_start, sigma_end = float(SIGMAS[1]), float(SIGMAS[5])
    guided = derrumbe.Guided(model, scale_schedule=schedule, sigma_start=sigma_start, sigma_end=sigma_end)
    derrumbe.sample(guided, randn(SHAPE, 1) * SIGMAS[0], SIGMAS, "euler", progress=False)
    expected = []
    for step in range(n):
        scale = schedule[min(step, len(schedule) - 1)] if sigma_end <= SIGMAS[step] <= sigma_start else 1.0
        expected.append(["cond"] if scale == 1.0 else ["cond", "uncond"])
    assert model.calls == expected


def test_bad_guidance_options():
    model = Branches()
    with pytest.raises(ValueError, match="unknown method 'pag' \\(known: cfg, cfg_zero, apg\\)"):
        derrumbe.Guided(model, method="pag")
    with pytest.raises(ValueError, match="need 0 <= sigma_end <= sigma_start"):
        derrumbe.Guided(model, sigma_start=1.0, sigma_end=2.0)
    with pytest.raises(ValueError, match="need 0 <= sigma_end <= sigma_start"):
        derrumbe.Guided(model, sigma_end=-0.1)
    with pytest.raises(ValueError, match="need 0 <= sigma_end <= sigma_start"):
        derrumbe.Guided(model, sigma_start=math.nan)
    with pytest.raises(ValueError, match="scale must be finite"):
        derrumbe.Guided(model, scale=math.inf)
    with pytest.raises(ValueError, match="scale_schedule entries must be finite"):
        derrumbe.Guided(model, scale_schedule=[2.0, math.nan])
    with pytest.raises(ValueError, match="zero_init_steps must be >= 0"):
        derrumbe.Guided(model, method="cfg_zero", zero_init_steps=-1)
    with pytest.raises(ValueError, match="apg_norm_threshold must be >= 0"):
        derrumbe.Guided(model, method="apg", apg_norm_threshold=-1.0)
