// SHA-256 (FIPS 180-4), for the content hashes that key the pipeline's stage cache and identify
// model files in a shot's sidecar (the same hex digest `sha256sum` and Hugging Face show).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "derrumbe/core/error.hpp"

namespace drb {

class DRB_EXPORT Sha256 {
 public:
  Sha256();
  Sha256& update(const void* data, size_t size);
  Sha256& update(std::string_view text) { return update(text.data(), text.size()); }
  // Feeds a length-prefixed field, so that ("ab", "c") and ("a", "bc") hash differently.
  Sha256& field(std::string_view text);
  // The digest as 64 lowercase hex characters; the object is then spent (call once).
  std::string hex();

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes
};

DRB_EXPORT std::string sha256_hex(std::string_view data);
// The file's SHA-256, read in chunks; a missing or unreadable file is an error naming it.
DRB_EXPORT std::string sha256_file(const std::string& path);

}  // namespace drb
