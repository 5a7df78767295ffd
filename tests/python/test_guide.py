"""Guidance from the simulation: warped noise, SDEdit, masked composition, energies."""
import json

import pytest
import scipy.stats
import torch

import derrumbe

# A 3-floor building collapsing under a charge, filmed by a camera that dollies in: 50 frames.
COLLAPSE = {
    "version": 1, "fps": 24, "duration": 50 / 24, "seed": 2, "intensity": 0.6,
    "buildings": [{"footprint": [8, 8], "floors": 3, "bays": [2, 2], "chunks_per_panel": 3}],
    "triggers": [{"type": "charge", "time": 0.1, "building": 0, "floors": [0], "energy": 4e6}],
    "cameras": [{"name": "main", "keys": [{"time": 0, "position": [2, 2, 24], "target": [0, 4, 0]},
                                          {"time": 2.0, "position": [-1, 3, 18], "target": [0, 3, 0]}]}],
}
LATENT_H, LATENT_W, FACTOR = 30, 52, 8


@pytest.fixture(scope="module")
def collapse_flows():
    track = derrumbe.Scene.from_json(json.dumps(COLLAPSE)).simulate(progress=False)
    assert track.num_frames >= 50
    frames = track.render(0, 0, 50, width=LATENT_W * FACTOR, height=LATENT_H * FACTOR)
    fwd = derrumbe.aovs_to_tensor(frames, ["forward.u", "forward.v"])
    bwd = derrumbe.aovs_to_tensor(frames, ["backward.u", "backward.v"])
    alpha = derrumbe.aovs_to_tensor(frames, ["A"])[:, 0]
    return fwd, bwd, alpha


def shifted(t, dy, dx):
    """t [..., h, w] moved by (dy, dx) pixels, cropped to the part both cover."""
    h, w = t.shape[-2:]
    return t[..., : h - dy, : w - dx], t[..., dy:, dx:]


def test_warped_noise_stays_gaussian_over_a_simulated_collapse(collapse_flows):
    fwd, bwd, alpha = collapse_flows
    assert (fwd.abs().sum(1) > 0).float().mean() > 0.2  # the camera and the debris really move
    samples = torch.stack([
        derrumbe.warp_noise(fwd, bwd, channels=16, factor=FACTOR, seed=seed)[0, :, -1]  # frame 49: [C, h, w]
        for seed in range(6)
    ])  # [seeds, C, h, w]
    values = samples.flatten().double()
    assert scipy.stats.kstest(values.numpy(), "norm").pvalue > 0.01
    per_pixel = samples.flatten(0, 1)  # 96 samples of every latent pixel
    n = per_pixel.shape[0]
    assert per_pixel.mean(0).abs().max() < 5 / n**0.5
    assert ((per_pixel.var(0) - 1).abs() < 5 * (2 / n) ** 0.5).all()
    # No correlation between neighbours (horizontal, vertical, diagonal), nor between channels.
    for dy, dx in [(0, 1), (1, 0), (1, 1)]:
        a, b = shifted(samples, dy, dx)
        assert abs(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) < 0.02
    a, b = samples[:, 0].flatten(), samples[:, 1].flatten()
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 5 / len(a) ** 0.5
    # ... and the noise did follow the motion: consecutive frames are strongly related.
    noise = derrumbe.warp_noise(fwd, bwd, channels=4, factor=FACTOR)[0]
    corr = torch.corrcoef(torch.stack([noise[:, 1:].flatten(), noise[:, :-1].flatten()]))[0, 1]
    assert corr > 0.5


