// The torch-free half of safetensors.hpp: the header parser, compiled into the torch-free
// objects and linked alone by the fuzz target (tests/fuzz). Include safetensors.hpp instead
// unless the translation unit must stay free of ATen.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "derrumbe/core/error.hpp"

namespace drb::models {

// The header, validated, without LibTorch (the fuzz target links only this).
struct SafetensorsEntry {
  std::string name;
  std::string dtype;            // the file's name: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL F8_E4M3 F8_E5M2
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
};
struct SafetensorsHeader {
  uint64_t data_start = 0;      // 8 + header length: where the data section starts in the file
  std::vector<SafetensorsEntry> entries;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
};
// Validates everything a malicious or truncated file could get wrong: the length field
// (at most 100 MB, inside the file), JSON syntax and types, known dtypes, non-negative shapes
// whose byte count equals end - begin without overflow, offsets inside the file, no overlaps
// and no holes (the spec requires the data section to be fully covered), unique names, at
// most 1,000,000 tensors of rank <= 16. `file_size` is the whole file's size; `bytes` holds
// at least min(file_size, 8 + header length) bytes. Errors (ErrorCode::parse) name `source`.
DRB_EXPORT SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t available, uint64_t file_size,
                                                      const std::string& source);
DRB_EXPORT size_t safetensors_dtype_size(const std::string& dtype);
// F64, F32, F16, BF16: the dtypes model parameters may be stored in.
inline bool is_float_dtype(const std::string& dtype) {
  return dtype == "F64" || dtype == "F32" || dtype == "F16" || dtype == "BF16";
}  // 0 for unknown names

}  // namespace drb::models
