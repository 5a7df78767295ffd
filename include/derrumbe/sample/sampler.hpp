// The sampler loop: schedule + solver + denoiser, with per-step callbacks, cancellation,
// resumable state and reproducible noise.
#pragma once
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "derrumbe/core/rng.hpp"
#include "derrumbe/sample/denoiser.hpp"

namespace drb {

// Names as ComfyUI and k-diffusion use them.
DRB_EXPORT std::vector<std::string> sampler_names();

struct StepInfo {
  int64_t step;          // 0-based index of the step just taken
  int64_t num_steps;
  double sigma;          // sigma the step started from
  double sigma_next;
  const at::Tensor& x;          // the state after the step
  const at::Tensor& denoised;   // the step's first denoiser output (a cheap preview)
};
// Returns true to cancel the run after this step.
using StepCallback = std::function<bool(const StepInfo&)>;

// Noise for stochastic steps. `draw` counts the draws within one step (0, 1, ...).
using NoiseFn = std::function<at::Tensor(const at::Tensor& like, int64_t step, int64_t draw, double sigma,
                                         double sigma_next)>;

// Changes the state between steps (masked composition puts the known region back this way).
class DRB_EXPORT StepHook {
 public:
  virtual ~StepHook();
  // Called after each step with info.x, the solver's result; returns the x the run goes on
  // from (info.x itself to change nothing).
  virtual at::Tensor after_step(const StepInfo& info) = 0;
  // RePaint resampling: how many times step `step` is redone after its hooks ran, each time
  // from the hooked result re-noised back to the step's sigma. Default 0.
  virtual int64_t resamples(int64_t step, int64_t num_steps);
};

struct SampleOptions {
  // Stochasticity: eta for ancestral/SDE samplers and ddim; churn for euler/heun/dpm_2.
  std::optional<double> eta;     // default per sampler: 1 for ancestral/SDE samplers, 0 for ddim
  double s_noise = 1.0;
  double s_churn = 0.0;
  double s_tmin = 0.0;
  double s_tmax = std::numeric_limits<double>::infinity();
  // Order for multistep solvers: lms (default 4), uni_pc (3), deis (3), ipndm (4).
  int order = 0;                  // 0: the sampler's default
  bool uni_pc_corrector = true;   // UniPC's corrector (UniC); diffusers' default disables it at the last step
  double dpmpp_sde_r = 0.5;
  // Noise: Philox addressed by (seed, stream = step * 16 + draw + 1, item, element) unless
  // `noise` is set (for example to feed the same noise to a reference implementation).
  NoiseAddress noise_address;
  NoiseFn noise;
  // Run in order after each step, before the callback. Re-noising for resampling pass p
  // (at most 7 per step) is the step's draw 8 + p (solvers draw at most 8 times a step).
  std::vector<std::shared_ptr<StepHook>> hooks;
  StepCallback callback;
};

// Everything needed to continue a run: the solver's history is part of it, so resuming at
// step k gives the same result as an uninterrupted run.
struct SamplerState {
  std::string sampler;
  int64_t step = 0;                 // steps completed
  at::Tensor x;
  std::vector<at::Tensor> tensors;  // solver history (previous denoised outputs, derivatives)
  std::vector<double> scalars;      // solver history (previous step sizes)
  bool cancelled = false;

  // Binary file with the tensors and scalars; load checks the version and the layout.
  DRB_EXPORT void save(const std::string& path) const;
  DRB_EXPORT static SamplerState load(const std::string& path);
};

// A fresh state at step 0 for `sampler` (an unknown name is an error listing the known ones).
DRB_EXPORT SamplerState start_state(const std::string& sampler, const at::Tensor& x);

// Runs from state.step to the end of `sigmas`, or until the callback cancels (then the
// returned state has cancelled = true and can be passed back in to resume).
DRB_EXPORT SamplerState run(Denoiser& model, SamplerState state, const at::Tensor& sigmas,
                            const SampleOptions& options = {});

// The errors of a run's end: Error(cancelled) if the callback cancelled it, Error(model) if x
// holds NaN or inf (one host sync, after the loop, never inside it).
DRB_EXPORT void check_finished(const SamplerState& state);

// Samples from x (already scaled to sigmas[0]) and returns the final x. Throws as
// check_finished does.
DRB_EXPORT at::Tensor sample(Denoiser& model, const at::Tensor& x, const at::Tensor& sigmas,
                             const std::string& sampler, const SampleOptions& options = {});

}  // namespace drb
