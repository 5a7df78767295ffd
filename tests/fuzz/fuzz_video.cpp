// libFuzzer target: the video reader (read_video, through libav) on arbitrary bytes as an .mp4.
// Property: frames it returns are RGB, all of one size, values in [0, 1].
#include "derrumbe/io/video.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = drb_fuzz::write_input(data, size, ".mp4");
  drb_fuzz::expect_result_or_error([&] {
    const auto frames = drb::io::read_video(path, 8);
    drb_fuzz::require(frames.size() <= 8);
    for (const auto& f : frames) {
      drb_fuzz::require_image(f, 3, 3);
      drb_fuzz::require(f.width == frames[0].width && f.height == frames[0].height);
    }
  });
  return 0;
}
