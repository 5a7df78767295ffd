// ShotParams <-> JSON, and the checks that need no model. One field list per struct serves
// both directions, so a field cannot be written and forgotten when read.
#include <nlohmann/json.hpp>

#include <cmath>
#include <set>

#include "derrumbe/guide/energy.hpp"
#include "derrumbe/io/exr.hpp"
#include "derrumbe/pipeline/shot.hpp"
#include "derrumbe/sample/sampler.hpp"

namespace drb::pipeline {
namespace {

using json = nlohmann::json;
constexpr int kParamsVersion = 1;

template <class V>
void fields(CameraChoice& c, V&& v) {
  v("name", c.name);
  v("index", c.index);
  v("keys", c.keys);
}

template <class V>
void fields(GuidanceParams& g, V&& v) {
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
  v("flow_energy", g.flow_energy);
  v("flow_energy_sigma_start", g.flow_energy_sigma_start);
  v("flow_energy_sigma_end", g.flow_energy_sigma_end);
}

template <class V>
void fields(OutputParams& o, V&& v) {
  v("dir", o.dir);
  v("name", o.name);
  v("mp4", o.mp4);
  v("exr", o.exr);
  v("png", o.png);
  v("png_bits", o.png_bits);
  v("color_space", o.color_space);
  v("crf", o.crf);
}

template <class V>
void fields(ShotParams& p, V&& v) {
  v("source", p.source);
  v("scene", p.scene);
  v("intensity", p.intensity);
  v("camera", p.camera);
  v("frames", p.frames);
  v("width", p.width);
  v("height", p.height);
  v("fps", p.fps);
  v("first_frame", p.first_frame);
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

template <class T>
concept Record = requires(T& t) { fields(t, [](const char*, auto&) {}); };

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(ErrorCode::invalid_argument, "shot params: " + path + ": " + what);
}

// --- writing -------------------------------------------------------------------------------

// Infinities are not JSON numbers: they are written as the strings "inf" / "-inf".
json write(double v) { return std::isinf(v) ? json(v > 0 ? "inf" : "-inf") : json(v); }
json write(bool v) { return v; }
json write(int v) { return v; }
json write(int64_t v) { return v; }
json write(uint64_t v) { return v; }
json write(const std::string& v) { return v; }
json write(const physics::Scene& scene) { return json::parse(physics::to_json(scene)); }
json write(const std::vector<physics::CameraKey>& keys) {
  return json::parse(physics::camera_to_json(physics::Camera{"keys", keys}))["keys"];
}
template <class T>
json write(const std::optional<T>& v) {
  return v ? write(*v) : json(nullptr);
}
template <class T>
json write(const std::vector<T>& v) {
  json out = json::array();
  for (const T& item : v) out.push_back(write(item));
  return out;
}
template <Record T>
json write(const T& record) {
  json out = json::object();
  fields(const_cast<T&>(record), [&](const char* key, const auto& value) { out[key] = write(value); });
  return out;
}

// --- reading -------------------------------------------------------------------------------

void read(const json& j, const std::string& path, bool& out) {
  if (!j.is_boolean()) fail(path, std::string("must be a boolean, got ") + j.type_name());
  out = j.get<bool>();
}
void read(const json& j, const std::string& path, double& out) {
  if (j.is_string() && (j == "inf" || j == "-inf")) {
    out = j == "inf" ? INFINITY : -INFINITY;
    return;
  }
  if (!j.is_number()) fail(path, std::string("must be a number, got ") + j.type_name());
  out = j.get<double>();
  if (!std::isfinite(out)) fail(path, "must be finite");
}
void read(const json& j, const std::string& path, int64_t& out) {
  if (!j.is_number_integer() || (j.is_number_unsigned() && j.get<uint64_t>() > uint64_t(INT64_MAX)))
    fail(path, "must be an integer, got " + j.dump());
  out = j.get<int64_t>();
}
void read(const json& j, const std::string& path, int& out) {
  int64_t wide = 0;
  read(j, path, wide);
  if (wide < INT32_MIN || wide > INT32_MAX) fail(path, "integer out of range, got " + j.dump());
  out = static_cast<int>(wide);
}
void read(const json& j, const std::string& path, uint64_t& out) {
  if (!j.is_number_unsigned()) fail(path, "must be a non-negative integer, got " + j.dump());
  out = j.get<uint64_t>();
}
void read(const json& j, const std::string& path, std::string& out) {
  if (!j.is_string()) fail(path, std::string("must be a string, got ") + j.type_name());
  out = j.get<std::string>();
}
void read(const json& j, const std::string& path, physics::Scene& out) {
  try {
    out = physics::parse_scene(j.dump());
  } catch (const Error& e) {
    throw Error(e.code(), "shot params: " + path + ": " + e.what());
  }
}
void read(const json& j, const std::string& path, std::vector<physics::CameraKey>& out) {
  out.clear();
  if (j.is_array() && j.empty()) return;  // no explicit keys: a scene camera is chosen
  out = physics::parse_camera(json{{"name", "keys"}, {"keys", j}}.dump(), path).keys;
}
template <class T>
void read(const json& j, const std::string& path, std::optional<T>& out) {
  if (j.is_null()) {
    out.reset();
    return;
  }
  T value{};
  read(j, path, value);
  out = std::move(value);
}
template <class T>
void read(const json& j, const std::string& path, std::vector<T>& out) {
  if (!j.is_array()) fail(path, std::string("must be an array, got ") + j.type_name());
  out.assign(j.size(), T{});
  for (size_t i = 0; i < j.size(); ++i) read(j[i], path + "[" + std::to_string(i) + "]", out[i]);
}
template <Record T>
void read(const json& j, const std::string& path, T& out) {
  if (!j.is_object()) fail(path, std::string("must be an object, got ") + j.type_name());
  std::set<std::string> known;
  fields(out, [&](const char* key, auto& value) {
    known.insert(key);
    if (const auto it = j.find(key); it != j.end()) read(*it, path.empty() ? key : path + "." + key, value);
  });
  for (const auto& item : j.items())
    if (!known.count(item.key()) && !(path.empty() && item.key() == "version"))
      fail(path.empty() ? item.key() : path + "." + item.key(), "unknown key");
}

void require(bool ok, const std::string& field, const std::string& what) {
  if (!ok) fail(field, what);
}

void require_known(const std::string& field, const std::string& value, const std::vector<std::string>& known) {
  for (const std::string& k : known)
    if (k == value) return;
  std::string list;
  for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
  fail(field, "unknown name '" + value + "' (known: " + list + ")");
}

}  // namespace

std::string ShotParams::to_json() const {
  json out = write(*this);
  out["version"] = kParamsVersion;
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
  ShotParams params;
  read(doc, "", params);
  return params;
}

void ShotParams::validate() const {
  require(!source.empty() || scene.has_value(), "source", "a scene file, an imported track or a scene is required");
  require(source.empty() || !scene.has_value(), "source", "give a source file or an in-code scene, not both");
  if (intensity) require(*intensity >= 0 && *intensity <= 1, "intensity", "must be in [0, 1]");
  require(camera.index >= 0, "camera.index", "must be non-negative");
  require(frames >= 1 && frames <= 10000, "frames", "must be in [1, 10000], got " + std::to_string(frames));
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
