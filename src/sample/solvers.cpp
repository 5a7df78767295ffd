// Solver steps in the VE form x = x0 + sigma * n. Each is one short function following its
// paper; names and defaults follow k-diffusion / ComfyUI so results are comparable.
#include "solvers.hpp"

#include "derrumbe/core/lincomb.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <exception>
#include <limits>

namespace drb::detail {

namespace {

// Ancestral split of a step sigma -> sigma_next into a deterministic step to sigma_down and
// fresh noise of std sigma_up (k-diffusion's get_ancestral_step).
struct Ancestral {
  double down, up;
};
Ancestral ancestral(double sigma, double sigma_next, double eta) {
  if (eta == 0.0) return {sigma_next, 0.0};
  const double up = std::min(
      sigma_next, eta * std::sqrt(sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) / (sigma * sigma)));
  return {std::sqrt(sigma_next * sigma_next - up * up), up};
}

// Karras et al. 2022, Algorithm 2: temporarily raise sigma by (1 + gamma) with fresh noise.
double churn(Step& st, at::Tensor& x) {
  const double s = st.sigma(st.i);
  const double gamma = (st.opt.s_tmin <= s && s <= st.opt.s_tmax)
                           ? std::min(st.opt.s_churn / static_cast<double>(st.num_steps()), std::sqrt(2.0) - 1.0)
                           : 0.0;
  const double sigma_hat = s * (gamma + 1.0);
  if (gamma > 0.0)
    x = x + st.noise(x, s, sigma_hat) * (st.opt.s_noise * std::sqrt(sigma_hat * sigma_hat - s * s));
  return sigma_hat;
}

// The derivative of the probability-flow ODE, dx/dsigma = (x - D) / sigma.
at::Tensor to_d(const at::Tensor& x, double sigma, const at::Tensor& denoised) { return (x - denoised) / sigma; }

// History helpers: state.tensors used as a queue of the most recent entries (newest last).
void push_limited(std::vector<at::Tensor>& v, at::Tensor t, size_t limit) {
  v.push_back(std::move(t));
  while (v.size() > limit) v.erase(v.begin());
}
void push_limited(std::vector<double>& v, double d, size_t limit) {
  v.push_back(d);
  while (v.size() > limit) v.erase(v.begin());
}

double lambda_of(double sigma) { return -std::log(sigma); }  // log-SNR in VE form; +inf at sigma 0

// ---- k-diffusion family ----------------------------------------------------------------

at::Tensor euler(Step& st, at::Tensor x) {
  const double sigma_hat = churn(st, x);
  const at::Tensor den = st.denoise(x, sigma_hat);
  // x + d * (sigma_next - sigma_hat), written as an interpolation that stays exact for huge sigma.
  const double r = st.sigma(st.i + 1) / sigma_hat;
  return lincomb({{r, &x}, {1 - r, &den}}, &x);
}

at::Tensor euler_ancestral(Step& st, at::Tensor x) {
  const double s = st.sigma(st.i), sn = st.sigma(st.i + 1);
  const at::Tensor den = st.denoise(x, s);
  const auto [down, up] = ancestral(s, sn, st.eta);
  const double r = down / s;  // x + d * (down - s) as an interpolation, exact for huge sigma
  if (sn == 0) return lincomb({{r, &x}, {1 - r, &den}}, &x);
  const at::Tensor n = st.noise(x, s, sn);
  return lincomb({{r, &x}, {1 - r, &den}, {st.opt.s_noise * up, &n}}, &x);
}

at::Tensor heun(Step& st, at::Tensor x) {
  const double sigma_hat = churn(st, x);
  const double sn = st.sigma(st.i + 1);
  const at::Tensor den = st.denoise(x, sigma_hat);
  const double dt = sn - sigma_hat;
  if (sn == 0) return x + to_d(x, sigma_hat, den) * dt;
  // x_2 = x + d dt, then x + (d + d_2) dt / 2 with d = (x - den) / sigma_hat, d_2 = (x_2 - den_2) / sn.
  const at::Tensor x_2 = lincomb({{1 + dt / sigma_hat, &x}, {-dt / sigma_hat, &den}});
  const at::Tensor den_2 = st.denoise(x_2, sn);
  const double a = dt / (2 * sigma_hat), b = dt / (2 * sn);
  return lincomb({{1 + a, &x}, {-a, &den}, {b, &x_2}, {-b, &den_2}}, &x);
}

double log_midpoint(double a, double b) { return std::exp(std::log(a) + 0.5 * (std::log(b) - std::log(a))); }

at::Tensor dpm_2(Step& st, at::Tensor x) {
  const double sigma_hat = churn(st, x);
  const double sn = st.sigma(st.i + 1);
  const at::Tensor den = st.denoise(x, sigma_hat);
  const at::Tensor d = to_d(x, sigma_hat, den);
  if (sn == 0) return x + d * (sn - sigma_hat);
  const double sigma_mid = log_midpoint(sigma_hat, sn);
  const at::Tensor x_2 = x + d * (sigma_mid - sigma_hat);
  const at::Tensor d_2 = to_d(x_2, sigma_mid, st.denoise(x_2, sigma_mid));
  return x + d_2 * (sn - sigma_hat);
}

at::Tensor dpm_2_ancestral(Step& st, at::Tensor x) {
  const double s = st.sigma(st.i), sn = st.sigma(st.i + 1);
  const at::Tensor den = st.denoise(x, s);
  const auto [down, up] = ancestral(s, sn, st.eta);
  const at::Tensor d = to_d(x, s, den);
  if (down == 0) return x + d * (down - s);
  const double sigma_mid = log_midpoint(s, down);
  const at::Tensor x_2 = x + d * (sigma_mid - s);
  const at::Tensor d_2 = to_d(x_2, sigma_mid, st.denoise(x_2, sigma_mid));
  x = x + d_2 * (down - s);
  return x + st.noise(x, s, sn) * (st.opt.s_noise * up);
}

// Integral over [t[i], t[i+1]] of the Lagrange basis polynomial j on the nodes t[i], ..., t[i-order+1].
// Gauss-Legendre with 4 nodes is exact for the degree <= 3 polynomials used here.
double lms_coeff(int order, const std::vector<double>& t, int64_t i, int j) {
  static constexpr std::array<double, 4> nodes = {-0.8611363115940526, -0.3399810435848563, 0.3399810435848563,
                                                  0.8611363115940526};
  static constexpr std::array<double, 4> weights = {0.3478548451374538, 0.6521451548625461, 0.6521451548625461,
                                                    0.3478548451374538};
  const double a = t[static_cast<size_t>(i)], b = t[static_cast<size_t>(i + 1)];
  double sum = 0;
  for (size_t q = 0; q < nodes.size(); ++q) {
    const double tau = 0.5 * (b - a) * nodes[q] + 0.5 * (a + b);
    double prod = 1;
    for (int k = 0; k < order; ++k) {
      if (k == j) continue;
      prod *= (tau - t[static_cast<size_t>(i - k)]) / (t[static_cast<size_t>(i - j)] - t[static_cast<size_t>(i - k)]);
    }
    sum += weights[q] * prod;
  }
  return 0.5 * (b - a) * sum;
}

at::Tensor lms(Step& st, at::Tensor x) {
  const double s = st.sigma(st.i);
  const at::Tensor den = st.denoise(x, s);
  auto& ds = st.state.tensors;  // derivatives of previous steps, newest last
  push_limited(ds, to_d(x, s, den), static_cast<size_t>(st.order));
  const int cur_order = static_cast<int>(std::min<int64_t>(st.i + 1, st.order));
  for (int j = 0; j < cur_order; ++j)
    x = x + ds[ds.size() - 1 - static_cast<size_t>(j)] * lms_coeff(cur_order, st.sigmas, st.i, j);
  return x;
}

// ---- DPM-Solver++ family (Lu et al. 2022), in log-SNR time t = -log(sigma) -----------------

at::Tensor dpmpp_2s_ancestral(Step& st, at::Tensor x) {
  const double s = st.sigma(st.i), sn = st.sigma(st.i + 1);
  const at::Tensor den = st.denoise(x, s);
  const auto [down, up] = ancestral(s, sn, st.eta);
  if (down == 0) {
    x = x + to_d(x, s, den) * (down - s);
  } else {
    const double t = lambda_of(s), t_next = lambda_of(down);
    const double h = t_next - t, r = 0.5;
    const double sigma_s = std::exp(-(t + r * h));
    const at::Tensor x_2 = x * (sigma_s / s) - den * std::expm1(-h * r);
    const at::Tensor den_2 = st.denoise(x_2, sigma_s);
    x = x * (down / s) - den_2 * std::expm1(-h);
  }
  if (sn > 0) x = x + st.noise(x, s, sn) * (st.opt.s_noise * up);
  return x;
}

at::Tensor dpmpp_sde(Step& st, at::Tensor x) {
  const double s = st.sigma(st.i), sn = st.sigma(st.i + 1);
  const at::Tensor den = st.denoise(x, s);
  if (sn == 0) return x + to_d(x, s, den) * (sn - s);
  const double r = st.opt.dpmpp_sde_r;
  const double t = lambda_of(s), t_next = lambda_of(sn);
  const double h = t_next - t;
  const double sigma_t = std::exp(-t), sigma_s = std::exp(-(t + h * r));
  const double fac = 1 / (2 * r);
  // Step 1: to the intermediate time s = t + r h.
  auto [down1, up1] = ancestral(sigma_t, sigma_s, st.eta);
  const double s_ = lambda_of(down1);
  at::Tensor x_2 = x * (std::exp(-s_) / sigma_t) - den * std::expm1(t - s_);
  x_2 = x_2 + st.noise(x, sigma_t, sigma_s) * (st.opt.s_noise * up1);
  const at::Tensor den_2 = st.denoise(x_2, sigma_s);
  // Step 2: to t_next with the combined denoised estimate.
  auto [down2, up2] = ancestral(sigma_t, std::exp(-t_next), st.eta);
  const double t_next_ = lambda_of(down2);
  const at::Tensor den_d = den * (1 - fac) + den_2 * fac;
  x = x * (std::exp(-t_next_) / sigma_t) - den_d * std::expm1(t - t_next_);
  return x + st.noise(x, sigma_t, std::exp(-t_next)) * (st.opt.s_noise * up2);
}

at::Tensor dpmpp_2m(Step& st, at::Tensor x) {
  const double s = st.sigma(st.i), sn = st.sigma(st.i + 1);
  const at::Tensor den = st.denoise(x, s);
  auto& old = st.state.tensors;  // [old_denoised]
  const double h = lambda_of(sn) - lambda_of(s);
  if (sn == 0) {
    x = den;
  } else if (old.empty()) {
    x = lincomb({{sn / s, &x}, {-std::expm1(-h), &den}}, &x);
  } else {
    // Second order: the denoised estimate extrapolated with the previous one.
    const double r = (lambda_of(s) - lambda_of(st.sigma(st.i - 1))) / h;
    const double b = -std::expm1(-h);
    x = lincomb({{sn / s, &x}, {b * (1 + 1 / (2 * r)), &den}, {-b / (2 * r), &old[0]}}, &x);
  }
  old = {den};
  return x;
}

template <bool heun_type>
at::Tensor dpmpp_2m_sde(Step& st, at::Tensor x) {
  const double s = st.sigma(st.i), sn = st.sigma(st.i + 1);
  const at::Tensor den = st.denoise(x, s);
  auto& old = st.state.tensors;  // [old_denoised]
  auto& h_last = st.state.scalars;  // [h_last]
  if (sn == 0) {
    x = den;
  } else {
    const double h = lambda_of(sn) - lambda_of(s);
    const double eta_h = st.eta * h;
    const double one_minus = -std::expm1(-h - eta_h);
    x = x * (sn / s * std::exp(-eta_h)) + den * one_minus;
    if (!old.empty()) {
      const double r = h_last[0] / h;
      const double c = heun_type ? (one_minus / (-h - eta_h) + 1) * (1 / r) : 0.5 * one_minus * (1 / r);
      x = x + (den - old[0]) * c;
    }
    if (st.eta != 0)
      x = x + st.noise(x, s, sn) * (sn * std::sqrt(-std::expm1(-2 * eta_h)) * st.opt.s_noise);
    h_last = {h};
  }
  old = {den};
  return x;
}

at::Tensor dpmpp_3m_sde(Step& st, at::Tensor x) {
  const double s = st.sigma(st.i), sn = st.sigma(st.i + 1);
  const at::Tensor den = st.denoise(x, s);
  auto& dens = st.state.tensors;  // [denoised_1, denoised_2], newest first
  auto& hs = st.state.scalars;    // [h_1, h_2], newest first
  if (sn == 0) {
    x = den;
  } else {
    const double h = lambda_of(sn) - lambda_of(s);
    const double h_eta = h * (st.eta + 1);
    x = x * std::exp(-h_eta) + den * (-std::expm1(-h_eta));
    const double phi_2 = std::expm1(-h_eta) / h_eta + 1;
    if (hs.size() >= 2) {
      const double r0 = hs[0] / h, r1 = hs[1] / h;
      const at::Tensor d1_0 = (den - dens[0]) / r0;
      const at::Tensor d1_1 = (dens[0] - dens[1]) / r1;
      const at::Tensor d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1));
      const at::Tensor d2 = (d1_0 - d1_1) / (r0 + r1);
      const double phi_3 = phi_2 / h_eta - 0.5;
      x = x + d1 * phi_2 - d2 * phi_3;
    } else if (hs.size() == 1) {
      x = x + (den - dens[0]) * (phi_2 / (hs[0] / h));
    }
    if (st.eta != 0)
      x = x + st.noise(x, s, sn) * (sn * std::sqrt(-std::expm1(-2 * h * st.eta)) * st.opt.s_noise);
    hs.insert(hs.begin(), h);
    if (hs.size() > 2) hs.pop_back();
  }
  dens.insert(dens.begin(), den);
  if (dens.size() > 2) dens.pop_back();
  return x;
}

