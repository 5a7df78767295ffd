// Images and frame sequences as compositors and editors open them: PNG (8- and 16-bit),
// OpenEXR, MP4 (H.264). Torch-free: frames are plain float buffers; the pipeline converts
// tensors at its boundary. Every writer writes to a temporary name in the target's folder
// and renames it, so a killed process never leaves a finished-looking half file.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "derrumbe/core/error.hpp"

namespace drb::io {

// An image: `channels` interleaved float values per pixel, rows top to bottom.
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<float> pixels;  // height * width * channels

  float& at(int y, int x, int c) { return pixels[(static_cast<size_t>(y) * width + x) * channels + c]; }
  float at(int y, int x, int c) const { return pixels[(static_cast<size_t>(y) * width + x) * channels + c]; }
  DRB_EXPORT static Image blank(int width, int height, int channels);
};

// Writes through `write(tmp_path)` to a temporary file beside `path`, then renames it to `path`
// (atomic on POSIX). The temporary is removed when `write` throws. Errors are ErrorCode::io
// naming `path`.
DRB_EXPORT void write_atomically(const std::string& path, const std::function<void(const std::string& tmp)>& write);
// The same for a directory: `write(tmp_dir)` fills a fresh temporary directory beside `path`,
// which is then renamed to `path` (an existing `path` is replaced).
DRB_EXPORT void write_directory_atomically(const std::string& path,
                                           const std::function<void(const std::string& tmp_dir)>& write);

// A path pattern with one printf-style integer field (%04d, %d) or a run of '#' (#### = %04d)
// for the frame number.
DRB_EXPORT std::string frame_path(const std::string& pattern, int64_t frame);

// PNG: 1 (grey), 3 (RGB) or 4 (RGBA) channels of values in [0, 1] (clamped), stored as they are
// (no colour conversion), quantized to 8 or 16 bits.
DRB_EXPORT void write_png(const Image& image, const std::string& path, int bit_depth = 8);
// Reads an 8- or 16-bit PNG (grey, grey+alpha, RGB, RGBA, palette) as values in [0, 1].
DRB_EXPORT Image read_png(const std::string& path);

// The frames of a plate: an image sequence (PNG or EXR, `source` a pattern, frames
// first_frame ... first_frame + count - 1) or a video file (.mp4, .mov, .mkv, ...: its first
// `count` frames). Returned as RGB in [0, 1] display-referred sRGB (EXR plates are taken as
// linear ACEScg by default, converted with linear_to_srgb). A missing frame, a truncated or
// undecodable video, a video with fewer than `count` frames, or frames of different sizes are
// errors naming the file.
DRB_EXPORT std::vector<Image> read_plate(const std::string& source, int64_t first_frame, int64_t count);

}  // namespace drb::io
