#include "derrumbe/sample/guidance.hpp"

#include <ATen/ATen.h>

#include <cmath>

#include "derrumbe/sample/parameterization.hpp"

namespace drb {

ConditionalDenoiser::~ConditionalDenoiser() = default;

namespace {

// Per-batch-item dot product and squared norm over all other dimensions, shaped [B, 1, ...].
at::Tensor item_dot(const at::Tensor& a, const at::Tensor& b) {
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < a.dim(); ++d) dims.push_back(d);
  return (a * b).sum(dims, /*keepdim=*/true);
}

}  // namespace

at::Tensor cfg_combine(const at::Tensor& cond, const at::Tensor& uncond, double scale) {
  return uncond + (cond - uncond) * scale;
}

at::Tensor cfg_zero_combine(const at::Tensor& cond, const at::Tensor& uncond, double scale) {
  // Optimized scale alpha* = <c, u> / ||u||^2 (CFG-Zero*, eq. 7), per batch item.
  const at::Tensor c = cond.to(at::kDouble), u = uncond.to(at::kDouble);
  const at::Tensor alpha = item_dot(c, u) / (item_dot(u, u) + 1e-8);
  return (u * alpha + (c - u * alpha) * scale).to(cond.scalar_type());
}

at::Tensor apg_combine(const at::Tensor& cond, const at::Tensor& uncond, double scale, double eta, double norm_threshold,
                       double momentum, at::Tensor& running) {
  at::Tensor diff = (cond - uncond).to(at::kDouble);
  if (momentum != 0) {
    running = running.defined() ? diff + running * momentum : diff;
    diff = running;
  }
  if (norm_threshold > 0) {
    const at::Tensor norm = item_dot(diff, diff).sqrt();
    diff = diff * at::clamp_max(norm_threshold / (norm + 1e-12), 1.0);
  }
  const at::Tensor c = cond.to(at::kDouble);
  const at::Tensor v1 = c / (item_dot(c, c).sqrt() + 1e-12);
  const at::Tensor parallel = v1 * item_dot(diff, v1);
  const at::Tensor orthogonal = diff - parallel;
  return (c + (orthogonal + parallel * eta) * (scale - 1)).to(cond.scalar_type());
}

GuidedDenoiser::GuidedDenoiser(std::shared_ptr<ConditionalDenoiser> model, GuidanceOptions options)
    : model_(std::move(model)), opt_(std::move(options)) {
  check_arg(model_ != nullptr, "guidance: model is null");
  check_arg(opt_.method == "cfg" || opt_.method == "cfg_zero" || opt_.method == "apg",
            "guidance: unknown method '" + opt_.method + "' (known: cfg, cfg_zero, apg)");
  check_arg(std::isfinite(opt_.scale), "guidance: scale must be finite");
  for (double s : opt_.scale_schedule) check_arg(std::isfinite(s), "guidance: scale_schedule entries must be finite");
  check_arg(opt_.sigma_end >= 0 && opt_.sigma_start >= opt_.sigma_end && !std::isnan(opt_.sigma_start),
            "guidance: need 0 <= sigma_end <= sigma_start");
  check_arg(opt_.zero_init_steps >= 0, "guidance: zero_init_steps must be >= 0");
  check_arg(opt_.apg_norm_threshold >= 0, "guidance: apg_norm_threshold must be >= 0");
}

void GuidedDenoiser::begin_step(int64_t step, int64_t, double) {
  step_ = step;
  if (step == 0) apg_running_ = at::Tensor();
}

double GuidedDenoiser::current_scale(double sigma) const {
  if (sigma > opt_.sigma_start || sigma < opt_.sigma_end) return 1.0;
  if (opt_.scale_schedule.empty()) return opt_.scale;
  const size_t k = std::min(static_cast<size_t>(step_), opt_.scale_schedule.size() - 1);
  return opt_.scale_schedule[k];
}

at::Tensor GuidedDenoiser::denoise(const at::Tensor& x, double sigma) {
  if (opt_.method == "cfg_zero" && step_ < opt_.zero_init_steps) return x / (1 + sigma);  // zero flow velocity
  const double scale = current_scale(sigma);
  static constexpr Branch kCond[] = {Branch::cond};
  static constexpr Branch kUncond[] = {Branch::uncond};
  static constexpr Branch kBoth[] = {Branch::cond, Branch::uncond};
  if (scale == 1.0) return model_->denoise(x, sigma, kCond);  // no unconditional call at scale 1
  at::Tensor cond, uncond;
  if (opt_.batched) {
    const at::Tensor out = model_->denoise(at::cat({x, x}, 0), sigma, kBoth);
    check(out.defined() && out.size(0) == 2 * x.size(0), ErrorCode::model,
          "guidance: batched model output must stack cond and uncond along dim 0");
    cond = out.narrow(0, 0, x.size(0));
    uncond = out.narrow(0, x.size(0), x.size(0));
  } else {
    cond = model_->denoise(x, sigma, kCond);
    uncond = model_->denoise(x, sigma, kUncond);
  }
  if (opt_.method == "cfg") return cfg_combine(cond, uncond, scale);
  if (opt_.method == "apg")
    return apg_combine(cond, uncond, scale, opt_.apg_eta, opt_.apg_norm_threshold, opt_.apg_momentum, apg_running_);
  // cfg_zero works on flow velocities v = (x_t - x0) / t, x_t = x / (1 + sigma).
  const double t = sigma_to_flow_t(sigma);
  const at::Tensor x_t = x / (1 + sigma);
  const at::Tensor v = cfg_zero_combine((x_t - cond) / t, (x_t - uncond) / t, scale);
  return x_t - v * t;
}

}  // namespace drb
