"""Sample quality per model evaluation: how close does each deterministic solver, on each
schedule, get to the exact probability-flow ODE solution for a given number of model
evaluations (NFE)?

Method
  - Model: derrumbe's exact Gaussian-mixture denoiser (float64, item shape [4, 2, 3, 3]), so
    D(x, sigma) is known in closed form and the only error left is the solver's.
  - Start: a batch of 8 points x_T = randn * sigma_max, sigma_max = 80, sigma_min = 0.002
    (the EDM range).
  - Reference: the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma, integrated as
    one flat state over the whole batch by scipy's DOP853 (rtol = atol = 1e-12) from the
    schedule's own first sigma to its own last sigma. Solutions are cached per (start, end)
    pair. The same ODE is solved again in the variable log(sigma); the largest disagreement
    between the two is printed as the reference's accuracy (the error floor of this benchmark).
  - Schedules: karras, exponential and kl_optimal between sigma_min and sigma_max.
    (polyexponential with rho = 1 is exponential; vp has its own sigma range.) A derrumbe
    schedule(n) is n + 1 sigmas: n nonzero ones, sigma_max down to sigma_min, then 0. The
    benchmark asks for n = steps + 1 and drops the 0, so the solver takes exactly `steps`
    steps and stops at sigma_min; the final jump to sigma = 0 is not part of the ODE.
  - Solvers: every deterministic sampler. heun and dpm_2 evaluate the model twice per step
    (their single-evaluation final step only happens when a schedule ends at 0, never here);
    all others once. For an NFE budget, steps = budget // evaluations per step, so heun and
    dpm_2 at an odd budget use one evaluation fewer (the JSON's "nfe_used"). The count is
    checked once per solver by wrapping the model in a counting Python callable.
  - Error: RMS over the batch of ||x - x_exact|| / sqrt(dim), i.e. the per-element RMS error;
    "relative_error" divides it by the RMS of x_exact.
  - Anchor: Euler. "ratio_to_euler" is each solver's error divided by Euler's at the same NFE
    budget and schedule; below 1 is better than Euler.

Output: a JSON document (errors as {solver: {schedule: {nfe: error}}}), then human-readable
tables of error and of ratio to Euler (rows solver/schedule, columns NFE budget), the wall
time, and a log-log plot of error against NFE used, one panel per schedule, written to
OUT/quality_per_nfe.png (with the JSON as OUT/quality_per_nfe.json).

    python3 benchmarks/quality_per_nfe.py [--quick] [--out DIR]
"""
import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import derrumbe

ITEM_SHAPE = [4, 2, 3, 3]
BATCH = 8
COMPONENTS = 4
MODEL_SEED = 1
NOISE_SEED = 42
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
ODE_TOL = 1e-12

SOLVERS = ["euler", "heun", "dpm_2", "lms", "dpmpp_2m", "uni_pc", "uni_pc_bh2", "deis", "ipndm", "ddim"]
EVALS_PER_STEP = {"heun": 2, "dpm_2": 2}  # every other solver: 1
SCHEDULES = {
    "karras": derrumbe.schedules.karras,
    "exponential": derrumbe.schedules.exponential,
    "kl_optimal": derrumbe.schedules.kl_optimal,
}
ANCHOR = "euler"
BUDGETS = [5, 10, 20, 50]
QUICK_BUDGETS = [5, 10]


def sigmas_for(schedule, steps):
    """`steps` steps of the schedule from sigma_max down to sigma_min, without the final 0."""
    sigmas = SCHEDULES[schedule](steps + 1, SIGMA_MIN, SIGMA_MAX)
    assert sigmas[-1] == 0 and len(sigmas) == steps + 2
    return sigmas[:-1]


