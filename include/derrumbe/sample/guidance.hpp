// The classifier-free guidance family as one Denoiser wrapping a conditional model.
//
//   cfg       D = u + s (c - u)                                  (Ho & Salimans 2022)
//   cfg_zero  CFG-Zero* (Fan et al. 2025): u is rescaled by alpha = <c, u> / ||u||^2 per
//             batch item, D = alpha u + s (c - alpha u); the first `zero_init_steps` steps
//             return the zero velocity, i.e. D = x / (1 + sigma) in VE form (flow models).
//   apg       adaptive projected guidance (Sadat et al. 2024): the difference c - u with
//             momentum, clipped to norm_threshold, split into parts parallel and orthogonal
//             to c; D = c + (s - 1) (orth + eta * parallel).
// The scale can vary per step (scale_schedule) and guidance applies only while
// sigma_end <= sigma <= sigma_start (guidance interval); outside it, and at scale 1, the
// unconditional call is skipped.
#pragma once
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "derrumbe/sample/denoiser.hpp"

namespace drb {

enum class Branch { cond, uncond };

// A model evaluated with its conditioning (prompt) or without (negative/empty prompt).
class DRB_EXPORT ConditionalDenoiser {
 public:
  virtual ~ConditionalDenoiser();
  // x holds branches.size() equal chunks stacked along dim 0; chunk k is evaluated under
  // branches[k]. Returns x0 in the same layout.
  virtual at::Tensor denoise(const at::Tensor& x, double sigma, std::span<const Branch> branches) = 0;
};

struct GuidanceOptions {
  std::string method = "cfg";           // cfg, cfg_zero, apg
  double scale = 5.0;
  std::vector<double> scale_schedule;   // per step; overrides `scale` when not empty
  double sigma_start = std::numeric_limits<double>::infinity();
  double sigma_end = 0.0;
  bool batched = true;                  // cond and uncond in one model call
  int64_t zero_init_steps = 0;          // cfg_zero
  double apg_eta = 0.0;                 // apg: weight of the parallel part
  double apg_norm_threshold = 0.0;      // apg: 0 disables clipping
  double apg_momentum = 0.0;            // apg: running average factor (negative as in the paper)
};

class DRB_EXPORT GuidedDenoiser : public Denoiser {
 public:
  GuidedDenoiser(std::shared_ptr<ConditionalDenoiser> model, GuidanceOptions options);
  at::Tensor denoise(const at::Tensor& x, double sigma) override;
  void begin_step(int64_t step, int64_t num_steps, double sigma) override;
  // The scale in force at the current step and sigma (1 outside the interval).
  double current_scale(double sigma) const;

 private:
  std::shared_ptr<ConditionalDenoiser> model_;
  GuidanceOptions opt_;
  int64_t step_ = 0;
  at::Tensor apg_running_;
};

// The combination rules on their own, for researchers and other samplers.
DRB_EXPORT at::Tensor cfg_combine(const at::Tensor& cond, const at::Tensor& uncond, double scale);
DRB_EXPORT at::Tensor cfg_zero_combine(const at::Tensor& cond, const at::Tensor& uncond, double scale);
// `running` (in/out, may be undefined at the first step) holds the APG momentum state.
DRB_EXPORT at::Tensor apg_combine(const at::Tensor& cond, const at::Tensor& uncond, double scale, double eta,
                                  double norm_threshold, double momentum, at::Tensor& running);

}  // namespace drb
