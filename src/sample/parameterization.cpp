#include "derrumbe/sample/parameterization.hpp"

#include <ATen/ATen.h>

#include <cmath>

namespace drb {

Prediction prediction_from_name(const std::string& name) {
  if (name == "eps" || name == "epsilon") return Prediction::eps;
  if (name == "v" || name == "v_prediction") return Prediction::v;
  if (name == "x0" || name == "sample") return Prediction::x0;
  if (name == "flow" || name == "flow_prediction") return Prediction::flow;
  throw Error(ErrorCode::not_found, "unknown prediction type '" + name + "' (known: eps, v, x0, flow)");
}

const char* prediction_name(Prediction p) noexcept {
  switch (p) {
    case Prediction::eps: return "eps";
    case Prediction::v: return "v";
    case Prediction::x0: return "x0";
    case Prediction::flow: return "flow";
  }
  return "?";
}

double flow_t_to_sigma(double t) {
  check_arg(t >= 0 && t <= 1, "flow time t must be in [0, 1], got " + std::to_string(t));
  if (t >= 1) return kFlowSigmaMax;
  return std::min(t / (1 - t), kFlowSigmaMax);
}

double sigma_to_flow_t(double sigma) {
  check_arg(sigma >= 0 && !std::isnan(sigma), "sigma must be >= 0, got " + std::to_string(sigma));
  return sigma / (1 + sigma);
}

ParameterizedDenoiser::ParameterizedDenoiser(NetworkFn net, Prediction prediction)
    : net_(std::move(net)), prediction_(prediction) {
  check_arg(static_cast<bool>(net_), "ParameterizedDenoiser: empty network function");
}

at::Tensor ParameterizedDenoiser::denoise(const at::Tensor& x, double sigma) {
  if (prediction_ == Prediction::flow) {
    const double t = sigma_to_flow_t(sigma);
    const at::Tensor x_t = x * (1 - t);
    return x_t - net_(x_t, t) * t;
  }
  const double c_in = 1 / std::sqrt(sigma * sigma + 1);
  const at::Tensor out = net_(x * c_in, sigma);
  switch (prediction_) {
    case Prediction::eps: return x - out * sigma;
    case Prediction::v: return x * (c_in * c_in) - out * (sigma * c_in);
    default: return out;
  }
}

}  // namespace drb