// ---- UniPC (Zhao et al. 2023), data prediction, B(h) = h (bh1) or e^h - 1 (bh2) -----------

// Solves the small dense system A x = b (n <= 3) by Gaussian elimination with pivoting.
std::vector<double> solve_small(std::vector<std::vector<double>> a, std::vector<double> b) {
  const size_t n = b.size();
  for (size_t c = 0; c < n; ++c) {
    size_t p = c;
    for (size_t r = c + 1; r < n; ++r)
      if (std::abs(a[r][c]) > std::abs(a[p][c])) p = r;
    std::swap(a[c], a[p]);
    std::swap(b[c], b[p]);
    check(a[c][c] != 0.0, ErrorCode::invalid_argument, "uni_pc: singular order conditions (repeated sigmas?)");
    for (size_t r = c + 1; r < n; ++r) {
      const double f = a[r][c] / a[c][c];
      for (size_t k = c; k < n; ++k) a[r][k] -= f * a[c][k];
      b[r] -= f * b[c];
    }
  }
  std::vector<double> x(n);
  for (size_t c = n; c-- > 0;) {
    double v = b[c];
    for (size_t k = c + 1; k < n; ++k) v -= a[c][k] * x[k];
    x[c] = v / a[c][c];
  }
  return x;
}

// One UniPC update from the model outputs `outs` at `sigs` (newest last) to sigma_t, starting
// from sample x at sigs.back(). Predictor (model_t null): rhos solve the order conditions
// without their last row. Corrector: the full system, with the output `model_t` at sigma_t as
// the last term. The result is linear in x and the outputs, so it is formed in one fused pass.
template <bool bh2>
at::Tensor unipc_update(const at::Tensor& x, const std::vector<at::Tensor>& outs, const std::vector<double>& sigs,
                        double sigma_t, int order, const at::Tensor* model_t, at::Tensor* reuse) {
  const at::Tensor& m0 = outs.back();
  const double sigma_s0 = sigs.back();
  const double lambda_s0 = lambda_of(sigma_s0);
  const double h = lambda_of(sigma_t) - lambda_s0;
  std::vector<double> rks;
  for (int k = 1; k < order; ++k)
    rks.push_back((lambda_of(sigs[sigs.size() - 1 - static_cast<size_t>(k)]) - lambda_s0) / h);
  rks.push_back(1.0);
  const double hh = -h;
  const double h_phi_1 = std::expm1(hh);
  double h_phi_k = h_phi_1 / hh - 1;
  double factorial = 1;
  const double B_h = bh2 ? std::expm1(hh) : hh;
  const size_t n = static_cast<size_t>(order);
  std::vector<std::vector<double>> R(n, std::vector<double>(n));
  std::vector<double> b(n);
  for (size_t k = 1; k <= n; ++k) {
    for (size_t c = 0; c < n; ++c) R[k - 1][c] = std::pow(rks[c], static_cast<double>(k - 1));
    b[k - 1] = h_phi_k * factorial / B_h;
    factorial *= static_cast<double>(k + 1);
    h_phi_k = h_phi_k / hh - 1 / factorial;
  }
  std::vector<double> rhos;
  if (model_t != nullptr) {
    rhos = order == 1 ? std::vector<double>{0.5} : solve_small(R, b);
  } else if (order == 2) {
    rhos = {0.5};
  } else if (order > 2) {
    std::vector<std::vector<double>> Rp(R.begin(), R.end() - 1);
    for (auto& row : Rp) row.pop_back();
    rhos = solve_small(Rp, std::vector<double>(b.begin(), b.end() - 1));
  }
  // x_t = (sigma_t / sigma_s0) x - h_phi_1 m0 - B_h (sum_k rho_k D1_k [+ rho_c (model_t - m0)]),
  // with D1_k = (m_k - m0) / r_k.
  std::vector<LinearTerm> terms;
  double c_m0 = -h_phi_1;
  if (sigma_t != 0) terms.emplace_back(sigma_t / sigma_s0, &x);
  for (int k = 1; k < order; ++k) {
    const double w = -B_h * rhos[static_cast<size_t>(k - 1)] / rks[static_cast<size_t>(k - 1)];
    terms.emplace_back(w, &outs[outs.size() - 1 - static_cast<size_t>(k)]);
    c_m0 -= w;
  }
  if (model_t != nullptr) {
    const double w = -B_h * rhos.back();
    terms.emplace_back(w, model_t);
    c_m0 -= w;
  }
  terms.emplace_back(c_m0, &m0);
  return lincomb(terms, reuse);
}

