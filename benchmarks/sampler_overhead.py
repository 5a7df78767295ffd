"""Per-step sampler overhead: everything a sampling step costs except the model call.

Question: how much time does one solver step add on a Wan-480p-sized latent
[1, 16, 21, 60, 104] (float32, 8.4 MB), for euler, dpmpp_2m and uni_pc (Wan's UniPC: bh2,
order 2, corrector on), compared with
  - k-diffusion's sampler function (euler, dpmpp_2m),
  - the diffusers scheduler's step() (FlowMatchEulerDiscrete, DPMSolverMultistep, UniPCMultistep),
  - the memory roofline: the bytes the update must read and write divided by a measured copy
    bandwidth (y.copy_(x) on 256 MB buffers, beyond the caches, same thread count). A step's
    working set (2-6 latents of 8.4 MB) can sit in a large L3, so the cache roofline (the same
    bytes at the bandwidth of a copy of one latent-sized tensor) is printed too.

Method: every side gets the same model, a Python callable that returns a precomputed
tensor (so the model costs the same few microseconds everywhere), runs N steps, and the best
of R repeats is divided by N. Prints JSON and the ratios.
"""
import argparse
import json
import time

import torch

import derrumbe

SHAPE = [1, 16, 21, 60, 104]
# Tensors each fused update must read or write, per step:
#   euler: read x, denoised; write x.   dpmpp_2m: read x, denoised, previous denoised; write x.
#   uni_pc (order 2 + corrector): read last sample, two previous outputs, new output; write the
#   corrected sample (kept for the next corrector) and the next x.
ARRAYS_TOUCHED = {"euler": 3, "dpmpp_2m": 4, "uni_pc": 6}


def best_of(repeats, fn):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def copy_bandwidth(numel, repeats):
    """Bytes read + written per second by a copy, on buffers far larger than the caches."""
    x = torch.ones(numel)
    y = torch.empty_like(x)
    y.copy_(x)
    t = best_of(repeats, lambda: y.copy_(x))
    return 2 * x.numel() * x.element_size() / t


def run_derrumbe(name, x, sigmas, model, options):
    return lambda: derrumbe.sample(model, x, sigmas, name, progress=False, **options)


def run_kdiffusion(fn, x, sigmas, model):
    return lambda: fn(model, x, sigmas, disable=True)


def run_diffusers(make_scheduler, steps, x, output):
    def go():
        scheduler = make_scheduler()
        scheduler.set_timesteps(steps)
        sample = x
        for t in scheduler.timesteps:
            sample = scheduler.step(output, t, sample, return_dict=False)[0]
    return go


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import k_diffusion.sampling as K
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    torch.manual_seed(0)
    x = derrumbe.randn(SHAPE, seed=1) * 10.0
    denoised = derrumbe.randn(SHAPE, seed=2)
    model = lambda x, sigma: denoised  # noqa: E731  the same cost on every side
    n = args.steps
    sigmas = derrumbe.schedules.karras(n, 0.03, 14.6)
    flow_sigmas = derrumbe.schedules.flow_shift(n, shift=3.0, spacing="unipc")
    # The diffusers schedulers' model output: epsilon or velocity; its value does not matter.
    cases = {
        "euler": (run_derrumbe("euler", x, sigmas, model, {}), run_kdiffusion(K.sample_euler, x, sigmas, model),
                  run_diffusers(lambda: FlowMatchEulerDiscreteScheduler(shift=3.0), n, x, denoised)),
        "dpmpp_2m": (run_derrumbe("dpmpp_2m", x, sigmas, model, {}),
                     run_kdiffusion(K.sample_dpmpp_2m, x, sigmas, model),
                     run_diffusers(lambda: DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2),
                                   n, x, denoised)),
        "uni_pc": (run_derrumbe("uni_pc_bh2", x, flow_sigmas, model, {"order": 2}), None,
                   run_diffusers(lambda: UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                                 flow_shift=3.0, solver_order=2), n, x, denoised)),
    }
    bandwidth = copy_bandwidth(64 * 2**20, 10)
    cache_bandwidth = copy_bandwidth(x.numel(), 20)
    nbytes = x.numel() * x.element_size()
    results = {"shape": SHAPE, "dtype": "float32", "threads": torch.get_num_threads(), "steps": n,
               "copy_bandwidth_GBps": bandwidth / 1e9, "latent_copy_bandwidth_GBps": cache_bandwidth / 1e9,
               "solvers": {}}
    for name, (ours, kdiff, diff) in cases.items():
        ours()  # warm up
        r = {"derrumbe_ms": 1e3 * best_of(args.repeats, ours) / n,
             "roofline_ms": 1e3 * ARRAYS_TOUCHED[name] * nbytes / bandwidth,
             "cache_roofline_ms": 1e3 * ARRAYS_TOUCHED[name] * nbytes / cache_bandwidth}
        if kdiff is not None:
            kdiff()
            r["k_diffusion_ms"] = 1e3 * best_of(args.repeats, kdiff) / n
        diff()
        r["diffusers_ms"] = 1e3 * best_of(args.repeats, diff) / n
        r["derrumbe_over_roofline"] = r["derrumbe_ms"] / r["roofline_ms"]
        r["derrumbe_over_cache_roofline"] = r["derrumbe_ms"] / r["cache_roofline_ms"]
        r["diffusers_over_derrumbe"] = r["diffusers_ms"] / r["derrumbe_ms"]
        if "k_diffusion_ms" in r:
            r["k_diffusion_over_derrumbe"] = r["k_diffusion_ms"] / r["derrumbe_ms"]
        results["solvers"][name] = r
    print(json.dumps(results, indent=2))
    print(f"\n{'solver':<10}{'ours ms':>9}{'roofline':>10}{'ours/roof':>11}{'ours/cache roof':>17}"
          f"{'k-diff/ours':>13}{'diffusers/ours':>16}")
    for name, r in results["solvers"].items():
        kd = f"{r['k_diffusion_over_derrumbe']:.2f}" if "k_diffusion_over_derrumbe" in r else "-"
        print(f"{name:<10}{r['derrumbe_ms']:>9.2f}{r['roofline_ms']:>10.2f}{r['derrumbe_over_roofline']:>11.2f}"
              f"{r['derrumbe_over_cache_roofline']:>17.2f}{kd:>13}{r['diffusers_over_derrumbe']:>16.2f}")


if __name__ == "__main__":
    main()
