"""The Python API: errors a user gets for bad input, cancellation and resume, noise
reproducibility, guidance and parameterization wrappers."""
import math

import pytest
import torch

import derrumbe

from conftest import max_rel_diff

SIGMAS = derrumbe.schedules.karras(8, 0.05, 10.0)


def x_T(shape=(2, 3, 2, 4, 5), seed=1):
    return derrumbe.randn(list(shape), seed=seed, dtype=torch.float64) * SIGMAS[0]


def test_samplers_are_listed():
    names = derrumbe.samplers()
    for expected in ["euler", "dpmpp_2m", "dpmpp_2m_sde_heun", "uni_pc", "uni_pc_bh2", "deis", "ipndm", "ddim", "lcm"]:
        assert expected in names


def test_a_python_callable_and_the_native_model_agree(gmm):
    native = derrumbe.sample(gmm, x_T(), SIGMAS, "dpmpp_2m", progress=False)
    python = derrumbe.sample(lambda x, sigma: gmm(x, sigma), x_T(), SIGMAS, "dpmpp_2m", progress=False)
    assert torch.equal(native, python)


def test_input_is_not_modified(gmm):
    x = x_T()
    before = x.clone()
    derrumbe.sample(gmm, x, SIGMAS, "dpmpp_2m_sde", progress=False)
    assert torch.equal(x, before)


def test_sigmas_may_be_a_list(gmm):
    out = derrumbe.sample(gmm, x_T(), SIGMAS.tolist(), "euler", progress=False)
    assert torch.equal(out, derrumbe.sample(gmm, x_T(), SIGMAS, "euler", progress=False))


@pytest.mark.parametrize("sigmas, message", [
    ([1.0, 2.0, 0.0], "strictly decreasing"),
    ([1.0, float("nan"), 0.0], "not finite"),
    ([1.0, float("inf"), 0.0], "not finite"),
    ([5.0], "at least 2"),
    ([1.0, -0.5], "negative"),
])
def test_bad_sigmas(gmm, sigmas, message):
    with pytest.raises(ValueError, match=message):
        derrumbe.sample(gmm, x_T(), torch.tensor(sigmas, dtype=torch.float64), "euler", progress=False)


def test_bad_names_and_options(gmm):
    with pytest.raises(ValueError, match="unknown sampler 'dpmpp_2n'.*known samplers: euler"):
        derrumbe.sample(gmm, x_T(), SIGMAS, "dpmpp_2n", progress=False)
    with pytest.raises(ValueError, match="order for lms must be in"):
        derrumbe.sample(gmm, x_T(), SIGMAS, "lms", order=9, progress=False)
    with pytest.raises(ValueError, match="eta"):
        derrumbe.sample(gmm, x_T(), SIGMAS, "euler_ancestral", eta=-1.0, progress=False)
    with pytest.raises(ValueError, match="empty"):
        derrumbe.sample(gmm, torch.zeros(0, 3, 2, 4, 5, dtype=torch.float64), SIGMAS, "euler", progress=False)
    with pytest.raises(ValueError, match="floating point"):
        derrumbe.sample(gmm, torch.zeros(1, 3, 2, 4, 5, dtype=torch.int32), SIGMAS, "euler", progress=False)
    with pytest.raises(ValueError, match="unknown schedule|unknown beta_schedule"):
        derrumbe.schedules.discrete_vp_sigmas(beta_schedule="cosine")
    with pytest.raises(ValueError, match="number of steps"):
        derrumbe.schedules.karras(0, 0.1, 10.0)
    with pytest.raises(ValueError, match="number of steps"):
        derrumbe.schedules.karras(10**9, 0.1, 10.0)