// History: tensors = [model outputs (newest last)..., last_sample];
// scalars = [prev_order, lower_order_nums, sigmas of the model outputs...].
template <bool bh2>
at::Tensor uni_pc(Step& st, at::Tensor x) {
  const double s = st.sigma(st.i), sn = st.sigma(st.i + 1);
  auto& T = st.state.tensors;
  auto& S = st.state.scalars;
  if (S.empty()) S = {0.0, 0.0};
  std::vector<at::Tensor> outs;
  at::Tensor last_sample;
  if (!T.empty()) {
    outs.assign(T.begin(), T.end() - 1);
    last_sample = T.back();
  }
  std::vector<double> sigs(S.begin() + 2, S.end());
  int prev_order = static_cast<int>(S[0]);
  int lower_order_nums = static_cast<int>(S[1]);

  const at::Tensor m = st.denoise(x, s);
  T.clear();  // the history is rebuilt below; dropping it lets the old buffers be reused
  if (st.opt.uni_pc_corrector && st.i > 0 && last_sample.defined())
    x = unipc_update<bh2>(last_sample, outs, sigs, s, prev_order, &m, &x);
  push_limited(outs, m, static_cast<size_t>(st.order));
  push_limited(sigs, s, static_cast<size_t>(st.order));
  int this_order = static_cast<int>(std::min<int64_t>(st.order, st.num_steps() - st.i));  // lower order at the end
  this_order = std::min(this_order, lower_order_nums + 1);                                 // warm-up
  const at::Tensor x_next = unipc_update<bh2>(x, outs, sigs, sn, this_order, nullptr, &last_sample);
  lower_order_nums = std::min(lower_order_nums + 1, st.order);

  T = outs;
  T.push_back(x);
  S = {static_cast<double>(this_order), static_cast<double>(lower_order_nums)};
  S.insert(S.end(), sigs.begin(), sigs.end());
  return x_next;
}

