#include "derrumbe/guide/noise_warp.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "noise_warp_math.hpp"

namespace drb::guide {

using detail::WarpFrame;

namespace {

constexpr int64_t kMaxGridPixels = int64_t{1} << detail::kCopyBits;  // copy indices fit in 24 bits
// Weights halve on every split; clamping keeps long expansions from underflowing to 0.
constexpr float kMinWeight = 1e-20f, kMaxWeight = 1e20f;

// body(y) for every grid row, rows split between the threads.
template <typename F>
void parallel_rows(int64_t rows, const F& body) {
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t y = begin; y < end; ++y) body(y);
  });
}

// Counts per key -> CSR start offsets, then the items listed per key in increasing order
// (serial integer passes: cheap, and the order makes every sum independent of the threads).
void group_by_key(const std::vector<int32_t>& key, std::vector<int32_t>& start, std::vector<int32_t>& list) {
  const size_t n = key.size();
  start.assign(n + 1, 0);
  for (size_t p = 0; p < n; ++p)
    if (key[p] >= 0) ++start[static_cast<size_t>(key[p]) + 1];
  for (size_t q = 0; q < n; ++q) start[q + 1] += start[q];
  list.resize(static_cast<size_t>(start[n]));
  std::vector<int32_t> cursor(start.begin(), start.end() - 1);
  for (size_t p = 0; p < n; ++p)
    if (key[p] >= 0) list[static_cast<size_t>(cursor[static_cast<size_t>(key[p])]++)] = static_cast<int32_t>(p);
}

at::Tensor checked_flow(const at::Tensor& flow, const char* name, int64_t height, int64_t width) {
  check_arg(flow.defined(), std::string("noise warp: ") + name + " flow is undefined");
  check_arg(flow.dim() == 3 && flow.size(0) == 2 && flow.size(1) == height && flow.size(2) == width,
            std::string("noise warp: ") + name + " flow must be [2, " + std::to_string(height) + ", " +
                std::to_string(width) + "] (the grid), got " + c10::str(flow.sizes()));
  check_arg(at::isFloatingType(flow.scalar_type()),
            std::string("noise warp: ") + name + " flow must be floating point, got " + c10::toString(flow.scalar_type()));
  const at::Tensor f = flow.to(at::kCPU, at::kFloat).contiguous();
  check_arg(at::isfinite(f).all().item<bool>(), std::string("noise warp: ") + name + " flow has NaN or inf values");
  return f;
}

}  // namespace

NoiseWarper::NoiseWarper(int64_t latent_height, int64_t latent_width, NoiseWarpOptions options)
    : opt_(options), latent_h_(latent_height), latent_w_(latent_width) {
  check_arg(opt_.channels >= 1 && opt_.channels <= 1024,
            "noise warp: channels must be in [1, 1024], got " + std::to_string(opt_.channels));
  check_arg(opt_.factor >= 1 && opt_.factor <= 32, "noise warp: factor must be in [1, 32], got " + std::to_string(opt_.factor));
  check_arg(latent_height >= 1 && latent_width >= 1, "noise warp: latent size must be positive, got " +
                                                          std::to_string(latent_height) + "x" + std::to_string(latent_width));
  check_arg(std::isfinite(opt_.degradation) && opt_.degradation >= 0 && opt_.degradation <= 1,
            "noise warp: degradation must be in [0, 1], got " + std::to_string(opt_.degradation));
  check_arg(std::isfinite(opt_.consistency_tolerance) && opt_.consistency_tolerance > 0,
            "noise warp: consistency_tolerance must be finite and > 0, got " + std::to_string(opt_.consistency_tolerance));
  check_arg(latent_height <= kMaxGridPixels && latent_width <= kMaxGridPixels &&
                latent_height * latent_width * opt_.factor * opt_.factor < kMaxGridPixels,
            "noise warp: grid of " + std::to_string(latent_height * opt_.factor) + "x" +
                std::to_string(latent_width * opt_.factor) + " pixels is too large (at most 2^24 pixels)");
  height_ = latent_height * opt_.factor;
  width_ = latent_width * opt_.factor;
  const int64_t P = height_ * width_, C = opt_.channels;
  z_.resize(static_cast<size_t>(P * C));
  w_.assign(static_cast<size_t>(P), 1.0f);
  d_.assign(static_cast<size_t>(2 * P), 0.0f);
  const WarpFrame f{height_, width_, C, nullptr, nullptr, 0.0f, opt_.seed, 0};
  parallel_rows(height_, [&](int64_t y) {
    for (int64_t p = y * width_; p < (y + 1) * width_; ++p) detail::fresh_noise(f, p, z_.data() + p * C);
  });
}

