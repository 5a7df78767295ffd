// Per-pixel math of the noise warp (noise_warp.hpp), shared by the CPU loops and the CUDA
// kernels. Pixel p = y * W + x; flows are planar (u plane then v plane); noise is
// pixel-major [P, C]; offsets d are [P, 2].
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "derrumbe/core/host_device.hpp"
#include "derrumbe/core/philox.hpp"

namespace drb::guide::detail {

// Philox streams (purposes); the frame is the item. One Philox block gives the normals of 4
// channels (a channel group g = c / 4 of G = ceil(C / 4) groups): normal4_at, Box-Muller on
// words (0, 1) for channels 4 g, 4 g + 1 and on words (2, 3) for 4 g + 2, 4 g + 3. Index
// functions below (fresh_index, copy_index, degrade_index).
inline constexpr uint32_t kStreamFresh = 0x57A9F000u;    // index p * G + g
inline constexpr uint32_t kStreamCopy = 0x57A9F001u;     // index ((s * G + g) << 24) | j, draw j >= 1
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

// Float <-> bits, for the logarithm's exponent split (memcpy: defined behaviour, and a plain
// register move on CPU and GPU).
DRB_HOST_DEVICE uint32_t float_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}
DRB_HOST_DEVICE float bits_float(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

// The Box-Muller functions below are plain arithmetic and bit operations, no libm calls and
// no branches: a CPU loop over many of them vectorizes (libm's logf, sinf, cosf and sqrtf do
// not, they may set errno), and a GPU runs the same operations. Conditions are bit masks, not
// `c ? x : y`: without -fno-trapping-math the compiler may turn a conditional into a branch
// around float arithmetic, and then it neither speculates it nor vectorizes the loop.

// cond ? a : b.
DRB_HOST_DEVICE float select_float(bool cond, float a, float b) {
  const uint32_t mask = 0u - static_cast<uint32_t>(cond);
  return bits_float((float_bits(a) & mask) | (float_bits(b) & ~mask));
}
// cond ? -x : x.
DRB_HOST_DEVICE float negate_if(bool cond, float x) { return bits_float(float_bits(x) ^ (static_cast<uint32_t>(cond) << 31)); }

// ln x for a normal float x > 0 (Cephes logf): x = m 2^e with m in [sqrt(1/2), sqrt(2)), then
// ln x = ln m + e ln 2 with a degree-9 polynomial in m - 1. Relative error below 1e-7.
DRB_HOST_DEVICE float log_approx(float x) {
  const uint32_t bits = float_bits(x);
  int e = static_cast<int>(bits >> 23) - 126;
  float m = bits_float((bits & 0x007FFFFFu) | 0x3F000000u);  // [1/2, 1)
  // Below sqrt(1/2) use 2 m and e - 1.
  const bool low = m < 0.70710678118654752440f;
  e -= static_cast<int>(low);
  m = m + select_float(low, m, 0.0f) - 1.0f;  // m - 1 in [sqrt(1/2) - 1, sqrt(2) - 1)
  const float z = m * m;
  float p = 7.0376836292e-2f;
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  const auto fe = static_cast<float>(e);
  // ln 2 = 0.693359375 - 2.12194440e-4 in two parts, the first exact in few bits.
  return m + (p * m * z - 2.12194440e-4f * fe - 0.5f * z) + 0.693359375f * fe;
}

// sqrt x for x >= 0: the classic bit-level estimate of 1 / sqrt(x) (error below 3.5 %) and
// three Newton steps (each squares the error: 1.8e-3, 5e-6, then float rounding).
DRB_HOST_DEVICE float sqrt_approx(float x) {
  float r = bits_float(0x5F3759DFu - (float_bits(x) >> 1));
  for (int k = 0; k < 3; ++k) r = r * (1.5f - 0.5f * x * r * r);
  return x * r;  // 0 for x = 0 (r stays finite)
}

// cos and sin of the angle 2 pi b / 2^32 for a 32-bit uniform b. The nearest quarter turn q
// comes from the top bits; the rest, as a signed 32-bit count, is an angle t in [-pi/4, pi/4)
// where Cephes' sinf/cosf polynomials are accurate to about 1e-7; then (cos t, sin t) is
// turned by q quarter turns.
DRB_HOST_DEVICE void cos_sin_turns(uint32_t b, float& c, float& s) {
  const uint32_t q = (b + 0x20000000u) >> 30;
  const float t = static_cast<float>(static_cast<int32_t>(b - (q << 30))) * (6.2831853071795864769f / 4294967296.0f);
  const float z = t * t;
  const float sin_t = t + t * z * ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f);
  const float cos_t = 1.0f - 0.5f * z + z * z * ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f);
  // q = 1: (-sin, cos); q = 2: (-cos, -sin); q = 3: (sin, -cos).
  const bool odd = (q & 1u) != 0;
  c = negate_if(((q + 1u) & 2u) != 0, select_float(odd, sin_t, cos_t));
  s = negate_if((q & 2u) != 0, select_float(odd, cos_t, sin_t));
}

