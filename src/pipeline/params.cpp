// ShotParams <-> JSON, and the checks that need no model. One field list per struct serves
// both directions (core/json_fields.hpp), so a field cannot be written and forgotten when read.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

#include "../core/json_fields.hpp"
#include "derrumbe/io/exr.hpp"
#include "derrumbe/pipeline/shot.hpp"
#include "derrumbe/sample/sampler.hpp"

namespace drb::json_fields {
namespace {

using namespace drb::pipeline;

template <Is<CameraChoice> S, class V>
void fields(S& c, V&& v) {
  v("name", c.name);
  v("index", c.index);
  v("keys", c.keys);
}

template <Is<GuidanceParams> S, class V>
void fields(S& g, V&& v) {
  v("noise_warp", g.noise_warp);
  v("noise_degradation", g.noise_degradation);
  v("sdedit_strength", g.sdedit_strength);
  v("composite", g.composite);
  v("plate", g.plate);
  v("plate_first_frame", g.plate_first_frame);
  v("mask", g.mask);
  v("mask_ids", g.mask_ids);
  v("mask_dilate", g.mask_dilate);
  v("mask_feather", g.mask_feather);
  v("repaint", g.repaint);
  v("free_tail_steps", g.free_tail_steps);
  v("control", g.control);
  v("control_scale", g.control_scale);
  v("control_guidance", g.control_guidance);
  v("flow_energy", g.flow_energy);
  v("flow_energy_sigma_start", g.flow_energy_sigma_start);
  v("flow_energy_sigma_end", g.flow_energy_sigma_end);
}

template <Is<OutputParams> S, class V>
void fields(S& o, V&& v) {
  v("dir", o.dir);
  v("name", o.name);
  v("mp4", o.mp4);
  v("exr", o.exr);
  v("png", o.png);
  v("png_bits", o.png_bits);
  v("color_space", o.color_space);
  v("crf", o.crf);
}

template <Is<ShotParams> S, class V>
void fields(S& p, V&& v) {
  v("source", p.source);
  v("scene", p.scene);
  v("intensity", p.intensity);
  v("camera", p.camera);
  v("frames", p.frames);
  v("width", p.width);
  v("height", p.height);
  v("fps", p.fps);
  v("first_frame", p.first_frame);
  v("start", p.start);
  v("model", p.model);
  v("prompt", p.prompt);
  v("negative_prompt", p.negative_prompt);
  v("max_sequence_length", p.max_sequence_length);
  v("sampler", p.sampler);
  v("schedule", p.schedule);
  v("steps", p.steps);
  v("shift", p.shift);
  v("guidance", p.guidance);
  v("guidance_scale", p.guidance_scale);
  v("seed", p.seed);
  v("guide", p.guide);
  v("output", p.output);
  v("cache_dir", p.cache_dir);
  v("checkpoint_every", p.checkpoint_every);
  v("preview", p.preview);
}

// The scene and the camera keys read and write as in a scene file, with its checks.
void read(const Node& n, physics::Scene& out) {
  try {
    out = physics::parse_scene(n.value.dump());
  } catch (const Error& e) {
    throw Error(e.code(), n.path + ": " + e.what());
  }
}
json write(Writer, const physics::Scene& scene) { return json::parse(physics::to_json(scene)); }

void read(const Node& n, std::vector<physics::CameraKey>& out) {
  out.clear();
  if (n.value.is_array() && n.value.empty()) return;  // no explicit keys: a scene camera is chosen
  out = physics::parse_camera(json{{"name", "keys"}, {"keys", n.value}}.dump(), n.path).keys;
}
json write(Writer, const std::vector<physics::CameraKey>& keys) {
  return json::parse(physics::camera_to_json(physics::Camera{"keys", keys}))["keys"];
}

}  // namespace
}  // namespace drb::json_fields

namespace drb::pipeline {
namespace {

using json = json_fields::json;
constexpr int kParamsVersion = 1;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(ErrorCode::invalid_argument, "shot params: " + path + ": " + what);
}

void require(bool ok, const std::string& field, const std::string& what) {
  if (!ok) fail(field, what);
}

void require_known(const std::string& field, const std::string& value, const std::vector<std::string>& known) {
  for (const std::string& k : known)
    if (k == value) return;
  fail(field, "unknown name '" + value + "' (known: " + json_fields::join(known) + ")");
}

}  // namespace

std::string ShotParams::to_json() const {
  json out = {{"version", kParamsVersion}};
  out.update(json_fields::write(json_fields::Writer{}, *this));
  return out.dump(2) + "\n";
}

