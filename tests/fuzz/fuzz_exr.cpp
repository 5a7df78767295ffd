// libFuzzer target: the EXR readers (read_exr of AOVs, read_plate on an EXR sequence) on
// arbitrary bytes. Properties: AOVs it returns have every buffer at the frame's size; plate
// frames are RGB with values in [0, 1].
#include "derrumbe/io/image.hpp"
#include "derrumbe/render/output.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = drb_fuzz::write_input(data, size, "_3.exr");
  drb_fuzz::expect_result_or_error([&] {
    const drb::render::AOVs a = drb::render::read_exr(path);
    const size_t h = size_t(a.height), w = size_t(a.width);
    drb_fuzz::require(a.width > 0 && a.height > 0);
    drb_fuzz::require(a.depth.shape(0) == h && a.depth.shape(1) == w && a.piece_id.shape(0) == h &&
                      a.normal.shape(1) == w && a.alpha.shape(0) == h && a.rgb.shape(2) == 3 &&
                      a.flow_forward.shape(0) == h && a.flow_backward.shape(1) == w && a.occlusion.shape(0) == h &&
                      a.dust.shape(1) == w);
  });
  drb_fuzz::expect_result_or_error([&] {
    const auto frames = drb::io::read_plate(path.substr(0, path.size() - 6) + "_%d.exr", 3, 1);
    drb_fuzz::require(frames.size() == 1 && frames[0].channels == 3 && frames[0].width > 0 && frames[0].height > 0);
    drb_fuzz::require(frames[0].pixels.size() == size_t(frames[0].width) * size_t(frames[0].height) * 3);
    for (const float v : frames[0].pixels) drb_fuzz::require(v >= 0.0f && v <= 1.0f);
  });
  return 0;
}