def test_models_that_misbehave(gmm):
    x = x_T()
    with pytest.raises(RuntimeError, match="shape"):
        derrumbe.sample(lambda x, s: x[:, :1], x, SIGMAS, "euler", progress=False)
    with pytest.raises(RuntimeError, match="dtype"):
        derrumbe.sample(lambda x, s: x.float(), x, SIGMAS, "euler", progress=False)
    with pytest.raises(RuntimeError, match="must return a torch.Tensor, got NoneType"):
        derrumbe.sample(lambda x, s: None, x, SIGMAS, "euler", progress=False)
    with pytest.raises(RuntimeError, match="non-finite"):
        derrumbe.sample(lambda x, s: x * math.nan, x, SIGMAS, "euler", progress=False)

    def raises(x, s):
        raise KeyError("missing weights")

    with pytest.raises(RuntimeError, match="model failed at step 0") as info:
        derrumbe.sample(raises, x, SIGMAS, "euler", progress=False)
    assert isinstance(info.value.__cause__, KeyError)


def test_the_model_gets_a_sigma_tensor_per_batch_item(gmm):
    seen = []

    def model(x, sigma):
        seen.append(sigma)
        return gmm(x, sigma)

    derrumbe.sample(model, x_T(), SIGMAS, "heun", progress=False)
    assert all(s.shape == (2,) and s.dtype == torch.float64 for s in seen)
    assert seen[0][0].item() == SIGMAS[0].item()


def test_cancel_and_resume_equal_an_uninterrupted_run(gmm, tmp_path):
    full = derrumbe.sample(gmm, x_T(), SIGMAS, "dpmpp_3m_sde", seed=3, progress=False)
    with pytest.raises(derrumbe.Cancelled, match="after step 3"):
        derrumbe.sample(gmm, x_T(), SIGMAS, "dpmpp_3m_sde", seed=3, progress=False,
                        callback=lambda info: info["step"] == 2)
    state = derrumbe.run(gmm, derrumbe.start_state("dpmpp_3m_sde", x_T()), SIGMAS, seed=3, progress=False,
                         callback=lambda info: info["step"] == 2)
    assert state.cancelled and state.step == 3 and len(state.tensors) == 2
    path = str(tmp_path / "state.bin")
    state.save(path)
    resumed = derrumbe.run(gmm, derrumbe.SamplerState.load(path), SIGMAS, seed=3, progress=False)
    assert not resumed.cancelled and resumed.step == len(SIGMAS) - 1
    assert torch.equal(resumed.x, full)


def test_state_files_are_checked(tmp_path, gmm):
    with pytest.raises(FileNotFoundError, match="cannot open"):
        derrumbe.SamplerState.load(str(tmp_path / "missing.bin"))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a state file at all")
    with pytest.raises(ValueError, match="not a sampler state file"):
        derrumbe.SamplerState.load(str(junk))
    state = derrumbe.run(gmm, derrumbe.start_state("dpmpp_2m", x_T()), SIGMAS, progress=False,
                         callback=lambda info: True)
    good = tmp_path / "good.bin"
    state.save(str(good))
    data = good.read_bytes()
    for cut in [10, 40, len(data) - 7]:
        (tmp_path / "cut.bin").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated"):
            derrumbe.SamplerState.load(str(tmp_path / "cut.bin"))


def test_progress_bar_and_callback(gmm, capsys):
    steps = []
    derrumbe.sample(gmm, x_T(), SIGMAS, "euler", callback=lambda info: steps.append(info["step"]))
    assert steps == list(range(len(SIGMAS) - 1))
    assert "8/8" in capsys.readouterr().err
    derrumbe.sample(gmm, x_T(), SIGMAS, "euler", progress=False)
    assert capsys.readouterr().err == ""


def test_seeded_noise_is_reproducible_and_independent_of_batch_split(gmm):
    x = x_T(shape=(4, 3, 2, 4, 5))
    whole = derrumbe.sample(gmm, x, SIGMAS, "euler_ancestral", seed=9, progress=False)
    again = derrumbe.sample(gmm, x, SIGMAS, "euler_ancestral", seed=9, progress=False)
    other = derrumbe.sample(gmm, x, SIGMAS, "euler_ancestral", seed=10, progress=False)
    assert torch.equal(whole, again)
    assert not torch.allclose(whole, other)
    # Items 2 and 3 sampled on their own reproduce the batched result.
    tail = derrumbe.sample(gmm, x[2:], SIGMAS, "euler_ancestral", seed=9, batch_offset=2, progress=False)
    assert torch.equal(tail, whole[2:])