// ---- DEIS (Zhang & Chen 2023), tAB: epsilon extrapolated by a Lagrange polynomial in log sigma
// and integrated exactly over sigma (VE form: dx/dsigma = eps). ---------------------------------

// Integral over [rho_s, rho_t] of the Lagrange basis polynomial j (in u = log rho) on nodes u.
double deis_coeff(const std::vector<double>& u, size_t j, double rho_s, double rho_t) {
  // Coefficients of L_j(u) = prod_{k != j} (u - u_k) / (u_j - u_k), lowest power first.
  std::vector<double> c = {1.0};
  for (size_t k = 0; k < u.size(); ++k) {
    if (k == j) continue;
    std::vector<double> next(c.size() + 1, 0.0);
    const double inv = 1.0 / (u[j] - u[k]);
    for (size_t p = 0; p < c.size(); ++p) {
      next[p + 1] += c[p] * inv;
      next[p] -= c[p] * u[k] * inv;
    }
    c = next;
  }
  // Antiderivative in rho of u^m (u = log rho) is rho * sum_l (-1)^(m-l) m!/l! u^l.
  auto F = [&](double rho) {
    if (rho == 0) return 0.0;  // the limit of rho * (log rho)^l at 0
    const double lu = std::log(rho);
    double total = 0;
    for (size_t m = 0; m < c.size(); ++m) {
      double term = 0, m_fact_over_l_fact = 1;  // m! / l!, built from l = m downwards
      for (size_t l = m + 1; l-- > 0;) {
        term += ((m - l) % 2 ? -1.0 : 1.0) * m_fact_over_l_fact * std::pow(lu, static_cast<double>(l));
        m_fact_over_l_fact *= static_cast<double>(l);
      }
      total += c[m] * term;
    }
    return rho * total;
  };
  return F(rho_t) - F(rho_s);
}

