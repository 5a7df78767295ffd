// libFuzzer target: the EXR readers (read_exr of AOVs, read_plate on an EXR sequence) on
// arbitrary bytes. Properties: AOVs it returns have every buffer at the frame's size; plate
// frames are RGB with values in [0, 1].
#include "derrumbe/render/output.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = drb_fuzz::write_input(data, size, "_3.exr");
  drb_fuzz::expect_result_or_error([&] {
    const drb::render::AOVs a = drb::render::read_exr(path);
    drb_fuzz::require(a.width > 0 && a.height > 0);
    const auto frame_sized = [&](const auto& buffer) {
      return buffer.shape(0) == size_t(a.height) && buffer.shape(1) == size_t(a.width);
    };
    drb_fuzz::require(frame_sized(a.depth) && frame_sized(a.piece_id) && frame_sized(a.normal) &&
                      frame_sized(a.alpha) && frame_sized(a.rgb) && frame_sized(a.dust) &&
                      frame_sized(a.flow_forward) && frame_sized(a.flow_backward) && frame_sized(a.occlusion));
    drb_fuzz::require(a.normal.shape(2) == 3 && a.rgb.shape(2) == 3 && a.flow_forward.shape(2) == 2 &&
                      a.flow_backward.shape(2) == 2);
  });
  drb_fuzz::expect_result_or_error([&] {
    const auto frames = drb::io::read_plate(path.substr(0, path.size() - 6) + "_%d.exr", 3, 1);
    drb_fuzz::require(frames.size() == 1);
    drb_fuzz::require_image(frames[0], 3, 3);
  });
  return 0;
}