void NoiseWarper::step(const at::Tensor& forward, const at::Tensor& backward) {
  const at::Tensor fwd = checked_flow(forward, "forward", height_, width_);
  const at::Tensor bwd = backward.defined() ? checked_flow(backward, "backward", height_, width_) : at::Tensor();
  const int64_t P = height_ * width_, C = opt_.channels;
  const WarpFrame f{height_,
                    width_,
                    C,
                    fwd.data_ptr<float>(),
                    bwd.defined() ? bwd.data_ptr<float>() : nullptr,
                    static_cast<float>(opt_.consistency_tolerance),
                    opt_.seed,
                    static_cast<uint32_t>(frame_ + 1)};
  const auto sz = static_cast<size_t>(P);
  target_.resize(sz);
  source_.resize(sz);
  push_copy_.resize(sz * static_cast<size_t>(C));
  z_next_.resize(sz * static_cast<size_t>(C));
  w_next_.resize(sz);
  d_next_.resize(2 * sz);

  // Contraction candidates: where each pixel's value lands; pushes grouped by target.
  parallel_rows(height_, [&](int64_t y) {
    for (int64_t x = 0; x < width_; ++x)
      target_[y * width_ + x] = static_cast<int32_t>(detail::push_target(f, x, y, d_.data()));
  });
  group_by_key(target_, push_start_, push_list_);
  // Expansion candidates for the targets that received no push; pulls grouped by source, in
  // target order (a pull's copy index is its position there).
  parallel_rows(height_, [&](int64_t y) {
    for (int64_t q = y * width_; q < (y + 1) * width_; ++q)
      source_[q] = push_start_[q + 1] == push_start_[q] ? static_cast<int32_t>(detail::pull_source(f, q - y * width_, y)) : -1;
  });
  group_by_key(source_, pull_start_, pull_list_);
  const auto copies = [&](int64_t s) { return int64_t{target_[s] >= 0} + pull_start_[s + 1] - pull_start_[s]; };

  // Sources used n >= 2 times: draw their copies once (copy i in increasing i needs the suffix
  // sums of the Helmert terms), write the push copy (i = 0) to push_copy_ and the pulled copies
  // straight to their targets.
  at::parallel_for(0, height_, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> e, tail(static_cast<size_t>(C));
    for (int64_t s = begin * width_; s < end * width_; ++s) {
      const int64_t n = copies(s);
      if (n < 2) continue;
      e.assign(static_cast<size_t>(n * C), 0.0f);
      std::fill(tail.begin(), tail.end(), 0.0f);
      for (int64_t j = 1; j < n; ++j) {
        detail::copy_draws(f, s, j, e.data() + j * C);
        const float h = detail::helmert_weight(j);
        for (int64_t c = 0; c < C; ++c) tail[c] += h * e[j * C + c];
      }
      const float inv_sqrt_n = 1.0f / std::sqrt(static_cast<float>(n));
      const float* zs = z_.data() + s * C;
      const int64_t first_pull = int64_t{target_[s] >= 0};
      for (int64_t i = 0; i < n; ++i) {
        float* out = i < first_pull ? push_copy_.data() + s * C
                                    : z_next_.data() + int64_t{pull_list_[pull_start_[s] + i - first_pull]} * C;
        if (i > 0) {  // the suffix sum over j > i drops term i
          const float h = detail::helmert_weight(i);
          for (int64_t c = 0; c < C; ++c) tail[c] -= h * e[i * C + c];
        }
        for (int64_t c = 0; c < C; ++c) out[c] = detail::copy_value(zs[c], inv_sqrt_n, tail[c], e[i * C + c], i);
      }
    }
  });

  // Every target: merged pushes, else its pulled copy, else fresh noise.
  const float* fu = f.forward;
  const float* fv = f.forward + P;
  parallel_rows(height_, [&](int64_t y) {
    for (int64_t x = 0; x < width_; ++x) {
      const int64_t q = y * width_ + x;
      float* zq = z_next_.data() + q * C;
      if (push_start_[q + 1] > push_start_[q]) {
        std::fill(zq, zq + C, 0.0f);
        float w1 = 0, w2 = 0, dx = 0, dy = 0;
        for (int32_t k = push_start_[q]; k < push_start_[q + 1]; ++k) {
          const int64_t s = push_list_[k], n = copies(s);
          const float ws = w_[s] / static_cast<float>(n);
          const float* zs = (n == 1 ? z_.data() : push_copy_.data()) + s * C;
          for (int64_t c = 0; c < C; ++c) zq[c] += ws * zs[c];
          w1 += ws;
          w2 += ws * ws;
          dx += ws * (static_cast<float>(s % width_) + d_[2 * s] + fu[s] - static_cast<float>(x));
          dy += ws * (static_cast<float>(s / width_) + d_[2 * s + 1] + fv[s] - static_cast<float>(y));
        }
        const float norm = 1.0f / std::sqrt(w2);
        for (int64_t c = 0; c < C; ++c) zq[c] *= norm;
        w_next_[q] = std::clamp(w1, kMinWeight, kMaxWeight);
        d_next_[2 * q] = dx / w1;
        d_next_[2 * q + 1] = dy / w1;
      } else if (const int64_t s = source_[q]; s >= 0) {
        const int64_t n = copies(s);
        if (n == 1) std::copy(z_.data() + s * C, z_.data() + (s + 1) * C, zq);  // n >= 2: written above
        w_next_[q] = std::clamp(w_[s] / static_cast<float>(n), kMinWeight, kMaxWeight);
        float px, py;
        detail::pull_position(f, x, y, px, py);
        d_next_[2 * q] = static_cast<float>(s % width_) + d_[2 * s] - px;
        d_next_[2 * q + 1] = static_cast<float>(s / width_) + d_[2 * s + 1] - py;
      } else {
        detail::fresh_noise(f, q, zq);
        w_next_[q] = 1.0f;
        d_next_[2 * q] = d_next_[2 * q + 1] = 0.0f;
      }
    }
  });
  z_.swap(z_next_);
  w_.swap(w_next_);
  d_.swap(d_next_);
  ++frame_;
}

