#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "checks.hpp"
#include "derrumbe/guide/energy.hpp"
#include "derrumbe/guide/guided.hpp"
#include "derrumbe/models/analytic.hpp"
#include "derrumbe/sample/sampler.hpp"
#include "derrumbe/sample/schedules.hpp"
#include "doctest/doctest.h"

namespace {

using drb::guide::EnergyGuidanceOptions;
using drb::guide::EnergyGuidedDenoiser;
using drb::guide::EnergyMode;
using drb::guide::EnergyTerm;
using drb::guide::FlowWarpEnergy;
using drb::guide::FunctionEnergy;
using drb::guide::MaskEnergy;

const auto f64 = at::TensorOptions().dtype(at::kDouble);
const auto f32 = at::TensorOptions().dtype(at::kFloat);

// A constant backward flow (u, v) pixels for frames 1 ... F - 1 (entry 0 unused).
at::Tensor constant_flow(int64_t f, int64_t h, int64_t w, double u, double v) {
  at::Tensor flow = at::zeros({f, 2, h, w}, f32);
  flow.slice(0, 1).select(1, 0).fill_(u);
  flow.slice(0, 1).select(1, 1).fill_(v);
  return flow;
}

// [1, C, F, H, W] whose frame t + 1 is frame t moved by (dx, dy) pixels (wrapping around).
at::Tensor translating_video(int64_t c, int64_t f, int64_t h, int64_t w, int64_t dx, int64_t dy) {
  at::Tensor video = at::empty({1, c, f, h, w}, f64);
  at::Tensor frame = drb::randn({1, c, h, w}, drb::NoiseAddress{11}, f64);
  for (int64_t t = 0; t < f; ++t) {
    video.select(2, t).copy_(frame);
    frame = at::roll(frame, {dy, dx}, {2, 3});
  }
  return video;
}

// Valid 1 inside, 0 within `border` pixels of the edge (where the wrap-around breaks the motion).
at::Tensor interior(int64_t f, int64_t h, int64_t w, int64_t border) {
  at::Tensor valid = at::zeros({f, h, w}, f32);
  valid.slice(1, border, h - border).slice(2, border, w - border).fill_(1);
  return valid;
}

std::shared_ptr<drb::GaussianMixtureDenoiser> mixture() {
  return std::make_shared<drb::GaussianMixtureDenoiser>(drb::GaussianMixtureDenoiser::random({2, 3, 6, 6}, 3, 5));
}

// A mask that freezes the left half of every frame (1 = may move on the right half).
at::Tensor right_half_mask() {
  at::Tensor mask = at::zeros({3, 6, 6}, f32);
  mask.slice(2, 3).fill_(1);
  return mask;
}

at::Tensor run(drb::Denoiser& model, const std::string& sampler) {
  const at::Tensor sigmas = drb::schedules::karras(12, 0.02, 20.0);
  const at::Tensor x = drb::randn({1, 2, 3, 6, 6}, drb::NoiseAddress{7}, f64) * sigmas[0].item<double>();
  return drb::sample(model, x, sigmas, sampler);
}

struct NoGradModel : drb::Denoiser {
  at::Tensor denoise(const at::Tensor& x, double sigma) override { return x.detach() / (1 + sigma); }
};

}  // namespace

TEST_CASE("energy: FlowWarpEnergy vanishes on a video moving with the flow and has the right gradient") {
  const int64_t f = 4, h = 12, w = 12;
  // Content moves by (+1, -2) pixels a frame, so frame t + 1 at p is frame t at p - (1, -2).
  const at::Tensor video = translating_video(2, f, h, w, 1, -2);
  FlowWarpEnergy energy(constant_flow(f, h, w, -1, 2), interior(f, h, w, 3));
  CHECK(energy.energy(video).item<double>() < 1e-12);
  CHECK(energy.energy(video.to(at::kFloat)).item<double>() < 1e-6);
  const at::Tensor noise = drb::randn(video.sizes(), drb::NoiseAddress{12}, f64);
  CHECK(energy.energy(noise).item<double>() > 0.1);
  // The wrong flow (opposite direction) does not match.
  FlowWarpEnergy wrong(constant_flow(f, h, w, 1, -2), interior(f, h, w, 3));
  CHECK(wrong.energy(video).item<double>() > 0.1);

  // Gradient against central differences, with a fractional flow (bilinear weights in play).
  FlowWarpEnergy frac(constant_flow(f, h, w, 0.3, -0.7));
  at::Tensor x = noise.clone().requires_grad_(true);
  frac.energy(x).backward();
  const double eps = 1e-6;
  for (const auto& idx : {std::vector<int64_t>{0, 1, 1, 5, 6}, std::vector<int64_t>{0, 0, 3, 11, 0}}) {
    at::Tensor plus = noise.clone(), minus = noise.clone();
    plus[idx[0]][idx[1]][idx[2]][idx[3]][idx[4]].add_(eps);
    minus[idx[0]][idx[1]][idx[2]][idx[3]][idx[4]].add_(-eps);
    const double fd = (frac.energy(plus).item<double>() - frac.energy(minus).item<double>()) / (2 * eps);
    const double g = x.grad()[idx[0]][idx[1]][idx[2]][idx[3]][idx[4]].item<double>();
    CHECK(std::abs(g) > 1e-4);
    CHECK(g == doctest::Approx(fd).epsilon(1e-5));
  }
}

