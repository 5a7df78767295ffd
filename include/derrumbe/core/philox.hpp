// Counter-based Philox4x32-10 (Salmon et al., SC'11, "Parallel random numbers: as easy as
// 1, 2, 3") and the standard normal derived from it. Every value is a pure function of its
// address (seed, stream, batch item, element index), so noise does not depend on thread
// count, batch split, chunking, device or shot length. No ATen here: CUDA kernels use it.
#pragma once
#include <cmath>
#include <cstdint>

#include "derrumbe/core/host_device.hpp"

namespace drb::philox {

struct U32x4 {
  uint32_t v[4];
};

DRB_HOST_DEVICE void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Ten rounds of Philox4x32 on counter c with key (k0, k1).
DRB_HOST_DEVICE U32x4 philox4x32_10(U32x4 c, uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(M0, c.v[0], hi0, lo0);
    mulhilo(M1, c.v[2], hi1, lo1);
    c = U32x4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
    k0 += W0;
    k1 += W1;
  }
  return c;
}

// One N(0, 1) sample for an address: Box-Muller on two 53-bit uniforms from one Philox block.
// u1 lies in (0, 1] so the logarithm is finite.
DRB_HOST_DEVICE double normal_at(uint64_t seed, uint32_t stream, uint32_t item, uint64_t index) {
  const U32x4 r = philox4x32_10(
      U32x4{{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), stream, item}},
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  constexpr double two_pow_minus_53 = 1.0 / 9007199254740992.0;
  const uint64_t a = ((static_cast<uint64_t>(r.v[0]) << 32) | r.v[1]) >> 11;
  const uint64_t b = ((static_cast<uint64_t>(r.v[2]) << 32) | r.v[3]) >> 11;
  const double u1 = (static_cast<double>(a) + 1.0) * two_pow_minus_53;
  const double u2 = static_cast<double>(b) * two_pow_minus_53;
  constexpr double two_pi = 6.283185307179586476925286766559;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(two_pi * u2);
}

}  // namespace drb::philox