at::Tensor NoiseWarper::latent() const {
  const int64_t C = opt_.channels, k = opt_.factor;
  at::Tensor out = at::empty({C, latent_h_, latent_w_}, at::kFloat);
  float* o = out.data_ptr<float>();
  const int64_t plane = latent_h_ * latent_w_;
  const auto g = static_cast<float>(opt_.degradation);
  const WarpFrame f{latent_h_, latent_w_, C, nullptr, nullptr, 0.0f, opt_.seed, static_cast<uint32_t>(frame_)};
  at::parallel_for(0, plane, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(static_cast<size_t>(C)), fresh(static_cast<size_t>(C));
    for (int64_t l = begin; l < end; ++l) {
      const int64_t ly = l / latent_w_, lx = l % latent_w_;
      std::fill(acc.begin(), acc.end(), 0.0f);
      float w2 = 0;
      for (int64_t y = ly * k; y < (ly + 1) * k; ++y)
        for (int64_t x = lx * k; x < (lx + 1) * k; ++x) {
          const int64_t p = y * width_ + x;
          const float w = w_[p];
          const float* zp = z_.data() + p * C;
          for (int64_t c = 0; c < C; ++c) acc[c] += w * zp[c];
          w2 += w * w;
        }
      const float norm = 1.0f / std::sqrt(w2);
      for (int64_t c = 0; c < C; ++c) acc[c] *= norm;
      if (g > 0) {
        detail::normals(f.seed, detail::kStreamDegrade, f.frame, C,
                        [&](int64_t grp) { return static_cast<uint64_t>(l * detail::channel_groups(C) + grp); },
                        fresh.data());
        for (int64_t c = 0; c < C; ++c) acc[c] = detail::degrade(acc[c], fresh[c], g);
      }
      for (int64_t c = 0; c < C; ++c) o[c * plane + l] = acc[c];
    }
  });
  return out;
}

at::Tensor NoiseWarper::grid_noise() const {
  const int64_t C = opt_.channels;
  return at::from_blob(const_cast<float*>(z_.data()), {height_, width_, C}, at::kFloat).permute({2, 0, 1}).clone();
}

TemporalReduction temporal_reduction_from_name(const std::string& name) {
  if (name == "pick") return TemporalReduction::pick;
  if (name == "blend") return TemporalReduction::blend;
  if (name == "blend_normalized") return TemporalReduction::blend_normalized;
  throw Error(ErrorCode::invalid_argument,
              "unknown temporal reduction '" + name + "' (known: pick, blend, blend_normalized)");
}

