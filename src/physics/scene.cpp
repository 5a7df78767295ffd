// The scene file: JSON <-> Scene, and the validation both directions rely on.
//
// Each struct lists its JSON keys once, in a `fields(struct, visitor)` function
// (core/json_fields.hpp); reading (JSON -> struct, with unknown-key detection), writing
// (struct -> JSON) and the trigger key check all walk that one list. Every error names its
// JSON path.
#include "derrumbe/physics/scene.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "../core/json_fields.hpp"

namespace drb::physics {

const char* trigger_type_name(TriggerType t) noexcept {
  switch (t) {
    case TriggerType::charge: return "charge";
    case TriggerType::impact: return "impact";
    case TriggerType::shake: return "shake";
    case TriggerType::remove_supports: return "remove_supports";
  }
  return "unknown";
}

int64_t Scene::num_frames() const {
  const double frames = duration * fps;
  if (!(frames >= 1.0)) return 1;  // also NaN
  if (frames >= 9.0e18) return INT64_MAX;
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(frames)));
}

namespace {

constexpr TriggerType kTriggerTypes[] = {TriggerType::charge, TriggerType::impact, TriggerType::shake,
                                         TriggerType::remove_supports};
constexpr const char* kLooks[] = {"concrete", "brick", "glass", "steel"};
constexpr int kMaxLimit = 1'000'000;
constexpr int kMaxDustParticles = 10'000'000;

}  // namespace
}  // namespace drb::physics

// The key list of each struct (`v(key, member)` once per JSON key, in order), and the reading
// and writing of the values that are not plain records (see core/json_fields.hpp).
namespace drb::json_fields {
namespace {

using namespace drb::physics;

template <Is<Ground> S, class V>
void fields(S& g, V&& v) {
  v("friction", g.friction);
  v("restitution", g.restitution);
}

template <Is<Material> S, class V>
void fields(S& m, V&& v) {
  v("name", m.name);
  v("look", m.look);
  v("density", m.density);
  v("friction", m.friction);
  v("restitution", m.restitution);
  v("bond_strength", m.bond_strength);
}

template <Is<Windows> S, class V>
void fields(S& w, V&& v) {
  v("enabled", w.enabled);
  v("width", w.width);
  v("height", w.height);
  v("sill", w.sill);
}

template <Is<Building> S, class V>
void fields(S& b, V&& v) {
  v("name", b.name);
  v("position", b.position);
  v("rotation_deg", b.rotation_deg);
  v("footprint", b.footprint);
  v("floors", b.floors);
  v("floor_height", b.floor_height);
  v("bays", b.bays);
  v("column_size", b.column_size);
  v("wall_thickness", b.wall_thickness);
  v("slab_thickness", b.slab_thickness);
  v("windows", b.windows);
  v("chunks_per_panel", b.chunks_per_panel);
  v("material", b.material);
}

// A trigger's keys depend on its type; "type" comes first so a reader knows it in time.
template <Is<Trigger> S, class V>
void fields(S& t, V&& v) {
  v("type", t.type);
  v("time", t.time);
  switch (t.type) {
    case TriggerType::charge:
      v("building", t.building);
      v("floors", t.floors);
      v("energy", t.energy);
      break;
    case TriggerType::remove_supports:
      v("building", t.building);
      v("floors", t.floors);
      v("columns", t.columns);
      break;
    case TriggerType::impact:
      v("mass", t.mass);
      v("radius", t.radius);
      v("position", t.position);
      v("velocity", t.velocity);
      break;
    case TriggerType::shake:
      v("amplitude", t.amplitude);
      v("frequency", t.frequency);
      v("duration", t.duration);
      break;
  }
}

template <Is<DustSettings> S, class V>
void fields(S& d, V&& v) {
  v("enabled", d.enabled);
  v("particles_per_break", d.particles_per_break);
  v("drag", d.drag);
  v("buoyancy", d.buoyancy);
  v("turbulence", d.turbulence);
  v("lifetime", d.lifetime);
  v("radius", d.radius);
  v("max_particles", d.max_particles);
}

template <Is<CameraKey> S, class V>
void fields(S& k, V&& v) {
  v("time", k.time);
  v("position", k.position);
  v("target", k.target);
  v("up", k.up);
  v("focal_length_mm", k.focal_length_mm);
  v("sensor_width_mm", k.sensor_width_mm);
  v("sensor_height_mm", k.sensor_height_mm);
}

template <Is<Camera> S, class V>
void fields(S& c, V&& v) {
  v("name", c.name);
  v("keys", c.keys);
}

template <Is<Limits> S, class V>
void fields(S& l, V&& v) {
  v("max_pieces", l.max_pieces);
  v("max_frames", l.max_frames);
}

template <Is<Scene> S, class V>
void fields(S& s, V&& v) {
  v("version", s.version);
  v("units", s.units);
  v("fps", s.fps);
  v("duration", s.duration);
  v("seed", s.seed);
  v("substeps", s.substeps);
  v("intensity", s.intensity);
  v("ground", s.ground);
  v("materials", s.materials);
  v("buildings", s.buildings);
  v("triggers", s.triggers);
  v("dust", s.dust);
  v("cameras", s.cameras);
  v("limits", s.limits);
}

void read(const Node& n, TriggerType& out) {
  std::string name;
  read(n, name);
  for (TriggerType t : kTriggerTypes)
    if (name == trigger_type_name(t)) {
      out = t;
      return;
    }
  std::vector<std::string> known;
  for (TriggerType t : kTriggerTypes) known.emplace_back(trigger_type_name(t));
  fail(n.path, "unknown trigger type " + in_quotes(name) + " (known: " + join(known) + ")");
}

void read(const Node& n, Vec2& out) { read_fixed(n, out.data(), 2, "numbers"); }
void read(const Node& n, Vec3& out) { read_fixed(n, out.data(), 3, "numbers"); }
void read(const Node& n, std::array<int, 2>& out) { read_fixed(n, out.data(), 2, "integers"); }

// The keys of the other trigger types are not unknown, just misplaced: say so.
void read(const Node& n, Trigger& out) {
  read_fields(n, out).finish([&](const std::string& key) {
    std::vector<std::string> owners;
    for (TriggerType t : kTriggerTypes) {
      Trigger probe;
      probe.type = t;
      bool has = false;
      fields(probe, [&](const char* k, auto&) { has = has || key == k; });
      if (has) owners.emplace_back(trigger_type_name(t));
    }
    if (owners.empty()) return std::string();
    std::vector<std::string> own;
    fields(out, [&](const char* k, auto&) { own.emplace_back(k); });
    const std::string type = in_quotes(trigger_type_name(out.type));
    return "not a field of type " + type + " (it belongs to " + join(owners) + "; " + type + " takes " + join(own) + ")";
  });
}

json write(Writer, TriggerType t) { return trigger_type_name(t); }
json write(Writer, const Vec2& v) { return json::array({v.x(), v.y()}); }
json write(Writer, const Vec3& v) { return json::array({v.x(), v.y(), v.z()}); }
json write(Writer, const std::array<int, 2>& v) { return json::array({v[0], v[1]}); }

}  // namespace
}  // namespace drb::json_fields

