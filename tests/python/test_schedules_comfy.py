"""derrumbe's ComfyUI schedules against their published definitions.

ComfyUI is not on PyPI, so there is no package to compare with. Instead each schedule is
re-implemented below, in plain Python/numpy, from ComfyUI's definition (comfy/samplers.py:
simple_scheduler, normal_scheduler(sgm=True), ddim_scheduler, beta_scheduler,
kl_optimal_scheduler; comfy/model_sampling.py: the discrete sigma table and its log-linear
sigma(t)). These ``ref_*`` functions are the references; they share no code with derrumbe. Where
a definition uses a special function, an independent implementation is the reference: scipy's
``scipy.stats.beta.ppf`` for the beta schedule's inverse Beta CDF (derrumbe inverts its own
continued-fraction incomplete beta), and diffusers' schedulers for the training table.

Entries that a schedule picks from the table are compared exactly (same float64 values, same
order, same count); computed entries (sgm_uniform's interpolation, kl_optimal) with rtol 1e-12.

Intentional differences from ComfyUI, not tested as parity: derrumbe works in float64 where
ComfyUI keeps its table in float32, and ``kl_optimal(1, ...)`` is ``[sigma_max, 0]`` where
ComfyUI's formula divides 0 by 0.
"""
import math

import numpy as np
import pytest
import torch

import derrumbe

S = derrumbe.schedules
F64 = torch.float64

DEFAULT_TABLE = S.discrete_vp_sigmas()  # SD's table: 1000 ascending sigmas, 0.0292 .. 14.61
# Other tables a model could have: DDPM's linear betas, a short geometric table, and a short
# irregular one (random ascending values), so nothing depends on the table being smooth or long.
CUSTOM_TABLES = {
    "ddpm_linear": S.discrete_vp_sigmas(1000, 0.0001, 0.02, "linear"),
    "geometric_37": list(np.geomspace(0.03, 80.0, 37)),
    "irregular_20": list(np.cumsum(np.random.default_rng(5).uniform(0.01, 2.0, 20))),
}
TABLES = {"default": DEFAULT_TABLE, **CUSTOM_TABLES}
STEPS = [1, 2, 7, 20, 50, 999, 1000, 1500]


def as_list(t):
    assert isinstance(t, torch.Tensor) and t.dtype == F64 and t.dim() == 1
    return t.tolist()


def assert_close_elementwise(actual, expected, rtol=1e-12):
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{len(a)} sigmas, expected {len(e)}"
    np.testing.assert_allclose(a, e, rtol=rtol, atol=0)


def check_schedule_shape(sigmas):
    """Every schedule ends in exactly one 0 and is non-increasing before it."""
    assert sigmas[-1] == 0.0 and all(s > 0 for s in sigmas[:-1])
    assert all(a >= b for a, b in zip(sigmas, sigmas[1:]))


# ---- the references (ComfyUI's definitions, written out independently) -----------------------


def ref_simple(n, table):
    # comfy simple_scheduler: ss = len / steps; sigs = [sigmas[-(1 + int(x * ss))] for x in range(steps)] + [0]
    ss = len(table) / n
    return [table[-(1 + int(x * ss))] for x in range(n)] + [0.0]


def ref_table_sigma(table, t):
    # comfy ModelSamplingDiscrete.sigma(t): log-linear interpolation between the neighbouring entries
    lo, hi = math.floor(t), math.ceil(t)
    w = t - lo
    return math.exp((1 - w) * math.log(table[lo]) + w * math.log(table[hi]))


def ref_sgm_uniform(n, table):
    # comfy normal_scheduler(sgm=True): timestep(sigma_max) = len - 1, timestep(sigma_min) = 0;
    # t = linspace(start, end, steps + 1)[:-1]; sigmas = sigma(t) + [0]
    ts = np.linspace(len(table) - 1, 0, n + 1)[:-1]
    return [ref_table_sigma(table, float(t)) for t in ts] + [0.0]


