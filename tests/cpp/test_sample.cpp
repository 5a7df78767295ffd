#include <ATen/ATen.h>
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <set>
#include <stdexcept>

#include "derrumbe/derrumbe.h"
#include "derrumbe/derrumbe.hpp"

namespace {

const auto f64 = at::TensorOptions().dtype(at::kDouble);

// Data N(mu, s^2) per element: the probability-flow ODE has the closed form
// x(sigma) = mu + (x_T - mu) * sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_T^2).
drb::GaussianMixtureDenoiser single_gaussian(double mu, double s, int64_t dim) {
  return drb::GaussianMixtureDenoiser(at::full({1, dim}, mu, f64), at::full({1}, s, f64), at::ones({1}, f64));
}

bool is_stochastic(const std::string& name) {
  return name == "euler_ancestral" || name == "dpm_2_ancestral" || name == "dpmpp_2s_ancestral" ||
         name == "dpmpp_sde" || name.rfind("dpmpp_2m_sde", 0) == 0 || name == "dpmpp_3m_sde" || name == "lcm";
}

struct CountingDenoiser : drb::Denoiser {
  drb::Denoiser& inner;
  int calls = 0;
  explicit CountingDenoiser(drb::Denoiser& d) : inner(d) {}
  at::Tensor denoise(const at::Tensor& x, double sigma) override {
    ++calls;
    return inner.denoise(x, sigma);
  }
};

}  // namespace

TEST_CASE("every deterministic sampler solves the probability-flow ODE of a Gaussian") {
  auto model = single_gaussian(0.7, 0.3, 64);
  const at::Tensor sigmas = drb::schedules::karras(60, 0.002, 80.0);
  const at::Tensor xT = drb::randn({2, 64}, drb::NoiseAddress{1, 0}, f64) * 80.0;
  const at::Tensor exact = 0.7 + (xT - 0.7) * (0.3 / std::sqrt(0.09 + 80.0 * 80.0));
  for (const auto& name : drb::sampler_names()) {
    if (is_stochastic(name)) continue;
    CAPTURE(name);
    const at::Tensor x = drb::sample(model, xT, sigmas, name);
    // The wrong answer "x = mu" is 0.2 away; first-order solvers are within 0.05, the rest 0.005.
    const bool first_order = name == "euler" || name == "ddim";
    CHECK((x - exact).abs().max().item<double>() < (first_order ? 5e-2 : 5e-3));
  }
}

TEST_CASE("stochastic samplers reach the data distribution") {
  auto model = single_gaussian(-0.4, 0.5, 1);
  const at::Tensor sigmas = drb::schedules::karras(100, 0.01, 20.0);
  const at::Tensor xT = drb::randn({20000, 1}, drb::NoiseAddress{3, 0}, f64) * 20.0;
  for (const auto& name : drb::sampler_names()) {
    if (!is_stochastic(name)) continue;
    CAPTURE(name);
    drb::SampleOptions opt;
    opt.noise_address.seed = 11;
    const at::Tensor x = drb::sample(model, xT, sigmas, name, opt);
    CHECK(std::abs(x.mean().item<double>() + 0.4) < 0.03);
    // lcm returns the posterior mean at the last sigma (exact for a consistency model, not for
    // the posterior-mean denoiser used here), so only its mean is checked.
    if (name != "lcm") CHECK(std::abs(x.std().item<double>() - 0.5) < 0.03);
  }
}

TEST_CASE("cancel, save, load and resume give the uninterrupted result") {
  auto model = drb::GaussianMixtureDenoiser::random({3, 4}, 3, 5);
  const at::Tensor sigmas = drb::schedules::karras(12, 0.01, 10.0);
  const at::Tensor xT = drb::randn({2, 3, 4}, drb::NoiseAddress{9, 0}, f64) * 10.0;
  const std::string path = "test_sample_state.bin";
  for (const auto& name : drb::sampler_names()) {
    CAPTURE(name);
    drb::SampleOptions opt;
    opt.noise_address.seed = 123;
    opt.s_churn = name == "euler" || name == "heun" || name == "dpm_2" ? 1.0 : 0.0;
    const at::Tensor full = drb::sample(model, xT, sigmas, name, opt);
    drb::SampleOptions stop = opt;
    stop.callback = [](const drb::StepInfo& info) { return info.step == 4; };
    drb::SamplerState st = drb::run(model, drb::start_state(name, xT), sigmas, stop);
    REQUIRE(st.cancelled);
    CHECK(st.step == 5);
    st.save(path);
    const drb::SamplerState loaded = drb::SamplerState::load(path);
    const drb::SamplerState done = drb::run(model, loaded, sigmas, opt);
    CHECK_FALSE(done.cancelled);
    CHECK(done.step == 12);
    CHECK(at::equal(done.x, full));
  }
  std::remove(path.c_str());
}

