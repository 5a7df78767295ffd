// Energy guidance on the predicted x0: gradient steps that lower an energy E(x0) while
// sampling, applied as a correction of the denoiser's output so that every solver uses it.
//   x0 mode     (FlowDPS, Kim et al. 2025, for flow models; no backpropagation through the
//               model): x0_hat <- x0_hat - lambda grad E(x0_hat), `steps` times.
//   model mode  (DPS, Chung et al., ICLR 2023): the gradient goes through the denoiser,
//               x0_hat <- x0_hat - lambda grad_x E(D(x, sigma)).
// lambda = strength (or strength_schedule[step]) while sigma_end <= sigma <= sigma_start,
// 0 outside. The gradient is normalized to unit root mean square per batch item, so lambda is
// the size of each correction in x0's units whatever the energy's scale or the latent size.
// x0 mode replaces x0_hat by the corrected one (FlowDPS's blend and re-noising are what the
// solver's own step then does). begin_step is forwarded to the wrapped model. Energies are
// scalars; tensors are [B, C, F, H, W]. Autograd must be available (not under InferenceMode).
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "derrumbe/sample/denoiser.hpp"

namespace drb::guide {

class DRB_EXPORT Energy {
 public:
  virtual ~Energy();
  // A scalar tensor differentiable in x0 (autograd is on while this runs).
  virtual at::Tensor energy(const at::Tensor& x0) = 0;
};

// A user energy: a C++ functor (or a Python callable through the bindings).
class DRB_EXPORT FunctionEnergy : public Energy {
 public:
  explicit FunctionEnergy(std::function<at::Tensor(const at::Tensor&)> fn);
  at::Tensor energy(const at::Tensor& x0) override;

 private:
  std::function<at::Tensor(const at::Tensor&)> fn_;
};

// Flow-warp consistency: sum over t of mean(valid[t+1] * |x0[t+1] - warp(x0[t], backward[t+1])|)
// where warp samples frame t bilinearly at p + backward[t+1](p). backward: [F, 2, H, W]
// pixels on x0's grid (frame t -> t - 1; entry 0 unused); valid: [F, H, W] in [0, 1]
// (1 where the pixel was visible in the previous frame), undefined for all ones.
class DRB_EXPORT FlowWarpEnergy : public Energy {
 public:
  FlowWarpEnergy(at::Tensor backward, at::Tensor valid = {});
  at::Tensor energy(const at::Tensor& x0) override;

 private:
  at::Tensor grid_, valid_;  // sampling grid [F - 1, H, W, 2] in [-1, 1], weights [F - 1, 1, H, W]
};

// Mask adherence: motion only where the simulation has motion or dust. mask [F, H, W] in
// [0, 1] (1 where things move); E = mean((1 - m[t+1]) * (x0[t+1] - x0[t])^2).
class DRB_EXPORT MaskEnergy : public Energy {
 public:
  explicit MaskEnergy(at::Tensor mask);
  at::Tensor energy(const at::Tensor& x0) override;

 private:
  at::Tensor keep_;  // 1 - mask, frames 1 ... F - 1, [F - 1, 1, H, W]
};

// Rendered backward flow [F, 2, H', W'] (frame f -> f - 1, pixels) and validity [F, H', W']
// (1 where the pixel was visible in frame f - 1; undefined: all ones) on a latent grid:
// resized to (h, w) with the vectors scaled, then composed over each latent frame's group
// (reduce_frames' grouping, the group's last frame representing it: latent frame k is video
// frame k * temporal_factor) with validity multiplied along the chain. Returns
// {backward [F', 2, h, w], valid [F', h, w]} for FlowWarpEnergy.
struct LatentFlow {
  at::Tensor backward;
  at::Tensor valid;
};
DRB_EXPORT LatentFlow latent_flow(const at::Tensor& backward, const at::Tensor& valid, int64_t latent_height,
                                  int64_t latent_width, int64_t temporal_factor = 1);

enum class EnergyMode { x0, model };
DRB_EXPORT EnergyMode energy_mode_from_name(const std::string& name);  // "x0", "model"

struct EnergyTerm {
  std::shared_ptr<Energy> energy;
  double weight = 1.0;
};

struct EnergyGuidanceOptions {
  EnergyMode mode = EnergyMode::x0;
  double strength = 1.0;
  std::vector<double> strength_schedule;  // per step; overrides `strength` when not empty
  double sigma_start = std::numeric_limits<double>::infinity();
  double sigma_end = 0.0;
  int64_t steps = 1;                      // gradient steps per evaluation (x0 mode)
};

class DRB_EXPORT EnergyGuidedDenoiser : public Denoiser {
 public:
  EnergyGuidedDenoiser(std::shared_ptr<Denoiser> model, std::vector<EnergyTerm> energies,
                       EnergyGuidanceOptions options = {});
  at::Tensor denoise(const at::Tensor& x, double sigma) override;
  void begin_step(int64_t step, int64_t num_steps, double sigma) override;
  // The weighted sum of the energies at x0 (no gradient), for reporting and tests.
  double total_energy(const at::Tensor& x0);

 private:
  std::shared_ptr<Denoiser> model_;
  std::vector<EnergyTerm> energies_;
  EnergyGuidanceOptions opt_;
  int64_t step_ = 0;
};

}  // namespace drb::guide
