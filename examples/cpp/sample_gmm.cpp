// Samples a Gaussian-mixture "video latent" with the C++ API and prints what happened.
#include <ATen/ATen.h>

#include <cstdio>

#include "derrumbe/derrumbe.hpp"

int main() {
  auto model = drb::GaussianMixtureDenoiser::random({16, 5, 8, 8}, 4, /*seed=*/1, 1.0, at::kFloat);
  const at::Tensor sigmas = drb::schedules::karras(20, 0.002, 80.0);
  const at::Tensor x = drb::randn({1, 16, 5, 8, 8}, drb::NoiseAddress{42, 0}, at::TensorOptions().dtype(at::kFloat)) * 80.0;
  drb::SampleOptions opt;
  opt.callback = [](const drb::StepInfo& s) {
    std::printf("step %2lld/%lld  sigma %8.4f -> %8.4f\n", static_cast<long long>(s.step + 1),
                static_cast<long long>(s.num_steps), s.sigma, s.sigma_next);
    return false;
  };
  const at::Tensor out = drb::sample(model, x, sigmas, "dpmpp_2m", opt);
  std::printf("result mean %.4f std %.4f\n", out.mean().item<double>(), out.std().item<double>());
  return 0;
}
