#include "derrumbe/core/lincomb.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <array>

namespace drb {

namespace {

constexpr size_t kMaxTerms = 8;

template <typename T, size_t K>
void fused(T* out, const std::array<const T*, kMaxTerms>& p, const std::array<T, kMaxTerms>& c, int64_t n) {
  at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T acc = c[0] * p[0][i];
      for (size_t k = 1; k < K; ++k) acc += c[k] * p[k][i];
      out[i] = acc;
    }
  });
}

template <typename T, size_t... K>
void dispatch(size_t k, T* out, const std::array<const T*, kMaxTerms>& p, const std::array<T, kMaxTerms>& c, int64_t n,
              std::index_sequence<K...>) {
  ((k == K + 1 ? fused<T, K + 1>(out, p, c, n) : void()), ...);
}

template <typename T>
at::Tensor run_fused(const std::vector<LinearTerm>& terms, at::Tensor out) {
  std::array<const T*, kMaxTerms> p{};
  std::array<T, kMaxTerms> c{};
  for (size_t k = 0; k < terms.size(); ++k) {
    p[k] = terms[k].second->template const_data_ptr<T>();
    c[k] = static_cast<T>(terms[k].first);
  }
  dispatch<T>(terms.size(), out.template mutable_data_ptr<T>(), p, c, out.numel(),
              std::make_index_sequence<kMaxTerms>{});
  return out;
}

}  // namespace

at::Tensor lincomb(const std::vector<LinearTerm>& terms, at::Tensor* reuse) {
  check(!terms.empty(), ErrorCode::internal, "lincomb: no terms");
  const at::Tensor& first = *terms[0].second;
  bool fusable = terms.size() <= kMaxTerms && first.device().is_cpu() &&
                 (first.scalar_type() == at::kFloat || first.scalar_type() == at::kDouble);
  for (const auto& [c, t] : terms)
    fusable = fusable && t->is_contiguous() && t->scalar_type() == first.scalar_type() && t->sizes() == first.sizes() &&
              t->device() == first.device();
  if (fusable) {
    const bool reusable = reuse != nullptr && reuse->defined() && reuse->use_count() == 1 &&
                          reuse->storage().use_count() == 1 && reuse->is_contiguous() &&
                          reuse->sizes() == first.sizes() && reuse->scalar_type() == first.scalar_type() &&
                          reuse->device() == first.device();
    at::Tensor out = reusable ? *reuse : at::empty_like(first, at::MemoryFormat::Contiguous);
    return first.scalar_type() == at::kFloat ? run_fused<float>(terms, std::move(out))
                                             : run_fused<double>(terms, std::move(out));
  }
  at::Tensor out = first * terms[0].first;
  for (size_t k = 1; k < terms.size(); ++k) out.add_(*terms[k].second, terms[k].first);
  return out;
}

at::Tensor lincomb(std::initializer_list<LinearTerm> terms, at::Tensor* reuse) {
  return lincomb(std::vector<LinearTerm>(terms), reuse);
}

}  // namespace drb
