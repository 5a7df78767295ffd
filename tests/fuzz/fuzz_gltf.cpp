// libFuzzer target: the glTF importer (import_glb) on arbitrary bytes as a .glb file.
// Property: a track it returns passes SimTrack::validate.
#include <optional>

#include "derrumbe/physics/io.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = drb_fuzz::write_input(data, size, ".glb");
  std::optional<drb::physics::SimTrack> track;
  drb_fuzz::expect_result_or_error([&] { track = drb::physics::import_glb(path, 24.0); });
  if (track) track->validate();  // an Error here escapes: a finding
  return 0;
}
