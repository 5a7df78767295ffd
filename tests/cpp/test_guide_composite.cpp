// SDEdit start, masked composition (with RePaint resampling through the sampler's hooks) and
// latent mask preparation.
#include <ATen/ATen.h>

#include <cmath>
#include <memory>

#include "checks.hpp"
#include "derrumbe/core/rng.hpp"
#include "derrumbe/guide/composite.hpp"
#include "derrumbe/guide/sdedit.hpp"
#include "derrumbe/models/analytic.hpp"
#include "derrumbe/sample/sampler.hpp"
#include "derrumbe/sample/schedules.hpp"
#include "doctest/doctest.h"

namespace {

using drb::ErrorCode;
using drb::test::expect_error;
using drb::guide::Composite;
using drb::guide::CompositeOptions;

const auto f64 = at::TensorOptions().dtype(at::kDouble);
const std::vector<int64_t> kShape = {1, 2, 3, 4, 6};  // [B, C, F, H, W]

at::Tensor noise(uint64_t seed) { return drb::randn(kShape, drb::NoiseAddress{seed}, f64); }
// A plate far from the mixture's data, so whatever the model generates differs from it.
at::Tensor plate() { return 3.0 + 2.0 * noise(5); }
// 0 on the left half of the width (plate kept), 1 on the right half (generated), broadcast.
at::Tensor half_mask() {
  at::Tensor m = at::zeros({1, 1, 1, 1, 6}, f64);
  m.slice(4, 3).fill_(1.0);
  return m;
}
drb::GaussianMixtureDenoiser mixture() { return drb::GaussianMixtureDenoiser::random({2, 3, 4, 6}, 3, 7); }
at::Tensor sigmas10() { return drb::schedules::karras(10, 0.03, 10.0); }
at::Tensor left(const at::Tensor& t) { return t.slice(4, 0, 3); }
at::Tensor right(const at::Tensor& t) { return t.slice(4, 3); }
double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

struct CountingDenoiser : drb::Denoiser {
  drb::Denoiser& inner;
  int calls = 0;
  explicit CountingDenoiser(drb::Denoiser& d) : inner(d) {}
  at::Tensor denoise(const at::Tensor& x, double sigma) override {
    ++calls;
    return inner.denoise(x, sigma);
  }
};

struct IdentityHook : drb::StepHook {
  at::Tensor after_step(const drb::StepInfo& info) override { return info.x; }
};
struct GreedyHook : IdentityHook {
  int64_t resamples(int64_t, int64_t) override { return 8; }
};

// Samples from the plate noised to sigma_max (the full-strength SDEdit start) with a composite.
at::Tensor composite_run(drb::Denoiser& model, const std::string& sampler, CompositeOptions opt) {
  const at::Tensor e = noise(11), sigmas = sigmas10();
  drb::SampleOptions so;
  so.hooks.push_back(std::make_shared<Composite>(plate(), half_mask(), e, opt));
  return drb::sample(model, drb::guide::sdedit_start(plate(), e, sigmas, 1.0).x, sigmas, sampler, so);
}

}  // namespace