// History: tensors = previous eps (newest last), scalars = their sigmas.
at::Tensor deis(Step& st, at::Tensor x) {
  const double s = st.sigma(st.i), sn = st.sigma(st.i + 1);
  const at::Tensor den = st.denoise(x, s);
  auto& eps = st.state.tensors;
  auto& sigs = st.state.scalars;
  push_limited(eps, to_d(x, s, den), static_cast<size_t>(st.order));
  push_limited(sigs, s, static_cast<size_t>(st.order));
  // Warm-up from the history available. Like diffusers' lower_order_final, schedules of fewer
  // than 15 steps end with a first-order step (second order before it); a step to sigma 0
  // is always first order (the plain denoised estimate: nothing to extrapolate toward).
  int order = static_cast<int>(eps.size());
  const int64_t remaining = st.num_steps() - st.i;
  const bool short_schedule = st.num_steps() < 15;
  if (remaining == 1 && (short_schedule || sn == 0)) order = 1;
  if (remaining == 2 && short_schedule) order = std::min(order, 2);
  std::vector<double> u;
  for (int k = 0; k < order; ++k) u.push_back(std::log(sigs[sigs.size() - 1 - static_cast<size_t>(k)]));
  for (int k = 0; k < order; ++k)
    x = x + eps[eps.size() - 1 - static_cast<size_t>(k)] * (order == 1 ? sn - s : deis_coeff(u, static_cast<size_t>(k), s, sn));
  return x;
}

