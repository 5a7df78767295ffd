// Writes the fuzz targets' seed corpora from real files, made by derrumbe's own writers:
//   make_seeds EXAMPLES_DIR OUT_DIR
// OUT/scene: the example scenes and their cameras as written by to_json; OUT/gltf and OUT/track:
// a short simulation of examples/scenes/small.json exported as .glb and as a track cache;
// OUT/png, OUT/exr, OUT/video: a few rendered frames as 8- and 16-bit PNGs of 1 to 4 channels,
// EXR files (AOVs alone, and a beauty with AOVs and Cryptomatte), and an MP4.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <xtensor/xview.hpp>

#include "derrumbe/io/exr.hpp"
#include "derrumbe/io/video.hpp"
#include "derrumbe/physics/io.hpp"
#include "derrumbe/physics/scene.hpp"
#include "derrumbe/physics/simulate.hpp"
#include "derrumbe/render/aovs.hpp"
#include "derrumbe/render/output.hpp"

namespace fs = std::filesystem;
using namespace drb;

namespace {

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The AOVs' shading as a display image with `channels` channels (grey, grey + alpha, RGB, RGBA).
io::Image image_of(const render::AOVs& a, int channels) {
  io::Image image = io::Image::blank(a.width, a.height, channels);
  for (int y = 0; y < a.height; ++y)
    for (int x = 0; x < a.width; ++x)
      for (int c = 0; c < channels; ++c)
        image.at(y, x, c) = c == 3 || (channels == 2 && c == 1) ? a.alpha(y, x)
                                                                : std::min(1.0f, a.rgb(y, x, std::min(c, 2)));
  return image;
}

// The first `pieces` pieces over the first `frames` frames: a real track, small enough that the
// fuzzers run thousands of inputs a second.
physics::SimTrack trimmed(const physics::SimTrack& full, size_t pieces, size_t frames) {
  physics::SimTrack t = full;
  t.pieces.resize(pieces);
  t.poses = xt::view(full.poses, xt::range(0, frames), xt::range(0, pieces), xt::all());
  std::erase_if(t.breaks, [&](const physics::BreakEvent& b) {
    return size_t(b.frame) >= frames || b.piece_a >= pieces || b.piece_b >= pieces;
  });
  t.dust.resize(frames);
  for (auto& d : t.dust) d = xt::view(xt::xtensor<float, 2>(d), xt::range(0, std::min<size_t>(d.shape(0), 4)), xt::all());
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: make_seeds EXAMPLES_DIR OUT_DIR\n";
    return 2;
  }
  const fs::path examples = argv[1], out = argv[2];
  for (const char* target : {"scene", "gltf", "track", "png", "exr", "video"}) fs::create_directories(out / target);

  for (const auto& entry : fs::directory_iterator(examples / "scenes")) {
    const std::string text = read_text(entry.path());
    const physics::Scene scene = physics::parse_scene(text);
    const std::string name = entry.path().stem().string();
    write_text(out / "scene" / (name + ".json"), text);
    write_text(out / "scene" / (name + "_written.json"), physics::to_json(scene));
    for (size_t c = 0; c < scene.cameras.size(); ++c)
      write_text(out / "scene" / (name + "_camera" + std::to_string(c) + ".json"),
                 physics::camera_to_json(scene.cameras[c]));
  }

  physics::Scene scene = physics::load_scene((examples / "scenes" / "small.json").string());
  scene.duration = 0.25;
  const physics::SimTrack track = physics::simulate(scene);
  const physics::SimTrack small = trimmed(track, 3, 3);
  small.validate();
  physics::export_glb(small, (out / "gltf" / "small.glb").string());
  physics::save_track(small, (out / "track" / "small.drbtrack").string());

  render::RenderOptions options;
  options.width = 16, options.height = 12;
  const auto frames = render::render_sequence(track, scene.cameras.at(0), 0, 4, options);
  for (int channels = 1; channels <= 4; ++channels)
    for (const int bits : {8, 16})
      io::write_png(image_of(frames[2], channels), (out / "png" / ("c" + std::to_string(channels) + "_" +
                                                                    std::to_string(bits) + ".png")).string(),
                    bits);
  render::write_png(frames[2], "flow", (out / "png" / "flow.png").string());
  render::write_exr(frames[2], (out / "exr" / "aovs.exr").string());
  render::write_exr(frames[2], (out / "exr" / "aovs_raw.exr").string(), false);
  const io::Image beauty = image_of(frames[2], 3);
  std::vector<std::string> names;
  for (int64_t p = 0; p < track.num_pieces(); ++p) names.push_back(physics::piece_name(uint32_t(p)));
  io::ExrFrame frame;
  frame.beauty = &beauty;
  frame.aovs = &frames[2];
  frame.piece_names = &names;
  io::write_exr_frame(frame, (out / "exr" / "beauty_aovs.exr").string());
  std::vector<io::Image> video;
  for (const auto& f : frames) video.push_back(image_of(f, 3));
  io::write_mp4(video, (out / "video" / "frames.mp4").string());
  std::cout << "seeds written to " << out << "\n";
  return 0;
}