def test_randn_addressing():
    a = derrumbe.randn([2, 4, 6, 5, 7], seed=1, dtype=torch.float64)
    longer = derrumbe.randn([2, 4, 9, 5, 7], seed=1, dtype=torch.float64)
    assert torch.equal(a, longer[:, :, :6])
    assert torch.equal(derrumbe.randn([2, 4, 3, 5, 7], seed=1, frame_offset=6, dtype=torch.float64), longer[:, :, 6:])
    assert torch.equal(derrumbe.randn([1, 4, 6, 5, 7], seed=1, batch_offset=1, dtype=torch.float64), a[1:])
    assert derrumbe.randn([3], dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="floating point"):
        derrumbe.randn([3], dtype=torch.int64)


def test_guidance_from_python(gmm):
    calls = []

    def model(x, sigma, branches):
        calls.append(list(branches))
        half = x.shape[0] // len(branches)
        outs = [gmm(x[k * half:(k + 1) * half], sigma[:half]) * (1.0 if b == "cond" else 0.5)
                for k, b in enumerate(branches)]
        return torch.cat(outs)

    guided = derrumbe.Guided(model, scale=4.0)
    x = x_T()
    out = guided(x, 2.0)
    cond, uncond = gmm(x, 2.0), gmm(x, 2.0) * 0.5
    torch.testing.assert_close(out, uncond + 4.0 * (cond - uncond))
    assert calls == [["cond", "uncond"]]
    derrumbe.sample(guided, x, SIGMAS, "dpmpp_2m", progress=False)
    assert len(calls) == 1 + len(SIGMAS) - 1
    unbatched = derrumbe.Guided(model, scale=4.0, batched=False, sigma_start=5.0)
    calls.clear()
    derrumbe.sample(unbatched, x, SIGMAS, "euler", progress=False)
    # Above sigma_start only the conditional branch runs; below it, two calls per step.
    above = int((SIGMAS[:-1] > 5.0).sum())
    assert calls[:above] == [["cond"]] * above
    assert calls[above:above + 2] == [["cond"], ["uncond"]]
    with pytest.raises(ValueError, match="unknown method 'pag'"):
        derrumbe.Guided(model, method="pag")


def test_parameterized_flow_model_samples_like_the_denoiser(gmm):
    def velocity(x_t, t):
        t = t.reshape(-1, *([1] * (x_t.dim() - 1)))
        sigma = t / (1 - t)
        return (x_t - gmm(x_t / (1 - t), sigma.flatten())) / t

    flow = derrumbe.Parameterized(velocity, "flow")
    sigmas = derrumbe.schedules.flow_shift(10, shift=3.0, spacing="unipc")
    x = derrumbe.randn([2, 3, 2, 4, 5], seed=4, dtype=torch.float64) * sigmas[0]
    a = derrumbe.sample(flow, x, sigmas, "uni_pc_bh2", order=2, progress=False)
    b = derrumbe.sample(gmm, x, sigmas, "uni_pc_bh2", order=2, progress=False)
    assert max_rel_diff(a, b) < 1e-10
    with pytest.raises(ValueError, match="unknown prediction type"):
        derrumbe.Parameterized(velocity, "velocity")


def test_denoise_strength_split():
    s = derrumbe.schedules.karras(20, 0.03, 14.6)
    part = derrumbe.schedules.split_for_strength(s, 0.4)
    assert len(part) == 9 and torch.equal(part, s[12:])
    with pytest.raises(ValueError, match="strength"):
        derrumbe.schedules.split_for_strength(s, -0.1)