// Box-Muller: two N(0, 1) values from two 32-bit uniforms a, b. u1 = (a + 1) 2^-32 in (0, 1]
// (float(a) + 1 rounds to at most 2^32) so the logarithm is finite; the angle is 2 pi b / 2^32.
DRB_HOST_DEVICE void box_muller(uint32_t a, uint32_t b, float& x, float& y) {
  const float u1 = (static_cast<float>(a) + 1.0f) * (1.0f / 4294967296.0f);
  const float radius = sqrt_approx(-2.0f * log_approx(u1));
  float c, s;
  cos_sin_turns(b, c, s);
  x = radius * c;
  y = radius * s;
}

struct Normal4 {
  float v[4];
};

// Four N(0, 1) values from one Philox block: Box-Muller on words (0, 1) and (2, 3), in single
// precision (the warp is bound by these draws). The CPU computes many blocks at once with the
// same functions (normal_blocks in noise_warp.cpp), so its values are these, bit for bit (a
// GPU build that fuses multiply-adds rounds differently, by float rounding).
DRB_HOST_DEVICE Normal4 normal4_at(uint64_t seed, uint32_t stream, uint32_t item, uint64_t index) {
  const philox::U32x4 r = philox::philox4x32_10(
      philox::U32x4{{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), stream, item}},
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  Normal4 out;
  box_muller(r.v[0], r.v[1], out.v[0], out.v[1]);
  box_muller(r.v[2], r.v[3], out.v[2], out.v[3]);
  return out;
}

DRB_HOST_DEVICE int64_t channel_groups(int64_t channels) { return (channels + 3) / 4; }

// Philox block indices (see the streams above): block g of the fresh noise of pixel p, of the
// draw e_j of source s's copies, of the degradation noise of latent pixel l.
DRB_HOST_DEVICE uint64_t fresh_index(int64_t groups, int64_t p, int64_t g) { return static_cast<uint64_t>(p * groups + g); }
DRB_HOST_DEVICE uint64_t copy_index(int64_t groups, int64_t s, int64_t j, int64_t g) {
  return (static_cast<uint64_t>(s * groups + g) << kCopyBits) | static_cast<uint64_t>(j);
}
DRB_HOST_DEVICE uint64_t degrade_index(int64_t groups, int64_t l, int64_t g) { return static_cast<uint64_t>(l * groups + g); }

// The pixel nearest to (x, y), false when it lies outside the frame (or x, y are NaN).
// round(x) = floor(x + 1/2) lies in [0, W) exactly when x + 1/2 does, and there floor is
// truncation (a conversion; floorf is a libm call on baseline x86-64).
DRB_HOST_DEVICE bool nearest_pixel(const WarpFrame& f, float x, float y, int64_t& rx, int64_t& ry) {
  const float hx = x + 0.5f, hy = y + 0.5f;
  if (!(hx >= 0.0f && hy >= 0.0f && hx < static_cast<float>(f.width) && hy < static_cast<float>(f.height)))
    return false;
  rx = static_cast<int32_t>(hx);
  ry = static_cast<int32_t>(hy);
  return true;
}

// The flows agree between p (this frame) and q (next frame): F(p) + B(q) ~ 0.
DRB_HOST_DEVICE bool consistent(const WarpFrame& f, int64_t p, int64_t q) {
  if (f.backward == nullptr) return true;
  const int64_t plane = f.height * f.width;
  const float du = f.forward[p] + f.backward[q], dv = f.forward[plane + p] + f.backward[plane + q];
  return du * du + dv * dv <= f.tolerance * f.tolerance;
}