namespace drb::physics {
namespace {

using namespace json_fields;

std::string num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == std::trunc(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<int64_t>(v));  // 240, not 240.0
  return json(v).dump();  // shortest round-trip form
}

// ---------------------------------------------------------------------------------------
// Validation. Each check names the path of the value it rejects.

void finite(const std::string& path, double v) { require(std::isfinite(v), path, "must be finite, got " + num(v)); }
template <int N>
void finite(const std::string& path, const Eigen::Matrix<double, N, 1>& v) {
  for (int i = 0; i < N; ++i) finite(element(path, static_cast<size_t>(i)), v[i]);
}
void positive(const std::string& path, double v) {
  require(std::isfinite(v) && v > 0, path, "must be a positive number, got " + num(v));
}
void non_negative(const std::string& path, double v) {
  require(std::isfinite(v) && v >= 0, path, "must be a non-negative number, got " + num(v));
}
// v in [lo, hi], or (lo, hi] when lo_open; NaN fails.
void in_range(const std::string& path, double v, double lo, double hi, bool lo_open = false) {
  const bool ok = (lo_open ? v > lo : v >= lo) && v <= hi;
  require(ok, path, "must be in " + std::string(lo_open ? "(" : "[") + num(lo) + ", " + num(hi) + "], got " + num(v));
}
void int_range(const std::string& path, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo && lo == 1) fail(path, "must be a positive integer, got " + std::to_string(v));
  if (v < lo && lo == 0) fail(path, "must be a non-negative integer, got " + std::to_string(v));
  require(v >= lo, path, "must be at least " + std::to_string(lo) + ", got " + std::to_string(v));
  require(v <= hi, path, "must be at most " + std::to_string(hi) + ", got " + std::to_string(v));
}
void non_empty(const std::string& path, const std::string& s) { require(!s.empty(), path, "must be a non-empty string"); }
// Indices in [0, count), each at most once.
void indices(const std::string& path, const std::vector<int>& items, int64_t count, const std::string& what) {
  std::set<int> seen;
  for (size_t i = 0; i < items.size(); ++i) {
    require(items[i] >= 0 && items[i] < count, element(path, i),
            "must be a " + what + " index in [0, " + std::to_string(count) + "), got " + std::to_string(items[i]));
    require(seen.insert(items[i]).second, element(path, i), "duplicate " + what + " " + std::to_string(items[i]));
  }
}

