#include "derrumbe/guide/energy.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include <cmath>

namespace drb::guide {

namespace {

std::string shape_str(const at::Tensor& t) { return t.defined() ? c10::str(t.sizes()) : std::string("undefined"); }

bool all_finite(const at::Tensor& t) { return at::isfinite(t).all().item<bool>(); }

// NaN fails both comparisons, so this also rejects NaN.
bool all_in_unit_interval(const at::Tensor& t) { return ((t >= 0) & (t <= 1)).all().item<bool>(); }

// backward [F, 2, H, W]: defined, floating, F >= min_frames, finite.
void check_flow(const at::Tensor& backward, const std::string& who, int64_t min_frames) {
  check_arg(backward.defined() && backward.dim() == 4 && backward.size(1) == 2,
            who + ": backward flow must be [F, 2, H, W], got " + shape_str(backward));
  check_arg(at::isFloatingType(backward.scalar_type()),
            who + ": backward flow must be floating point, got " + std::string(c10::toString(backward.scalar_type())));
  check_arg(backward.size(0) >= min_frames && backward.size(2) >= 1 && backward.size(3) >= 1,
            who + ": backward flow needs at least " + std::to_string(min_frames) + " frame(s), got " +
                shape_str(backward));
  check_arg(all_finite(backward), who + ": backward flow " + shape_str(backward) + " contains NaN or inf");
}

// An [F, H, W] weight in [0, 1] as float32 on `device`; undefined means all ones.
at::Tensor checked_weights(const at::Tensor& w, int64_t f, int64_t h, int64_t wd, at::Device device,
                           const std::string& who, const std::string& name) {
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  if (!w.defined()) return at::ones({f, h, wd}, opts);
  check_arg(w.dim() == 3 && w.size(0) == f && w.size(1) == h && w.size(2) == wd,
            who + ": " + name + " must be [F, H, W] = [" + std::to_string(f) + ", " + std::to_string(h) + ", " +
                std::to_string(wd) + "], got " + shape_str(w));
  check_arg(all_in_unit_interval(w), who + ": " + name + " " + shape_str(w) + " must be in [0, 1] (no NaN)");
  return w.to(opts);
}

// x0 must be [B, C, F, H, W] with the energy's F, H, W.
void check_video(const at::Tensor& x0, int64_t f, int64_t h, int64_t w, const std::string& who) {
  check_arg(x0.defined() && x0.dim() == 5 && x0.size(2) == f && x0.size(3) == h && x0.size(4) == w,
            who + ": x0 must be [B, C, " + std::to_string(f) + ", " + std::to_string(h) + ", " + std::to_string(w) +
                "], got " + shape_str(x0));
}

// Sampling positions p + flow(p) in pixels, flow [N, 2, h, w] (x, y) -> [N, 2, h, w].
at::Tensor positions(const at::Tensor& flow) {
  const int64_t h = flow.size(2), w = flow.size(3);
  const auto opts = flow.options();
  const at::Tensor xs = at::arange(w, opts).view({1, w}).expand({h, w});
  const at::Tensor ys = at::arange(h, opts).view({h, 1}).expand({h, w});
  return at::stack({xs, ys}).unsqueeze(0) + flow;
}

// p + flow(p) as a grid_sampler grid [N, h, w, 2] in [-1, 1] (align_corners = true: pixel
// centres 0 and size - 1 map to -1 and 1).
at::Tensor sampling_grid(const at::Tensor& flow) {
  const int64_t h = flow.size(2), w = flow.size(3);
  const at::Tensor pos = positions(flow);
  const double sx = w > 1 ? 2.0 / (w - 1) : 0.0, sy = h > 1 ? 2.0 / (h - 1) : 0.0;
  return at::stack({pos.select(1, 0) * sx - 1, pos.select(1, 1) * sy - 1}, -1);
}

// 1 where p + flow(p) lies on the image (the pixel footprints [-0.5, size - 0.5]), [N, h, w].
at::Tensor inside(const at::Tensor& flow) {
  const int64_t h = flow.size(2), w = flow.size(3);
  const at::Tensor pos = positions(flow);
  const at::Tensor x = pos.select(1, 0), y = pos.select(1, 1);
  return ((x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)).to(flow.scalar_type());
}

constexpr int64_t kBilinear = 0, kBorder = 1;

// Bilinear sample of [N, C, h, w] at grid [N, h, w, 2]; border padding (out-of-frame samples are
// masked by `inside`, so the padding only keeps edge pixels from being pulled towards 0).
at::Tensor sample(const at::Tensor& input, const at::Tensor& grid) {
  return at::grid_sampler(input, grid, kBilinear, kBorder, /*align_corners=*/true);
}

void check_scalar_energy(const at::Tensor& e, const std::string& who) {
  check(e.defined() && e.numel() == 1 && at::isFloatingType(e.scalar_type()), ErrorCode::model,
        who + " must return a floating scalar tensor (numel 1), got " +
            (e.defined() ? shape_str(e) + " " + c10::toString(e.scalar_type()) : std::string("undefined")));
}

}  // namespace

Energy::~Energy() = default;

// ---------------------------------------------------------------------------------------------

FunctionEnergy::FunctionEnergy(std::function<at::Tensor(const at::Tensor&)> fn) : fn_(std::move(fn)) {
  check_arg(static_cast<bool>(fn_), "FunctionEnergy: the function is empty");
}

at::Tensor FunctionEnergy::energy(const at::Tensor& x0) {
  at::Tensor e = fn_(x0);
  check_scalar_energy(e, "FunctionEnergy: the function");
  return e.reshape({});
}

// ---------------------------------------------------------------------------------------------

FlowWarpEnergy::FlowWarpEnergy(at::Tensor backward, at::Tensor valid) {
  check_flow(backward, "FlowWarpEnergy", 2);
  const int64_t f = backward.size(0), h = backward.size(2), w = backward.size(3);
  const at::Tensor v = checked_weights(valid, f, h, w, backward.device(), "FlowWarpEnergy", "valid");
  // Frame t + 1's flow samples frame t; a position off frame t has nothing to match. The grid
  // is kept in float64 so that integer motion stays exact for float64 x0.
  const at::Tensor flow = backward.slice(0, 1).to(at::kDouble);
  grid_ = sampling_grid(flow);                                                 // [F - 1, H, W, 2]
  valid_ = (v.slice(0, 1) * inside(flow).to(at::kFloat)).unsqueeze(1);        // [F - 1, 1, H, W]
}

at::Tensor FlowWarpEnergy::energy(const at::Tensor& x0) {
  const int64_t f = grid_.size(0) + 1, h = grid_.size(1), w = grid_.size(2);
  check_video(x0, f, h, w, "FlowWarpEnergy");
  const int64_t b = x0.size(0), c = x0.size(1);
  // [B, C, F, H, W] -> [B, F, C, H, W], so that all frame pairs go through one grid_sampler call.
  const at::Tensor frames = x0.transpose(1, 2);
  const at::Tensor prev = frames.slice(1, 0, f - 1).reshape({b * (f - 1), c, h, w});
  const at::Tensor grid = grid_.to(x0.options()).unsqueeze(0).expand({b, f - 1, h, w, 2}).reshape({b * (f - 1), h, w, 2});
  const at::Tensor warped = sample(prev, grid).view({b, f - 1, c, h, w});
  const at::Tensor err = valid_.to(x0.options()) * (frames.slice(1, 1) - warped).abs();  // [B, F - 1, C, H, W]
  return err.mean({0, 2, 3, 4}).sum();  // a mean per frame pair, summed over t
}

// ---------------------------------------------------------------------------------------------

MaskEnergy::MaskEnergy(at::Tensor mask) {
  check_arg(mask.defined() && mask.dim() == 3 && mask.size(0) >= 2,
            "MaskEnergy: mask must be [F, H, W] with F >= 2, got " + shape_str(mask));
  check_arg(all_in_unit_interval(mask), "MaskEnergy: mask " + shape_str(mask) + " must be in [0, 1] (no NaN)");
  keep_ = (1 - mask.slice(0, 1).to(at::kFloat)).unsqueeze(1);
}

at::Tensor MaskEnergy::energy(const at::Tensor& x0) {
  const int64_t f = keep_.size(0) + 1;
  check_video(x0, f, keep_.size(2), keep_.size(3), "MaskEnergy");
  const at::Tensor frames = x0.transpose(1, 2);  // [B, F, C, H, W], to broadcast with [F - 1, 1, H, W]
  const at::Tensor change = frames.slice(1, 1) - frames.slice(1, 0, f - 1);
  return (keep_.to(x0.options()) * change.pow(2)).mean();
}

// ---------------------------------------------------------------------------------------------

LatentFlow latent_flow(const at::Tensor& backward, const at::Tensor& valid, int64_t latent_height,
                       int64_t latent_width, int64_t temporal_factor) {
  const std::string who = "latent_flow";
  check_flow(backward, who, 1);
  check_arg(latent_height >= 1 && latent_width >= 1, who + ": latent size must be >= 1, got " +
                                                         std::to_string(latent_height) + "x" + std::to_string(latent_width));
  check_arg(temporal_factor >= 1, who + ": temporal_factor must be >= 1, got " + std::to_string(temporal_factor));
  const int64_t f = backward.size(0), hh = backward.size(2), ww = backward.size(3);
  const int64_t h = latent_height, w = latent_width, tf = temporal_factor;
  check_arg((f - 1) % tf == 0, who + ": " + std::to_string(f) + " frames is not 1 + " + std::to_string(tf) +
                                   " * K (temporal_factor " + std::to_string(tf) + ")");
  const at::Tensor v = checked_weights(valid, f, hh, ww, backward.device(), who, "valid");

  // Resize flow and validity together: area average when shrinking, bilinear otherwise.
  const auto opts = v.options();
  at::Tensor both = at::cat({backward.to(opts), v.unsqueeze(1)}, 1);  // [F, 3, H', W']
  both = (h <= hh && w <= ww) ? at::adaptive_avg_pool2d(both, {h, w})
                              : at::upsample_bilinear2d(both, {h, w}, /*align_corners=*/false);
  const at::Tensor scale = at::tensor({double(w) / ww, double(h) / hh, 1.0}, at::kFloat).to(opts).view({1, 3, 1, 1});
  both = both * scale;

  // Latent frame k >= 1 is video frame k * tf; chain its backward flow through frames
  // k tf - 1, ..., (k - 1) tf + 1, all K latent frames at once.
  const int64_t k = (f - 1) / tf;
  LatentFlow out{at::zeros({k + 1, 2, h, w}, opts), at::ones({k + 1, h, w}, opts)};
  if (k == 0) return out;
  const at::Tensor last = both.slice(0, tf, f, tf);  // frames tf, 2 tf, ..., K tf
  at::Tensor disp = last.slice(1, 0, 2), val = last.select(1, 2);
  for (int64_t j = 1; j < tf; ++j) {
    const at::Tensor step = both.slice(0, tf - j, f - j, tf);  // frames k tf - j
    val = val * inside(disp);
    const at::Tensor s = sample(step, sampling_grid(disp));
    disp = disp + s.slice(1, 0, 2);
    val = val * s.select(1, 2);
  }
  out.backward.slice(0, 1).copy_(disp);
  out.valid.slice(0, 1).copy_(val * inside(disp));
  return out;
}

// ---------------------------------------------------------------------------------------------

EnergyMode energy_mode_from_name(const std::string& name) {
  if (name == "x0") return EnergyMode::x0;
  if (name == "model") return EnergyMode::model;
  throw Error(ErrorCode::invalid_argument, "unknown energy mode '" + name + "' (known: x0, model)");
}

// ---------------------------------------------------------------------------------------------

namespace {

// A leaf that autograd tracks; an inference tensor cannot require grad, so it is copied.
at::Tensor grad_leaf(const at::Tensor& t) {
  at::Tensor y = t.is_inference() ? t.clone() : t.detach();
  return y.requires_grad_(true);
}

// Gradient of a scalar e with respect to the leaf y (zeros when e does not depend on y).
at::Tensor gradient(const at::Tensor& e, const at::Tensor& y) {
  if (!e.requires_grad()) return at::zeros_like(y);
  e.backward({}, /*retain_graph=*/false, /*create_graph=*/false, at::TensorList(y));
  const at::Tensor g = y.grad();
  return g.defined() ? g : at::zeros_like(y);
}

}  // namespace

EnergyGuidedDenoiser::EnergyGuidedDenoiser(std::shared_ptr<Denoiser> model, std::vector<EnergyTerm> energies,
                                           EnergyGuidanceOptions options)
    : model_(std::move(model)), energies_(std::move(energies)), opt_(std::move(options)) {
  const std::string who = "EnergyGuidedDenoiser";
  check_arg(model_ != nullptr, who + ": model is null");
  check_arg(!energies_.empty(), who + ": need at least one energy");
  for (size_t i = 0; i < energies_.size(); ++i) {
    check_arg(energies_[i].energy != nullptr, who + ": energy " + std::to_string(i) + " is null");
    check_arg(std::isfinite(energies_[i].weight),
              who + ": energy " + std::to_string(i) + " weight " + std::to_string(energies_[i].weight) + " is not finite");
  }
  check_arg(std::isfinite(opt_.strength), who + ": strength " + std::to_string(opt_.strength) + " is not finite");
  for (size_t i = 0; i < opt_.strength_schedule.size(); ++i)
    check_arg(std::isfinite(opt_.strength_schedule[i]),
              who + ": strength_schedule[" + std::to_string(i) + "] is not finite");
  check_arg(opt_.sigma_end >= 0 && opt_.sigma_end <= opt_.sigma_start,
            who + ": need 0 <= sigma_end <= sigma_start, got sigma_end " + std::to_string(opt_.sigma_end) +
                ", sigma_start " + std::to_string(opt_.sigma_start));
  check_arg(opt_.steps >= 1 && opt_.steps <= 100, who + ": steps must be in 1 ... 100, got " + std::to_string(opt_.steps));
}

void EnergyGuidedDenoiser::begin_step(int64_t step, int64_t num_steps, double sigma) {
  check_arg(opt_.strength_schedule.empty() || static_cast<int64_t>(opt_.strength_schedule.size()) >= num_steps,
            "EnergyGuidedDenoiser: strength_schedule has " + std::to_string(opt_.strength_schedule.size()) +
                " entries for " + std::to_string(num_steps) + " steps");
  step_ = step;
  model_->begin_step(step, num_steps, sigma);  // the wrapped model may keep step state too
}

namespace {

// sum_k weight_k E_k(x0), checked to be a finite scalar.
at::Tensor weighted_energy(const std::vector<EnergyTerm>& terms, const at::Tensor& x0, double sigma) {
  at::Tensor total;
  for (size_t i = 0; i < terms.size(); ++i) {
    const at::Tensor e = terms[i].energy->energy(x0);
    check_scalar_energy(e, "EnergyGuidedDenoiser: energy " + std::to_string(i));
    const at::Tensor term = e.reshape({}) * terms[i].weight;
    total = total.defined() ? total + term : term;
  }
  const double value = total.item<double>();
  check(std::isfinite(value), ErrorCode::model,
        "EnergyGuidedDenoiser: the energy is " + std::to_string(value) + " at sigma " + std::to_string(sigma));
  return total;
}

}  // namespace

at::Tensor EnergyGuidedDenoiser::denoise(const at::Tensor& x, double sigma) {
  double lambda = opt_.strength;
  if (!opt_.strength_schedule.empty()) {
    check_arg(step_ < static_cast<int64_t>(opt_.strength_schedule.size()),
              "EnergyGuidedDenoiser: no strength_schedule entry for step " + std::to_string(step_));
    lambda = opt_.strength_schedule[step_];
  }
  if (lambda == 0 || sigma > opt_.sigma_start || sigma < opt_.sigma_end) return model_->denoise(x, sigma);
  check(!c10::InferenceMode::is_enabled(), ErrorCode::unsupported,
        "EnergyGuidedDenoiser: energy guidance needs autograd and cannot run under InferenceMode");

  // Each correction has root-mean-square size lambda per batch item, so the strength means the
  // same for any energy scale and latent size (DPS normalizes by the residual norm likewise).
  const auto normalized = [](const at::Tensor& g) {
    std::vector<int64_t> shape(static_cast<size_t>(g.dim()), 1);
    shape[0] = g.size(0);
    const at::Tensor rms = g.flatten(1).square().mean(1).sqrt().clamp_min(1e-30).view(shape);
    return g / rms;
  };
  if (opt_.mode == EnergyMode::x0) {
    // FlowDPS: gradient steps on x0_hat alone, no backpropagation through the model.
    at::Tensor x0;
    {
      at::NoGradGuard no_grad;
      x0 = model_->denoise(x, sigma);
    }
    for (int64_t i = 0; i < opt_.steps; ++i) {
      at::AutoGradMode grad_on(true);
      const at::Tensor y = grad_leaf(x0);
      const at::Tensor g = gradient(weighted_energy(energies_, y, sigma), y);
      x0 = (x0 - lambda * normalized(g)).detach();
    }
    return x0.to(x.scalar_type());
  }

  // DPS: the gradient goes through the denoiser, grad_x E(D(x, sigma)).
  at::AutoGradMode grad_on(true);
  const at::Tensor xg = grad_leaf(x);
  const at::Tensor x0 = model_->denoise(xg, sigma);
  check(x0.requires_grad(), ErrorCode::model,
        "EnergyGuidedDenoiser: mode 'model' needs a differentiable model, but its output at sigma " +
            std::to_string(sigma) + " does not depend on x through autograd (use mode 'x0')");
  const at::Tensor g = gradient(weighted_energy(energies_, x0, sigma), xg);
  return (x0.detach() - lambda * normalized(g)).to(x.scalar_type());
}

double EnergyGuidedDenoiser::total_energy(const at::Tensor& x0) {
  at::NoGradGuard no_grad;
  double total = 0;
  for (const EnergyTerm& t : energies_) total += t.weight * t.energy->energy(x0).item<double>();
  return total;
}

}  // namespace drb::guide
