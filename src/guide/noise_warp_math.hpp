// Per-pixel math of the noise warp (noise_warp.hpp), shared by the CPU loops and the CUDA
// kernels. Pixel p = y * W + x; flows are planar (u plane then v plane); noise is
// pixel-major [P, C]; offsets d are [P, 2].
#pragma once
#include <cmath>
#include <cstdint>

#include "derrumbe/core/host_device.hpp"
#include "derrumbe/core/philox.hpp"

namespace drb::guide::detail {

// Philox streams (purposes); the frame is the item. One Philox block gives the normals of 4
// channels (a channel group g = c / 4 of G = ceil(C / 4) groups).
inline constexpr uint32_t kStreamFresh = 0x57A9F000u;    // index p * G + g
inline constexpr uint32_t kStreamCopy = 0x57A9F001u;     // index ((s * G + g) << 24) | j
inline constexpr uint32_t kStreamDegrade = 0x57A9F002u;  // index latent pixel * G + g
inline constexpr int kCopyBits = 24;

struct WarpFrame {
  int64_t height, width, channels;
  const float* forward;    // [2, H, W]
  const float* backward;   // [2, H, W] or null
  float tolerance;         // forward/backward agreement, grid pixels
  uint64_t seed;
  uint32_t frame;          // index of the frame being produced
};

struct Normal4 {
  float v[4];
};

// Four N(0, 1) values from one Philox block: two Box-Muller pairs on 32-bit uniforms (u1 in
// (0, 1] so the logarithm is finite), in single precision (the warp is bound by these draws;
// CPU and GPU agree to float rounding).
DRB_HOST_DEVICE Normal4 normal4_at(uint64_t seed, uint32_t stream, uint32_t item, uint64_t index) {
  const philox::U32x4 r = philox::philox4x32_10(
      philox::U32x4{{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), stream, item}},
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  constexpr float two_pow_minus_32 = 1.0f / 4294967296.0f;
  constexpr float two_pi = 6.2831853071795864769f;
  Normal4 out;
  for (int k = 0; k < 2; ++k) {
    // (r + 1) * 2^-32 in double first: in float, r close to 2^32 would round u1 up past 1.
    const auto u1 = static_cast<float>((static_cast<double>(r.v[2 * k]) + 1.0) * (1.0 / 4294967296.0));
    const float radius = sqrtf(-2.0f * logf(u1 < 1.0f ? u1 : 1.0f));
    const float angle = two_pi * static_cast<float>(r.v[2 * k + 1]) * two_pow_minus_32;
    out.v[2 * k] = radius * cosf(angle);
    out.v[2 * k + 1] = radius * sinf(angle);
  }
  return out;
}

// C normals for one address base: block g of the channels is normal4_at(index_of(g)).
template <typename IndexOf>
DRB_HOST_DEVICE void normals(uint64_t seed, uint32_t stream, uint32_t item, int64_t channels, IndexOf index_of,
                             float* out) {
  for (int64_t g = 0; 4 * g < channels; ++g) {
    const Normal4 n = normal4_at(seed, stream, item, index_of(g));
    for (int64_t j = 0; j < 4 && 4 * g + j < channels; ++j) out[4 * g + j] = n.v[j];
  }
}

DRB_HOST_DEVICE int64_t channel_groups(int64_t channels) { return (channels + 3) / 4; }

DRB_HOST_DEVICE void fresh_noise(const WarpFrame& f, int64_t p, float* out) {
  const int64_t G = channel_groups(f.channels);
  normals(f.seed, kStreamFresh, f.frame, f.channels, [&](int64_t g) { return static_cast<uint64_t>(p * G + g); }, out);
}

// Fresh normals e_j (j = 1 ... n - 1) of the copies of source s, all channels.
DRB_HOST_DEVICE void copy_draws(const WarpFrame& f, int64_t s, int64_t j, float* out) {
  const int64_t G = channel_groups(f.channels);
  normals(f.seed, kStreamCopy, f.frame, f.channels,
          [&](int64_t g) { return (static_cast<uint64_t>(s * G + g) << kCopyBits) | static_cast<uint64_t>(j); }, out);
}

DRB_HOST_DEVICE int64_t nearest_pixel(const WarpFrame& f, float x, float y) {
  const float rx = floorf(x + 0.5f), ry = floorf(y + 0.5f);
  if (!(rx >= 0.0f && ry >= 0.0f && rx < static_cast<float>(f.width) && ry < static_cast<float>(f.height)))
    return -1;
  return static_cast<int64_t>(ry) * f.width + static_cast<int64_t>(rx);
}

// The flows agree between p (this frame) and q (next frame): F(p) + B(q) ~ 0.
DRB_HOST_DEVICE bool consistent(const WarpFrame& f, int64_t p, int64_t q) {
  if (f.backward == nullptr) return true;
  const int64_t plane = f.height * f.width;
  const float du = f.forward[p] + f.backward[q], dv = f.forward[plane + p] + f.backward[plane + q];
  return du * du + dv * dv <= f.tolerance * f.tolerance;
}

// Where pixel p = (x, y) lands (contraction candidate), -1 if it leaves the frame or is occluded.
DRB_HOST_DEVICE int64_t push_target(const WarpFrame& f, int64_t x, int64_t y, const float* offset) {
  const int64_t p = y * f.width + x, plane = f.height * f.width;
  const int64_t q = nearest_pixel(f, static_cast<float>(x) + offset[2 * p] + f.forward[p],
                                  static_cast<float>(y) + offset[2 * p + 1] + f.forward[plane + p]);
  return q >= 0 && consistent(f, p, q) ? q : -1;
}

// Where target q = (x, y) comes from (expansion candidate): q + B(q), or q - F(q) without B.
DRB_HOST_DEVICE void pull_position(const WarpFrame& f, int64_t x, int64_t y, float& px, float& py) {
  const int64_t q = y * f.width + x, plane = f.height * f.width;
  const float* flow = f.backward != nullptr ? f.backward : f.forward;
  const float sign = f.backward != nullptr ? 1.0f : -1.0f;
  px = static_cast<float>(x) + sign * flow[q];
  py = static_cast<float>(y) + sign * flow[plane + q];
}

DRB_HOST_DEVICE int64_t pull_source(const WarpFrame& f, int64_t x, int64_t y) {
  float px, py;
  pull_position(f, x, y, px, py);
  const int64_t p = nearest_pixel(f, px, py);
  return p >= 0 && consistent(f, p, y * f.width + x) ? p : -1;
}

// Re-Gaussianization of a value z used n >= 2 times: the paper's copies
// z / sqrt(n) + (e_i - mean(e)) with n draws. e - mean(e) is the projection of e onto the
// vectors summing to 0, which has the law of sum_j e_j h_j over the orthonormal Helmert
// contrasts h_j (j = 1 ... n - 1; h_j(i) = 1 / sqrt(j (j + 1)) for i < j, -j / sqrt(j (j + 1))
// for i = j, 0 after), so n - 1 draws give the same joint law:
//   copy i = z / sqrt(n) + sum_{j > i} e_j / sqrt(j (j + 1)) - e_i sqrt(i / (i + 1)).
// The copies are independent N(0, 1) and sum to sqrt(n) z. `tail` holds the sum over j > i.
DRB_HOST_DEVICE float copy_value(float z, float inv_sqrt_n, float tail, float e_i, int64_t i) {
  const float own = i > 0 ? e_i * sqrtf(static_cast<float>(i) / static_cast<float>(i + 1)) : 0.0f;
  return z * inv_sqrt_n + tail - own;
}
DRB_HOST_DEVICE float helmert_weight(int64_t j) { return 1.0f / sqrtf(static_cast<float>(j * (j + 1))); }

// Degradation: ((1 - g) z + g e) / sqrt((1 - g)^2 + g^2), still N(0, 1).
DRB_HOST_DEVICE float degrade(float z, float e, float g) {
  return ((1.0f - g) * z + g * e) / sqrtf((1.0f - g) * (1.0f - g) + g * g);
}

}  // namespace drb::guide::detail
