// MP4 review video through libavcodec/libavformat (Debian's FFmpeg): H.264 (libx264), yuv420p,
// crf 18, BT.709 matrix and primaries with the sRGB transfer tag, +faststart, as the ASWF
// encoding guidelines write it.
#pragma once
#include <string>
#include <vector>

#include "derrumbe/io/image.hpp"

namespace drb::io {

struct VideoOptions {
  double fps = 24.0;
  int crf = 18;                 // x264 constant rate factor, 0 (lossless) to 51
  std::string preset = "medium";
};

// frames: RGB (3 channels) display-referred sRGB in [0, 1], all the same even width and height.
DRB_EXPORT void write_mp4(const std::vector<Image>& frames, const std::string& path, const VideoOptions& options = {});

// Decodes the first `max_frames` frames (0: all) of a video file as RGB in [0, 1]. A file that
// cannot be opened or decoded, or that ends before its stream's declared frame count, is an
// error naming it.
DRB_EXPORT std::vector<Image> read_video(const std::string& path, int64_t max_frames = 0);

}  // namespace drb::io