// ---- iPNDM: Adams-Bashforth on the derivative with fixed coefficients (Zhang & Chen 2023) ----

at::Tensor ipndm(Step& st, at::Tensor x) {
  const double s = st.sigma(st.i), sn = st.sigma(st.i + 1);
  const at::Tensor den = st.denoise(x, s);
  auto& ds = st.state.tensors;  // newest last
  push_limited(ds, to_d(x, s, den), static_cast<size_t>(st.order));
  const size_t n = ds.size();
  at::Tensor d;
  if (n == 1) d = ds[0];
  else if (n == 2) d = (ds[1] * 3 - ds[0]) / 2;
  else if (n == 3) d = (ds[2] * 23 - ds[1] * 16 + ds[0] * 5) / 12;
  else d = (ds[n - 1] * 55 - ds[n - 2] * 59 + ds[n - 3] * 37 - ds[n - 4] * 9) / 24;
  return x + d * (sn - s);
}

// ---- LCM (Luo et al. 2023): jump to the consistency model's x0, re-noise to sigma_next ----

at::Tensor lcm(Step& st, at::Tensor x) {
  const double s = st.sigma(st.i), sn = st.sigma(st.i + 1);
  x = st.denoise(x, s);
  if (sn > 0) x = x + st.noise(x, s, sn) * sn;
  return x;
}