TEST_CASE("the callback sees every step and sample() reports a cancel") {
  auto model = single_gaussian(0.0, 1.0, 4);
  const at::Tensor sigmas = drb::schedules::karras(7, 0.1, 10.0);
  const at::Tensor xT = at::ones({1, 4}, f64);
  std::vector<int64_t> steps;
  drb::SampleOptions opt;
  opt.callback = [&](const drb::StepInfo& info) {
    steps.push_back(info.step);
    CHECK(info.num_steps == 7);
    CHECK(info.denoised.defined());
    return false;
  };
  drb::sample(model, xT, sigmas, "dpmpp_2m", opt);
  CHECK(steps == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6});
  opt.callback = [](const drb::StepInfo& info) { return info.step == 2; };
  CHECK_THROWS_WITH_AS(drb::sample(model, xT, sigmas, "dpmpp_2m", opt), doctest::Contains("cancelled"), drb::Error);
}

TEST_CASE("sampler errors name what is wrong") {
  auto model = single_gaussian(0.0, 1.0, 4);
  const at::Tensor sigmas = drb::schedules::karras(5, 0.1, 10.0);
  const at::Tensor x = at::ones({1, 4}, f64);
  CHECK_THROWS_WITH_AS(drb::sample(model, x, sigmas, "eulr"), doctest::Contains("unknown sampler 'eulr'"), drb::Error);
  CHECK_THROWS_WITH_AS(drb::sample(model, x, at::tensor({1.0, 2.0, 0.0}, f64), "euler"),
                       doctest::Contains("strictly decreasing"), drb::Error);
  CHECK_THROWS_WITH_AS(drb::sample(model, x, at::tensor({1.0, NAN, 0.0}, f64), "euler"),
                       doctest::Contains("not finite"), drb::Error);
  CHECK_THROWS_WITH_AS(drb::sample(model, x, at::tensor({1.0}, f64), "euler"), doctest::Contains("at least 2"),
                       drb::Error);
  CHECK_THROWS_WITH_AS(drb::sample(model, at::ones({0, 4}, f64), sigmas, "euler"), doctest::Contains("empty"),
                       drb::Error);
  CHECK_THROWS_WITH_AS(drb::sample(model, at::ones({1, 4}, at::kInt), sigmas, "euler"),
                       doctest::Contains("floating point"), drb::Error);
  drb::SampleOptions bad_order;
  bad_order.order = 7;
  CHECK_THROWS_WITH_AS(drb::sample(model, x, sigmas, "lms", bad_order), doctest::Contains("order"), drb::Error);

  struct WrongShape : drb::Denoiser {
    at::Tensor denoise(const at::Tensor& x, double) override { return x.narrow(1, 0, 2); }
  } wrong_shape;
  CHECK_THROWS_WITH_AS(drb::sample(wrong_shape, x, sigmas, "euler"), doctest::Contains("shape"), drb::Error);
  struct WrongDtype : drb::Denoiser {
    at::Tensor denoise(const at::Tensor& x, double) override { return x.to(at::kFloat); }
  } wrong_dtype;
  CHECK_THROWS_WITH_AS(drb::sample(wrong_dtype, x, sigmas, "euler"), doctest::Contains("dtype"), drb::Error);
  struct Throws : drb::Denoiser {
    at::Tensor denoise(const at::Tensor&, double) override { throw std::runtime_error("weights exploded"); }
  } throws;
  CHECK_THROWS_WITH_AS(drb::sample(throws, x, sigmas, "euler"), doctest::Contains("weights exploded"), drb::Error);
  struct Nan : drb::Denoiser {
    at::Tensor denoise(const at::Tensor& x, double) override { return x * NAN; }
  } nan;
  CHECK_THROWS_WITH_AS(drb::sample(nan, x, sigmas, "euler"), doctest::Contains("non-finite"), drb::Error);
  // A model's own exception becomes ErrorCode::model (a run that throws nothing fails here too).
  const auto code_of_failure = [&] {
    try {
      drb::sample(throws, x, sigmas, "euler");
    } catch (const drb::Error& e) {
      return e.code();
    }
    return drb::ErrorCode::internal;
  };
  CHECK(code_of_failure() == drb::ErrorCode::model);
}

