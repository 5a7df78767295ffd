// Adapters from a network's native prediction to the denoiser D(x, sigma) -> x0.
//
// In VE form x = x0 + sigma * n. The network sees the input it was trained on:
// - eps, v, x0 (diffusion models trained in VP form): input c_in * x with
//   c_in = 1 / sqrt(sigma^2 + 1), time input sigma. eps: D = x - sigma * eps;
//   v: D = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * v; x0: D = net output.
// - flow (rectified flow x_t = (1 - t) x0 + t n, v = n - x0): t = sigma / (1 + sigma),
//   input x_t = (1 - t) x, time input t, D = x_t - t * v.
#pragma once
#include <functional>
#include <string>

#include "derrumbe/sample/denoiser.hpp"

namespace drb {

enum class Prediction { eps, v, x0, flow };

DRB_EXPORT Prediction prediction_from_name(const std::string& name);  // "eps", "v", "x0", "flow"
DRB_EXPORT const char* prediction_name(Prediction p) noexcept;

// Rectified-flow time t in [0, 1) <-> VE sigma. t = 1 (pure noise) has no finite VE sigma;
// flow_t_to_sigma maps it to kFlowSigmaMax, whose effect on a sampled result is about
// sigma_next / kFlowSigmaMax relative (below 1e-7 for any practical second sigma).
inline constexpr double kFlowSigmaMax = 1e9;
DRB_EXPORT double flow_t_to_sigma(double t);
DRB_EXPORT double sigma_to_flow_t(double sigma);

// A network in its native parameterization: net(model_input, time_input) -> prediction.
using NetworkFn = std::function<at::Tensor(const at::Tensor& input, double time)>;

class DRB_EXPORT ParameterizedDenoiser : public Denoiser {
 public:
  ParameterizedDenoiser(NetworkFn net, Prediction prediction);
  at::Tensor denoise(const at::Tensor& x, double sigma) override;

 private:
  NetworkFn net_;
  Prediction prediction_;
};

}  // namespace drb
