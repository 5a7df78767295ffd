#include "derrumbe/sample/schedules.hpp"

#include <ATen/ATen.h>

#include <cmath>

#include "derrumbe/sample/parameterization.hpp"

namespace drb::schedules {

namespace {

constexpr int64_t kMaxSteps = 100000;

void check_steps(const char* name, int64_t n) {
  check_arg(n >= 1 && n <= kMaxSteps, std::string(name) + ": number of steps must be in [1, " +
                                          std::to_string(kMaxSteps) + "], got " + std::to_string(n));
}

void check_range(const char* name, double sigma_min, double sigma_max) {
  check_arg(std::isfinite(sigma_min) && std::isfinite(sigma_max) && sigma_min > 0 && sigma_max > sigma_min,
            std::string(name) + ": need 0 < sigma_min < sigma_max (finite), got sigma_min=" + std::to_string(sigma_min) +
                " sigma_max=" + std::to_string(sigma_max));
}

// n points from a to b inclusive, as numpy/torch linspace.
std::vector<double> linspace(double a, double b, int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  if (n == 1) {
    v[0] = a;
    return v;
  }
  const double step = (b - a) / static_cast<double>(n - 1);
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = a + step * static_cast<double>(i);
  v.back() = b;
  return v;
}

at::Tensor to_tensor(std::vector<double> v, bool append_zero) {
  if (append_zero) v.push_back(0.0);
  return at::tensor(v, at::TensorOptions().dtype(at::kDouble));
}

at::Tensor from_flow(const std::vector<double>& t) {
  std::vector<double> s;
  for (double v : t) s.push_back(flow_t_to_sigma(v));
  return to_tensor(s, false);
}

void check_table(const char* name, const std::vector<double>& sigmas) {
  check_arg(sigmas.size() >= 2, std::string(name) + ": model sigma table needs at least 2 entries");
  for (size_t i = 0; i < sigmas.size(); ++i) {
    check_arg(std::isfinite(sigmas[i]) && sigmas[i] > 0,
              std::string(name) + ": model sigma table entry " + std::to_string(i) + " is not finite and positive");
    check_arg(i == 0 || sigmas[i] > sigmas[i - 1], std::string(name) + ": model sigma table must be ascending");
  }
}

// ComfyUI's model_sampling helpers on the discrete table: the nearest training step of a sigma
// (in log space) and the log-linear interpolation of sigma at a fractional step.
double table_timestep(const std::vector<double>& table, double sigma) {
  size_t best = 0;
  for (size_t i = 1; i < table.size(); ++i)
    if (std::abs(std::log(sigma) - std::log(table[i])) < std::abs(std::log(sigma) - std::log(table[best]))) best = i;
  return static_cast<double>(best);
}
double table_sigma(const std::vector<double>& table, double t) {
  const double lo = std::floor(t), hi = std::ceil(t), w = t - lo;
  const double log_sigma = (1 - w) * std::log(table[static_cast<size_t>(lo)]) + w * std::log(table[static_cast<size_t>(hi)]);
  return std::exp(log_sigma);
}

// Regularized incomplete beta I_x(a, b) by its continued fraction (modified Lentz), used to
// invert the Beta CDF for the beta schedule (Lee et al. 2024, "Beta Sampling is All You Need").
double betacf(double a, double b, double x) {
  const double tiny = 1e-300;
  double c = 1, d = 1 - (a + b) * x / (a + 1);
  d = 1 / (std::abs(d) < tiny ? tiny : d);
  double h = d;
  for (int m = 1; m <= 1000; ++m) {
    const double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    d = 1 / (std::abs(d) < tiny ? tiny : d);
    c = 1 + aa / c;
    c = std::abs(c) < tiny ? tiny : c;
    h *= d * c;
    aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    d = 1 / (std::abs(d) < tiny ? tiny : d);
    c = 1 + aa / c;
    c = std::abs(c) < tiny ? tiny : c;
    const double del = d * c;
    h *= del;
    if (std::abs(del - 1) < 1e-16) break;
  }
  return h;
}
double beta_cdf(double x, double a, double b) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const double lbt = std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
  if (x < (a + 1) / (a + b + 2)) return std::exp(lbt) * betacf(a, b, x) / a;
  return 1 - std::exp(lbt) * betacf(b, a, 1 - x) / b;
}
double beta_ppf(double p, double a, double b) {
  if (p <= 0) return 0;
  if (p >= 1) return 1;  // the CDF reaches 1.0 in floating point before x = 1
  double lo = 0, hi = 1;
  for (int it = 0; it < 200 && hi - lo > 1e-16; ++it) {
    const double mid = 0.5 * (lo + hi);
    (beta_cdf(mid, a, b) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

}  // namespace

at::Tensor karras(int64_t n, double sigma_min, double sigma_max, double rho) {
  check_steps("karras", n);
  check_range("karras", sigma_min, sigma_max);
  check_arg(rho > 0 && std::isfinite(rho), "karras: rho must be positive");
  const double min_inv = std::pow(sigma_min, 1 / rho), max_inv = std::pow(sigma_max, 1 / rho);
  std::vector<double> s;
  for (double r : linspace(0, 1, n)) s.push_back(std::pow(max_inv + r * (min_inv - max_inv), rho));
  return to_tensor(s, true);
}

at::Tensor exponential(int64_t n, double sigma_min, double sigma_max) {
  check_steps("exponential", n);
  check_range("exponential", sigma_min, sigma_max);
  std::vector<double> s;
  for (double l : linspace(std::log(sigma_max), std::log(sigma_min), n)) s.push_back(std::exp(l));
  return to_tensor(s, true);
}

at::Tensor polyexponential(int64_t n, double sigma_min, double sigma_max, double rho) {
  check_steps("polyexponential", n);
  check_range("polyexponential", sigma_min, sigma_max);
  check_arg(rho > 0 && std::isfinite(rho), "polyexponential: rho must be positive");
  std::vector<double> s;
  for (double r : linspace(1, 0, n))
    s.push_back(std::exp(std::pow(r, rho) * (std::log(sigma_max) - std::log(sigma_min)) + std::log(sigma_min)));
  return to_tensor(s, true);
}

at::Tensor vp(int64_t n, double beta_d, double beta_min, double eps_s) {
  check_steps("vp", n);
  check_arg(beta_d > 0 && beta_min >= 0 && eps_s > 0 && eps_s < 1, "vp: need beta_d > 0, beta_min >= 0, 0 < eps_s < 1");
  std::vector<double> s;
  for (double t : linspace(1, eps_s, n)) s.push_back(std::sqrt(std::exp(beta_d * t * t / 2 + beta_min * t) - 1));
  return to_tensor(s, true);
}

at::Tensor kl_optimal(int64_t n, double sigma_min, double sigma_max) {
  check_steps("kl_optimal", n);
  check_range("kl_optimal", sigma_min, sigma_max);
  std::vector<double> s;
  for (int64_t i = 0; i < n; ++i) {
    const double w = n == 1 ? 0.0 : static_cast<double>(i) / static_cast<double>(n - 1);
    s.push_back(std::tan(w * std::atan(sigma_min) + (1 - w) * std::atan(sigma_max)));
  }
  return to_tensor(s, true);
}

std::vector<double> discrete_vp_sigmas(int64_t num_train_steps, double beta_start, double beta_end,
                                       const std::string& beta_schedule) {
  check_arg(num_train_steps >= 2 && num_train_steps <= kMaxSteps, "discrete_vp_sigmas: num_train_steps out of range");
  check_arg(beta_start > 0 && beta_end > beta_start && beta_end < 1, "discrete_vp_sigmas: need 0 < beta_start < beta_end < 1");
  std::vector<double> betas;
  if (beta_schedule == "scaled_linear") {
    for (double b : linspace(std::sqrt(beta_start), std::sqrt(beta_end), num_train_steps)) betas.push_back(b * b);
  } else if (beta_schedule == "linear") {
    betas = linspace(beta_start, beta_end, num_train_steps);
  } else {
    throw Error(ErrorCode::not_found, "discrete_vp_sigmas: unknown beta_schedule '" + beta_schedule +
                                          "' (known: scaled_linear, linear)");
  }
  std::vector<double> sigmas;
  double alpha_cumprod = 1;
  for (double b : betas) {
    alpha_cumprod *= 1 - b;
    sigmas.push_back(std::sqrt((1 - alpha_cumprod) / alpha_cumprod));
  }
  return sigmas;
}

at::Tensor simple(int64_t n, const std::vector<double>& table) {
  check_steps("simple", n);
  check_table("simple", table);
  const double ss = static_cast<double>(table.size()) / static_cast<double>(n);
  std::vector<double> s;
  for (int64_t x = 0; x < n; ++x)
    s.push_back(table[table.size() - 1 - static_cast<size_t>(static_cast<double>(x) * ss)]);
  return to_tensor(s, true);
}

at::Tensor sgm_uniform(int64_t n, const std::vector<double>& table) {
  check_steps("sgm_uniform", n);
  check_table("sgm_uniform", table);
  const double start = table_timestep(table, table.back()), end = table_timestep(table, table.front());
  std::vector<double> ts = linspace(start, end, n + 1);
  ts.pop_back();
  std::vector<double> s;
  for (double t : ts) s.push_back(table_sigma(table, t));
  return to_tensor(s, true);
}

at::Tensor ddim_uniform(int64_t n, const std::vector<double>& table) {
  check_steps("ddim_uniform", n);
  check_table("ddim_uniform", table);
  const size_t ss = std::max<size_t>(table.size() / static_cast<size_t>(n), 1);
  std::vector<double> s = {0.0};
  for (size_t x = 1; x < table.size(); x += ss) s.push_back(table[x]);
  std::reverse(s.begin(), s.end());
  return to_tensor(s, false);
}

at::Tensor beta(int64_t n, const std::vector<double>& table, double alpha, double beta_param) {
  check_steps("beta", n);
  check_table("beta", table);
  check_arg(alpha > 0 && beta_param > 0 && std::isfinite(alpha) && std::isfinite(beta_param),
            "beta: alpha and beta must be positive");
  const double total = static_cast<double>(table.size() - 1);
  std::vector<double> s;
  double last_t = -1;
  for (int64_t i = 0; i < n; ++i) {
    const double q = 1 - static_cast<double>(i) / static_cast<double>(n);
    // Quantiles that land on a half-integer index (for example the median of a symmetric Beta)
    // are snapped to it, so the tie rounds to even as numpy.rint does, whatever the last ulp.
    double v = beta_ppf(q, alpha, beta_param) * total;
    const double half = std::floor(v) + 0.5;
    if (std::abs(v - half) < 1e-9) v = half;
    const double t = std::nearbyint(v);
    if (t != last_t) s.push_back(table[static_cast<size_t>(t)]);
    last_t = t;
  }
  return to_tensor(s, true);
}

at::Tensor linear_quadratic(int64_t n, double threshold_noise, std::optional<int64_t> linear_steps_opt) {
  check_steps("linear_quadratic", n);
  check_arg(threshold_noise > 0 && threshold_noise < 1, "linear_quadratic: threshold_noise must be in (0, 1)");
  if (n == 1) return from_flow({1.0, 0.0});
  const int64_t linear_steps = linear_steps_opt.value_or(n / 2);
  check_arg(linear_steps >= 1 && linear_steps < n, "linear_quadratic: linear_steps must be in [1, n)");
  std::vector<double> sched;
  for (int64_t i = 0; i < linear_steps; ++i)
    sched.push_back(static_cast<double>(i) * threshold_noise / static_cast<double>(linear_steps));
  const double ls = static_cast<double>(linear_steps), steps = static_cast<double>(n);
  const double step_diff = ls - threshold_noise * steps;
  const double qs = steps - ls;
  const double quad = step_diff / (ls * qs * qs);
  const double lin = threshold_noise / ls - 2 * step_diff / (qs * qs);
  const double c = quad * ls * ls;
  for (int64_t i = linear_steps; i < n; ++i) {
    const double d = static_cast<double>(i);
    sched.push_back(quad * d * d + lin * d + c);
  }
  sched.push_back(1.0);
  for (double& v : sched) v = 1.0 - v;
  return from_flow(sched);
}

at::Tensor flow_shift(int64_t n, const FlowShift& o) {
  check_steps("flow_shift", n);
  check_arg(o.num_train_timesteps >= 1 && o.num_train_timesteps <= kMaxSteps, "flow_shift: num_train_timesteps out of range");
  check_arg(o.shift > 0 && std::isfinite(o.shift), "flow_shift: shift must be positive and finite");
  check_arg(!o.mu || std::isfinite(*o.mu), "flow_shift: mu must be finite");
  check_arg(!o.shift_terminal || (*o.shift_terminal > 0 && *o.shift_terminal < 1), "flow_shift: shift_terminal must be in (0, 1)");
  const double N = static_cast<double>(o.num_train_timesteps);
  auto shifted = [&](double t) {
    if (o.mu) return std::exp(*o.mu) / (std::exp(*o.mu) + (1 / t - 1));
    return o.shift * t / (1 + (o.shift - 1) * t);
  };
  std::vector<double> t;
  if (o.spacing == FlowSpacing::euler) {
    // The training table's last t: shifted at construction when the shift is static.
    const double t_min = o.mu ? 1 / N : o.shift * (1 / N) / (1 + (o.shift - 1) * (1 / N));
    t = linspace(1.0, t_min, n);
  } else {
    t = linspace(1.0, 1 / N, n + 1);
    t.pop_back();
  }
  for (double& v : t) v = shifted(v);
  if (o.shift_terminal) {
    const double scale = (1 - t.back()) / (1 - *o.shift_terminal);
    for (double& v : t) v = 1 - (1 - v) / scale;
  }
  if (o.spacing == FlowSpacing::unipc && std::abs(t[0] - 1) < 1e-6) t[0] -= 1e-6;
  t.push_back(0.0);
  return from_flow(t);
}

double flow_mu(int64_t seq_len, int64_t base_seq_len, int64_t max_seq_len, double base_shift, double max_shift) {
  check_arg(max_seq_len > base_seq_len, "flow_mu: max_seq_len must exceed base_seq_len");
  const double m = (max_shift - base_shift) / static_cast<double>(max_seq_len - base_seq_len);
  const double b = base_shift - m * static_cast<double>(base_seq_len);
  return static_cast<double>(seq_len) * m + b;
}

void validate(const at::Tensor& sigmas) {
  check_arg(sigmas.defined(), "sigmas: undefined tensor");
  check_arg(sigmas.dim() == 1, "sigmas must be 1-D, got shape " + c10::str(sigmas.sizes()));
  // A single [0] is the empty schedule (split_for_strength at strength 0): nothing to run.
  const bool empty_schedule = sigmas.numel() == 1 && sigmas.to(at::kCPU, at::kDouble).item<double>() == 0.0;
  check_arg(sigmas.numel() >= 2 || empty_schedule,
            "sigmas needs at least 2 entries (one step) or be [0] (no step), got " + std::to_string(sigmas.numel()));
  check_arg(at::isFloatingType(sigmas.scalar_type()),
            std::string("sigmas must be floating point, got ") + c10::toString(sigmas.scalar_type()));
  const at::Tensor s = sigmas.to(at::kCPU, at::kDouble).contiguous();
  const double* p = s.data_ptr<double>();
  for (int64_t i = 0; i < s.numel(); ++i) {
    check_arg(std::isfinite(p[i]), "sigmas[" + std::to_string(i) + "] is not finite (" + std::to_string(p[i]) + ")");
    check_arg(p[i] >= 0, "sigmas[" + std::to_string(i) + "] is negative (" + std::to_string(p[i]) + ")");
    check_arg(i == 0 || p[i] < p[i - 1], "sigmas must be strictly decreasing: sigmas[" + std::to_string(i) +
                                             "] = " + std::to_string(p[i]) + " >= sigmas[" + std::to_string(i - 1) +
                                             "] = " + std::to_string(p[i - 1]));
  }
}

at::Tensor custom(const std::vector<double>& sigmas) {
  at::Tensor t = at::tensor(sigmas, at::TensorOptions().dtype(at::kDouble));
  validate(t);
  return t;
}

at::Tensor split_for_strength(const at::Tensor& sigmas, double strength) {
  validate(sigmas);
  check_arg(strength >= 0 && strength <= 1, "denoise strength must be in [0, 1], got " + std::to_string(strength));
  const int64_t n = sigmas.numel() - 1;
  const int64_t run = static_cast<int64_t>(std::llround(strength * static_cast<double>(n)));
  return sigmas.slice(0, n - run).to(at::kDouble).clone();
}

std::vector<std::string> names() {
  return {"karras",       "exponential", "polyexponential", "vp",   "kl_optimal",        "simple",
          "sgm_uniform",  "ddim_uniform", "beta",           "linear_quadratic", "flow_shift"};
}

at::Tensor by_name(const std::string& name, int64_t n, const ScheduleParams& p) {
  if (name == "karras") return karras(n, p.sigma_min, p.sigma_max, p.rho.value_or(7.0));
  if (name == "exponential") return exponential(n, p.sigma_min, p.sigma_max);
  if (name == "polyexponential") return polyexponential(n, p.sigma_min, p.sigma_max, p.rho.value_or(1.0));
  if (name == "vp") return vp(n);
  if (name == "kl_optimal") return kl_optimal(n, p.sigma_min, p.sigma_max);
  if (name == "simple") return simple(n, discrete_vp_sigmas());
  if (name == "sgm_uniform") return sgm_uniform(n, discrete_vp_sigmas());
  if (name == "ddim_uniform") return ddim_uniform(n, discrete_vp_sigmas());
  if (name == "beta") return beta(n, discrete_vp_sigmas());
  if (name == "linear_quadratic") return linear_quadratic(n);
  if (name == "flow_shift") return flow_shift(n, p.flow);
  std::string known;
  for (const auto& k : names()) known += (known.empty() ? "" : ", ") + k;
  throw Error(ErrorCode::not_found, "unknown schedule '" + name + "'; known schedules: " + known);
}

}  // namespace drb::schedules
