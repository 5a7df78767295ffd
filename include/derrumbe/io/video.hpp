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

// frames: RGB (3 channels) display-referred sRGB in [0, 1], all the same even width and height
// (else invalid_argument, as are no frames, fps outside (0, 1000], crf outside [0, 51] and an
// unknown preset). Quantized to 8 bits, converted to yuv420p with the BT.709 matrix (limited
// range) and written through write_atomically. A build without libx264 is ErrorCode::unsupported.
DRB_EXPORT void write_mp4(const std::vector<Image>& frames, const std::string& path, const VideoOptions& options = {});

// Decodes the first `max_frames` frames (0: all) of a video file as RGB in [0, 1], using the
// stream's matrix and range tags (untagged: BT.709 from 720 lines up, else BT.601). A missing file
// is file_not_found. A file that cannot be opened or decoded, whose demuxer reports a packet cut
// short or a read error, or that ends before its stream's declared frame count is
// ErrorCode::parse naming it.
DRB_EXPORT std::vector<Image> read_video(const std::string& path, int64_t max_frames = 0);

}  // namespace drb::io