ShotParams ShotParams::from_json(const std::string& json_text) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::parse_error& e) {
    throw Error(ErrorCode::parse, std::string("shot params: malformed JSON: ") + e.what());
  }
  if (!doc.is_object()) throw Error(ErrorCode::parse, "shot params: the document must be a JSON object");
  if (const auto v = doc.find("version"); v != doc.end() && *v != kParamsVersion)
    fail("version", "unsupported version " + v->dump() + " (this build reads " + std::to_string(kParamsVersion) + ")");
  doc.erase("version");
  ShotParams params;
  try {
    json_fields::read(json_fields::Node{doc, ""}, params);
  } catch (const Error& e) {
    throw Error(e.code(), std::string("shot params: ") + e.what());
  }
  return params;
}

void ShotParams::validate() const {
  require(!source.empty() || scene.has_value(), "source", "a scene file, an imported track or a scene is required");
  require(source.empty() || !scene.has_value(), "source", "give a source file or an in-code scene, not both");
  if (intensity) require(*intensity >= 0 && *intensity <= 1, "intensity", "must be in [0, 1]");
  require(camera.index >= 0, "camera.index", "must be non-negative");
  require(frames >= 1 && frames <= 10000, "frames", "must be in [1, 10000], got " + std::to_string(frames));
  require(start >= 0 && start <= 1000000, "start", "must be in [0, 1000000], got " + std::to_string(start));
  require(width >= 1 && width <= 8192, "width", "must be in [1, 8192], got " + std::to_string(width));
  require(height >= 1 && height <= 8192, "height", "must be in [1, 8192], got " + std::to_string(height));
  require(fps >= 0 && fps <= 1000, "fps", "must be in [0, 1000] (0: the scene's)");
  require(max_sequence_length >= 1 && max_sequence_length <= 4096, "max_sequence_length", "must be in [1, 4096]");
  require_known("sampler", sampler, sampler_names());
  require_known("schedule", schedule, {"flow_unipc", "flow_euler", "linear_quadratic"});
  require(steps >= 1 && steps <= 1000, "steps", "must be in [1, 1000], got " + std::to_string(steps));
  if (shift) require(*shift > 0, "shift", "must be positive");
  require_known("guidance", guidance, {"cfg", "cfg_zero", "apg"});
  require(guidance_scale >= 0 && guidance_scale <= 100, "guidance_scale", "must be in [0, 100]");
  require(guide.noise_degradation >= 0 && guide.noise_degradation <= 1, "guide.noise_degradation", "must be in [0, 1]");
  require(guide.sdedit_strength > 0 && guide.sdedit_strength <= 1, "guide.sdedit_strength", "must be in (0, 1]");
  require(!guide.mask.empty(), "guide.mask", "must name at least one source (coverage, dust, ids)");
  for (size_t i = 0; i < guide.mask.size(); ++i)
    require_known("guide.mask[" + std::to_string(i) + "]", guide.mask[i], {"coverage", "dust", "ids"});
  const bool by_ids = std::find(guide.mask.begin(), guide.mask.end(), "ids") != guide.mask.end();
  require(!by_ids || !guide.mask_ids.empty(), "guide.mask_ids", "the 'ids' mask needs the piece ids");
  require(guide.mask_dilate >= 0 && guide.mask_dilate <= 256, "guide.mask_dilate", "must be in [0, 256]");
  require(guide.mask_feather >= 0 && guide.mask_feather <= 256, "guide.mask_feather", "must be in [0, 256]");
  require(guide.repaint >= 0 && guide.repaint <= 7, "guide.repaint", "must be in [0, 7]");
  require(guide.free_tail_steps >= 0, "guide.free_tail_steps", "must be non-negative");
  require_known("guide.control", guide.control, {"auto", "none", "proxy", "depth", "coverage"});
  require(std::isfinite(guide.control_scale) && guide.control_scale >= 0 && guide.control_scale <= 10,
          "guide.control_scale", "must be in [0, 10]");
  require(guide.flow_energy >= 0, "guide.flow_energy", "must be non-negative");
  require(!output.dir.empty(), "output.dir", "must not be empty");
  require(!output.name.empty() && output.name.find('/') == std::string::npos, "output.name",
          "must be a file name without '/'");
  require(output.png_bits == 8 || output.png_bits == 16, "output.png_bits", "must be 8 or 16");
  io::color_space_from_name(output.color_space);
  require(output.crf >= 0 && output.crf <= 51, "output.crf", "must be in [0, 51]");
  require(checkpoint_every >= 1, "checkpoint_every", "must be at least 1");
}

}  // namespace drb::pipeline
