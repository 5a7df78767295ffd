// Fused linear combination out = sum_k c_k * t_k: one pass over memory instead of one per
// term, which is what makes a solver step memory-bound at the roofline. Coefficients are host
// doubles (no device sync). CPU float32/float64 contiguous tensors of one shape take the fused
// loop; anything else (other devices, dtypes, layouts) falls back to ATen ops.
#pragma once
#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <utility>

#include "derrumbe/core/error.hpp"

namespace drb {

using LinearTerm = std::pair<double, const at::Tensor*>;

// `reuse`, when given, is written in place if nothing else references it (its tensor and
// storage have one owner) and it matches the result; this spares the allocation, whose page
// faults on a fresh multi-megabyte buffer cost more than the arithmetic. It may be one of the
// terms (each element is read before it is written).
DRB_EXPORT at::Tensor lincomb(std::initializer_list<LinearTerm> terms, at::Tensor* reuse = nullptr);
DRB_EXPORT at::Tensor lincomb(const std::vector<LinearTerm>& terms, at::Tensor* reuse = nullptr);

}  // namespace drb