at::Tensor reduce_frames(const at::Tensor& noise, int64_t temporal_factor, TemporalReduction reduction) {
  check_arg(noise.defined() && noise.dim() == 4 && noise.numel() > 0,
            "reduce_frames: noise must be a non-empty [C, F, h, w] tensor, got " +
                (noise.defined() ? c10::str(noise.sizes()) : std::string("undefined")));
  check_arg(temporal_factor >= 1, "reduce_frames: temporal_factor must be >= 1, got " + std::to_string(temporal_factor));
  const int64_t frames = noise.size(1);
  check_arg((frames - 1) % temporal_factor == 0, "reduce_frames: " + std::to_string(frames) +
                                                     " frames do not make 1 + k * " + std::to_string(temporal_factor));
  if (temporal_factor == 1) return noise;
  std::vector<at::Tensor> out{noise.select(1, 0)};
  for (int64_t start = 1; start < frames; start += temporal_factor) {
    const at::Tensor group = noise.narrow(1, start, temporal_factor);
    if (reduction == TemporalReduction::pick) {
      out.push_back(group.select(1, temporal_factor - 1));
      continue;
    }
    at::Tensor mean = group.mean(1);
    if (reduction == TemporalReduction::blend_normalized) mean = mean / mean.square().mean().sqrt().clamp_min(1e-12);
    out.push_back(mean);
  }
  return at::stack(out, 1);
}

at::Tensor warp_noise(const at::Tensor& forward, const at::Tensor& backward, const NoiseWarpOptions& options,
                      int64_t latent_height, int64_t latent_width, int64_t temporal_factor,
                      TemporalReduction reduction) {
  check_arg(forward.defined() && forward.dim() == 4 && forward.size(1) == 2 && forward.size(0) >= 1,
            "warp_noise: forward flow must be [F, 2, H, W], got " +
                (forward.defined() ? c10::str(forward.sizes()) : std::string("undefined")));
  check_arg(!backward.defined() || backward.sizes() == forward.sizes(),
            "warp_noise: backward flow " + (backward.defined() ? c10::str(backward.sizes()) : std::string()) +
                " must have the forward flow's shape " + c10::str(forward.sizes()));
  check_arg(at::isFloatingType(forward.scalar_type()) && (!backward.defined() || at::isFloatingType(backward.scalar_type())),
            "warp_noise: flows must be floating point");
  const int64_t frames = forward.size(0);
  check_arg(options.factor >= 1, "warp_noise: factor must be >= 1, got " + std::to_string(options.factor));
  const int64_t h = latent_height > 0 ? latent_height : forward.size(2) / options.factor;
  const int64_t w = latent_width > 0 ? latent_width : forward.size(3) / options.factor;
  check_arg(temporal_factor >= 1 && (frames - 1) % temporal_factor == 0,
            "warp_noise: " + std::to_string(frames) + " frames do not make 1 + k * " + std::to_string(temporal_factor));
  NoiseWarper warper(h, w, options);
  // Flows on the grid: bilinear resize, vectors scaled by the size ratio.
  const auto to_grid = [&](const at::Tensor& flow) {
    at::Tensor fl = flow.to(at::kCPU, at::kFloat);
    if (fl.size(2) == warper.grid_height() && fl.size(3) == warper.grid_width()) return fl;
    const double sy = static_cast<double>(warper.grid_height()) / static_cast<double>(fl.size(2));
    const double sx = static_cast<double>(warper.grid_width()) / static_cast<double>(fl.size(3));
    fl = at::upsample_bilinear2d(fl, {warper.grid_height(), warper.grid_width()}, false);
    return at::stack({fl.select(1, 0) * sx, fl.select(1, 1) * sy}, 1);
  };
  const at::Tensor fwd = to_grid(forward);
  const at::Tensor bwd = backward.defined() ? to_grid(backward) : at::Tensor();
  std::vector<at::Tensor> latents{warper.latent()};
  for (int64_t t = 1; t < frames; ++t) {
    warper.step(fwd[t - 1], bwd.defined() ? bwd[t] : at::Tensor());
    latents.push_back(warper.latent());
  }
  return reduce_frames(at::stack(latents, 1), temporal_factor, reduction).unsqueeze(0);
}

}  // namespace drb::guide