def ref_ddim_uniform(n, table):
    # comfy ddim_scheduler: sigs = [0]; x = 1; while x < len: sigs += [sigmas[x]]; x += ss; reversed
    ss = max(len(table) // n, 1)
    sigs = [0.0]
    x = 1
    while x < len(table):
        sigs.append(table[x])
        x += ss
    return sigs[::-1]


def ref_beta_indices(n, length, alpha, beta):
    # comfy beta_scheduler: ts = 1 - linspace(0, 1, steps, endpoint=False);
    # ts = rint(scipy.stats.beta.ppf(ts, alpha, beta) * (len - 1))
    from scipy.stats import beta as beta_dist

    ts = 1 - np.linspace(0, 1, n, endpoint=False)
    return np.rint(beta_dist.ppf(ts, alpha, beta) * (length - 1))


def ref_beta(n, table, alpha=0.6, beta=0.6):
    # ... then the table entries at ts, skipping an index equal to the previous one, + [0]
    sigs, last = [], -1
    for t in ref_beta_indices(n, len(table), alpha, beta):
        if t != last:
            sigs.append(table[int(t)])
        last = t
    return sigs + [0.0]


def ref_kl_optimal(n, sigma_min, sigma_max):
    # comfy kl_optimal_scheduler: w_i = i / (n - 1); sigma_i = tan(w atan(smin) + (1 - w) atan(smax)), + [0]
    # (n = 1: derrumbe takes w = 0, i.e. [sigma_max, 0]; ComfyUI would compute 0 / 0)
    out = []
    for i in range(n):
        w = i / (n - 1) if n > 1 else 0.0
        out.append(math.tan(w * math.atan(sigma_min) + (1 - w) * math.atan(sigma_max)))
    return out + [0.0]


# ---- the training table ------------------------------------------------------------------------


def diffusers_betas_float64(num, beta_start, beta_end, schedule):
    """diffusers' beta construction (DDPMScheduler / EulerDiscreteScheduler __init__), in float64."""
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num, dtype=F64) ** 2
    return torch.linspace(beta_start, beta_end, num, dtype=F64)


def sigmas_from_betas(betas):
    acp = torch.cumprod(1.0 - betas, dim=0)  # alphas_cumprod, as diffusers computes it
    return ((1 - acp) / acp).sqrt()


TABLE_CONFIGS = [
    (1000, 0.00085, 0.012, "scaled_linear"),  # Stable Diffusion 1.x/2.x, SDXL
    (1000, 0.00085, 0.012, "linear"),
    (1000, 0.0001, 0.02, "linear"),  # DDPM
    (500, 0.001, 0.03, "scaled_linear"),
]


@pytest.mark.parametrize("num, beta_start, beta_end, schedule", TABLE_CONFIGS)
def test_discrete_vp_sigmas_match_diffusers_betas_in_float64(num, beta_start, beta_end, schedule):
    actual = S.discrete_vp_sigmas(num, beta_start, beta_end, schedule)
    assert isinstance(actual, list) and len(actual) == num
    assert all(a < b for a, b in zip(actual, actual[1:]))
    expected = sigmas_from_betas(diffusers_betas_float64(num, beta_start, beta_end, schedule))
    assert_close_elementwise(actual, expected.tolist())  # achieved ~4e-16


@pytest.mark.parametrize("schedule", ["scaled_linear", "linear"])
def test_discrete_vp_sigmas_match_the_diffusers_schedulers(schedule):
    """Against the real schedulers. They build their betas in float32: with those float32 betas
    taken to float64 the tables agree to ~2e-7 (the betas' own rounding), and with diffusers'
    float32 alphas_cumprod / sigmas to ~1e-6 / ~1.3e-5 (its float32 cumprod)."""
    from diffusers import DDPMScheduler, EulerDiscreteScheduler

    kw = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule=schedule)
    ddpm, euler = DDPMScheduler(**kw), EulerDiscreteScheduler(**kw)
    actual = torch.tensor(S.discrete_vp_sigmas(1000, 0.00085, 0.012, schedule), dtype=F64)
    assert ddpm.betas.dtype == torch.float32
    assert_close_elementwise(actual, sigmas_from_betas(ddpm.betas.to(F64)), rtol=1e-6)
    assert_close_elementwise(1 / (1 + actual**2), ddpm.alphas_cumprod.to(F64), rtol=1e-5)
    # EulerDiscreteScheduler's training sigmas: descending, with a 0 appended.
    assert_close_elementwise(actual, euler.sigmas[:-1].flip(0).to(F64), rtol=5e-5)


