"""Sample a Wan-shaped latent from an analytic Gaussian-mixture denoiser with several solvers,
and print how close each gets to the exact probability-flow ODE solution at a given budget.

It exercises the whole sampler stack (schedules, solvers, the native denoiser, progress bars)
end to end.
"""
import time

import torch

import derrumbe


def main() -> None:
    shape = [1, 16, 3, 12, 20]  # [B, C, F, H, W]: a small Wan-layout latent
    model = derrumbe.GaussianMixture.random(shape[1:], components=4, seed=1)
    x_T = derrumbe.randn(shape, seed=42, dtype=torch.float64) * 80.0
    reference = derrumbe.sample(model, x_T, derrumbe.schedules.karras(400, 0.002, 80.0), "dpmpp_2m", progress=False)
    print(f"{'sampler':<20}{'steps':>6}{'max |x - ref|':>16}{'seconds':>10}")
    for sampler in ["euler", "heun", "dpmpp_2m", "uni_pc_bh2", "deis", "lms", "ipndm"]:
        sigmas = derrumbe.schedules.karras(20, 0.002, 80.0)
        start = time.perf_counter()
        x = derrumbe.sample(model, x_T, sigmas, sampler, progress=False)
        seconds = time.perf_counter() - start
        print(f"{sampler:<20}{20:>6}{(x - reference).abs().max().item():>16.2e}{seconds:>10.3f}")
    # One run with a progress bar, as a user sees it.
    derrumbe.sample(model, x_T, derrumbe.schedules.karras(30, 0.002, 80.0), "dpmpp_2m_sde", seed=7)


if __name__ == "__main__":
    main()
