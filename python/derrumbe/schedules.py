"""Noise schedules: each returns a 1-D float64 tensor of VE sigmas, decreasing, ending in 0.

karras, exponential, polyexponential, vp, kl_optimal take sigma_min/sigma_max; simple,
sgm_uniform, ddim_uniform and beta pick from a model's discrete training sigmas
(``discrete_vp_sigmas()``); linear_quadratic and flow_shift build rectified-flow schedules
(converted with sigma = t / (1 - t)). ``split_for_strength(sigmas, s)`` keeps the last
``round(s * n)`` steps (SDEdit / img2img strength).
"""
from ._derrumbe import schedules as _native

custom = _native.custom
discrete_vp_sigmas = _native.discrete_vp_sigmas
exponential = _native.exponential
flow_mu = _native.flow_mu
flow_shift = _native.flow_shift
flow_t_to_sigma = _native.flow_t_to_sigma
karras = _native.karras
kl_optimal = _native.kl_optimal
linear_quadratic = _native.linear_quadratic
names = _native.names
polyexponential = _native.polyexponential
sigma_to_flow_t = _native.sigma_to_flow_t
split_for_strength = _native.split_for_strength
validate = _native.validate
vp = _native.vp


def _table(model_sigmas):
    """A model's training sigmas as a list of floats (accepts lists, arrays and tensors)."""
    if hasattr(model_sigmas, "tolist"):
        return [float(s) for s in model_sigmas.tolist()]
    return [float(s) for s in model_sigmas]


def simple(n, model_sigmas):
    return _native.simple(n, _table(model_sigmas))


def sgm_uniform(n, model_sigmas):
    return _native.sgm_uniform(n, _table(model_sigmas))


def ddim_uniform(n, model_sigmas):
    return _native.ddim_uniform(n, _table(model_sigmas))


def beta(n, model_sigmas, alpha=0.6, beta=0.6):
    return _native.beta(n, _table(model_sigmas), alpha, beta)