TEST_CASE("schedules: shape, order, end point and errors") {
  for (const auto& name : drb::schedules::names()) {
    INFO("schedule ", name);
    const at::Tensor s = drb::schedules::by_name(name, 10);
    CHECK((s.scalar_type() == at::kDouble));
    CHECK(s.dim() == 1);
    CHECK(s[-1].item<double>() == 0.0);
    CHECK_NOTHROW(drb::schedules::validate(s));
  }
  CHECK(drb::schedules::karras(10, 0.1, 10.0).numel() == 11);
  CHECK(drb::schedules::karras(10, 0.1, 10.0)[0].item<double>() == doctest::Approx(10.0));
  CHECK(drb::schedules::karras(10, 0.1, 10.0)[9].item<double>() == doctest::Approx(0.1));
  CHECK_THROWS_WITH_AS(drb::schedules::karras(0, 0.1, 10.0), doctest::Contains("number of steps"), drb::Error);
  CHECK_THROWS_WITH_AS(drb::schedules::karras(10, 10.0, 0.1), doctest::Contains("sigma_min"), drb::Error);
  CHECK_THROWS_WITH_AS(drb::schedules::exponential(10, NAN, 1.0), doctest::Contains("sigma_min"), drb::Error);
  CHECK_THROWS_WITH_AS(drb::schedules::by_name("karas", 10), doctest::Contains("unknown schedule 'karas'"), drb::Error);
  CHECK_THROWS_WITH_AS(drb::schedules::custom({3.0, 3.0, 0.0}), doctest::Contains("strictly decreasing"), drb::Error);
  CHECK_THROWS_WITH_AS(drb::schedules::custom({3.0, -1.0}), doctest::Contains("negative"), drb::Error);
  // A user's sigmas are kept exactly.
  const at::Tensor c = drb::schedules::custom({14.6, 3.3, 0.5, 0.0});
  CHECK(c[1].item<double>() == 3.3);
}

TEST_CASE("denoise strength runs the last fraction of the schedule") {
  const at::Tensor s = drb::schedules::karras(10, 0.1, 10.0);
  CHECK(at::equal(drb::schedules::split_for_strength(s, 1.0), s));
  const at::Tensor half = drb::schedules::split_for_strength(s, 0.5);
  CHECK(half.numel() == 6);
  CHECK(at::equal(half, s.slice(0, 5)));
  CHECK(drb::schedules::split_for_strength(s, 0.0).numel() == 1);
  CHECK_THROWS_WITH_AS(drb::schedules::split_for_strength(s, 1.5), doctest::Contains("strength"), drb::Error);
}

TEST_CASE("parameterization adapters recover the denoiser") {
  auto gmm = drb::GaussianMixtureDenoiser::random({8}, 3, 2);
  const at::Tensor x = drb::randn({2, 8}, drb::NoiseAddress{4, 0}, f64) * 3.0;
  const double sigma = 2.5;
  const at::Tensor expected = gmm.denoise(x, sigma);
  // Networks in their native parameterizations, built from the exact denoiser.
  auto eps_net = [&](const at::Tensor& in, double s) {
    const at::Tensor xv = in * std::sqrt(s * s + 1);
    return (xv - gmm.denoise(xv, s)) / s;
  };
  auto v_net = [&](const at::Tensor& in, double s) {
    const double a = 1 / std::sqrt(s * s + 1), b = s * a;  // alpha, sigma of the VP process
    const at::Tensor xv = in / a;
    const at::Tensor x0 = gmm.denoise(xv, s);
    const at::Tensor eps = (xv - x0) / s;
    return eps * a - x0 * b;
  };
  auto flow_net = [&](const at::Tensor& x_t, double t) {
    const double s = t / (1 - t);
    return (x_t - gmm.denoise(x_t / (1 - t), s)) / t;
  };
  for (auto [net, p] : std::vector<std::pair<drb::NetworkFn, drb::Prediction>>{
           {eps_net, drb::Prediction::eps}, {v_net, drb::Prediction::v}, {flow_net, drb::Prediction::flow}}) {
    CAPTURE(drb::prediction_name(p));
    drb::ParameterizedDenoiser d(net, p);
    CHECK((d.denoise(x, sigma) - expected).abs().max().item<double>() < 1e-12);
  }
  CHECK_THROWS_WITH_AS(drb::prediction_from_name("velocity"), doctest::Contains("unknown prediction"), drb::Error);
  CHECK(drb::flow_t_to_sigma(0.5) == doctest::Approx(1.0));
  CHECK(drb::flow_t_to_sigma(1.0) == drb::kFlowSigmaMax);
}

