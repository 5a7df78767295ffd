#include "derrumbe/models/analytic.hpp"

#include <ATen/ATen.h>

#include <cmath>

#include "derrumbe/core/rng.hpp"

namespace drb {

GaussianMixtureDenoiser::GaussianMixtureDenoiser(at::Tensor means, at::Tensor stds, at::Tensor weights) {
  check_arg(means.defined() && stds.defined() && weights.defined(), "GaussianMixtureDenoiser: undefined tensor");
  check_arg(means.dim() >= 2, "GaussianMixtureDenoiser: means must be [K, item shape...], got " + c10::str(means.sizes()));
  const int64_t k = means.size(0);
  check_arg(k >= 1, "GaussianMixtureDenoiser: need at least one component");
  check_arg(stds.dim() == 1 && stds.size(0) == k && weights.dim() == 1 && weights.size(0) == k,
            "GaussianMixtureDenoiser: stds and weights must be [K] with K = " + std::to_string(k));
  for (const auto* t : {&means, &stds, &weights})
    check_arg(t->scalar_type() == at::kFloat || t->scalar_type() == at::kDouble,
              "GaussianMixtureDenoiser: tensors must be float32 or float64");
  check_arg(at::isfinite(means).all().item<bool>(), "GaussianMixtureDenoiser: means contain NaN or inf");
  check_arg((stds >= 0).all().item<bool>() && at::isfinite(stds).all().item<bool>(),
            "GaussianMixtureDenoiser: stds must be finite and >= 0");
  check_arg((weights > 0).all().item<bool>() && at::isfinite(weights).all().item<bool>(),
            "GaussianMixtureDenoiser: weights must be finite and > 0");
  means_ = means.contiguous();
  stds_ = stds.to(means.scalar_type());
  weights_ = (weights / weights.sum()).to(means.scalar_type());
}

GaussianMixtureDenoiser GaussianMixtureDenoiser::random(at::IntArrayRef item_shape, int64_t components, uint64_t seed,
                                                        double spread, at::ScalarType dtype) {
  check_arg(components >= 1, "GaussianMixtureDenoiser::random: components must be >= 1");
  std::vector<int64_t> shape = {components};
  shape.insert(shape.end(), item_shape.begin(), item_shape.end());
  const auto opts = at::TensorOptions().dtype(dtype);
  at::Tensor means = randn(shape, NoiseAddress{seed, 0}, opts) * spread;
  // Uniforms from the normal CDF of seeded normals, so everything follows from the seed.
  auto uniform = [&](uint32_t stream) {
    const at::Tensor z = randn({components}, NoiseAddress{seed, stream}, opts);
    return 0.5 * (1 + at::erf(z / std::sqrt(2.0)));
  };
  return GaussianMixtureDenoiser(means, 0.1 + 0.4 * uniform(1), 0.5 + uniform(2));
}

at::Tensor GaussianMixtureDenoiser::denoise(const at::Tensor& x, double sigma) {
  check_arg(x.dim() == means_.dim() && x.sizes().slice(1) == means_.sizes().slice(1),
            "GaussianMixtureDenoiser: x shape " + c10::str(x.sizes()) + " does not match the item shape " +
                c10::str(means_.sizes().slice(1)));
  check_arg(sigma >= 0 && std::isfinite(sigma), "GaussianMixtureDenoiser: sigma must be finite and >= 0");
  const auto opts = x.options();
  const int64_t b = x.size(0), k = means_.size(0);
  const at::Tensor xf = x.reshape({b, 1, -1});
  const at::Tensor mu = means_.to(opts).reshape({1, k, -1});
  const double d = static_cast<double>(xf.size(2));
  const at::Tensor var = stds_.to(opts).pow(2) + sigma * sigma;  // [K]
  const at::Tensor diff = xf - mu;                                // [B, K, D]
  const at::Tensor sq = diff.pow(2).sum(-1);                      // [B, K]
  const at::Tensor log_r = weights_.to(opts).log() - 0.5 * d * at::log(2 * M_PI * var) - sq / (2 * var);
  const at::Tensor r = at::softmax(log_r, 1);                     // [B, K]
  const at::Tensor shrink = (stds_.to(opts).pow(2) / var).reshape({1, k, 1});
  const at::Tensor post = mu + diff * shrink;                     // [B, K, D]
  return (r.unsqueeze(-1) * post).sum(1).reshape(x.sizes());
}

}  // namespace drb
