// Noise schedules. Each returns a 1-D float64 tensor of n + 1 VE sigmas, decreasing, ending
// in 0 (n is the number of sampling steps). Names follow ComfyUI / k-diffusion.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

#include "derrumbe/core/error.hpp"

namespace drb::schedules {

// Karras et al. 2022, eq. 5.
DRB_EXPORT at::Tensor karras(int64_t n, double sigma_min, double sigma_max, double rho = 7.0);
// Log-linear in sigma.
DRB_EXPORT at::Tensor exponential(int64_t n, double sigma_min, double sigma_max);
// Log-sigma following a polynomial ramp of power rho.
DRB_EXPORT at::Tensor polyexponential(int64_t n, double sigma_min, double sigma_max, double rho = 1.0);
// Continuous VP (Song et al. 2021): sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1).
DRB_EXPORT at::Tensor vp(int64_t n, double beta_d = 19.9, double beta_min = 0.1, double eps_s = 1e-3);
// Cosine-of-arctangent interpolation (Align Your Steps' KL-optimal schedule).
DRB_EXPORT at::Tensor kl_optimal(int64_t n, double sigma_min, double sigma_max);

// Schedules that pick from a model's discrete training sigmas (ComfyUI's model_sampling):
// `model_sigmas` is the ascending table of the model's training noise levels, for example
// discrete_vp_sigmas() for a DDPM-trained model.
DRB_EXPORT std::vector<double> discrete_vp_sigmas(int64_t num_train_steps = 1000, double beta_start = 0.00085,
                                                  double beta_end = 0.012, const std::string& beta_schedule = "scaled_linear");
DRB_EXPORT at::Tensor simple(int64_t n, const std::vector<double>& model_sigmas);
DRB_EXPORT at::Tensor sgm_uniform(int64_t n, const std::vector<double>& model_sigmas);
DRB_EXPORT at::Tensor ddim_uniform(int64_t n, const std::vector<double>& model_sigmas);
DRB_EXPORT at::Tensor beta(int64_t n, const std::vector<double>& model_sigmas, double alpha = 0.6, double beta = 0.6);

// Rectified-flow schedules, returned as VE sigmas (flow_t_to_sigma).
// linear_quadratic: Mochi's schedule (linear then quadratic in t), threshold_noise 0.025,
// linear_steps n / 2 by default.
DRB_EXPORT at::Tensor linear_quadratic(int64_t n, double threshold_noise = 0.025, std::optional<int64_t> linear_steps = {});
// Shifted flow schedule as diffusers builds it, then t = 0 appended. Two spacings:
// - euler (FlowMatchEulerDiscreteScheduler): t linear over n points from 1 to t_min, where
//   t_min is the last training t (1/N, itself shifted when the shift is static);
// - unipc (UniPCMultistepScheduler with use_flow_sigmas, as Wan uses it): t linear over n + 1
//   points from 1 to 1/N with the last dropped, and a first t of 1 lowered by 1e-6.
// Then either the static shift s: t' = s t / (1 + (s - 1) t), or with `mu` the dynamic
// (resolution-dependent) shift t' = e^mu / (e^mu + (1/t - 1)); shift_terminal stretches the
// schedule so its last t equals it.
enum class FlowSpacing { euler, unipc };
struct FlowShift {
  double shift = 1.0;
  std::optional<double> mu;
  std::optional<double> shift_terminal;
  int64_t num_train_timesteps = 1000;
  FlowSpacing spacing = FlowSpacing::euler;
};
DRB_EXPORT at::Tensor flow_shift(int64_t n, const FlowShift& options);
// The mu of the LTX/Flux pipelines: linear in the image sequence length between
// (base_seq_len, base_shift) and (max_seq_len, max_shift).
DRB_EXPORT double flow_mu(int64_t seq_len, int64_t base_seq_len = 256, int64_t max_seq_len = 4096,
                          double base_shift = 0.5, double max_shift = 1.15);

// A caller's sigmas used exactly as given, after validation: 1-D, at least 2 entries (or the
// single [0]: no step to run), finite, non-negative, strictly decreasing. Full schedules end
// in 0; a part split off for a later stage may end above it.
DRB_EXPORT at::Tensor custom(const std::vector<double>& sigmas);
DRB_EXPORT void validate(const at::Tensor& sigmas);

// Denoise strength (SDEdit start), defined once: strength s in [0, 1] runs the last
// round(s * n) steps of an n-step schedule. Returns those sigmas (still ending in 0);
// strength 1 is the whole schedule, 0 a single [0] entry (nothing to run).
DRB_EXPORT at::Tensor split_for_strength(const at::Tensor& sigmas, double strength);

// By name, for the C and Python APIs: karras, exponential, polyexponential, vp, kl_optimal
// use sigma_min/sigma_max; simple, sgm_uniform, ddim_uniform, beta use the discrete VP table;
// linear_quadratic and flow_shift build flow schedules.
struct ScheduleParams {
  double sigma_min = 0.0291675;  // the SD-1.x range, a common default
  double sigma_max = 14.614642;
  std::optional<double> rho;     // karras: 7, polyexponential: 1
  FlowShift flow;
};
DRB_EXPORT at::Tensor by_name(const std::string& name, int64_t n, const ScheduleParams& params = {});
DRB_EXPORT std::vector<std::string> names();

}  // namespace drb::schedules