class ExactSolution:
    """The probability-flow ODE solution from x_T, cached per (start sigma, end sigma)."""

    def __init__(self, model, x_T):
        self.model, self.x_T, self.shape = model, x_T, x_T.shape
        self.cache = {}
        self.worst_disagreement = 0.0  # between the sigma and log-sigma integrations

    def _solve(self, rhs, t0, t1):
        sol = solve_ivp(rhs, (t0, t1), self.x_T.numpy().ravel(), method="DOP853", rtol=ODE_TOL, atol=ODE_TOL)
        assert sol.success, sol.message
        return sol.y[:, -1]

    def _denoise(self, y, sigma):
        x = torch.from_numpy(y).reshape(self.shape)
        return x, self.model(x, sigma)

    def at(self, sigma_start, sigma_end):
        key = (sigma_start, sigma_end)
        if key not in self.cache:
            def in_sigma(sigma, y):  # dx/dsigma = (x - D(x, sigma)) / sigma
                x, d = self._denoise(y, sigma)
                return ((x - d) / sigma).numpy().ravel()

            def in_log_sigma(t, y):  # the same ODE in t = log(sigma): dx/dt = x - D(x, sigma)
                x, d = self._denoise(y, math.exp(t))
                return (x - d).numpy().ravel()

            y = self._solve(in_sigma, sigma_start, sigma_end)
            check = self._solve(in_log_sigma, math.log(sigma_start), math.log(sigma_end))
            self.worst_disagreement = max(self.worst_disagreement, float(np.sqrt(np.mean((y - check) ** 2))))
            self.cache[key] = torch.from_numpy(y).reshape(self.shape)
        return self.cache[key]


def rms_error(x, exact):
    """RMS over the batch of ||x - exact|| / sqrt(dim), i.e. the per-element RMS."""
    per_item = (x - exact).flatten(1).pow(2).mean(dim=1)
    return per_item.mean().sqrt().item()


def counted_nfe(model, x_T, sigmas, solver):
    counter = [0]
    counting = lambda x, s: (counter.__setitem__(0, counter[0] + 1), model(x, s))[1]  # noqa: E731
    derrumbe.sample(counting, x_T, sigmas, solver, progress=False)
    return counter[0]


def measure(budgets):
    model = derrumbe.GaussianMixture.random(ITEM_SHAPE, COMPONENTS, seed=MODEL_SEED, dtype=torch.float64)
    x_T = derrumbe.randn([BATCH, *ITEM_SHAPE], seed=NOISE_SEED, dtype=torch.float64) * SIGMA_MAX
    exact = ExactSolution(model, x_T)
    error, relative, nfe_used = {}, {}, {}
    for solver in SOLVERS:
        per_step = EVALS_PER_STEP.get(solver, 1)
        nfe_checked = False
        for schedule in SCHEDULES:
            for budget in budgets:
                steps = budget // per_step
                if steps < 1:
                    continue
                sigmas = sigmas_for(schedule, steps)
                if not nfe_checked:
                    counted = counted_nfe(model, x_T, sigmas, solver)
                    assert counted == steps * per_step, (solver, schedule, steps, counted)
                    nfe_checked = True
                # The schedule's own endpoints (exponential's first sigma is 80 to within rounding).
                reference = exact.at(sigmas[0].item(), sigmas[-1].item())
                x = derrumbe.sample(model, x_T, sigmas, solver, progress=False)
                err = rms_error(x, reference)
                error.setdefault(solver, {}).setdefault(schedule, {})[budget] = err
                relative.setdefault(solver, {}).setdefault(schedule, {})[budget] = err / reference.pow(2).mean().sqrt().item()
                nfe_used.setdefault(solver, {}).setdefault(schedule, {})[budget] = steps * per_step
    ratio = {solver: {schedule: {b: e / error[ANCHOR][schedule][b] for b, e in by_budget.items()}
                      for schedule, by_budget in by_schedule.items()}
             for solver, by_schedule in error.items()}
    return {"error": error, "relative_error": relative, "ratio_to_euler": ratio, "nfe_used": nfe_used,
            "reference_accuracy": exact.worst_disagreement, "reference_solves": len(exact.cache)}