TEST_CASE("energy: MaskEnergy is zero for motion inside the mask only") {
  const at::Tensor mask = right_half_mask();
  MaskEnergy energy(mask);
  at::Tensor video = drb::randn({1, 2, 1, 6, 6}, drb::NoiseAddress{3}, f64).repeat({1, 1, 3, 1, 1});
  CHECK(energy.energy(video).item<double>() == 0.0);
  // Changes on the right half (inside the mask) cost nothing ...
  video.slice(4, 3).add_(drb::randn({1, 2, 3, 6, 3}, drb::NoiseAddress{4}, f64));
  CHECK(energy.energy(video).item<double>() == 0.0);
  // ... changes on the left half do.
  video.slice(4, 0, 1).add_(drb::randn({1, 2, 3, 6, 1}, drb::NoiseAddress{5}, f64));
  CHECK(energy.energy(video).item<double>() > 0.01);
}

TEST_CASE("energy: latent_flow resizes and composes flows over each latent frame's group") {
  // u = 2, v = -1 pixels a frame at 64x64; 8x smaller and 4 frames a latent frame: (1, -0.5).
  const at::Tensor flow = constant_flow(9, 64, 64, 2, -1);
  const auto lf = drb::guide::latent_flow(flow, {}, 8, 8, 4);
  REQUIRE(lf.backward.sizes() == at::IntArrayRef({3, 2, 8, 8}));
  REQUIRE(lf.valid.sizes() == at::IntArrayRef({3, 8, 8}));
  CHECK((lf.backward.scalar_type() == at::kFloat));
  CHECK(lf.backward[0].abs().max().item<double>() == 0.0);
  CHECK(lf.valid[0].min().item<double>() == 1.0);
  const at::Tensor inner = lf.backward.slice(0, 1).slice(2, 2, 6).slice(3, 2, 6);
  CHECK((inner.select(1, 0) - 1.0).abs().max().item<double>() < 1e-5);
  CHECK((inner.select(1, 1) + 0.5).abs().max().item<double>() < 1e-5);
  CHECK(lf.valid[1][4][3].item<double>() == 1.0);
  CHECK(lf.valid[1][4][7].item<double>() == 0.0);  // x = 7 + 1 leaves the 8-wide frame

  // temporal_factor 1 is the resize alone; a given validity is carried along the chain.
  const auto single = drb::guide::latent_flow(flow, {}, 8, 8, 1);
  CHECK(single.backward.size(0) == 9);
  CHECK((single.backward[5][0][4] - 0.25).abs().max().item<double>() < 1e-6);
  at::Tensor valid = at::ones({9, 64, 64}, f32);
  valid[6].fill_(0.0);  // frame 6 (in latent frame 2's group 5 ... 8) saw nothing of frame 5
  const auto masked = drb::guide::latent_flow(flow, valid, 8, 8, 4);
  CHECK(masked.valid[1][4][3].item<double>() == 1.0);
  CHECK(masked.valid[2].max().item<double>() == 0.0);

  drb::test::expect_error([&] { drb::guide::latent_flow(constant_flow(8, 64, 64, 2, -1), {}, 8, 8, 4); },
                          drb::ErrorCode::invalid_argument, {"8 frames", "temporal_factor 4"});
}

