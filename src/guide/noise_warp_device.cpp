#include "noise_warp_device.hpp"

namespace drb::guide::detail {

namespace {

WarpFrame frame_of(int64_t h, int64_t w, const NoiseWarpOptions& o, const at::Tensor& fwd, const at::Tensor& bwd,
                   int64_t frame) {
  return WarpFrame{h,
                   w,
                   o.channels,
                   fwd.defined() ? fwd.data_ptr<float>() : nullptr,
                   bwd.defined() ? bwd.data_ptr<float>() : nullptr,
                   static_cast<float>(o.consistency_tolerance),
                   o.seed,
                   static_cast<uint32_t>(frame)};
}

void run_pass(WarpPass pass, const WarpFrame& f, const WarpBuffers& b, int64_t n, bool cuda) {
  if (cuda) return launch_warp_pass_cuda(pass, f, b, n);
  // The CPU runs the device passes one index after the other (the reference for the kernels).
  for (int64_t i = 0; i < n; ++i) switch (pass) {
      case WarpPass::push: push_pass(f, b, i); break;
      case WarpPass::pull: pull_pass(f, b, i); break;
      case WarpPass::copies: copies_pass(f, b, i); break;
      case WarpPass::targets: targets_pass(f, b, i); break;
    }
}

// Items i with key[i] >= 0 grouped by key (< n), increasing i within a key (a stable sort):
// {start [n + 1], list}, int32 on key's device.
std::pair<at::Tensor, at::Tensor> group_by_key(const at::Tensor& key, int64_t n) {
  const at::Tensor k = key.to(at::kLong);
  const at::Tensor valid = k >= 0;
  const at::Tensor counts = at::bincount(k.masked_select(valid), {}, n);
  const at::Tensor start = at::cat({at::zeros({1}, counts.options()), counts.cumsum(0)}).to(at::kInt);
  // Invalid items sort last (key n); the stable sort keeps increasing i within a key.
  const at::Tensor order = std::get<1>(at::sort(at::where(valid, k, n), /*stable=*/true, 0, false));
  const int64_t n_valid = valid.sum().item<int64_t>();
  return {start.contiguous(), order.narrow(0, 0, n_valid).to(at::kInt).contiguous()};
}

}  // namespace

TensorWarper::TensorWarper(int64_t latent_height, int64_t latent_width, const NoiseWarpOptions& options,
                           c10::Device device)
    : opt_(options), latent_h_(latent_height), latent_w_(latent_width), device_(device) {
  // The options and sizes were checked by NoiseWarper, which makes this warper for a device.
  check_arg(device.is_cpu() || device.is_cuda(), "noise warp: device must be cpu or cuda, got " + device.str());
#ifndef DRB_WITH_CUDA_KERNELS
  check(!device.is_cuda(), ErrorCode::unsupported, "noise warp: this build has no CUDA kernels");
#endif
  height_ = latent_height * options.factor;
  width_ = latent_width * options.factor;
  const int64_t P = height_ * width_, C = options.channels;
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  z_ = at::empty({P, C}, f32);
  w_ = at::ones({P}, f32);
  d_ = at::zeros({P, 2}, f32);
  // Frame 0: fresh noise everywhere, as the targets pass writes it where nothing arrived.
  const at::Tensor none = at::full({P + 1}, 0, f32.dtype(at::kInt));
  const at::Tensor minus = at::full({P}, -1, f32.dtype(at::kInt));
  const WarpBuffers b{nullptr, nullptr, nullptr, z_.data_ptr<float>(), w_.data_ptr<float>(), d_.data_ptr<float>(),
                      nullptr, nullptr, minus.data_ptr<int32_t>(), none.data_ptr<int32_t>(), nullptr,
                      nullptr, nullptr};
  run_pass(WarpPass::targets, frame_of(height_, width_, opt_, {}, {}, 0), b, P, device.is_cuda());
}

void TensorWarper::step(const at::Tensor& forward, const at::Tensor& backward) {
  const auto flow = [&](const at::Tensor& t, const char* name) {
    check_arg(t.dim() == 3 && t.size(0) == 2 && t.size(1) == height_ && t.size(2) == width_,
              std::string("noise warp: ") + name + " flow must be [2, " + std::to_string(height_) + ", " +
                  std::to_string(width_) + "] (the grid), got " + c10::str(t.sizes()));
    const at::Tensor out = t.to(device_, at::kFloat).contiguous();
    check_arg(at::isfinite(out).all().item<bool>(), std::string("noise warp: ") + name + " flow has NaN or inf values");
    return out;
  };
  const at::Tensor fwd = flow(forward, "forward");
  const at::Tensor bwd = backward.defined() ? flow(backward, "backward") : at::Tensor();
  const int64_t P = height_ * width_;
  const bool cuda = device_.is_cuda();
  const WarpFrame f = frame_of(height_, width_, opt_, fwd, bwd, frame_ + 1);
  const auto opts = z_.options();
  at::Tensor z_next = at::empty_like(z_), w_next = at::empty_like(w_), d_next = at::empty_like(d_);
  at::Tensor land = at::empty({P, 2}, opts), target = at::empty({P}, opts.dtype(at::kInt));
  at::Tensor source = at::empty({P}, opts.dtype(at::kInt));
  WarpBuffers b{z_.data_ptr<float>(),    w_.data_ptr<float>(),    d_.data_ptr<float>(),
                z_next.data_ptr<float>(), w_next.data_ptr<float>(), d_next.data_ptr<float>(),
                land.data_ptr<float>(),   target.data_ptr<int32_t>(), source.data_ptr<int32_t>(),
                nullptr,                  nullptr,                  nullptr,
                nullptr};
  run_pass(WarpPass::push, f, b, P, cuda);
  const auto [push_start, push_list] = group_by_key(target, P);
  b.push_start = push_start.data_ptr<int32_t>();
  b.push_list = push_list.data_ptr<int32_t>();
  run_pass(WarpPass::pull, f, b, P, cuda);
  const auto [pull_start, pull_list] = group_by_key(source, P);
  b.pull_start = pull_start.data_ptr<int32_t>();
  b.pull_list = pull_list.data_ptr<int32_t>();
  run_pass(WarpPass::copies, f, b, P, cuda);
  run_pass(WarpPass::targets, f, b, P, cuda);
  z_ = z_next;
  w_ = w_next;
  d_ = d_next;
  ++frame_;
}

at::Tensor TensorWarper::latent() const {
  const int64_t plane = latent_h_ * latent_w_, C = opt_.channels;
  at::Tensor out = at::empty({C, latent_h_, latent_w_}, z_.options());
  const WarpFrame f = frame_of(height_, width_, opt_, {}, {}, frame_);
  const auto g = static_cast<float>(opt_.degradation);
  if (device_.is_cuda()) {
    launch_read_out_cuda(f, z_.data_ptr<float>(), w_.data_ptr<float>(), opt_.factor, latent_w_, plane, g,
                         out.data_ptr<float>());
  } else {
    for (int64_t l = 0; l < plane; ++l)
      read_out_pass(f, z_.data_ptr<float>(), w_.data_ptr<float>(), opt_.factor, latent_w_, plane, g,
                    out.data_ptr<float>(), l);
  }
  return out;
}

at::Tensor TensorWarper::grid_noise() const {
  return z_.view({height_, width_, opt_.channels}).permute({2, 0, 1}).contiguous();
}

#ifndef DRB_WITH_CUDA_KERNELS
void launch_warp_pass_cuda(WarpPass, const WarpFrame&, const WarpBuffers&, int64_t) {
  throw Error(ErrorCode::unsupported, "noise warp: this build has no CUDA kernels");
}
void launch_read_out_cuda(const WarpFrame&, const float*, const float*, int64_t, int64_t, int64_t, float, float*) {
  throw Error(ErrorCode::unsupported, "noise warp: this build has no CUDA kernels");
}
#endif

}  // namespace drb::guide::detail
