#include "derrumbe/core/rng.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "derrumbe/core/philox.hpp"

namespace drb {

#if defined(DRB_WITH_CUDA_KERNELS)
namespace detail {
// rng_cuda.cu: fills `out` (device memory) exactly as fill_cpu below does.
void philox_normal_cuda(void* out, bool is_double, int64_t items, int64_t per_item,
                        uint64_t seed, uint32_t stream, int64_t first_item, int64_t first_index);
}
#endif

namespace {

template <typename T>
void fill_cpu(T* out, int64_t items, int64_t per_item, const NoiseAddress& a, int64_t first_index) {
  at::parallel_for(0, items * per_item, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t item = i / per_item;
      const int64_t e = i - item * per_item;
      out[i] = static_cast<T>(philox::normal_at(a.seed, a.stream, static_cast<uint32_t>(a.batch_offset + item),
                                                static_cast<uint64_t>(first_index + e)));
    }
  });
}

}  // namespace

at::Tensor randn(at::IntArrayRef shape, const NoiseAddress& address, const at::TensorOptions& options) {
  check_arg(!shape.empty(), "randn: shape must have at least one dimension (the batch)");
  for (auto s : shape) check_arg(s >= 0, "randn: negative dimension in shape " + c10::str(shape));
  check_arg(address.batch_offset >= 0 && address.frame_offset >= 0,
            "randn: batch_offset and frame_offset must be non-negative");
  const auto dtype = options.dtype().toScalarType();
  check_arg(at::isFloatingType(dtype), std::string("randn: dtype must be floating point, got ") + c10::toString(dtype));
  const bool is_double = dtype == at::kDouble;
  const auto gen_dtype = is_double ? at::kDouble : at::kFloat;

  // Generate in frame-major order [B, F, C, H, W] for video tensors, then view as [B, C, F, H, W].
  std::vector<int64_t> gen_shape(shape.begin(), shape.end());
  const bool video = shape.size() == 5;
  if (video) std::swap(gen_shape[1], gen_shape[2]);
  const int64_t items = gen_shape[0];
  int64_t per_item = 1;
  for (size_t d = 1; d < gen_shape.size(); ++d) per_item *= gen_shape[d];
  const int64_t first_index = video ? address.frame_offset * (per_item / std::max<int64_t>(gen_shape[1], 1)) : 0;
  check_arg(video || address.frame_offset == 0, "randn: frame_offset applies only to 5-D [B, C, F, H, W] tensors");

  at::Tensor out;
  const auto device = options.device();
#if defined(DRB_WITH_CUDA_KERNELS)
  if (device.is_cuda()) {
    out = at::empty(gen_shape, at::TensorOptions().dtype(gen_dtype).device(device));
    if (out.numel() > 0)
      detail::philox_normal_cuda(out.data_ptr(), is_double, items, per_item, address.seed, address.stream,
                                 address.batch_offset, first_index);
  }
#endif
  if (!out.defined()) {
    out = at::empty(gen_shape, at::TensorOptions().dtype(gen_dtype));
    if (is_double)
      fill_cpu(out.data_ptr<double>(), items, per_item, address, first_index);
    else
      fill_cpu(out.data_ptr<float>(), items, per_item, address, first_index);
  }
  if (video) out = out.permute({0, 2, 1, 3, 4}).contiguous();
  return out.to(options.device(device).dtype(dtype));
}

}  // namespace drb