def test_default_table_is_stable_diffusions():
    assert DEFAULT_TABLE == S.discrete_vp_sigmas(1000, 0.00085, 0.012, "scaled_linear")
    # the ends from the definition: sigma_t = sqrt((1 - abar_t) / abar_t), abar_t = prod(1 - beta_s)
    assert DEFAULT_TABLE[0] == pytest.approx(math.sqrt(0.00085 / (1 - 0.00085)), rel=1e-15)
    betas = diffusers_betas_float64(1000, 0.00085, 0.012, "scaled_linear")
    assert DEFAULT_TABLE[-1] == pytest.approx(sigmas_from_betas(betas)[-1].item(), rel=1e-12)


# ---- the table-picking schedules ------------------------------------------------------------


@pytest.mark.parametrize("table_name", TABLES)
@pytest.mark.parametrize("n", STEPS)
def test_simple(n, table_name):
    table = TABLES[table_name]
    actual = as_list(S.simple(n, table))
    assert actual == ref_simple(n, table)  # exact: the same entries of the table
    assert len(actual) == n + 1
    check_schedule_shape(actual)


@pytest.mark.parametrize("table_name", TABLES)
@pytest.mark.parametrize("n", STEPS)
def test_sgm_uniform(n, table_name):
    table = TABLES[table_name]
    actual = as_list(S.sgm_uniform(n, table))
    assert_close_elementwise(actual, ref_sgm_uniform(n, table))
    assert len(actual) == n + 1 and actual[0] == pytest.approx(table[-1], rel=1e-15)
    check_schedule_shape(actual)


def test_sgm_uniform_at_whole_steps_is_the_table():
    """When len - 1 is a multiple of n the t are whole steps: the picks are table entries."""
    table = DEFAULT_TABLE
    actual = as_list(S.sgm_uniform(37, table))  # 999 = 27 * 37
    expected = [table[999 - 27 * k] for k in range(37)] + [0.0]
    assert_close_elementwise(actual, expected, rtol=1e-15)


@pytest.mark.parametrize("table_name", TABLES)
@pytest.mark.parametrize("n", STEPS)
def test_ddim_uniform(n, table_name):
    table = TABLES[table_name]
    actual = as_list(S.ddim_uniform(n, table))
    assert actual == ref_ddim_uniform(n, table)  # exact
    check_schedule_shape(actual)