constexpr double kNoEta = 0.0;

}  // namespace

at::Tensor Step::denoise(const at::Tensor& x, double s) {
  at::Tensor out;
  try {
    out = model.denoise(x, s);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    // Nested, so bindings can re-raise the original (for example a Python exception) as the cause.
    std::throw_with_nested(Error(ErrorCode::model, "model failed at step " + std::to_string(i) + " (sigma " +
                                                       std::to_string(s) + "): " + e.what()));
  }
  check(out.defined(), ErrorCode::model, "model returned no tensor at step " + std::to_string(i));
  check(out.sizes() == x.sizes(), ErrorCode::model,
        "model output shape " + c10::str(out.sizes()) + " does not match x " + c10::str(x.sizes()));
  check(out.scalar_type() == x.scalar_type(), ErrorCode::model,
        std::string("model output dtype ") + c10::toString(out.scalar_type()) + " does not match x " +
            c10::toString(x.scalar_type()));
  check(out.device() == x.device(), ErrorCode::model,
        "model output device " + out.device().str() + " does not match x " + x.device().str());
  if (!denoised.defined()) denoised = out;
  return out;
}

at::Tensor Step::noise(const at::Tensor& like, double s, double s_next) {
  const int64_t draw = draws++;
  if (opt.noise) {
    at::Tensor n = opt.noise(like, i, draw, s, s_next);
    check(n.defined() && n.sizes() == like.sizes(), ErrorCode::invalid_argument,
          "noise function returned shape " + (n.defined() ? c10::str(n.sizes()) : std::string("(none)")) +
              ", expected " + c10::str(like.sizes()));
    return n.to(like.options());
  }
  check(draw < 15, ErrorCode::internal, "more than 15 noise draws in one step");
  NoiseAddress a = opt.noise_address;
  a.stream = static_cast<uint32_t>(i * 16 + draw + 1);
  return randn(like.sizes(), a, like.options());
}

const std::vector<SolverInfo>& solvers() {
  static const std::vector<SolverInfo> table = {
      {"euler", euler, kNoEta, 0},
      {"euler_ancestral", euler_ancestral, 1.0, 0},
      {"heun", heun, kNoEta, 0},
      {"dpm_2", dpm_2, kNoEta, 0},
      {"dpm_2_ancestral", dpm_2_ancestral, 1.0, 0},
      {"lms", lms, kNoEta, 4},
      {"dpmpp_2s_ancestral", dpmpp_2s_ancestral, 1.0, 0},
      {"dpmpp_sde", dpmpp_sde, 1.0, 0},
      {"dpmpp_2m", dpmpp_2m, kNoEta, 0},
      {"dpmpp_2m_sde", dpmpp_2m_sde<false>, 1.0, 0},
      {"dpmpp_2m_sde_heun", dpmpp_2m_sde<true>, 1.0, 0},
      {"dpmpp_3m_sde", dpmpp_3m_sde, 1.0, 0},
      {"uni_pc", uni_pc<false>, kNoEta, 3},
      {"uni_pc_bh2", uni_pc<true>, kNoEta, 3},
      {"deis", deis, kNoEta, 3},
      {"ipndm", ipndm, kNoEta, 4},
      // DDIM with eta is the ancestral Euler step (the DDIM posterior variance in VE form is
      // the ancestral sigma_up); its eta defaults to 0, the deterministic DDIM.
      {"ddim", euler_ancestral, 0.0, 0},
      {"lcm", lcm, kNoEta, 0},
  };
  return table;
}

const SolverInfo& find_solver(const std::string& name) {
  for (const auto& s : solvers())
    if (name == s.name) return s;
  std::string known;
  for (const auto& s : solvers()) known += std::string(known.empty() ? "" : ", ") + s.name;
  throw Error(ErrorCode::not_found, "unknown sampler '" + name + "'; known samplers: " + known);
}

}  // namespace drb::detail