TEST_CASE("energy: guidance lowers the energy in both modes and both samplers") {
  auto model = mixture();
  auto mask = std::make_shared<MaskEnergy>(right_half_mask());
  for (const std::string sampler : {"euler", "dpmpp_2m"}) {
    const at::Tensor plain = run(*model, sampler);
    for (const auto& [mode, strength] : {std::pair{EnergyMode::x0, 0.3}, std::pair{EnergyMode::model, 0.3}}) {
      CAPTURE(sampler);
      CAPTURE(static_cast<int>(mode));
      EnergyGuidanceOptions opt;
      opt.mode = mode;
      opt.strength = strength;
      EnergyGuidedDenoiser guided(model, {{mask, 1.0}}, opt);
      const at::Tensor out = run(guided, sampler);
      const double e_plain = guided.total_energy(plain), e_guided = guided.total_energy(out);
      MESSAGE(sampler << " mode " << static_cast<int>(mode) << ": " << e_plain << " -> " << e_guided);
      CHECK(e_guided < 0.5 * e_plain);

      // Strength 0, or a sigma interval that excludes every step, is the unguided run bit for bit.
      opt.strength = 0;
      EnergyGuidedDenoiser off(model, {{mask, 1.0}}, opt);
      CHECK(at::equal(run(off, sampler), plain));
      opt.strength = strength;
      opt.sigma_start = 1e-3;
      opt.sigma_end = 1e-4;
      EnergyGuidedDenoiser outside(model, {{mask, 1.0}}, opt);
      CHECK(at::equal(run(outside, sampler), plain));
    }
  }
}

TEST_CASE("energy: a user FunctionEnergy and a flow energy move the sample") {
  auto model = mixture();
  const at::Tensor target = at::full({1, 2, 3, 6, 6}, 0.5, f64);
  auto pull = std::make_shared<FunctionEnergy>([&](const at::Tensor& x0) { return (x0 - target).pow(2).mean(); });
  const at::Tensor plain = run(*model, "euler");
  EnergyGuidanceOptions opt;
  opt.strength = 0.2;
  opt.steps = 3;
  EnergyGuidedDenoiser guided(model, {{pull, 1.0}}, opt);
  const at::Tensor out = run(guided, "euler");
  const double d_plain = (plain - target).pow(2).mean().item<double>();
  const double d_guided = (out - target).pow(2).mean().item<double>();
  MESSAGE("distance to target " << d_plain << " -> " << d_guided);
  CHECK(d_guided < 0.5 * d_plain);

  // Flow-warp consistency with a one-pixel shift, combined with a schedule of strengths.
  auto warp = std::make_shared<FlowWarpEnergy>(constant_flow(3, 6, 6, -1, 0));
  EnergyGuidanceOptions sched;
  sched.strength_schedule = std::vector<double>(12, 0.2);
  EnergyGuidedDenoiser flow_guided(model, {{warp, 1.0}}, sched);
  CHECK(flow_guided.total_energy(run(flow_guided, "dpmpp_2m")) < flow_guided.total_energy(plain));
}

TEST_CASE("guided: composition becomes a hook, energies wrap the model, nothing given changes nothing") {
  auto model = mixture();
  drb::SampleOptions options;
  CHECK(drb::guide::guided(model, {}, options) == model);
  CHECK(options.hooks.empty());

  const at::Tensor target = at::full({1, 2, 3, 6, 6}, 0.5, f64);
  drb::guide::Guided g;
  g.composite = std::make_shared<drb::guide::Composite>(target, at::zeros({1, 1, 3, 6, 6}, f64));
  g.energies = {{std::make_shared<FunctionEnergy>([&](const at::Tensor& x0) { return (x0 - target).pow(2).mean(); }), 1.0}};
  const auto den = drb::guide::guided(model, g, options);
  CHECK(dynamic_cast<EnergyGuidedDenoiser*>(den.get()) != nullptr);
  REQUIRE(options.hooks.size() == 1);
  CHECK(options.hooks[0] == g.composite);
  // The mask keeps the plate everywhere: the run ends on the plate.
  const at::Tensor out = drb::sample(*den, at::randn({1, 2, 3, 6, 6}, f64) * 10, drb::schedules::karras(8, 0.02, 10),
                                     "euler", options);
  CHECK(at::allclose(out, target));
}