@pytest.mark.parametrize("latent_step", [2.0, 0.25])
def test_warped_noise_follows_a_rigid_translation(latent_step):
    frames, h, w = 9, 24, 32
    flow = torch.zeros(frames, 2, h * FACTOR, w * FACTOR)
    flow[:, 0] = latent_step * FACTOR  # to the right
    flow[:, 1] = latent_step * FACTOR / 2  # and down
    noise = derrumbe.warp_noise(flow, -flow, channels=4, factor=FACTOR)[0]  # [C, F, h, w]
    t = 8 if latent_step == 0.25 else 1  # frames for a whole latent-pixel move in x and y
    dx, dy = int(latent_step * t), int(latent_step * t / 2)
    before, after = noise[:, 0, : h - dy, : w - dx], noise[:, t, dy:, dx:]
    inner = (slice(None), slice(2, -2), slice(2, -2))  # away from the edges
    assert torch.corrcoef(torch.stack([before[inner].flatten(), after[inner].flatten()]))[0, 1] > 0.9
    # Not moving it would be unrelated noise.
    assert abs(torch.corrcoef(torch.stack([noise[:, 0].flatten(), noise[:, t].flatten()]))[0, 1]) < 0.5


def test_noise_warper_frame_by_frame_equals_the_shot():
    flow = torch.zeros(5, 2, 64, 64)
    flow[:, 0] = 3.3
    shot = derrumbe.warp_noise(flow, -flow, channels=3, factor=4, seed=5, temporal_factor=4, reduction="pick")
    warper = derrumbe.NoiseWarper(16, 16, channels=3, factor=4, seed=5)
    frames = [warper.latent()]
    for t in range(1, 5):
        warper.step(flow[t - 1], -flow[t])
        frames.append(warper.latent())
    assert warper.frame == 4 and shot.shape == (1, 3, 2, 16, 16)
    assert torch.equal(shot[0, :, 1], frames[4]) and torch.equal(shot[0, :, 0], frames[0])
    assert torch.equal(derrumbe.reduce_frames(torch.stack(frames, 1), 4, "pick"), shot[0])


def test_sdedit_strength_zero_returns_the_encoded_input(gmm):
    frames = torch.rand(1, 3, 2, 4, 5, dtype=torch.float64)
    encode = lambda f: f * 2 - 1  # noqa: E731 (a stand-in VAE: frames -> latents)
    sigmas = derrumbe.schedules.karras(10, 0.01, 10.0)
    noise = torch.randn_like(frames)
    x, tail = derrumbe.sdedit_start(frames, noise, sigmas, 0.0, encoder=encode)
    assert torch.equal(x, encode(frames)) and tail.tolist() == [0.0]
    assert torch.equal(derrumbe.sample(gmm, x, tail, "euler", progress=False), encode(frames))
    x, tail = derrumbe.sdedit_start(frames, noise, sigmas, 0.3, encoder=encode)
    assert torch.equal(tail, sigmas[7:]) and torch.allclose(x, encode(frames) + sigmas[7] * noise)
    # Low strength keeps the layout: the result stays closer to the input than a full run.
    low = derrumbe.sample(gmm, x, tail, "euler", progress=False)
    full = derrumbe.sample(gmm, noise * sigmas[0], sigmas, "euler", progress=False)
    assert (low - encode(frames)).norm() < (full - encode(frames)).norm()