def test_ddim_uniform_step_counts():
    """ComfyUI's ddim_uniform does not always give n steps: it takes every floor(L / n)-th entry
    from index 1, so the count is len(range(1, L, floor(L / n)))."""
    length = len(DEFAULT_TABLE)
    for n in (1, 7, 20, 300, 1000):
        expected = len(range(1, length, max(length // n, 1)))
        assert len(S.ddim_uniform(n, DEFAULT_TABLE)) - 1 == expected, n
    assert len(S.ddim_uniform(7, DEFAULT_TABLE)) - 1 != 7  # stride 142 gives 8 steps
    assert as_list(S.ddim_uniform(1, DEFAULT_TABLE)) == [DEFAULT_TABLE[1], 0.0]


BIG = "1..1e6"  # the high-resolution table of test_beta_ppf_at_high_resolution
# Cases that once failed and guard the fixes in beta_ppf (src/sample/schedules.cpp): quantiles
# exactly on a half-integer index (symmetric Beta medians, ppf(0.75; 1, 2)) must round as
# numpy.rint does, and q = 1 must give the table's largest sigma even where the double CDF
# reaches 1.0 early (large beta).


def beta_case(table_name, n, alpha, beta, *rest):
    return pytest.param(table_name, n, alpha, beta, *rest, id=f"{table_name}-{n}-{alpha}-{beta}")


@pytest.mark.parametrize("table_name, n, alpha, beta",
                         [beta_case(t, n, 0.6, 0.6) for t in TABLES for n in STEPS])
def test_beta_default_parameters(table_name, n, alpha, beta):
    table = TABLES[table_name]
    actual = as_list(S.beta(n, table))  # alpha = beta = 0.6 by default
    assert actual == ref_beta(n, table, alpha, beta)  # exact: same indices from derrumbe's ppf and scipy's
    check_schedule_shape(actual)
    assert actual[0] == table[-1]


BETA_PARAMS = [(0.5, 0.7), (0.7, 0.5), (2.0, 1.0), (1.0, 2.0), (1.0, 1.0), (0.3, 3.0), (5.0, 0.8)]


@pytest.mark.parametrize("table_name, n, alpha, beta",
                         [beta_case(t, n, a, b) for t in ["default", "irregular_20"] for n in [1, 2, 7, 20, 50, 1000]
                          for a, b in BETA_PARAMS])
def test_beta_parameters(table_name, n, alpha, beta):
    table = TABLES[table_name]
    actual = as_list(S.beta(n, table, alpha, beta))
    assert actual == ref_beta(n, table, alpha, beta)
    check_schedule_shape(actual)


BIG_TABLE = [float(k + 1) for k in range(1_000_000)]


@pytest.mark.parametrize("table_name, n, alpha, beta",
                         [beta_case(BIG, n, a, b) for n in [50, 997] for a, b in [(0.6, 0.6)] + BETA_PARAMS])
def test_beta_ppf_at_high_resolution(table_name, n, alpha, beta):
    """A table of 1..L with L = 1e6 makes each picked sigma its own index + 1, so derrumbe's
    inverse Beta CDF is compared with scipy's to ~1e-6 at every quantile (the indices must be
    identical), and the de-duplication is the reference's."""
    length = len(BIG_TABLE)
    actual = as_list(S.beta(n, BIG_TABLE, alpha, beta))[:-1]
    indices = ref_beta_indices(n, length, alpha, beta)
    expected = [float(t) + 1 for i, t in enumerate(indices) if i == 0 or t != indices[i - 1]]
    assert actual == expected


CLOSED_FORM_PPF = {
    (2.0, 1.0): lambda q: math.sqrt(q),  # CDF x^2
    (1.0, 2.0): lambda q: 1 - math.sqrt(1 - q),  # CDF 1 - (1 - x)^2
    (1.0, 1.0): lambda q: q,  # uniform
}


@pytest.mark.parametrize("table_name, n, alpha, beta", [beta_case(BIG, 40, a, b) for a, b in CLOSED_FORM_PPF])
def test_beta_closed_form_quantiles(table_name, n, alpha, beta):
    """Beta distributions with an elementary quantile function: a reference without scipy."""
    ppf = CLOSED_FORM_PPF[alpha, beta]
    length = len(BIG_TABLE)
    actual = as_list(S.beta(n, BIG_TABLE, alpha, beta))[:-1]
    qs = 1 - np.linspace(0, 1, n, endpoint=False)
    expected = [float(np.rint(ppf(float(q)) * (length - 1))) + 1 for q in qs]
    assert actual == expected


def test_beta_skips_repeated_indices():
    """With more steps than table entries the repeated indices are dropped (ComfyUI behaviour)."""
    table = TABLES["irregular_20"]
    actual = as_list(S.beta(50, table, 0.5, 0.7))
    assert len(actual) - 1 < 50
    assert len(set(actual)) == len(actual)
    assert actual == ref_beta(50, table, 0.5, 0.7)


# The cases that guard beta_ppf's rounding and its upper end (see the note above BIG_TABLE's
# tests): each expected value comes from the reference, and the quantile it rests on is checked
# from the distribution's symmetry or its end.


def test_beta_rounds_a_half_index_as_numpy_rint():
    # a symmetric Beta's median is 0.5: with 4 entries the index is 0.5 * 3 = 1.5, which rint
    # takes to 2 (half to even), so the second sigma is table[2]
    assert ref_beta_indices(2, 4, 0.6, 0.6)[1] == 2
    assert as_list(S.beta(2, [1.0, 2.0, 3.0, 4.0])) == ref_beta(2, [1.0, 2.0, 3.0, 4.0])


def test_beta_default_20_steps_middle_sigma():
    # The most common use: 20 steps, default alpha = beta = 0.6, SD's table. Step 10 has q = 0.5,
    # the median, at index rint(0.5 * 999) = rint(499.5) = 500 (half to even).
    table = DEFAULT_TABLE
    assert ref_beta_indices(20, len(table), 0.6, 0.6)[10] == 500
    assert as_list(S.beta(20, table))[10] == ref_beta(20, table)[10] == table[500]


@pytest.mark.parametrize("alpha, beta", [(0.6, 5.0), (0.6, 10.0), (2.0, 8.0), (1.0, 20.0)])
def test_beta_first_sigma_is_the_table_maximum(alpha, beta):
    # q = 1 at step 0 and ppf(1) = 1 for every Beta: a beta schedule starts at sigma_max, even
    # where the CDF reaches 1.0 in double precision well before x = 1 (large beta)
    table = DEFAULT_TABLE
    assert ref_beta(10, table, alpha, beta)[0] == table[-1]
    assert as_list(S.beta(10, table, alpha, beta)) == ref_beta(10, table, alpha, beta)


# ---- kl_optimal ------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma_min, sigma_max", [(0.0292, 14.6146), (0.002, 80.0), (0.5, 1.0), (1e-4, 1e4)])
@pytest.mark.parametrize("n", STEPS)
def test_kl_optimal(n, sigma_min, sigma_max):
    actual = as_list(S.kl_optimal(n, sigma_min, sigma_max))
    assert_close_elementwise(actual, ref_kl_optimal(n, sigma_min, sigma_max))
    assert actual[0] == pytest.approx(sigma_max, rel=1e-12)
    if n > 1:
        assert actual[-2] == pytest.approx(sigma_min, rel=1e-12)
    check_schedule_shape(actual)


def test_kl_optimal_one_step():
    assert as_list(S.kl_optimal(1, 0.03, 14.6)) == pytest.approx([14.6, 0.0], rel=1e-15)


# ---- bad input -------------------------------------------------------------------------------

PICKERS = {"simple": S.simple, "sgm_uniform": S.sgm_uniform, "ddim_uniform": S.ddim_uniform, "beta": S.beta}


@pytest.mark.parametrize("name", PICKERS)
def test_bad_step_counts(name):
    fn = PICKERS[name]
    for n in [0, -3, 100001]:
        with pytest.raises(ValueError, match=rf"^{name}: number of steps must be in \[1, 100000\], got {n}$"):
            fn(n, DEFAULT_TABLE)
    assert len(fn(100000, DEFAULT_TABLE)) > 1  # the upper bound itself is accepted


@pytest.mark.parametrize("name", PICKERS)
def test_bad_tables(name):
    fn = PICKERS[name]
    for table in [[], [1.0]]:
        with pytest.raises(ValueError, match=f"^{name}: model sigma table needs at least 2 entries$"):
            fn(5, table)
    for table in [[1.0, 2.0, 2.0, 3.0], [3.0, 2.0, 1.0], [0.1, 0.5, 0.4, 1.0]]:
        with pytest.raises(ValueError, match=f"^{name}: model sigma table must be ascending$"):
            fn(5, table)
    for table, bad in [([-1.0, 1.0, 2.0], 0), ([0.5, -1.0, 2.0], 1), ([0.0, 1.0, 2.0], 0),
                       ([0.5, 1.0, math.nan], 2), ([0.5, math.nan, 2.0], 1), ([0.5, 1.0, math.inf], 2)]:
        with pytest.raises(ValueError, match=f"^{name}: model sigma table entry {bad} is not finite and positive$"):
            fn(5, table)


@pytest.mark.parametrize("alpha, beta", [(0.0, 0.6), (-1.0, 0.6), (0.6, 0.0), (0.6, -2.0), (math.nan, 0.6),
                                         (0.6, math.nan), (math.inf, 0.6), (0.6, math.inf)])
def test_bad_beta_parameters(alpha, beta):
    with pytest.raises(ValueError, match="^beta: alpha and beta must be positive$"):
        S.beta(10, DEFAULT_TABLE, alpha, beta)


def test_bad_kl_optimal_input():
    with pytest.raises(ValueError, match=r"^kl_optimal: number of steps must be in \[1, 100000\], got 0$"):
        S.kl_optimal(0, 0.03, 14.6)
    for sigma_min, sigma_max in [(0.0, 14.6), (-0.1, 14.6), (14.6, 0.03), (1.0, 1.0), (0.03, math.inf),
                                 (math.nan, 14.6)]:
        with pytest.raises(ValueError, match=r"^kl_optimal: need 0 < sigma_min < sigma_max \(finite\)"):
            S.kl_optimal(10, sigma_min, sigma_max)


def test_bad_training_table_arguments():
    with pytest.raises(ValueError, match=r"unknown beta_schedule 'cosine' \(known: scaled_linear, linear\)"):
        S.discrete_vp_sigmas(beta_schedule="cosine")
    with pytest.raises(ValueError, match="discrete_vp_sigmas: num_train_steps out of range"):
        S.discrete_vp_sigmas(1)
    for beta_start, beta_end in [(0.0, 0.012), (0.012, 0.00085), (0.00085, 1.0)]:
        with pytest.raises(ValueError, match="discrete_vp_sigmas: need 0 < beta_start < beta_end < 1"):
            S.discrete_vp_sigmas(1000, beta_start, beta_end)
