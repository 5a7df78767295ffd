// libFuzzer target: the scene reader (parse_scene, parse_camera) on arbitrary JSON text.
// Property: a scene it accepts writes (to_json) a document it accepts again, unchanged.
#include <string>

#include "derrumbe/physics/scene.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  drb_fuzz::expect_result_or_error([&] {
    const std::string written = drb::physics::to_json(drb::physics::parse_scene(text));
    drb_fuzz::require(drb::physics::to_json(drb::physics::parse_scene(written)) == written);
  });
  drb_fuzz::expect_result_or_error([&] {
    const std::string written = drb::physics::camera_to_json(drb::physics::parse_camera(text));
    drb_fuzz::require(drb::physics::camera_to_json(drb::physics::parse_camera(written)) == written);
  });
  return 0;
}
