// The noise warp's passes as one function per pixel (or latent pixel), for the device path:
// a GPU runs each as a kernel over all indices, and the same functions run on the CPU in the
// tests, where they must reproduce the optimized CPU warper bit for bit. The grouping between
// the passes (pushes by target, pulls by source, both in increasing index order) is done with
// tensor operations by the caller (noise_warp_device.cpp). No ATen here: CUDA code includes it.
#pragma once
#include "noise_warp_math.hpp"

namespace drb::guide::detail {

inline constexpr float kMinWeight = 1e-20f, kMaxWeight = 1e20f;  // clamps of the density weight

enum class WarpPass { push, pull, copies, targets };

DRB_HOST_DEVICE float clamp_weight(float w) { return w < kMinWeight ? kMinWeight : (w > kMaxWeight ? kMaxWeight : w); }

// Raw pointers into the state and scratch (device or host memory). P pixels, C channels.
struct WarpBuffers {
  float *z, *w, *d;                   // state [P, C], [P], [P, 2]; copies update z and w in place
  float *z_next, *w_next, *d_next;    // the next frame's state
  float* land;                        // [P, 2] each push's offset at its target
  int32_t* target;                    // [P] push target or -1
  int32_t* source;                    // [P] pull source or -1
  const int32_t *push_start, *push_list;  // pushes grouped by target: push_list[push_start[q] ...)
  const int32_t *pull_start, *pull_list;  // pulls grouped by source: pull_list[pull_start[s] ...)
};

// Pass 1, pixel p: its push target and landing offset.
DRB_HOST_DEVICE void push_pass(const WarpFrame& f, const WarpBuffers& b, int64_t p) {
  b.target[p] = static_cast<int32_t>(push_target(f, p % f.width, p / f.width, b.d, b.land + 2 * p));
}

// Pass 2, target q: its pull source (and the pulled value's new offset) when it got no push.
DRB_HOST_DEVICE void pull_pass(const WarpFrame& f, const WarpBuffers& b, int64_t q) {
  b.source[q] = b.push_start[q + 1] > b.push_start[q]
                    ? -1
                    : static_cast<int32_t>(pull_source(f, q % f.width, q / f.width, b.d, b.d_next + 2 * q));
}

// Pass 3, source s with pulls: its n uses (push first, then pulls in target order) get
// re-Gaussianized copies and weight w / n; pulled copies go to their targets, the push copy
// and its weight replace the source's state in place.
DRB_HOST_DEVICE void copies_pass(const WarpFrame& f, const WarpBuffers& b, int64_t s) {
  const int32_t k0 = b.pull_start[s], k1 = b.pull_start[s + 1];
  if (k1 == k0) return;
  const int64_t C = f.channels, G = channel_groups(C), first_pull = b.target[s] >= 0 ? 1 : 0;
  const int64_t n = first_pull + (k1 - k0);
  const float share = b.w[s] / static_cast<float>(n);
  for (int32_t k = k0; k < k1; ++k) b.w_next[b.pull_list[k]] = clamp_weight(share);
  float* zs = b.z + s * C;
  if (n == 1) {
    float* out = b.z_next + int64_t{b.pull_list[k0]} * C;
    for (int64_t c = 0; c < C; ++c) out[c] = zs[c];
    return;
  }
  b.w[s] = share;
  const float inv_sqrt_n = 1.0f / sqrtf(static_cast<float>(n));
  for (int64_t g = 0; g < G; ++g) {
    float tail[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t i = n - 1; i >= 0; --i) {
      float* out = i < first_pull ? zs : b.z_next + int64_t{b.pull_list[k0 + i - first_pull]} * C;
      Normal4 e{{0.0f, 0.0f, 0.0f, 0.0f}};
      if (i > 0) e = normal4_at(f.seed, kStreamCopy, f.frame, copy_index(G, s, i, g));
      const float own = i > 0 ? own_weight(i) : 0.0f, h = i > 0 ? helmert_weight(i) : 0.0f;
      for (int64_t j = 0; j < 4 && 4 * g + j < C; ++j) {
        const int64_t c = 4 * g + j;
        out[c] = copy_value(zs[c], inv_sqrt_n, tail[j], e.v[j], own);
        tail[j] += h * e.v[j];
      }
    }
  }
}

// Pass 4, target q: merged pushes (sources in increasing order), a single push kept as is,
// fresh noise when nothing arrived (pulled targets were written by pass 3).
DRB_HOST_DEVICE void targets_pass(const WarpFrame& f, const WarpBuffers& b, int64_t q) {
  const int64_t C = f.channels, G = channel_groups(C);
  float* zq = b.z_next + q * C;
  const int32_t k0 = b.push_start[q], k1 = b.push_start[q + 1];
  if (k1 == k0) {
    if (b.source[q] >= 0) return;
    for (int64_t g = 0; g < G; ++g) {
      const Normal4 e = normal4_at(f.seed, kStreamFresh, f.frame, fresh_index(G, q, g));
      for (int64_t j = 0; j < 4 && 4 * g + j < C; ++j) zq[4 * g + j] = e.v[j];
    }
    b.w_next[q] = 1.0f;
    b.d_next[2 * q] = b.d_next[2 * q + 1] = 0.0f;
    return;
  }
  if (k1 - k0 == 1) {
    const int64_t s = b.push_list[k0];
    for (int64_t c = 0; c < C; ++c) zq[c] = b.z[s * C + c];
    b.w_next[q] = clamp_weight(b.w[s]);
    b.d_next[2 * q] = b.land[2 * s];
    b.d_next[2 * q + 1] = b.land[2 * s + 1];
    return;
  }
  float w1 = 0, w2 = 0, dx = 0, dy = 0;
  for (int32_t k = k0; k < k1; ++k) {
    const int64_t s = b.push_list[k];
    const float ws = b.w[s];
    for (int64_t c = 0; c < C; ++c) zq[c] = k == k0 ? ws * b.z[s * C + c] : zq[c] + ws * b.z[s * C + c];
    w1 += ws;
    w2 += ws * ws;
    dx += ws * b.land[2 * s];
    dy += ws * b.land[2 * s + 1];
  }
  const float norm = 1.0f / sqrtf(w2);
  for (int64_t c = 0; c < C; ++c) zq[c] *= norm;
  b.w_next[q] = clamp_weight(w1);
  b.d_next[2 * q] = dx / w1;
  b.d_next[2 * q + 1] = dy / w1;
}

// Read-out of latent pixel l into out [C, h, w]: sum of w z over its block (row-major) divided
// by sqrt(sum w^2), then degradation g with the frame's fresh draws.
DRB_HOST_DEVICE void read_out_pass(const WarpFrame& f, const float* z, const float* w, int64_t factor, int64_t latent_w,
                                   int64_t plane, float degradation, float* out, int64_t l) {
  const int64_t C = f.channels, G = channel_groups(C), ly = l / latent_w, lx = l % latent_w;
  const int64_t width = latent_w * factor;
  float w2 = 0;
  for (int64_t c = 0; c < C; ++c) out[c * plane + l] = 0.0f;
  for (int64_t y = ly * factor; y < (ly + 1) * factor; ++y)
    for (int64_t p = y * width + lx * factor; p < y * width + (lx + 1) * factor; ++p) {
      for (int64_t c = 0; c < C; ++c) out[c * plane + l] += w[p] * z[p * C + c];
      w2 += w[p] * w[p];
    }
  const float norm = 1.0f / sqrtf(w2);
  for (int64_t g = 0; g < G; ++g) {
    Normal4 e{{0.0f, 0.0f, 0.0f, 0.0f}};
    if (degradation > 0) e = normal4_at(f.seed, kStreamDegrade, f.frame, degrade_index(G, l, g));
    for (int64_t j = 0; j < 4 && 4 * g + j < C; ++j) {
      float& o = out[(4 * g + j) * plane + l];
      o *= norm;
      if (degradation > 0) o = degrade(o, e.v[j], degradation);
    }
  }
}

// One pass over n indices / the read-out, as CUDA kernels on the default stream
// (noise_warp_cuda.cu; without CUDA kernels in the build they throw ErrorCode::unsupported).
void launch_warp_pass_cuda(WarpPass pass, const WarpFrame& f, const WarpBuffers& b, int64_t n);
void launch_read_out_cuda(const WarpFrame& f, const float* z, const float* w, int64_t factor, int64_t latent_w,
                          int64_t plane, float degradation, float* out);

}  // namespace drb::guide::detail