void check_friction(const std::string& path, double friction, double restitution) {
  in_range(member(path, "friction"), friction, 0, 10);
  in_range(member(path, "restitution"), restitution, 0, 1);
}

void validate_material(const std::string& path, const Material& m) {
  non_empty(member(path, "name"), m.name);
  require(std::find(std::begin(kLooks), std::end(kLooks), m.look) != std::end(kLooks), member(path, "look"),
          "unknown look " + in_quotes(m.look) + " (known: " + join(kLooks) + ")");
  positive(member(path, "density"), m.density);
  check_friction(path, m.friction, m.restitution);
  positive(member(path, "bond_strength"), m.bond_strength);
}

// The narrower of the two bay widths: walls along x and along z each have bays of their own.
double bay_width(const Building& b) { return std::min(b.footprint.x() / b.bays[0], b.footprint.y() / b.bays[1]); }
int64_t num_columns(const Building& b) { return int64_t{b.bays[0] + 1} * (b.bays[1] + 1); }

void validate_building(const std::string& path, const Building& b, const Scene& s) {
  const auto at = [&](const char* key) { return member(path, key); };
  non_empty(at("name"), b.name);
  finite(at("position"), b.position);
  finite(at("rotation_deg"), b.rotation_deg);
  positive(element(at("footprint"), 0), b.footprint.x());
  positive(element(at("footprint"), 1), b.footprint.y());
  int_range(at("floors"), b.floors, 1, 200);
  positive(at("floor_height"), b.floor_height);
  int_range(element(at("bays"), 0), b.bays[0], 1, 50);
  int_range(element(at("bays"), 1), b.bays[1], 1, 50);
  int_range(at("chunks_per_panel"), b.chunks_per_panel, 1, 64);

  const double bay = bay_width(b);
  positive(at("column_size"), b.column_size);
  require(b.column_size < bay, at("column_size"),
          "must be smaller than the bay width " + num(bay) + ", got " + num(b.column_size));
  positive(at("wall_thickness"), b.wall_thickness);
  require(b.wall_thickness < bay / 2, at("wall_thickness"),
          "must be smaller than half the bay width (" + num(bay / 2) + "), got " + num(b.wall_thickness));
  positive(at("slab_thickness"), b.slab_thickness);
  require(b.slab_thickness < b.floor_height, at("slab_thickness"),
          "must be smaller than floor_height " + num(b.floor_height) + ", got " + num(b.slab_thickness));

  const std::string win = at("windows");
  positive(member(win, "width"), b.windows.width);
  positive(member(win, "height"), b.windows.height);
  non_negative(member(win, "sill"), b.windows.sill);
  if (b.windows.enabled) {
    const double clear_height = b.floor_height - b.slab_thickness;
    require(b.windows.sill + b.windows.height < clear_height, member(win, "height"),
            "sill + height = " + num(b.windows.sill + b.windows.height) +
                " must be below floor_height - slab_thickness = " + num(clear_height) + " (the window must fit in a floor)");
    const double clear_width = bay - b.column_size;
    require(b.windows.width < clear_width, member(win, "width"),
            "must be smaller than the bay width minus column_size (" + num(clear_width) + "), got " + num(b.windows.width));
  }

  std::vector<std::string> names;
  for (const Material& m : s.materials) names.push_back(m.name);
  require(std::find(names.begin(), names.end(), b.material) != names.end(), at("material"),
          "unknown material " + in_quotes(b.material) + " (known: " + join(names) + ")");
}