TEST_CASE("SDEdit start: strength picks the tail of the schedule and the noise level") {
  const at::Tensor enc = plate(), e = noise(11), sigmas = sigmas10();
  SUBCASE("strength 0: the encoded input, bit for bit, and nothing to run") {
    const auto s = drb::guide::sdedit_start(enc, e, sigmas, 0.0);
    CHECK(at::equal(s.x, enc));
    CHECK(s.x.data_ptr() != enc.data_ptr());  // a copy: the caller's tensor is never aliased
    REQUIRE(s.sigmas.numel() == 1);
    CHECK(s.sigmas.item<double>() == 0.0);
  }
  SUBCASE("strength 1: the whole schedule from encoded + sigma_max * noise") {
    const auto s = drb::guide::sdedit_start(enc, e, sigmas, 1.0);
    CHECK(at::equal(s.sigmas, sigmas));
    CHECK(at::equal(s.x, enc + sigmas[0].item<double>() * e));
  }
  SUBCASE("strength 0.5 of 10 steps: the last 5 steps and the final 0") {
    const auto s = drb::guide::sdedit_start(enc, e, sigmas, 0.5);
    CHECK(at::equal(s.sigmas, sigmas.slice(0, 5)));
    CHECK(at::equal(s.x, enc + sigmas[5].item<double>() * e));
  }
  SUBCASE("the encoder overload encodes once and forwards") {
    int calls = 0;
    const drb::guide::Encoder encode = [&](const at::Tensor& frames) {
      ++calls;
      return frames * 0.5;
    };
    const auto s = drb::guide::sdedit_start(encode, enc, e, sigmas, 0.5);
    CHECK(calls == 1);
    CHECK(at::equal(s.x, drb::guide::sdedit_start(enc * 0.5, e, sigmas, 0.5).x));
    expect_error([&] { drb::guide::sdedit_start([](const at::Tensor&) { return at::Tensor(); }, enc, e, sigmas, 0.5); },
                 ErrorCode::model, {"encoder", "undefined"});
    expect_error([&] { drb::guide::sdedit_start([](const at::Tensor& f) { return f.to(at::kLong); }, enc, e, sigmas, 0.5); },
                 ErrorCode::model, {"encoder", "Long"});
  }
}

TEST_CASE("SDEdit strength 0 through drb::sample returns the input unchanged") {
  auto model = mixture();
  const auto s = drb::guide::sdedit_start(plate(), noise(11), sigmas10(), 0.0);
  at::Tensor out;
  CHECK_NOTHROW(out = drb::sample(model, s.x, s.sigmas, "euler"));
  CHECK((out.defined() && at::equal(out, s.x)));
}

TEST_CASE("Composite after_step: the known region at the new noise level, the generated one untouched") {
  const at::Tensor p = plate(), e = noise(11), x = noise(12) * 4.0;
  Composite c(p, half_mask(), e);
  const at::Tensor mid = c.after_step(drb::StepInfo{2, 10, 1.0, 0.5, x, x});
  CHECK(at::equal(left(mid), left(p + 0.5 * e)));
  CHECK(at::equal(right(mid), right(x)));
  const at::Tensor last = c.after_step(drb::StepInfo{9, 10, 0.03, 0.0, x, x});
  CHECK(at::equal(left(last), left(p)));
  // Without noise, the composite draws its own from the seed: reproducible, seed-dependent.
  const auto seeded = [&](uint64_t seed) {
    return Composite(p, half_mask(), {}, {}, seed).after_step(drb::StepInfo{2, 10, 1.0, 0.5, x, x});
  };
  CHECK(at::equal(seeded(3), seeded(3)));
  CHECK(max_abs(left(seeded(3) - seeded(4))) > 0.1);
  CHECK(at::equal(right(seeded(3)), right(x)));
}

TEST_CASE("Composite through the sampler keeps the plate exactly outside the mask") {
  auto model = mixture();
  for (const std::string sampler : {"euler", "dpmpp_2m"}) {
    CAPTURE(sampler);
    const at::Tensor p = plate();
    // Composited to the end.
    const at::Tensor full = composite_run(model, sampler, {});
    CHECK(at::equal(left(full), left(p)));
    CHECK(max_abs(right(full - p)) > 0.5);
    // A free tail of 3 steps with the final paste.
    const at::Tensor pasted = composite_run(model, sampler, {0, 3, true});
    CHECK(at::equal(left(pasted), left(p)));
    CHECK(max_abs(right(pasted - p)) > 0.5);
    // Without the final paste the free tail lets the known region move.
    CHECK(max_abs(left(composite_run(model, sampler, {0, 3, false}) - p)) > 1e-3);
  }
}

