// Internal: one solver step per function, k-diffusion style, with the paper's names.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "derrumbe/sample/sampler.hpp"

namespace drb::detail {

// Everything a solver step sees. Step i goes from sigma(i) to sigma(i + 1).
struct Step {
  Denoiser& model;
  const std::vector<double>& sigmas;
  int64_t i;
  const SampleOptions& opt;
  SamplerState& state;      // history lives in state.tensors / state.scalars
  double eta;               // resolved per-sampler default
  int order;                // resolved per-sampler default
  at::Tensor denoised;      // first model output of the step (set by denoise())
  int64_t draws = 0;

  int64_t num_steps() const { return static_cast<int64_t>(sigmas.size()) - 1; }
  double sigma(int64_t k) const { return sigmas[static_cast<size_t>(k)]; }
  at::Tensor denoise(const at::Tensor& x, double s);
  at::Tensor noise(const at::Tensor& like, double s, double s_next);
};

using SolverFn = at::Tensor (*)(Step&, at::Tensor x);

struct SolverInfo {
  const char* name;
  SolverFn fn;
  double default_eta;   // for samplers that take eta
  int default_order;    // for multistep samplers
};

const SolverInfo& find_solver(const std::string& name);
const std::vector<SolverInfo>& solvers();

}  // namespace drb::detail
