#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <doctest/doctest.h>

#include <cmath>

#include "checks.hpp"
#include "derrumbe/guide/noise_warp.hpp"
#include "../../src/guide/noise_warp_device.hpp"

namespace {

using drb::guide::NoiseWarper;
using drb::guide::NoiseWarpOptions;

// A constant flow field [2, H, W].
at::Tensor constant_flow(int64_t h, int64_t w, double u, double v) {
  return at::stack({at::full({h, w}, u), at::full({h, w}, v)}).to(at::kFloat);
}

// Flow of a zoom about the centre by `scale` per frame: forward F(p) = (s - 1)(p - c) and
// its exact inverse B(q) = (1/s - 1)(q - c).
std::pair<at::Tensor, at::Tensor> zoom_flows(int64_t h, int64_t w, double scale) {
  const at::Tensor y = at::arange(h, at::kFloat).view({h, 1}).expand({h, w}) - (h - 1) / 2.0;
  const at::Tensor x = at::arange(w, at::kFloat).view({1, w}).expand({h, w}) - (w - 1) / 2.0;
  return {at::stack({x * (scale - 1), y * (scale - 1)}), at::stack({x * (1 / scale - 1), y * (1 / scale - 1)})};
}

double correlation(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.flatten().to(at::kDouble), y = b.flatten().to(at::kDouble);
  const at::Tensor xc = x - x.mean(), yc = y - y.mean();
  return ((xc * yc).sum() / (xc.norm() * yc.norm())).item<double>();
}

// Mean, variance and the correlation of horizontal neighbours of [C, h, w] noise.
void check_standard_normal(const at::Tensor& z) {
  const double n = static_cast<double>(z.numel());
  CHECK(std::abs(z.mean().item<double>()) < 5.0 / std::sqrt(n));
  CHECK(std::abs(z.var().item<double>() - 1.0) < 6.0 * std::sqrt(2.0 / n));
  const double neighbours = correlation(z.narrow(2, 0, z.size(2) - 1), z.narrow(2, 1, z.size(2) - 1));
  CHECK(std::abs(neighbours) < 5.0 / std::sqrt(n));
}

}  // namespace

TEST_CASE("warped noise moves with a rigid translation") {
  NoiseWarpOptions o;
  o.channels = 4;
  o.factor = 4;
  NoiseWarper warper(16, 16, o);
  const at::Tensor before = warper.latent(), grid_before = warper.grid_noise();
  // One latent pixel (4 grid pixels) to the right per frame: the latent noise shifts exactly.
  warper.step(constant_flow(64, 64, 4, 0), constant_flow(64, 64, -4, 0));
  const at::Tensor after = warper.latent();
  CHECK(at::equal(after.narrow(2, 1, 15), before.narrow(2, 0, 15)));
  check_standard_normal(after);
  // Sub-pixel motion accumulates in the offsets instead of rounding away: 10 frames of 1.3
  // grid pixels move the grid noise by 13 more pixels (17 in all).
  for (int k = 0; k < 10; ++k) warper.step(constant_flow(64, 64, 1.3, 0), constant_flow(64, 64, -1.3, 0));
  const at::Tensor grid_after = warper.grid_noise();
  CHECK(correlation(grid_after.narrow(2, 17, 47), grid_before.narrow(2, 0, 47)) > 0.9);
  // Columns that entered through the left edge are fresh noise, unrelated to before.
  CHECK(std::abs(correlation(grid_after.narrow(2, 0, 16), grid_before.narrow(2, 0, 16))) < 0.1);
}

TEST_CASE("warped noise stays N(0, 1) and spatially white under expansion and contraction") {
  NoiseWarpOptions o;
  o.channels = 8;
  o.factor = 8;
  for (const double scale : {1.04, 1 / 1.04}) {
    CAPTURE(scale);
    NoiseWarper warper(24, 24, o);
    const auto [fwd, bwd] = zoom_flows(192, 192, scale);
    for (int t = 0; t < 20; ++t) warper.step(fwd, bwd);
    check_standard_normal(warper.latent());
    // Without the backward flow (pulls by q - F(q)) it still is.
    NoiseWarper forward_only(24, 24, o);
    for (int t = 0; t < 20; ++t) forward_only.step(fwd);
    check_standard_normal(forward_only.latent());
  }
}

TEST_CASE("noise warping is deterministic and independent of the thread count") {
  NoiseWarpOptions o;
  o.channels = 3;
  o.seed = 7;
  const auto [fwd, bwd] = zoom_flows(64, 96, 1.1);
  const auto run = [&](int threads) {
    at::set_num_threads(threads);
    NoiseWarper warper(8, 12, o);
    for (int t = 0; t < 5; ++t) warper.step(fwd, bwd);
    return warper.latent();
  };
  const int saved = at::get_num_threads();
  const at::Tensor one = run(1), two = run(2);
  at::set_num_threads(saved);
  CHECK(at::equal(one, two));
  o.seed = 8;
  NoiseWarper other(8, 12, o);
  CHECK(std::abs(correlation(other.latent(), NoiseWarper(8, 12, NoiseWarpOptions{3, 8, 7}).latent())) < 0.2);
}

TEST_CASE("degradation mixes in fresh noise and keeps unit variance") {
  NoiseWarpOptions o;
  o.channels = 16;
  const at::Tensor clean = NoiseWarper(32, 32, o).latent();
  o.degradation = 0.5;
  const at::Tensor half = NoiseWarper(32, 32, o).latent();
  check_standard_normal(half);
  CHECK(correlation(half, clean) == doctest::Approx(std::sqrt(0.5)).epsilon(0.05));
  o.degradation = 1.0;
  const at::Tensor fresh = NoiseWarper(32, 32, o).latent();
  check_standard_normal(fresh);
  CHECK(std::abs(correlation(fresh, clean)) < 0.05);
}