def mask_left_kept(shape):
    mask = torch.ones(1, 1, *shape[2:], dtype=torch.float64)
    mask[..., : shape[-1] // 2] = 0  # the plate is kept on the left half
    return mask


def test_all_guidance_composes_in_one_sample_call(gmm):
    shape = (1, 3, 2, 4, 5)
    sigmas = derrumbe.schedules.karras(12, 0.01, 10.0)
    plate = torch.linspace(-1, 1, 120, dtype=torch.float64).reshape(shape)
    flow = torch.zeros(2, 2, 16, 20)
    flow[:, 0] = 4.0
    noise = derrumbe.warp_noise(flow, -flow, channels=3, factor=4, seed=1).double()  # [1, 3, 2, 4, 5]
    x, tail = derrumbe.sdedit_start(plate, noise, sigmas, 0.75)
    mask = mask_left_kept(shape)
    motion = derrumbe.MaskEnergy(torch.tensor([[0.0]]).expand(2, 4, 5).contiguous())  # no motion anywhere

    def run(model, hooks):
        return derrumbe.sample(model, x, tail, "dpmpp_2m", hooks=hooks, progress=False)

    plain = run(gmm, [])
    guided_model = derrumbe.EnergyGuided(gmm, [motion, (lambda x0: ((x0 - plate) ** 2).mean(), 0.5)], strength=0.3)
    guided = run(guided_model, [derrumbe.Composite(plate, mask, noise, resample=1)])
    left = (..., slice(0, 2))
    assert torch.equal(guided[left], plate[left])
    assert not torch.equal(guided[..., 2:], plate[..., 2:])
    assert guided_model.total_energy(guided) < guided_model.total_energy(plain)
    # A Python hook sees every step and may change x.
    seen = []

    def hook(info):
        seen.append(info["step"])
        return info["x"]

    assert torch.equal(run(gmm, [hook]), plain) and seen == list(range(len(tail) - 1))


@pytest.mark.parametrize("mode", ["x0", "model"])
def test_energy_guidance_lowers_the_energy(gmm, mode):
    x = derrumbe.randn([1, 3, 2, 4, 5], seed=3, dtype=torch.float64) * 10
    sigmas = derrumbe.schedules.karras(10, 0.01, 10.0)
    flow = torch.zeros(2, 2, 4, 5, dtype=torch.float64)
    flow[:, 0] = -1.0  # frame t+1 is frame t moved one pixel right
    energy = derrumbe.FlowWarpEnergy(flow)
    guided = derrumbe.EnergyGuided(gmm, [energy], mode=mode, strength=0.2)
    plain = derrumbe.sample(gmm, x, sigmas, "euler", progress=False)
    out = derrumbe.sample(guided, x, sigmas, "euler", progress=False)
    assert energy(out).item() < 0.8 * energy(plain).item()


def test_latent_flow_and_prepare_mask_on_a_render(collapse_flows):
    fwd, bwd, alpha = collapse_flows
    flow, valid = derrumbe.latent_flow(bwd[:49], None, LATENT_H, LATENT_W, temporal_factor=4)
    assert flow.shape == (13, 2, LATENT_H, LATENT_W) and valid.shape == (13, LATENT_H, LATENT_W)
    mask = derrumbe.prepare_mask(alpha[:49], LATENT_H, LATENT_W, temporal_factor=4, dilate=4, feather=4)
    assert mask.shape == (1, 1, 13, LATENT_H, LATENT_W)
    assert 0 < mask.mean() < 1 and mask.min() >= 0 and mask.max() <= 1


def test_guidance_errors_are_clear():
    flow = torch.zeros(3, 2, 16, 16)
    with pytest.raises(ValueError, match="backward flow .* must have the forward flow's shape"):
        derrumbe.warp_noise(flow, torch.zeros(3, 2, 16, 8), factor=4)
    bad = flow.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        derrumbe.warp_noise(bad, factor=4)
    if not torch.cuda.is_available():
        with pytest.raises(NotImplementedError, match="cuda"):
            derrumbe.warp_noise(flow, factor=4, device="cuda")
    with pytest.raises(ValueError, match="unknown temporal reduction 'median'"):
        derrumbe.warp_noise(flow, factor=4, reduction="median")
    with pytest.raises(ValueError, match="noise shape .* differs"):
        derrumbe.sdedit_start(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), [1.0, 0.0], 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        derrumbe.prepare_mask(torch.full((1, 8, 8), 1.5), 4, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        derrumbe.Composite(torch.zeros(1, 2, 1, 4, 4), torch.full((1, 1, 1, 4, 4), -0.5))
    with pytest.raises(ValueError, match="unknown energy mode"):
        derrumbe.EnergyGuided(lambda x, s: x, [lambda x0: x0.sum()], mode="magic")
    with pytest.raises(ValueError, match="hook"):
        derrumbe.sample(lambda x, s: x, torch.zeros(1, 2), [1.0, 0.0], hooks=[3], progress=False)