TEST_CASE("Composite RePaint resampling through the sampler's hooks") {
  auto gmm = mixture();
  CountingDenoiser model(gmm);
  const at::Tensor plain = composite_run(model, "euler", {});
  CHECK(model.calls == 10);  // euler: one evaluation a step
  model.calls = 0;
  const at::Tensor resampled = composite_run(model, "euler", {2, 0, true});
  CHECK(model.calls == 9 * 3 + 1);  // steps 0..8 run three times; the last step never resamples
  model.calls = 0;
  composite_run(model, "euler", {2, 3, true});
  CHECK(model.calls == 7 * 3 + 3);  // the free tail is not resampled
  CHECK(at::equal(resampled, composite_run(gmm, "euler", {2, 0, true})));  // the re-noising is seeded
  CHECK(max_abs(right(resampled - plain)) > 1e-3);
  CHECK(at::equal(left(resampled), left(plate())));

  const at::Tensor e = noise(11), sigmas = sigmas10(), x = sigmas[0].item<double>() * e;
  drb::SampleOptions greedy;
  greedy.hooks.push_back(std::make_shared<GreedyHook>());
  expect_error([&] { drb::sample(gmm, x, sigmas, "euler", greedy); }, ErrorCode::invalid_argument, {"8 resamples"});
}

TEST_CASE("Composite prerequisite: an identity StepHook leaves sampling bit for bit unchanged") {
  auto model = mixture();
  const at::Tensor sigmas = sigmas10(), x = sigmas[0].item<double>() * noise(11);
  for (const std::string sampler : {"euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde"}) {
    CAPTURE(sampler);
    drb::SampleOptions hooked;
    hooked.noise_address.seed = 9;
    const at::Tensor plain = drb::sample(model, x, sigmas, sampler, hooked);
    hooked.hooks.push_back(std::make_shared<IdentityHook>());
    CHECK(at::equal(drb::sample(model, x, sigmas, sampler, hooked), plain));
  }
}

TEST_CASE("prepare_mask: dilation, feathering, area resize and the causal frame grouping") {
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  SUBCASE("a single pixel dilated by 2 covers a 5x5 square") {
    at::Tensor m = at::zeros({1, 11, 11}, f32);
    m[0][5][5] = 1.0f;
    const at::Tensor out = drb::guide::prepare_mask(m, 11, 11, 1, 2, 0);
    CHECK((out.sizes() == at::IntArrayRef({1, 1, 1, 11, 11})));
    CHECK((out.scalar_type() == at::kFloat));
    CHECK(out.sum().item<double>() == 25.0);
    CHECK(out.slice(3, 3, 8).slice(4, 3, 8).min().item<float>() == 1.0f);
  }
  SUBCASE("feathering softens the edge but not the image border") {
    at::Tensor m = at::zeros({1, 16, 16}, f32);
    m.slice(2, 8).fill_(1.0f);
    const at::Tensor out = drb::guide::prepare_mask(m, 16, 16, 1, 0, 2)[0][0][0];
    for (int64_t col : {6, 7, 8, 9}) {
      const float v = out[5][col].item<float>();
      CHECK_MESSAGE((v > 0.0f && v < 1.0f), "column " << col << ": " << v);
    }
    CHECK(out.select(1, 0).max().item<float>() == 0.0f);
    CHECK(out.select(1, 15).min().item<float>() == 1.0f);
  }
  SUBCASE("area average when shrinking, bilinear when enlarging") {
    at::Tensor m = at::zeros({1, 8, 8}, f32);
    m[0][0][0] = 1.0f;
    const at::Tensor small = drb::guide::prepare_mask(m, 2, 2);
    CHECK(small[0][0][0][0][0].item<float>() == doctest::Approx(1.0 / 16));
    CHECK(small.sum().item<float>() == doctest::Approx(1.0 / 16));
    const at::Tensor big = drb::guide::prepare_mask(m, 16, 4);
    CHECK((big.sizes() == at::IntArrayRef({1, 1, 1, 16, 4})));
    CHECK(big.min().item<float>() >= 0.0f);
    CHECK(big.max().item<float>() <= 1.0f);
    CHECK(big.max().item<float>() > 0.0f);
  }
  SUBCASE("latent frame k >= 1 takes the maximum over its group of 4 video frames") {
    const std::vector<float> v = {0.1f, 0.5f, 0.2f, 0.3f, 0.0f, 0.1f, 0.9f, 0.4f, 0.2f};
    const at::Tensor m = at::tensor(v, f32).view({9, 1, 1}).expand({9, 4, 4}).contiguous();
    const at::Tensor out = drb::guide::prepare_mask(m, 4, 4, 4);
    REQUIRE((out.sizes() == at::IntArrayRef({1, 1, 3, 4, 4})));
    CHECK(out[0][0][0].max().item<float>() == 0.1f);
    CHECK(out[0][0][1].min().item<float>() == 0.5f);
    CHECK(out[0][0][2].min().item<float>() == 0.9f);
  }
}