TEST_CASE("energy: bad input is a clear error") {
  using drb::ErrorCode;
  using drb::test::expect_error;
  at::Tensor nan_flow = constant_flow(3, 6, 6, 1, 0);
  nan_flow[1][0][2][2].fill_(std::numeric_limits<double>::quiet_NaN());
  expect_error([&] { FlowWarpEnergy e(nan_flow); }, ErrorCode::invalid_argument, {"NaN", "[3, 2, 6, 6]"});
  expect_error([&] { FlowWarpEnergy e(at::zeros({3, 3, 6, 6})); }, ErrorCode::invalid_argument, {"[3, 3, 6, 6]"});
  expect_error([&] { FlowWarpEnergy e(at::zeros({1, 2, 6, 6})); }, ErrorCode::invalid_argument, {"[1, 2, 6, 6]"});
  expect_error([&] { FlowWarpEnergy e(constant_flow(3, 6, 6, 1, 0), at::full({3, 6, 6}, 1.5)); },
               ErrorCode::invalid_argument, {"valid", "[0, 1]"});
  expect_error([&] { FlowWarpEnergy e(constant_flow(3, 6, 6, 1, 0), at::ones({3, 6, 5})); },
               ErrorCode::invalid_argument, {"valid", "[3, 6, 5]"});
  FlowWarpEnergy warp(constant_flow(3, 6, 6, 1, 0));
  expect_error([&] { warp.energy(at::zeros({1, 2, 4, 6, 6})); }, ErrorCode::invalid_argument, {"[1, 2, 4, 6, 6]"});
  expect_error([&] { MaskEnergy e(at::full({3, 6, 6}, -0.1)); }, ErrorCode::invalid_argument, {"mask", "[0, 1]"});
  MaskEnergy mask(right_half_mask());
  expect_error([&] { mask.energy(at::zeros({2, 3, 6, 6})); }, ErrorCode::invalid_argument, {"[2, 3, 6, 6]"});
  expect_error([&] { drb::guide::energy_mode_from_name("dps"); }, ErrorCode::invalid_argument,
               {"'dps'", "x0", "model"});
  CHECK((drb::guide::energy_mode_from_name("model") == EnergyMode::model));

  auto energy = std::make_shared<MaskEnergy>(right_half_mask());
  expect_error([&] { EnergyGuidedDenoiser d(nullptr, {{energy, 1.0}}); }, ErrorCode::invalid_argument,
               {"model is null"});
  expect_error([&] { EnergyGuidedDenoiser d(mixture(), {}); }, ErrorCode::invalid_argument, {"at least one"});
  expect_error([&] { EnergyGuidedDenoiser d(mixture(), {{energy, NAN}}); }, ErrorCode::invalid_argument,
               {"weight", "nan"});
  EnergyGuidanceOptions many;
  many.steps = 101;
  expect_error([&] { EnergyGuidedDenoiser d(mixture(), {{energy, 1.0}}, many); }, ErrorCode::invalid_argument,
               {"steps", "101"});
  EnergyGuidanceOptions short_schedule;
  short_schedule.strength_schedule = {1.0, 1.0};
  EnergyGuidedDenoiser scheduled(mixture(), {{energy, 1.0}}, short_schedule);
  expect_error([&] { run(scheduled, "euler"); }, ErrorCode::invalid_argument, {"2 entries", "12 steps"});

  // A user energy that is not a scalar, or not finite, and a model that autograd cannot see through.
  const at::Tensor x = at::zeros({1, 2, 3, 6, 6}, f64);
  FunctionEnergy vector_valued([](const at::Tensor& x0) { return x0.sum(1); });
  expect_error([&] { vector_valued.energy(x); }, ErrorCode::model, {"scalar", "[1, 3, 6, 6]"});
  auto infinite = std::make_shared<FunctionEnergy>([](const at::Tensor& x0) { return x0.sum() / 0.0; });
  EnergyGuidedDenoiser inf_guided(mixture(), {{infinite, 1.0}});
  expect_error([&] { inf_guided.denoise(x + 1, 1.0); }, ErrorCode::model, {"energy is", "sigma 1"});
  EnergyGuidanceOptions model_mode;
  model_mode.mode = EnergyMode::model;
  EnergyGuidedDenoiser opaque(std::make_shared<NoGradModel>(), {{energy, 1.0}}, model_mode);
  expect_error([&] { opaque.denoise(x, 1.0); }, ErrorCode::model, {"differentiable", "'x0'"});
}
