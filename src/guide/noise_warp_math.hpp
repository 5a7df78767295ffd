// Per-pixel math of the noise warp (noise_warp.hpp), shared by the CPU loops and the CUDA
// kernels. Pixel p = y * W + x; flows are planar (u plane then v plane); noise is
// pixel-major [P, C]; offsets d are [P, 2].
#pragma once
#include <cmath>
#include <cstdint>

#include "derrumbe/core/host_device.hpp"
#include "derrumbe/core/philox.hpp"

namespace drb::guide::detail {

// Philox streams (purposes); the frame is the item, the element index the rest.
inline constexpr uint32_t kStreamFresh = 0x57A9F000u;    // index p * C + c
inline constexpr uint32_t kStreamCopy = 0x57A9F001u;     // index ((s * C + c) << 24) | copy
inline constexpr uint32_t kStreamDegrade = 0x57A9F002u;  // index latent pixel * C + c
inline constexpr int kCopyBits = 24;

struct WarpFrame {
  int64_t height, width, channels;
  const float* forward;    // [2, H, W]
  const float* backward;   // [2, H, W] or null
  float tolerance;         // forward/backward agreement, grid pixels
  uint64_t seed;
  uint32_t frame;          // index of the frame being produced
};

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

// Where pixel p's value lands (contraction candidate), -1 if it leaves the frame or is occluded.
DRB_HOST_DEVICE int64_t push_target(const WarpFrame& f, int64_t p, const float* offset) {
  const int64_t plane = f.height * f.width;
  const float x = static_cast<float>(p % f.width) + offset[2 * p] + f.forward[p];
  const float y = static_cast<float>(p / f.width) + offset[2 * p + 1] + f.forward[plane + p];
  const int64_t q = nearest_pixel(f, x, y);
  return q >= 0 && consistent(f, p, q) ? q : -1;
}

// Where target q comes from (expansion candidate): q + B(q), or q - F(q) without B.
DRB_HOST_DEVICE void pull_position(const WarpFrame& f, int64_t q, float& x, float& y) {
  const int64_t plane = f.height * f.width;
  x = static_cast<float>(q % f.width);
  y = static_cast<float>(q / f.width);
  if (f.backward != nullptr) {
    x += f.backward[q];
    y += f.backward[plane + q];
  } else {
    x -= f.forward[q];
    y -= f.forward[plane + q];
  }
}

DRB_HOST_DEVICE int64_t pull_source(const WarpFrame& f, int64_t q) {
  float x, y;
  pull_position(f, q, x, y);
  const int64_t p = nearest_pixel(f, x, y);
  return p >= 0 && consistent(f, p, q) ? p : -1;
}

DRB_HOST_DEVICE float fresh_noise(const WarpFrame& f, int64_t p, int64_t c) {
  return static_cast<float>(
      philox::normal_at(f.seed, kStreamFresh, f.frame, static_cast<uint64_t>(p * f.channels + c)));
}

// e_i of copy i of source s.
DRB_HOST_DEVICE float copy_draw(const WarpFrame& f, int64_t s, int64_t c, int64_t i) {
  const uint64_t index = (static_cast<uint64_t>(s * f.channels + c) << kCopyBits) | static_cast<uint64_t>(i);
  return static_cast<float>(philox::normal_at(f.seed, kStreamCopy, f.frame, index));
}

// mean(e) over the n copies of source s, channel c (only needed for n >= 2).
DRB_HOST_DEVICE float copy_mean(const WarpFrame& f, int64_t s, int64_t c, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += copy_draw(f, s, c, i);
  return sum / static_cast<float>(n);
}

// Copy i of n of value z (re-Gaussianization): the n copies are independent N(0, 1) and sum
// to sqrt(n) z.
DRB_HOST_DEVICE float copy_value(const WarpFrame& f, float z, float mean, int64_t s, int64_t c, int64_t i, int64_t n) {
  if (n == 1) return z;
  return z / sqrtf(static_cast<float>(n)) + copy_draw(f, s, c, i) - mean;
}

// Degradation: ((1 - g) z + g e) / sqrt((1 - g)^2 + g^2), still N(0, 1).
DRB_HOST_DEVICE float degrade(float z, float e, float g) {
  return ((1.0f - g) * z + g * e) / sqrtf((1.0f - g) * (1.0f - g) + g * g);
}

}  // namespace drb::guide::detail