TEST_CASE("Composite, SDEdit and prepare_mask reject bad input") {
  const at::Tensor p = plate(), e = noise(11), m = half_mask(), sigmas = sigmas10();
  expect_error([&] { (void)Composite(p, m * 2.0, e); }, ErrorCode::invalid_argument, {"mask values", "[0, 1]"});
  expect_error([&] { (void)Composite(p, m * NAN, e); }, ErrorCode::invalid_argument, {"mask values"});
  at::Tensor nan_plate = p.clone();
  nan_plate[0][0][0][0][0] = NAN;
  expect_error([&] { (void)Composite(nan_plate, m, e); }, ErrorCode::invalid_argument, {"plate", "NaN"});
  expect_error([&] { (void)Composite(p, m, e.slice(4, 1)); }, ErrorCode::invalid_argument, {"noise shape", "[1, 2, 3, 4, 5]"});
  expect_error([&] { (void)Composite(p, at::zeros({1, 1, 1, 1, 5}, f64), e); }, ErrorCode::invalid_argument,
               {"does not broadcast", "[1, 1, 1, 1, 5]"});
  expect_error([&] { (void)Composite(p, at::zeros({4, 6}, f64), e); }, ErrorCode::invalid_argument, {"5-D"});
  expect_error([&] { (void)Composite(p.flatten(0, 1), m, e); }, ErrorCode::invalid_argument, {"plate", "5-D"});
  expect_error([&] { (void)Composite(p, m, e, {8, 0, true}); }, ErrorCode::invalid_argument, {"resample", "8"});
  expect_error([&] { (void)Composite(p, m, e, {0, -1, true}); }, ErrorCode::invalid_argument, {"free_tail_steps", "-1"});
  expect_error(
      [&] {
        const at::Tensor x = at::zeros({1, 2, 3, 4, 5}, f64);
        Composite(p, m, e).after_step(drb::StepInfo{0, 10, 1.0, 0.5, x, x});
      },
      ErrorCode::invalid_argument, {"x shape", "[1, 2, 3, 4, 5]"});

  expect_error([&] { drb::guide::prepare_mask(at::zeros({8, 4, 4}), 2, 2, 4); }, ErrorCode::invalid_argument,
               {"8 frames", "temporal factor 4"});
  expect_error([&] { drb::guide::prepare_mask(at::full({1, 4, 4}, 1.5), 2, 2); }, ErrorCode::invalid_argument,
               {"mask values"});
  expect_error([&] { drb::guide::prepare_mask(at::zeros({4, 4}), 2, 2); }, ErrorCode::invalid_argument, {"3-D"});
  expect_error([&] { drb::guide::prepare_mask(at::zeros({1, 4, 4}), 0, 2); }, ErrorCode::invalid_argument,
               {"latent size"});
  expect_error([&] { drb::guide::prepare_mask(at::zeros({1, 4, 4}), 2, 2, 1, 1000); }, ErrorCode::invalid_argument,
               {"dilate", "1000"});

  expect_error([&] { drb::guide::sdedit_start(p, e, sigmas, 1.5); }, ErrorCode::invalid_argument, {"strength", "1.5"});
  expect_error([&] { drb::guide::sdedit_start(p, e, sigmas, NAN); }, ErrorCode::invalid_argument, {"strength"});
  expect_error([&] { drb::guide::sdedit_start(p, e.slice(4, 1), sigmas, 0.5); }, ErrorCode::invalid_argument,
               {"noise shape"});
  expect_error([&] { drb::guide::sdedit_start(nan_plate, e, sigmas, 0.5); }, ErrorCode::invalid_argument,
               {"encoded", "NaN"});
  expect_error([&] { drb::guide::sdedit_start(p, e, sigmas.flip(0), 0.5); }, ErrorCode::invalid_argument,
               {"decreasing"});
}
