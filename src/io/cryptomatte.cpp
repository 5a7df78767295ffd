// Cryptomatte ids: MurmurHash3_x86_32 (Austin Appleby's public-domain description) and the
// Cryptomatte 1.1 uint32_to_float32 conversion.
#include <cstring>

#include "derrumbe/io/exr.hpp"

namespace drb::io {
namespace {

constexpr uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

// One 32-bit block scrambled before it is mixed into the state (shared by body and tail).
constexpr uint32_t scramble(uint32_t k) { return rotl(k * 0xcc9e2d51u, 15) * 0x1b873593u; }

// The final avalanche: every input bit affects every output bit.
constexpr uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  return h ^ (h >> 16);
}

}  // namespace

// Blocks are read little-endian, as the reference does on x86, so the hash is the same on
// every machine (and equals Python's mmh3.hash(name, signed=False)).
uint32_t murmur3_32(const std::string& data, uint32_t seed) noexcept {
  const auto* bytes = reinterpret_cast<const unsigned char*>(data.data());
  const size_t n = data.size(), blocks = n / 4;
  uint32_t h = seed;
  for (size_t i = 0; i < blocks; ++i) {
    const unsigned char* b = bytes + 4 * i;
    const uint32_t k = uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
    h = rotl(h ^ scramble(k), 13) * 5 + 0xe6546b64u;
  }
  const unsigned char* tail = bytes + 4 * blocks;
  uint32_t k = 0;
  for (size_t i = n % 4; i > 0; --i) k |= uint32_t(tail[i - 1]) << (8 * (i - 1));
  if (n % 4 != 0) h ^= scramble(k);
  return fmix32(h ^ static_cast<uint32_t>(n));
}

// Exponent 0 (zero, denormals) and 255 (inf, NaN) would not survive compositing maths, so the
// exponent is clamped to [1, 254]; sign and mantissa are kept.
float cryptomatte_id(const std::string& name) noexcept {
  const uint32_t hash = murmur3_32(name);
  uint32_t exponent = (hash >> 23) & 0xffu;
  exponent = exponent < 1 ? 1 : exponent > 254 ? 254 : exponent;
  const uint32_t bits = (hash & 0x807fffffu) | (exponent << 23);
  float id;
  std::memcpy(&id, &bits, sizeof id);
  return id;
}

}  // namespace drb::io
