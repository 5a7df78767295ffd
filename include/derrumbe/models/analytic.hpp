// An exact denoiser for a Gaussian mixture data distribution, for tests, benchmarks and
// research: p(x0) = sum_k w_k N(mu_k, s_k^2 I). At noise level sigma the marginal is
// sum_k w_k N(mu_k, (s_k^2 + sigma^2) I), and the posterior mean is
//   E[x0 | x] = sum_k r_k(x) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)),
// with responsibilities r_k(x) proportional to w_k N(x; mu_k, (s_k^2 + sigma^2) I).
#pragma once
#include <ATen/core/Tensor.h>

#include "derrumbe/sample/denoiser.hpp"

namespace drb {

class DRB_EXPORT GaussianMixtureDenoiser : public Denoiser {
 public:
  // means [K, item shape...], stds [K] (>= 0), weights [K] (> 0, normalized here). float32 or
  // float64; x of any batch size with the same item shape.
  GaussianMixtureDenoiser(at::Tensor means, at::Tensor stds, at::Tensor weights);
  // A seeded random mixture: means N(0, spread^2), stds uniform in [0.1, 0.5], weights in [0.5, 1.5].
  static GaussianMixtureDenoiser random(at::IntArrayRef item_shape, int64_t components, uint64_t seed,
                                        double spread = 1.0, at::ScalarType dtype = at::kDouble);

  at::Tensor denoise(const at::Tensor& x, double sigma) override;

  const at::Tensor& means() const { return means_; }
  const at::Tensor& stds() const { return stds_; }
  const at::Tensor& weights() const { return weights_; }

 private:
  at::Tensor means_, stds_, weights_;
};

}  // namespace drb