void validate_trigger(const std::string& path, const Trigger& t, const Scene& s) {
  const auto at = [&](const char* key) { return member(path, key); };
  in_range(at("time"), t.time, 0, s.duration);
  switch (t.type) {
    case TriggerType::charge:
    case TriggerType::remove_supports: {
      const int64_t count = static_cast<int64_t>(s.buildings.size());
      require(t.building >= 0 && t.building < count, at("building"),
              "must be a building index in [0, " + std::to_string(count) + "), got " + std::to_string(t.building));
      const Building& b = s.buildings[static_cast<size_t>(t.building)];
      require(!t.floors.empty(), at("floors"), "must list at least one floor");
      indices(at("floors"), t.floors, b.floors, "floor");
      if (t.type == TriggerType::charge)
        positive(at("energy"), t.energy);
      else
        indices(at("columns"), t.columns, num_columns(b), "column");
      break;
    }
    case TriggerType::impact:
      positive(at("mass"), t.mass);
      positive(at("radius"), t.radius);
      finite(at("position"), t.position);
      finite(at("velocity"), t.velocity);
      break;
    case TriggerType::shake:
      positive(at("amplitude"), t.amplitude);
      positive(at("frequency"), t.frequency);
      positive(at("duration"), t.duration);
      break;
  }
}

void validate_dust(const std::string& path, const DustSettings& d) {
  const auto at = [&](const char* key) { return member(path, key); };
  int_range(at("particles_per_break"), d.particles_per_break, 0, INT_MAX);
  non_negative(at("drag"), d.drag);
  non_negative(at("buoyancy"), d.buoyancy);
  non_negative(at("turbulence"), d.turbulence);
  non_negative(at("lifetime"), d.lifetime);
  non_negative(at("radius"), d.radius);
  int_range(at("max_particles"), d.max_particles, 0, kMaxDustParticles);
}

void validate_camera_key(const std::string& path, const CameraKey& k) {
  const auto at = [&](const char* key) { return member(path, key); };
  finite(at("time"), k.time);
  finite(at("position"), k.position);
  finite(at("target"), k.target);
  finite(at("up"), k.up);
  positive(at("focal_length_mm"), k.focal_length_mm);
  positive(at("sensor_width_mm"), k.sensor_width_mm);
  positive(at("sensor_height_mm"), k.sensor_height_mm);
  const Vec3 view = k.target - k.position;
  const double scale = std::max({1.0, k.position.norm(), k.target.norm()});
  require(view.norm() > 1e-9 * scale, path, "degenerate camera: position equals target");
  require(k.up.norm() > 0 && view.normalized().cross(k.up.normalized()).norm() > 1e-6, at("up"),
          "must not be zero or parallel to the view direction (target - position)");
}

void validate_camera(const std::string& path, const Camera& c) {
  non_empty(member(path, "name"), c.name);
  const std::string keys = member(path, "keys");
  require(!c.keys.empty(), keys, "must list at least one key");
  for (size_t i = 0; i < c.keys.size(); ++i) {
    validate_camera_key(element(keys, i), c.keys[i]);
    if (i > 0)
      require(c.keys[i].time > c.keys[i - 1].time, member(element(keys, i), "time"),
              "key times must strictly increase, got " + num(c.keys[i].time) + " after " + num(c.keys[i - 1].time));
  }
}

// Columns, slab chunks and wall chunks before any further breaking.
int64_t estimated_pieces(const Building& b) {
  const int64_t floors = b.floors, bx = b.bays[0], bz = b.bays[1], chunks = b.chunks_per_panel;
  return num_columns(b) * floors + floors * chunks * bx * bz + floors * 2 * (bx + bz) * chunks;
}

template <class T, class F>
void each(const std::string& path, const std::vector<T>& items, F&& check) {
  for (size_t i = 0; i < items.size(); ++i) check(element(path, i), items[i]);
}

template <class T>
void unique_names(const std::string& path, const std::vector<T>& items) {
  std::set<std::string> seen;
  for (size_t i = 0; i < items.size(); ++i)
    require(seen.insert(items[i].name).second, member(element(path, i), "name"),
            "duplicate name " + in_quotes(items[i].name));
}

}  // namespace

size_t Scene::material_index(const std::string& name) const {
  for (size_t i = 0; i < materials.size(); ++i)
    if (materials[i].name == name) return i;
  std::vector<std::string> names;
  for (const Material& m : materials) names.push_back(m.name);
  throw Error(ErrorCode::not_found, "unknown material " + in_quotes(name) + " (known: " + join(names) + ")");
}

