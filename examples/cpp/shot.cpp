// A whole shot from C++: a scene in, an MP4, an EXR sequence and a sidecar out, with progress.
// Usage: shot [scene.json] [output folder]
#include <cstdio>

#include "derrumbe/derrumbe.hpp"

int main(int argc, char** argv) {
  drb::pipeline::ShotParams params;
  params.source = argc > 1 ? argv[1] : DRB_EXAMPLES_DIR "/scenes/small.json";
  params.output.dir = argc > 2 ? argv[2] : "shot";
  params.frames = 9, params.width = 96, params.height = 64, params.steps = 6;
  try {
    drb::pipeline::Shot shot(params);  // the default model, loaded on first use
    const drb::pipeline::ShotResult result = shot.render([](const drb::pipeline::ShotProgress& p) {
      std::printf("%-13s step %lld/%lld\n", p.stage.c_str(), static_cast<long long>(p.step),
                  static_cast<long long>(p.num_steps));
      return false;  // true cancels
    });
    for (const drb::pipeline::StageRecord& stage : result.stages)
      std::printf("%-13s %s %.2f s\n", stage.name.c_str(), stage.reused ? "cached" : "ran   ", stage.seconds);
    std::printf("%lld frames -> %s\n", static_cast<long long>(result.frames.size(0)), result.sidecar.c_str());
  } catch (const drb::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
