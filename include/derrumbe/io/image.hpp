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

// Writes through `write(tmp_path)` to a temporary file beside `path` (".<name>.tmp.<pid>.<n>",
// created empty before `write` runs), fsyncs it and renames it to `path` (atomic on POSIX). The
// temporary is removed and the exception rethrown when `write` throws. A missing or unwritable
// folder (it is not created) is ErrorCode::io naming `path`, as are fsync and rename failures.
DRB_EXPORT void write_atomically(const std::string& path, const std::function<void(const std::string& tmp)>& write);
// The same for a directory: `write(tmp_dir)` fills a fresh temporary directory beside `path`,
// which is then renamed to `path`. An existing `path` is replaced (an atomic exchange where the
// filesystem supports it) and the old content removed; when `write` throws it is left as it was.
DRB_EXPORT void write_directory_atomically(const std::string& path,
                                           const std::function<void(const std::string& tmp_dir)>& write);

// A path pattern with one printf-style integer field (%d, %04d, %0Nd, %Nd) or a run of '#'
// (#### = %04d) for the frame number; "%%" is a literal '%'. A pattern with no field, two
// fields or another conversion is ErrorCode::invalid_argument.
DRB_EXPORT std::string frame_path(const std::string& pattern, int64_t frame);

// PNG: 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA) channels of values in [0, 1] (clamped, NaN
// -> 0), stored as they are (no colour conversion, no colour chunks), rounded to the nearest of
// 8 or 16 bits (16-bit samples big-endian, as PNG stores them).
DRB_EXPORT void write_png(const Image& image, const std::string& path, int bit_depth = 8);
// Reads any PNG as values in [0, 1] with the file's channels: grey 1, grey+alpha 2, RGB 3, RGBA 4;
// a palette becomes RGB (RGBA with transparency), a tRNS chunk an alpha channel, 1/2/4-bit grey
// 8-bit. A missing file is file_not_found; a corrupt or truncated one ErrorCode::parse naming it.
DRB_EXPORT Image read_png(const std::string& path);

// The frames of a plate: an image sequence (PNG or EXR, `source` a pattern, frames
// first_frame ... first_frame + count - 1) or a video file (.mp4, .mov, .mkv, ...: its first
// `count` frames). Returned as RGB in [0, 1] display-referred sRGB: PNG grey is replicated and
// alpha dropped; EXR R, G, B (any pixel type) are taken as linear ACEScg, or as linear Rec.709
// when the file's chromaticities attribute says Rec.709/D65, and converted with linear_to_srgb
// (clamped). The format comes from the extension: .png/.exr (the pattern needs a frame field),
// .mp4 .mov .mkv .avi .webm .m4v videos; others are ErrorCode::unsupported. A missing frame
// (file_not_found), a truncated or undecodable video (parse), a video with fewer than `count`
// frames or frames of different sizes (invalid_argument) are errors naming the file.
DRB_EXPORT std::vector<Image> read_plate(const std::string& source, int64_t first_frame, int64_t count);

}  // namespace drb::io