void validate(const Scene& s) {
  require(s.version == kSceneVersion, "version",
          "unsupported scene version " + std::to_string(s.version) + " (this build reads " +
              std::to_string(kSceneVersion) + ")");
  require(s.units == "m", "units", "unsupported units " + in_quotes(s.units) + " (only \"m\")");
  in_range("fps", s.fps, 0, 240, /*lo_open=*/true);
  in_range("duration", s.duration, 0, 600, /*lo_open=*/true);
  int_range("substeps", s.substeps, 1, 64);
  in_range("intensity", s.intensity, 0, 1);
  check_friction("ground", s.ground.friction, s.ground.restitution);
  int_range("limits.max_pieces", s.limits.max_pieces, 1, kMaxLimit);
  int_range("limits.max_frames", s.limits.max_frames, 1, kMaxLimit);
  require(s.num_frames() <= s.limits.max_frames, "duration",
          "duration * fps = " + std::to_string(s.num_frames()) + " frames exceeds limits.max_frames = " +
              std::to_string(s.limits.max_frames));

  require(!s.materials.empty(), "materials", "must list at least one material");
  each("materials", s.materials, validate_material);
  unique_names("materials", s.materials);

  require(!s.buildings.empty(), "buildings", "must list at least one building");
  each("buildings", s.buildings, [&](const std::string& p, const Building& b) { validate_building(p, b, s); });
  int64_t pieces = 0;
  for (const Building& b : s.buildings) pieces += estimated_pieces(b);
  require(pieces <= s.limits.max_pieces, "buildings",
          "the buildings would fracture into about " + std::to_string(pieces) + " pieces, above limits.max_pieces = " +
              std::to_string(s.limits.max_pieces));

  each("triggers", s.triggers, [&](const std::string& p, const Trigger& t) { validate_trigger(p, t, s); });
  validate_dust("dust", s.dust);
  each("cameras", s.cameras, validate_camera);
  unique_names("cameras", s.cameras);
}

Scene parse_scene(const std::string& json_text) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::parse_error& e) {
    std::string what = e.what();  // "[json.exception.parse_error.101] parse error at line 1, ..."
    if (const size_t end = what.find("] "); what.rfind("[json.exception", 0) == 0 && end != std::string::npos)
      what = what.substr(end + 2);
    throw Error(ErrorCode::parse, "scene: malformed JSON at byte " + std::to_string(e.byte) + ": " + what);
  }
  check(doc.is_object(), ErrorCode::parse,
        std::string("scene: the document must be a JSON object, got ") + doc.type_name());

  // The version decides how the rest reads, so it is checked before anything else.
  const auto version = doc.find("version");
  require(version != doc.end(), "version",
          "required key missing (this build reads version " + std::to_string(kSceneVersion) + ")");
  Scene scene;
  read(Node{*version, "version"}, scene.version);
  require(scene.version == kSceneVersion, "version",
          "unsupported scene version " + std::to_string(scene.version) + " (this build reads " +
              std::to_string(kSceneVersion) + ")");
  require(doc.contains("buildings"), "buildings", "required key missing (a scene needs at least one building)");

  read(Node{doc, ""}, scene);
  validate(scene);
  return scene;
}

Scene load_scene(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  check(fs::exists(path, ec), ErrorCode::file_not_found, "load_scene: no such file: " + path);
  check(!fs::is_directory(path, ec), ErrorCode::io, "load_scene: " + path + " is a directory, not a scene file");
  std::ifstream in(path, std::ios::binary);
  check(in.is_open(), ErrorCode::io, "load_scene: cannot open " + path);
  std::ostringstream text;
  text << in.rdbuf();
  check(!in.bad(), ErrorCode::io, "load_scene: reading " + path + " failed");
  try {
    return parse_scene(text.str());
  } catch (const Error& e) {
    throw Error(e.code(), path + ": " + e.what());
  }
}

std::string to_json(const Scene& scene) { return write(Writer{}, scene).dump(2) + "\n"; }

std::string camera_to_json(const Camera& camera) { return write(Writer{}, camera).dump(); }

Camera parse_camera(const std::string& json_text, const std::string& path) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::parse_error& e) {
    throw Error(ErrorCode::parse, path + ": malformed JSON: " + e.what());
  }
  Camera camera;
  read(Node{doc, path}, camera);
  validate_camera(path, camera);
  return camera;
}

}  // namespace drb::physics