namespace {
struct TwoPrompt : drb::ConditionalDenoiser {
  int calls = 0;
  int64_t items = 0;
  at::Tensor denoise(const at::Tensor& x, double, std::span<const drb::Branch> branches) override {
    ++calls;
    items += x.size(0);
    const int64_t b = x.size(0) / static_cast<int64_t>(branches.size());
    std::vector<at::Tensor> out;
    for (size_t k = 0; k < branches.size(); ++k)
      out.push_back(x.narrow(0, static_cast<int64_t>(k) * b, b) * (branches[k] == drb::Branch::cond ? 0.5 : 0.25));
    return at::cat(out, 0);
  }
};
}  // namespace

TEST_CASE("classifier-free guidance family") {
  const at::Tensor x = drb::randn({2, 5}, drb::NoiseAddress{1, 0}, f64);
  auto model = std::make_shared<TwoPrompt>();
  drb::GuidanceOptions o;
  o.scale = 3.0;
  drb::GuidedDenoiser batched(model, o);
  const at::Tensor out = batched.denoise(x, 1.0);
  CHECK(model->calls == 1);
  CHECK(model->items == 4);
  CHECK(at::allclose(out, x * 0.25 + (x * 0.5 - x * 0.25) * 3.0));
  o.batched = false;
  drb::GuidedDenoiser split(model, o);
  CHECK(at::allclose(split.denoise(x, 1.0), out));
  CHECK(model->calls == 3);
  // Scale 1 skips the unconditional call; so does a sigma outside the guidance interval.
  o.scale = 1.0;
  drb::GuidedDenoiser one(model, o);
  CHECK(at::allclose(one.denoise(x, 1.0), x * 0.5));
  CHECK(model->calls == 4);
  o.scale = 3.0;
  o.sigma_start = 0.5;
  drb::GuidedDenoiser interval(model, o);
  CHECK(at::allclose(interval.denoise(x, 1.0), x * 0.5));
  CHECK(interval.current_scale(0.4) == 3.0);
  // A per-step scale schedule.
  drb::GuidanceOptions sched;
  sched.scale_schedule = {1.0, 2.0, 4.0};
  drb::GuidedDenoiser scheduled(model, sched);
  scheduled.begin_step(1, 3, 1.0);
  CHECK(scheduled.current_scale(1.0) == 2.0);
  scheduled.begin_step(7, 8, 1.0);
  CHECK(scheduled.current_scale(1.0) == 4.0);
  // CFG-Zero*: when cond is a multiple of uncond, alpha rescales uncond onto cond exactly.
  const at::Tensor u = drb::randn({2, 5}, drb::NoiseAddress{2, 0}, f64);
  CHECK(at::allclose(drb::cfg_zero_combine(u * 2.0, u, 7.0), u * 2.0));
  // APG: with the difference parallel to cond and eta 0, guidance adds nothing.
  at::Tensor running;
  CHECK(at::allclose(drb::apg_combine(u * 2.0, u, 5.0, 0.0, 0.0, 0.0, running), u * 2.0));
  // APG with eta 1 and no clipping is plain CFG.
  CHECK(at::allclose(drb::apg_combine(x, u, 5.0, 1.0, 0.0, 0.0, running), drb::cfg_combine(x, u, 5.0)));
  drb::GuidanceOptions bad;
  bad.method = "pag";
  CHECK_THROWS_WITH_AS(drb::GuidedDenoiser(model, bad), doctest::Contains("unknown method 'pag'"), drb::Error);
}

TEST_CASE("Gaussian mixture denoiser: exact posterior mean, float32 and float64") {
  // One component: the posterior mean is mu + s^2 / (s^2 + sigma^2) (x - mu).
  auto g = single_gaussian(1.0, 2.0, 3);
  const at::Tensor x = at::tensor({0.0, 1.0, 5.0}, f64).reshape({1, 3});
  CHECK(at::allclose(g.denoise(x, 1.0), 1.0 + (x - 1.0) * 0.8));
  CHECK(at::allclose(g.denoise(x.to(at::kFloat), 1.0), (1.0 + (x - 1.0) * 0.8).to(at::kFloat)));
  // Two far-apart components (std 0.1): a point near one is denoised toward it by the
  // one-component formula, since the other's responsibility is below 1e-19; the pull toward
  // the mean shrinks as sigma grows (a denoiser that ignored sigma, or returned the nearest
  // mean, would fail one of the two).
  drb::GaussianMixtureDenoiser two(at::tensor({-10.0, 10.0}, f64).reshape({2, 1}), at::tensor({0.1, 0.1}, f64),
                                   at::tensor({1.0, 1.0}, f64));
  const at::Tensor near = at::tensor({9.0}, f64).reshape({1, 1});
  for (const double sigma : {0.5, 2.0}) {
    CAPTURE(sigma);
    const double exact = 10.0 + 0.01 / (0.01 + sigma * sigma) * (9.0 - 10.0);
    CHECK(two.denoise(near, sigma)[0][0].item<double>() == doctest::Approx(exact).epsilon(1e-12));
  }
  CHECK_THROWS_WITH_AS(two.denoise(at::ones({1, 2}, f64), 1.0), doctest::Contains("item shape"), drb::Error);
  CHECK_THROWS_WITH_AS(drb::GaussianMixtureDenoiser(at::ones({2, 1}, f64), at::ones({2}, f64), at::zeros({2}, f64)),
                       doctest::Contains("weights"), drb::Error);
}