// Where pixel p = (x, y) lands, -1 if it leaves the frame: the contraction candidate, a push
// when consistent(f, p, q) too (push_target). land[0, 1] get the landing point p + d + F(p)
// minus the target pixel: the value's sub-pixel offset there (its share of the merged offset).
DRB_HOST_DEVICE int64_t push_landing(const WarpFrame& f, int64_t x, int64_t y, const float* offset, float* land) {
  const int64_t p = y * f.width + x, plane = f.height * f.width;
  const float lx = static_cast<float>(x) + offset[2 * p] + f.forward[p];
  const float ly = static_cast<float>(y) + offset[2 * p + 1] + f.forward[plane + p];
  int64_t rx, ry;
  if (!nearest_pixel(f, lx, ly, rx, ry)) return -1;
  land[0] = lx - static_cast<float>(rx);
  land[1] = ly - static_cast<float>(ry);
  return ry * f.width + rx;
}

// Where pixel p = (x, y) pushes to, -1 if it leaves the frame or is occluded.
DRB_HOST_DEVICE int64_t push_target(const WarpFrame& f, int64_t x, int64_t y, const float* offset, float* land) {
  const int64_t q = push_landing(f, x, y, offset, land);
  return q >= 0 && consistent(f, y * f.width + x, q) ? q : -1;
}

// Where target q = (x, y) comes from (expansion candidate): q + B(q), or q - F(q) without B.
DRB_HOST_DEVICE void pull_position(const WarpFrame& f, int64_t x, int64_t y, float& px, float& py) {
  const int64_t q = y * f.width + x, plane = f.height * f.width;
  const float* flow = f.backward != nullptr ? f.backward : f.forward;
  const float sign = f.backward != nullptr ? 1.0f : -1.0f;
  px = static_cast<float>(x) + sign * flow[q];
  py = static_cast<float>(y) + sign * flow[plane + q];
}

// The pixel nearest to the pull position of target q = (x, y), -1 outside the frame.
DRB_HOST_DEVICE int64_t pull_nearest(const WarpFrame& f, int64_t x, int64_t y) {
  float px, py;
  pull_position(f, x, y, px, py);
  int64_t rx, ry;
  return nearest_pixel(f, px, py, rx, ry) ? ry * f.width + rx : -1;
}

// The source target q = (x, y) pulls from, -1 if none (outside the frame or occluded).
// next_offset[0, 1] get the pulled value's new offset: source pixel + its offset - pull position.
DRB_HOST_DEVICE int64_t pull_source(const WarpFrame& f, int64_t x, int64_t y, const float* offset, float* next_offset) {
  float px, py;
  pull_position(f, x, y, px, py);
  int64_t rx, ry;
  if (!nearest_pixel(f, px, py, rx, ry)) return -1;
  const int64_t p = ry * f.width + rx;
  if (!consistent(f, p, y * f.width + x)) return -1;
  next_offset[0] = static_cast<float>(rx) + offset[2 * p] - px;
  next_offset[1] = static_cast<float>(ry) + offset[2 * p + 1] - py;
  return p;
}

// Re-Gaussianization of a value z used n >= 2 times: the paper's copies
// z / sqrt(n) + (e_i - mean(e)) with n draws. e - mean(e) is the projection of e onto the
// vectors summing to 0, which has the law of sum_j e_j h_j over the orthonormal Helmert
// contrasts h_j (j = 1 ... n - 1; h_j(i) = 1 / sqrt(j (j + 1)) for i < j, -j / sqrt(j (j + 1))
// for i = j, 0 after), so n - 1 draws give the same joint law:
//   copy i = z / sqrt(n) + sum_{j > i} e_j / sqrt(j (j + 1)) - e_i sqrt(i / (i + 1)).
// The copies are independent N(0, 1) and sum to sqrt(n) z. `tail` holds the sum over j > i
// (built from j = n - 1 down), `own` = own_weight(i) (0 for i = 0, which has no draw).
DRB_HOST_DEVICE float copy_value(float z, float inv_sqrt_n, float tail, float e_i, float own) {
  return z * inv_sqrt_n + tail - e_i * own;
}
DRB_HOST_DEVICE float own_weight(int64_t i) { return sqrtf(static_cast<float>(i) / static_cast<float>(i + 1)); }
DRB_HOST_DEVICE float helmert_weight(int64_t j) { return 1.0f / sqrtf(static_cast<float>(j * (j + 1))); }

// Degradation: ((1 - g) z + g e) / sqrt((1 - g)^2 + g^2), still N(0, 1).
DRB_HOST_DEVICE float degrade(float z, float e, float g) {
  return ((1.0f - g) * z + g * e) / sqrtf((1.0f - g) * (1.0f - g) + g * g);
}

}  // namespace drb::guide::detail
