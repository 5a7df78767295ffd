// libFuzzer target: the safetensors header parser on arbitrary bytes. A drb::Error is the
// expected answer to bad input; a crash, a sanitizer report, a hang or any other exception
// is a finding. Built and run by run_fuzz.sh (CTest: fuzz_safetensors).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "derrumbe/models/safetensors_header.hpp"

namespace {

void parse_and_check(const uint8_t* data, size_t size) {
  try {
    const drb::models::SafetensorsHeader h = drb::models::parse_safetensors_header(data, size, size, "fuzz");
    // What a reader relies on: entries sorted, inside the data section, covering it exactly.
    uint64_t covered = 0;
    for (const auto& e : h.entries) {
      if (e.begin != covered || e.end < e.begin || h.data_start + e.end > size ||
          drb::models::safetensors_dtype_size(e.dtype) == 0 || e.shape.size() > 16)
        __builtin_trap();
      covered = e.end;
    }
    if (h.data_start + covered != size) __builtin_trap();
  } catch (const drb::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // 1. The input is the whole file, length field included.
  parse_and_check(data, size);
  // 2. The input is "header JSON \0 data": the length field is made to match, so mutations of
  //    the JSON text reach the semantic checks instead of failing on the length.
  const void* nul = std::memchr(data, 0, size);
  const size_t n = nul ? static_cast<size_t>(static_cast<const uint8_t*>(nul) - data) : size;
  std::vector<uint8_t> file(8 + size - (nul ? 1 : 0));
  for (int i = 0; i < 8; ++i) file[i] = static_cast<uint8_t>(static_cast<uint64_t>(n) >> (8 * i));
  if (n) std::memcpy(file.data() + 8, data, n);
  if (nul && size > n + 1) std::memcpy(file.data() + 8 + n, data + n + 1, size - n - 1);
  parse_and_check(file.data(), file.size());
  return 0;
}
