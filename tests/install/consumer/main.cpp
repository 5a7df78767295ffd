#include <ATen/ATen.h>
#include <derrumbe/derrumbe.h>
#include <derrumbe/derrumbe.hpp>

#include <cstdio>

int main() {
  auto model = drb::GaussianMixtureDenoiser::random({4}, 2, 1);
  const at::Tensor x = drb::randn({2, 4}, drb::NoiseAddress{1, 0}, at::TensorOptions().dtype(at::kDouble)) * 10.0;
  const at::Tensor out = drb::sample(model, x, drb::schedules::karras(10, 0.01, 10.0), "dpmpp_2m");
  std::printf("consumer: %s %d samplers, result finite %d\n", drb_version(), static_cast<int>(drb_sampler_count()),
              static_cast<int>(at::isfinite(out).all().item<bool>()));
  return at::isfinite(out).all().item<bool>() ? 0 : 1;
}