def print_table(title, table, budgets, fmt):
    print(f"\n{title}")
    print(f"{'solver':<12}{'schedule':<13}" + "".join(f"{'NFE ' + str(b):>11}" for b in budgets))
    for solver, by_schedule in table.items():
        for schedule, by_budget in by_schedule.items():
            cells = "".join(f"{format(by_budget[b], fmt) if b in by_budget else '-':>11}" for b in budgets)
            print(f"{solver:<12}{schedule:<13}{cells}")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schedules = list(SCHEDULES)
    budgets = results["config"]["budgets"]
    fig, axes = plt.subplots(1, len(schedules), figsize=(5.2 * len(schedules), 5.6), sharey=True)
    colors = plt.get_cmap("tab10").colors
    markers = "osD^v<>ph*"
    anchor = results["error"][ANCHOR]
    for ax, schedule in zip(axes, schedules):
        for i, solver in enumerate(SOLVERS):
            errors = results["error"][solver][schedule]
            keys = sorted(errors)
            nfe = [results["nfe_used"][solver][schedule][b] for b in keys]
            same_as_anchor = solver != ANCHOR and all(
                math.isclose(results["error"][solver][s][b], anchor[s][b], rel_tol=1e-9)
                for s in schedules for b in anchor[s])
            style = dict(color="black", linestyle="--", linewidth=2.2, zorder=3) if solver == ANCHOR else \
                dict(color=colors[i], linewidth=1.3)
            ax.loglog(nfe, [errors[b] for b in keys], marker=markers[i], markersize=5, **style,
                      label=f"{solver} (= {ANCHOR})" if same_as_anchor else solver)
        ax.set_title(f"{schedule} schedule")
        ax.set_xlabel("model evaluations (NFE used)")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("RMS error vs exact PF-ODE solution at sigma_min")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, frameon=False)
    fig.suptitle(f"Error per NFE: Gaussian mixture {ITEM_SHAPE}, batch {BATCH}, sigma {SIGMA_MAX:g} to {SIGMA_MIN:g}"
                 f" (reference accurate to {results['reference_accuracy']:.0e})")
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out",
                        help="folder for the PNG and JSON (default: benchmarks/out)")
    parser.add_argument("--quick", action="store_true", help=f"budgets {QUICK_BUDGETS} only")
    args = parser.parse_args()
    budgets = QUICK_BUDGETS if args.quick else BUDGETS

    start = time.perf_counter()
    results = measure(budgets)
    results["wall_seconds"] = time.perf_counter() - start
    results = {
        "question": "error against the exact probability-flow ODE solution per model evaluation",
        "config": {"item_shape": ITEM_SHAPE, "batch": BATCH, "components": COMPONENTS, "model_seed": MODEL_SEED,
                   "noise_seed": NOISE_SEED, "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "ode_tol": ODE_TOL,
                   "budgets": budgets, "anchor": ANCHOR, "dtype": "float64", "threads": torch.get_num_threads()},
        **results,
    }

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality_per_nfe.json").write_text(json.dumps(results, indent=2))
    png = args.out / "quality_per_nfe.png"
    plot(results, png)

    print(json.dumps(results, indent=2))
    print_table("RMS error against the exact PF-ODE solution (heun/dpm_2 at odd budgets use one NFE fewer)",
                results["error"], budgets, ".2e")
    print_table(f"Ratio to {ANCHOR} at the same NFE budget and schedule (< 1: better than {ANCHOR})",
                results["ratio_to_euler"], budgets, ".3g")
    print(f"\nreference accuracy (sigma vs log-sigma integration, RMS): {results['reference_accuracy']:.1e}"
          f" over {results['reference_solves']} reference solves")
    print(f"plot: {png}")
    print(f"wall time: {results['wall_seconds']:.2f} s measuring, {time.perf_counter() - start:.2f} s in all")


if __name__ == "__main__":
    main()
