#include "derrumbe/sample/sampler.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include "derrumbe/sample/schedules.hpp"
#include "solvers.hpp"

namespace drb {

Denoiser::~Denoiser() = default;
void Denoiser::begin_step(int64_t, int64_t, double) {}
StepHook::~StepHook() = default;
int64_t StepHook::resamples(int64_t, int64_t) { return 0; }

std::vector<std::string> sampler_names() {
  std::vector<std::string> names;
  for (const auto& s : detail::solvers()) names.emplace_back(s.name);
  return names;
}

SamplerState start_state(const std::string& sampler, const at::Tensor& x) {
  detail::find_solver(sampler);
  check_arg(x.defined(), "sample: x is undefined");
  check_arg(x.numel() > 0, "sample: x is empty (shape " + c10::str(x.sizes()) + ")");
  check_arg(x.dim() >= 1, "sample: x must have a batch dimension");
  check_arg(at::isFloatingType(x.scalar_type()),
            std::string("sample: x must be floating point, got ") + c10::toString(x.scalar_type()));
  SamplerState st;
  st.sampler = sampler;
  st.x = x;
  return st;
}

SamplerState run(Denoiser& model, SamplerState st, const at::Tensor& sigmas, const SampleOptions& opt) {
  const auto& info = detail::find_solver(st.sampler);
  schedules::validate(sigmas);
  const at::Tensor s_cpu = sigmas.to(at::kCPU, at::kDouble).contiguous();
  const std::vector<double> s(s_cpu.data_ptr<double>(), s_cpu.data_ptr<double>() + s_cpu.numel());
  const int64_t n = static_cast<int64_t>(s.size()) - 1;
  check_arg(st.step >= 0 && st.step <= n,
            "sample: state step " + std::to_string(st.step) + " outside the schedule's " + std::to_string(n) + " steps");
  check_arg(st.x.defined() && st.x.numel() > 0, "sample: state has no x");
  check_arg(opt.s_noise >= 0 && std::isfinite(opt.s_noise), "sample: s_noise must be finite and >= 0");
  check_arg(opt.s_churn >= 0 && std::isfinite(opt.s_churn), "sample: s_churn must be finite and >= 0");
  const double eta = opt.eta.value_or(info.default_eta);
  check_arg(eta >= 0 && std::isfinite(eta), "sample: eta must be finite and >= 0");
  const int order = opt.order > 0 ? opt.order : info.default_order;
  if (info.default_order > 0) {
    const int max_order = std::string(info.name) == "ipndm" || std::string(info.name) == "lms" ? 4 : 3;
    check_arg(order >= 1 && order <= max_order, std::string("sample: order for ") + info.name + " must be in [1, " +
                                                    std::to_string(max_order) + "], got " + std::to_string(order));
  }
  check_arg(opt.dpmpp_sde_r > 0 && opt.dpmpp_sde_r <= 1, "sample: dpmpp_sde_r must be in (0, 1]");

  // The loop owns x alone (st.x is set on exit), so solvers may update it in place; a tensor
  // anyone else holds (the caller's input, a callback's copy, solver history) is never written.
  at::Tensor x = std::move(st.x);
  st.cancelled = false;
  for (const auto& hook : opt.hooks) check_arg(hook != nullptr, "sample: a step hook is null");
  for (int64_t i = st.step; i < n; ++i) {
    const double sigma = s[static_cast<size_t>(i)], sigma_next = s[static_cast<size_t>(i + 1)];
    int64_t passes = 0;
    for (const auto& hook : opt.hooks) passes = std::max(passes, hook->resamples(i, n));
    check_arg(passes >= 0 && passes <= 7, "sample: a step hook asked for " + std::to_string(passes) +
                                              " resamples of step " + std::to_string(i) + " (0 to 7)");
    // RePaint redoes the step from the same solver history.
    const std::vector<at::Tensor> history = passes > 0 ? st.tensors : std::vector<at::Tensor>{};
    const std::vector<double> history_scalars = passes > 0 ? st.scalars : std::vector<double>{};
    at::Tensor denoised;
    for (int64_t pass = 0;; ++pass) {
      model.begin_step(i, n, sigma);
      detail::Step step{model, s, i, opt, st, eta, order, {}, 0};
      x = info.fn(step, std::move(x));
      for (const auto& hook : opt.hooks) x = hook->after_step(StepInfo{i, n, sigma, sigma_next, x, step.denoised});
      denoised = step.denoised;
      if (pass == passes) break;
      st.tensors = history;
      st.scalars = history_scalars;
      step.draws = 8 + pass;
      x = x + std::sqrt(sigma * sigma - sigma_next * sigma_next) * step.noise(x, sigma, sigma_next);
    }
    st.step = i + 1;
    if (opt.callback && opt.callback(StepInfo{i, n, sigma, sigma_next, x, denoised})) {
      st.cancelled = true;
      break;
    }
  }
  st.x = std::move(x);
  return st;
}

void check_finished(const SamplerState& st) {
  if (st.cancelled)
    throw Error(ErrorCode::cancelled, "sampling cancelled by the callback after step " + std::to_string(st.step));
  check(at::isfinite(st.x).all().item<bool>(), ErrorCode::model,
        "sampling produced non-finite values: the model returned NaN or inf");
}

at::Tensor sample(Denoiser& model, const at::Tensor& x, const at::Tensor& sigmas, const std::string& sampler,
                  const SampleOptions& options) {
  SamplerState st = run(model, start_state(sampler, x), sigmas, options);
  check_finished(st);
  return st.x;
}

// ---- state file ---------------------------------------------------------------------------
// Layout (little-endian): "DRBSTATE" u32 version, u32 name length, name, i64 step,
// u64 scalar count, f64 scalars..., u64 tensor count (x first), then per tensor:
// i32 dtype (c10::ScalarType), u32 ndim, i64 sizes..., raw contiguous bytes.
namespace {

constexpr char kMagic[8] = {'D', 'R', 'B', 'S', 'T', 'A', 'T', 'E'};
constexpr uint32_t kVersion = 1;

template <typename T>
void put(std::ofstream& f, const T& v) {
  f.write(reinterpret_cast<const char*>(&v), sizeof(T));
}

struct Reader {
  std::ifstream f;
  std::string path;
  uint64_t remaining;
  void read(void* dst, uint64_t n) {
    check(n <= remaining, ErrorCode::parse, "sampler state file '" + path + "' is truncated");
    f.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    check(static_cast<uint64_t>(f.gcount()) == n, ErrorCode::io, "cannot read sampler state file '" + path + "'");
    remaining -= n;
  }
  template <typename T>
  T get() {
    T v;
    read(&v, sizeof(T));
    return v;
  }
};

void put_tensor(std::ofstream& f, const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU).contiguous();
  put(f, static_cast<int32_t>(c.scalar_type()));
  put(f, static_cast<uint32_t>(c.dim()));
  for (auto s : c.sizes()) put(f, static_cast<int64_t>(s));
  f.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
}

at::Tensor get_tensor(Reader& r) {
  const auto dtype = static_cast<at::ScalarType>(r.get<int32_t>());
  check(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, ErrorCode::parse,
        "sampler state file '" + r.path + "' has a tensor of unsupported dtype code " + std::to_string(static_cast<int>(dtype)));
  const auto ndim = r.get<uint32_t>();
  check(ndim <= 8, ErrorCode::parse, "sampler state file '" + r.path + "' has a tensor of rank " + std::to_string(ndim));
  std::vector<int64_t> sizes(ndim);
  uint64_t numel = 1;
  for (auto& s : sizes) {
    s = r.get<int64_t>();
    check(s >= 0 && static_cast<uint64_t>(s) <= r.remaining, ErrorCode::parse,
          "sampler state file '" + r.path + "' has an impossible tensor size");
    numel *= static_cast<uint64_t>(s);
  }
  const uint64_t bytes = numel * at::elementSize(dtype);
  check(bytes <= r.remaining, ErrorCode::parse, "sampler state file '" + r.path + "' is truncated");
  at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(dtype));
  r.read(t.data_ptr(), bytes);
  return t;
}

}  // namespace