TEST_CASE("solver steps update x in place when nothing else holds it") {
  auto model = drb::GaussianMixtureDenoiser::random({4, 5}, 2, 1, 1.0, at::kFloat);
  const at::Tensor xT = drb::randn({3, 4, 5}, drb::NoiseAddress{1, 0}, at::TensorOptions().dtype(at::kFloat)) * 10.0;
  const at::Tensor sigmas = drb::schedules::karras(10, 0.03, 14.6);
  for (const char* name : {"euler", "dpmpp_2m", "heun"}) {
    CAPTURE(name);
    std::set<const void*> buffers;
    drb::SampleOptions opt;
    opt.callback = [&](const drb::StepInfo& info) {
      // The last step returns (or builds from) the denoised estimate, in a buffer of its own.
      if (info.step < info.num_steps - 1) buffers.insert(info.x.const_data_ptr());
      return false;
    };
    const at::Tensor before = xT.clone();
    drb::sample(model, xT, sigmas, name, opt);
    CHECK(buffers.size() == 1);  // one buffer after the first step, which must not write into xT
    CHECK(at::equal(xT, before));
  }
}

// The C API's paths that test_capi.c cannot compare with the library: its noise, its float32
// sampling and its schedule names, each against the C++ call it converts to.
namespace {
// N(0.5, 0.2^2) per element in float32, as a C caller would write it.
int gaussian_denoise_f32(void*, const void* x, void* out, size_t count, double sigma) {
  const auto* in = static_cast<const float*>(x);
  auto* o = static_cast<float*>(out);
  const double shrink = 0.04 / (0.04 + sigma * sigma);
  for (size_t i = 0; i < count; ++i) o[i] = static_cast<float>(0.5 + shrink * (in[i] - 0.5));
  return 0;
}
}  // namespace

TEST_CASE("the C API's noise, float32 sampling and schedule names are the library's") {
  const std::vector<int64_t> shape{2, 15};
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    INFO("dtype ", dtype);
    at::Tensor ours = at::empty(shape, at::TensorOptions().dtype(dtype));
    REQUIRE(drb_randn(7, 3, dtype == at::kFloat ? DRB_FLOAT32 : DRB_FLOAT64, shape.data(), shape.size(),
                      ours.data_ptr()) == DRB_OK);
    CHECK(at::equal(ours, drb::randn(shape, drb::NoiseAddress{7, 3}, at::TensorOptions().dtype(dtype))));
  }

  const at::Tensor sigmas = drb::schedules::karras(20, 0.01, 10.0);
  const at::Tensor start = drb::randn(shape, drb::NoiseAddress{1, 0}, at::TensorOptions().dtype(at::kFloat)) * 10.0;
  at::Tensor x = start.clone();
  drb_sample_params params;
  drb_sample_params_init(&params);
  params.sampler = "dpmpp_2m";
  REQUIRE(drb_sample(gaussian_denoise_f32, nullptr, DRB_FLOAT32, shape.data(), shape.size(), x.data_ptr(),
                     sigmas.data_ptr<double>(), sigmas.numel(), &params) == DRB_OK);
  auto model = single_gaussian(0.5, 0.2, 15);  // gaussian_denoise_f32's distribution
  CHECK(at::allclose(x, drb::sample(model, start, sigmas, "dpmpp_2m"), 1e-5, 1e-5));
  // and both solve the probability-flow ODE (the closed form of single_gaussian's comment)
  const at::Tensor exact = 0.5 + (start - 0.5) * 0.2 / std::sqrt(0.04 + 100.0);
  CHECK(at::allclose(x, exact, 0.0, 1e-2));

  const auto names = drb::schedules::names();
  REQUIRE(drb_schedule_count() == names.size());
  for (size_t i = 0; i < names.size(); ++i) CHECK(std::string(drb_schedule_name(i)) == names[i]);
  CHECK(drb_schedule_name(names.size()) == nullptr);
}
