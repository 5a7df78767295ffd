"""Parity with k-diffusion (the PyPI package, run at test time): every k-diffusion sampler
and schedule against k-diffusion's own function, on the exact Gaussian-mixture denoiser in
float64. Stochastic samplers get the same noise on both sides: k-diffusion through its
`noise_sampler` (and torch.randn_like for churn), derrumbe through its `noise` option."""
import pytest
import torch

import derrumbe
import k_diffusion.sampling as K

from conftest import max_rel_diff

SIGMAS = derrumbe.schedules.karras(12, 0.03, 15.0)


def start(seed=1):
    return derrumbe.randn([2, 3, 2, 4, 5], seed=seed, dtype=torch.float64) * SIGMAS[0]


class SharedNoise:
    """The k-th noise draw of a run is randn(seed, stream=k): both sides consume the same
    sequence as long as they draw in the same order."""

    def __init__(self, shape, seed=99):
        self.shape, self.seed, self.count = list(shape), seed, 0

    def next(self):
        self.count += 1
        return derrumbe.randn(self.shape, seed=self.seed, stream=self.count, dtype=torch.float64)

    def for_kdiffusion(self):
        return lambda sigma, sigma_next: self.next()

    def for_derrumbe(self):
        return lambda like, step, draw, sigma, sigma_next: self.next()


DETERMINISTIC = ["euler", "heun", "dpm_2", "lms", "dpmpp_2m"]
STOCHASTIC = {  # derrumbe name -> (k-diffusion function, extra k-diffusion kwargs)
    "euler_ancestral": (K.sample_euler_ancestral, {}),
    "dpm_2_ancestral": (K.sample_dpm_2_ancestral, {}),
    "dpmpp_2s_ancestral": (K.sample_dpmpp_2s_ancestral, {}),
    "dpmpp_sde": (K.sample_dpmpp_sde, {}),
    "dpmpp_2m_sde": (K.sample_dpmpp_2m_sde, {"solver_type": "midpoint"}),
    "dpmpp_2m_sde_heun": (K.sample_dpmpp_2m_sde, {"solver_type": "heun"}),
    "dpmpp_3m_sde": (K.sample_dpmpp_3m_sde, {}),
}


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_sampler_matches_kdiffusion(gmm, name):
    x = start()
    ref = getattr(K, f"sample_{name}")(gmm, x.clone(), SIGMAS, disable=True)
    ours = derrumbe.sample(gmm, x, SIGMAS, name, progress=False)
    assert max_rel_diff(ours, ref) < 1e-6


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_lms_orders_match_kdiffusion(gmm, order):
    x = start()
    ref = K.sample_lms(gmm, x.clone(), SIGMAS, disable=True, order=order)
    ours = derrumbe.sample(gmm, x, SIGMAS, "lms", order=order, progress=False)
    assert max_rel_diff(ours, ref) < 1e-6


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
@pytest.mark.parametrize("eta", [1.0, 0.5, 0.0])
def test_stochastic_sampler_matches_kdiffusion_with_the_same_noise(gmm, name, eta):
    fn, extra = STOCHASTIC[name]
    x = start()
    theirs, ours_noise = SharedNoise(x.shape), SharedNoise(x.shape)
    ref = fn(gmm, x.clone(), SIGMAS, disable=True, eta=eta, s_noise=0.9,
             noise_sampler=theirs.for_kdiffusion(), **extra)
    ours = derrumbe.sample(gmm, x, SIGMAS, name, eta=eta, s_noise=0.9, noise=ours_noise.for_derrumbe(),
                           progress=False)
    assert theirs.count == ours_noise.count
    assert max_rel_diff(ours, ref) < 1e-6


@pytest.mark.parametrize("name", ["euler", "heun", "dpm_2"])
def test_churn_matches_kdiffusion(gmm, name, monkeypatch):
    """Karras churn: k-diffusion draws torch.randn_like once per step; step k's draw is
    randn(stream=k) on both sides."""
    x = start()
    calls = {"step": 0}

    def randn_like(t, **kwargs):
        calls["step"] += 1
        return derrumbe.randn(list(t.shape), seed=5, stream=calls["step"] - 1, dtype=t.dtype)

    def ours_noise(like, step, draw, sigma, sigma_next):
        return derrumbe.randn(list(like.shape), seed=5, stream=step, dtype=like.dtype)

    churn = dict(s_churn=4.0, s_tmin=0.2, s_tmax=8.0, s_noise=1.003)
    monkeypatch.setattr(torch, "randn_like", randn_like)
    ref = getattr(K, f"sample_{name}")(gmm, x.clone(), SIGMAS, disable=True, **churn)
    monkeypatch.undo()
    ours = derrumbe.sample(gmm, x, SIGMAS, name, noise=ours_noise, progress=False, **churn)
    assert max_rel_diff(ours, ref) < 1e-6
    # Churn changed the result (the test exercises it).
    plain = derrumbe.sample(gmm, x, SIGMAS, name, progress=False)
    assert max_rel_diff(plain, ref) > 1e-3


def test_callback_sees_kdiffusion_denoised(gmm):
    x = start()
    theirs, ours = [], []
    K.sample_dpmpp_2m(gmm, x.clone(), SIGMAS, disable=True, callback=lambda d: theirs.append(d["denoised"]))
    derrumbe.sample(gmm, x, SIGMAS, "dpmpp_2m", progress=False, callback=lambda d: ours.append(d["denoised"]))
    assert len(theirs) == len(ours) == len(SIGMAS) - 1
    for a, b in zip(ours, theirs):
        assert max_rel_diff(a, b) < 1e-6


@pytest.mark.parametrize("n", [1, 2, 10, 33])
def test_schedules_match_kdiffusion(n, monkeypatch):
    # k-diffusion builds its ramps with torch's default dtype: run it in float64 so the
    # comparison is of the formulas, not of float32 rounding.
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: _linspace64(*a, **k))
    pairs = [
        (derrumbe.schedules.karras(n, 0.03, 14.6, 7.0), K.get_sigmas_karras(n, 0.03, 14.6, 7.0)),
        (derrumbe.schedules.karras(n, 0.002, 80.0, 3.0), K.get_sigmas_karras(n, 0.002, 80.0, 3.0)),
        (derrumbe.schedules.exponential(n, 0.03, 14.6), K.get_sigmas_exponential(n, 0.03, 14.6)),
        (derrumbe.schedules.polyexponential(n, 0.03, 14.6, 1.0), K.get_sigmas_polyexponential(n, 0.03, 14.6, 1.0)),
        (derrumbe.schedules.polyexponential(n, 0.03, 14.6, 2.5), K.get_sigmas_polyexponential(n, 0.03, 14.6, 2.5)),
        (derrumbe.schedules.vp(n), K.get_sigmas_vp(n)),
    ]
    for ours, ref in pairs:
        assert ours.dtype == torch.float64
        assert ours.shape == ref.shape
        assert ref.dtype == torch.float64
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)


_torch_linspace = torch.linspace


def _linspace64(*args, **kwargs):
    kwargs.setdefault("dtype", torch.float64)
    return _torch_linspace(*args, **kwargs)