void SamplerState::save(const std::string& path) const {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  check(f.good(), ErrorCode::io, "cannot write sampler state file '" + path + "'");
  check(x.defined(), ErrorCode::invalid_argument, "sampler state has no x to save");
  f.write(kMagic, sizeof(kMagic));
  put(f, kVersion);
  put(f, static_cast<uint32_t>(sampler.size()));
  f.write(sampler.data(), static_cast<std::streamsize>(sampler.size()));
  put(f, static_cast<int64_t>(step));
  put(f, static_cast<uint64_t>(scalars.size()));
  for (double d : scalars) put(f, d);
  put(f, static_cast<uint64_t>(tensors.size() + 1));
  put_tensor(f, x);
  for (const auto& t : tensors) put_tensor(f, t);
  check(f.good(), ErrorCode::io, "writing sampler state file '" + path + "' failed");
}

SamplerState SamplerState::load(const std::string& path) {
  Reader r{std::ifstream(path, std::ios::binary | std::ios::ate), path, 0};
  check(r.f.good(), ErrorCode::file_not_found, "cannot open sampler state file '" + path + "'");
  r.remaining = static_cast<uint64_t>(r.f.tellg());
  r.f.seekg(0);
  char magic[8];
  r.read(magic, sizeof(magic));
  check(std::memcmp(magic, kMagic, sizeof(kMagic)) == 0, ErrorCode::parse, "'" + path + "' is not a sampler state file");
  const auto version = r.get<uint32_t>();
  check(version == kVersion, ErrorCode::parse,
        "sampler state file '" + path + "' has version " + std::to_string(version) + ", expected " + std::to_string(kVersion));
  SamplerState st;
  const auto name_len = r.get<uint32_t>();
  check(name_len <= 64, ErrorCode::parse, "sampler state file '" + path + "' has a corrupt sampler name");
  st.sampler.resize(name_len);
  r.read(st.sampler.data(), name_len);
  detail::find_solver(st.sampler);
  st.step = r.get<int64_t>();
  check(st.step >= 0, ErrorCode::parse, "sampler state file '" + path + "' has a negative step");
  const auto n_scalars = r.get<uint64_t>();
  check(n_scalars <= 64, ErrorCode::parse, "sampler state file '" + path + "' has a corrupt scalar count");
  st.scalars.resize(n_scalars);
  for (auto& d : st.scalars) d = r.get<double>();
  const auto n_tensors = r.get<uint64_t>();
  check(n_tensors >= 1 && n_tensors <= 16, ErrorCode::parse, "sampler state file '" + path + "' has a corrupt tensor count");
  st.x = get_tensor(r);
  for (uint64_t k = 1; k < n_tensors; ++k) st.tensors.push_back(get_tensor(r));
  check(r.remaining == 0, ErrorCode::parse, "sampler state file '" + path + "' has trailing bytes");
  return st;
}

}  // namespace drb
