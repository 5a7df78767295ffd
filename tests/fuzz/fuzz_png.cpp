// libFuzzer target: the PNG reader (read_png, and read_plate on a PNG sequence) on arbitrary bytes.
// Property: an image it returns has 1 to 4 channels, width x height x channels values, all in [0, 1].
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = drb_fuzz::write_input(data, size, "_7.png");
  drb_fuzz::expect_result_or_error([&] { drb_fuzz::require_image(drb::io::read_png(path), 1, 4); });
  drb_fuzz::expect_result_or_error([&] {
    const auto frames = drb::io::read_plate(path.substr(0, path.size() - 6) + "_%d.png", 7, 1);
    drb_fuzz::require(frames.size() == 1);
    drb_fuzz::require_image(frames[0], 3, 3);
  });
  return 0;
}