TEST_CASE("warp_noise runs a shot and reduces frames to latent frames") {
  NoiseWarpOptions o;
  o.channels = 4;
  o.factor = 4;
  // 9 frames at 32x48 rendered resolution, warped on a 16x24 latent grid (grid 64x96: flows are resized).
  const at::Tensor fwd = constant_flow(32, 48, 2, 1).unsqueeze(0).expand({9, 2, 32, 48}).contiguous();
  const at::Tensor bwd = -fwd;
  const at::Tensor all = drb::guide::warp_noise(fwd, bwd, o, 16, 24);
  CHECK(all.sizes() == at::IntArrayRef({1, 4, 9, 16, 24}));
  const at::Tensor picked = drb::guide::warp_noise(fwd, bwd, o, 16, 24, 4, drb::guide::TemporalReduction::pick);
  CHECK(picked.sizes() == at::IntArrayRef({1, 4, 3, 16, 24}));
  CHECK(at::equal(picked.select(2, 2), all.select(2, 8)));
  const at::Tensor blend = drb::guide::reduce_frames(all[0], 4, drb::guide::TemporalReduction::blend);
  CHECK(at::allclose(blend.select(1, 1), all[0].narrow(1, 1, 4).mean(1)));
  CHECK(at::equal(blend.select(1, 0), all[0].select(1, 0)));
  const at::Tensor normalized = drb::guide::reduce_frames(all[0], 4, drb::guide::TemporalReduction::blend_normalized);
  CHECK(normalized.select(1, 2).square().mean().item<double>() == doctest::Approx(1.0));
}

TEST_CASE("the per-pixel device passes reproduce the CPU warper bit for bit") {
  // The CUDA kernels run these passes; on the CPU they must give exactly what the optimized
  // warper gives, for partial channel groups, expansion, contraction, occlusion and degradation.
  for (const bool with_backward : {true, false}) {
    for (const double scale : {1.07, 1 / 1.07}) {
      CAPTURE(with_backward);
      CAPTURE(scale);
      NoiseWarpOptions o;
      o.channels = 5;
      o.factor = 4;
      o.seed = 11;
      o.degradation = 0.3;
      NoiseWarper fast(6, 7, o);
      drb::guide::detail::TensorWarper passes(6, 7, o, c10::kCPU);
      CHECK(at::equal(fast.latent(), passes.latent()));
      auto [fwd, bwd] = zoom_flows(24, 28, scale);
      fwd.select(0, 0).add_(1.3);  // and a drift to the right: pixels enter and leave the frame
      bwd.select(0, 0).sub_(1.3);
      for (int t = 0; t < 6; ++t) {
        fast.step(fwd, with_backward ? bwd : at::Tensor());
        passes.step(fwd, with_backward ? bwd : at::Tensor());
        CHECK(at::equal(fast.grid_noise(), passes.grid_noise()));
        CHECK(at::equal(fast.latent(), passes.latent()));
      }
    }
  }
  drb::test::expect_error([] { NoiseWarper(4, 4, NoiseWarpOptions{2, 2, 0, 0.0, 1.0, "tpu"}); },
                          drb::ErrorCode::invalid_argument, {"tpu"});
  if (!at::hasCUDA())
    drb::test::expect_error([] { NoiseWarper(4, 4, NoiseWarpOptions{2, 2, 0, 0.0, 1.0, "cuda"}); },
                            drb::ErrorCode::unsupported, {"cuda"});
}

TEST_CASE("noise warp errors name what is wrong") {
  using drb::ErrorCode;
  using drb::test::expect_error;
  NoiseWarper warper(4, 4, NoiseWarpOptions{2, 2, 0});
  expect_error([&] { warper.step(constant_flow(8, 9, 0, 0)); }, ErrorCode::invalid_argument, {"forward", "[2, 8, 8]"});
  at::Tensor nan_flow = constant_flow(8, 8, 0, 0);
  nan_flow[0][3][3] = NAN;
  expect_error([&] { warper.step(nan_flow); }, ErrorCode::invalid_argument, {"NaN"});
  expect_error([&] { warper.step(constant_flow(8, 8, 0, 0), nan_flow); }, ErrorCode::invalid_argument, {"backward", "NaN"});
  expect_error([&] { warper.step(constant_flow(8, 8, 0, 0).to(at::kInt)); }, ErrorCode::invalid_argument, {"floating"});
  expect_error([] { NoiseWarper(4, 4, NoiseWarpOptions{2, 0, 0}); }, ErrorCode::invalid_argument, {"factor"});
  expect_error([] { NoiseWarper(0, 4, NoiseWarpOptions{}); }, ErrorCode::invalid_argument, {"latent size"});
  expect_error([] { NoiseWarper(100000, 100000, NoiseWarpOptions{}); }, ErrorCode::invalid_argument, {"too large"});
  expect_error([] { NoiseWarper(4, 4, NoiseWarpOptions{2, 2, 0, 1.5}); }, ErrorCode::invalid_argument, {"degradation"});
  expect_error([] { drb::guide::temporal_reduction_from_name("median"); }, ErrorCode::invalid_argument, {"median", "blend"});
  const at::Tensor fwd = at::zeros({6, 2, 8, 8});
  expect_error([&] { drb::guide::warp_noise(fwd, {}, NoiseWarpOptions{2, 2, 0}, 0, 0, 4); },
               ErrorCode::invalid_argument, {"6 frames", "1 + k * 4"});
  expect_error([&] { drb::guide::warp_noise(fwd, at::zeros({6, 2, 8, 7}), NoiseWarpOptions{2, 2, 0}); },
               ErrorCode::invalid_argument, {"backward"});
}
