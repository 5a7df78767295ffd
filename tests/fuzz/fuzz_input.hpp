// What the fuzz targets share: the input written to a file (the readers take paths), and the
// rule that a drb::Error is the expected answer to bad input. Any other exception escapes to
// libFuzzer, which reports it as a finding, as it does crashes, sanitizer reports and hangs.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "derrumbe/core/error.hpp"
#include "derrumbe/io/image.hpp"

namespace drb_fuzz {

// Writes the input to a file of this process under /tmp ending in `suffix` (the readers choose
// the format from the extension); the same path every call, so nothing accumulates.
inline std::string write_input(const uint8_t* data, size_t size, const std::string& suffix) {
  const std::string path = "/tmp/drb_fuzz_" + std::to_string(getpid()) + suffix;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) __builtin_trap();
  if (size && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
  return path;
}

// Runs `read`; a drb::Error is a correct answer, so it is swallowed.
template <class F>
void expect_result_or_error(F&& read) {
  try {
    read();
  } catch (const drb::Error&) {
  }
}

// A property a reader promises about what it returns; a broken one is a finding.
inline void require(bool ok) {
  if (!ok) __builtin_trap();
}

// What every image reader promises (PNG, EXR plates, video frames): a positive size, a channel
// count in [channels_min, channels_max], width x height x channels values, all in [0, 1].
inline void require_image(const drb::io::Image& image, int channels_min, int channels_max) {
  require(image.width > 0 && image.height > 0 && image.channels >= channels_min && image.channels <= channels_max);
  require(image.pixels.size() == size_t(image.width) * size_t(image.height) * size_t(image.channels));
  for (const float v : image.pixels) require(v >= 0.0f && v <= 1.0f);
}

}  // namespace drb_fuzz
