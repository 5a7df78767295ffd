// The scene file: parsing, defaults, round-trips and the validation messages.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "checks.hpp"
#include "derrumbe/core/error.hpp"
#include "derrumbe/physics/scene.hpp"

using namespace drb::physics;
using drb::ErrorCode;
using json = nlohmann::json;

namespace {

std::string example(const std::string& name) { return std::string(DRB_TEST_DATA_DIR) + "/scenes/" + name; }

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.is_open());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

ErrorCode code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const drb::Error& e) {
    return e.code();
  }
  FAIL("no drb::Error was thrown");
  return ErrorCode::internal;
}

// ---- field-by-field equality -------------------------------------------------------------

using drb::test::check_same;  // materials and cameras


void check_same(const Building& a, const Building& b) {
  CHECK(a.name == b.name);
  CHECK(a.position == b.position);
  CHECK(a.rotation_deg == b.rotation_deg);
  CHECK(a.footprint == b.footprint);
  CHECK(a.floors == b.floors);
  CHECK(a.floor_height == b.floor_height);
  CHECK(a.bays == b.bays);
  CHECK(a.column_size == b.column_size);
  CHECK(a.wall_thickness == b.wall_thickness);
  CHECK(a.slab_thickness == b.slab_thickness);
  CHECK(a.windows.enabled == b.windows.enabled);
  CHECK(a.windows.width == b.windows.width);
  CHECK(a.windows.height == b.windows.height);
  CHECK(a.windows.sill == b.windows.sill);
  CHECK(a.chunks_per_panel == b.chunks_per_panel);
  CHECK(a.material == b.material);
}

// All fields: only the type's own fields are written, so scenes compared here keep the
// other types' fields at their defaults.
void check_same(const Trigger& a, const Trigger& b) {
  CHECK(a.type == b.type);
  CHECK(a.time == b.time);
  CHECK(a.building == b.building);
  CHECK(a.floors == b.floors);
  CHECK(a.energy == b.energy);
  CHECK(a.columns == b.columns);
  CHECK(a.mass == b.mass);
  CHECK(a.radius == b.radius);
  CHECK(a.position == b.position);
  CHECK(a.velocity == b.velocity);
  CHECK(a.amplitude == b.amplitude);
  CHECK(a.frequency == b.frequency);
  CHECK(a.duration == b.duration);
}

template <class T>
void check_same(const std::vector<T>& a, const std::vector<T>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("element ", i);
    check_same(a[i], b[i]);
  }
}

void check_same(const Scene& a, const Scene& b) {
  CHECK(a.version == b.version);
  CHECK(a.units == b.units);
  CHECK(a.fps == b.fps);
  CHECK(a.duration == b.duration);
  CHECK(a.seed == b.seed);
  CHECK(a.substeps == b.substeps);
  CHECK(a.intensity == b.intensity);
  CHECK(a.ground.friction == b.ground.friction);
  CHECK(a.ground.restitution == b.ground.restitution);
  check_same(a.materials, b.materials);
  check_same(a.buildings, b.buildings);
  check_same(a.triggers, b.triggers);
  CHECK(a.dust.enabled == b.dust.enabled);
  CHECK(a.dust.particles_per_break == b.dust.particles_per_break);
  CHECK(a.dust.drag == b.dust.drag);
  CHECK(a.dust.buoyancy == b.dust.buoyancy);
  CHECK(a.dust.turbulence == b.dust.turbulence);
  CHECK(a.dust.lifetime == b.dust.lifetime);
  CHECK(a.dust.radius == b.dust.radius);
  CHECK(a.dust.max_particles == b.dust.max_particles);
  check_same(a.cameras, b.cameras);
  CHECK(a.limits.max_pieces == b.limits.max_pieces);
  CHECK(a.limits.max_frames == b.limits.max_frames);
}

void check_round_trip(const Scene& scene) {
  const std::string text = to_json(scene);
  const Scene back = parse_scene(text);
  check_same(scene, back);
  CHECK(to_json(back) == text);
}

// A scene with every section filled with non-default values, and one trigger of each type.
Scene full_scene() {
  Scene s;
  s.fps = 30;
  s.duration = 7.25;
  s.seed = (uint64_t{1} << 63) + 12345;  // beyond int64
  s.substeps = 8;
  s.intensity = 1.0 / 3.0;
  s.ground = {0.65, 0.12};
  s.materials = {Material{}, Material{"red_brick", "brick", 1900.5, 0.55, 0.2, 1.1e6}};
  Building a;
  a.name = "north";
  a.position = {10.5, -4.25};
  a.rotation_deg = 33.3;
  a.footprint = {18, 9};
  a.floors = 6;
  a.floor_height = 3.45;
  a.bays = {4, 2};
  a.column_size = 0.45;
  a.wall_thickness = 0.3;
  a.slab_thickness = 0.28;
  a.windows = {true, 1.7, 1.3, 0.85};
  a.chunks_per_panel = 5;
  a.material = "red_brick";
  Building b;
  b.name = "south";
  b.position = {-20, 0.1};
  b.windows.enabled = false;
  s.buildings = {a, b};

  Trigger charge;
  charge.time = 0.1;
  charge.building = 1;
  charge.floors = {0, 2, 4};
  charge.energy = 7.5e6;
  Trigger supports;
  supports.type = TriggerType::remove_supports;
  supports.time = 0.7;
  supports.building = 0;
  supports.floors = {1};
  supports.columns = {0, 3, 14};
  Trigger impact;
  impact.type = TriggerType::impact;
  impact.time = 1.3;
  impact.mass = 3500;
  impact.radius = 0.75;
  impact.position = {-30, 8.5, 1.25};
  impact.velocity = {55, -2, 0.5};
  Trigger shake;
  shake.type = TriggerType::shake;
  shake.time = 0;
  shake.amplitude = 0.05;
  shake.frequency = 1.7;
  shake.duration = 4.5;
  // The other types' fields stay at their defaults: to_json writes only a type's own keys.
  s.triggers = {charge, supports, impact, shake};

  s.dust = {false, 3, 0.9, 0.2, 1.1, 4.5, 0.25, 12345};
  Camera fixed{"fixed", {CameraKey{}}};
  Camera moving{"moving", {}};
  moving.keys.push_back(CameraKey{0.0, {-10, 2, 20}, {0, 5, 0}, {0, 1, 0}, 24, 36, 24});
  moving.keys.push_back(CameraKey{3.5, {0, 3, 25}, {0.1, 6, 0}, {0.05, 1, 0}, 50, 35.9, 23.9});
  s.cameras = {fixed, moving};
  s.limits = {50000, 900};
  return s;
}

// ---- malformed documents ---------------------------------------------------------------

// A valid base document (small.json) patched at JSON pointers; nullopt removes the key.
using Patch = std::pair<std::string, std::optional<json>>;

std::string patched(const std::vector<Patch>& patches) {
  json doc = json::parse(read_text(example("small.json")));
  for (const auto& [pointer, value] : patches) {
    const json::json_pointer ptr(pointer);
    if (value)
      doc[ptr] = *value;
    else
      doc[ptr.parent_pointer()].erase(ptr.back());
  }
  return doc.dump();
}

}  // namespace

TEST_CASE("the example scenes parse") {
  const Scene collapse = load_scene(example("collapse.json"));
  CHECK(collapse.fps == 24);
  CHECK(collapse.duration == 5.0);
  CHECK(collapse.num_frames() == 120);
  CHECK(collapse.intensity == 0.6);
  REQUIRE(collapse.buildings.size() == 1);
  CHECK(collapse.buildings[0].floors == 8);
  CHECK(collapse.buildings[0].bays == std::array<int, 2>{3, 3});
  CHECK(collapse.buildings[0].windows.enabled);
  CHECK(collapse.buildings[0].material == "concrete");
  REQUIRE(collapse.triggers.size() == 1);
  CHECK(collapse.triggers[0].type == TriggerType::charge);
  CHECK(collapse.triggers[0].time == 0.5);
  CHECK(collapse.triggers[0].floors == std::vector<int>{0, 1});
  CHECK(collapse.dust.enabled);
  REQUIRE(collapse.cameras.size() == 2);
  CHECK(collapse.cameras[0].keys.size() == 1);
  CHECK(collapse.cameras[1].keys.size() == 3);
  CHECK(collapse.material_index("concrete") == 0);

  const Scene small = parse_scene(read_text(example("small.json")));
  CHECK(small.buildings[0].floors == 3);
  CHECK(small.buildings[0].bays == std::array<int, 2>{2, 2});
  CHECK(small.num_frames() == 48);
  CHECK(small.triggers[0].floors == std::vector<int>{0});
}

TEST_CASE("to_json and parse_scene round-trip every field") {
  SUBCASE("collapse.json") { check_round_trip(load_scene(example("collapse.json"))); }
  SUBCASE("small.json") { check_round_trip(load_scene(example("small.json"))); }
  SUBCASE("all trigger types, several buildings and materials") {
    const Scene s = full_scene();
    validate(s);
    check_round_trip(s);
  }
  SUBCASE("a trigger writes only its own type's keys") {
    const json doc = json::parse(to_json(full_scene()));
    CHECK(doc["triggers"][0].contains("energy"));
    CHECK_FALSE(doc["triggers"][0].contains("mass"));
    CHECK(doc["triggers"][2]["type"] == "impact");
    CHECK_FALSE(doc["triggers"][2].contains("floors"));
    CHECK(doc["seed"].get<uint64_t>() == full_scene().seed);
  }
}

TEST_CASE("absent keys take the struct defaults") {
  const Scene s = parse_scene(R"({"version": 1, "buildings": [{}]})");
  Scene expected;
  expected.buildings = {Building{}};
  check_same(s, expected);
  CHECK(s.materials.size() == 1);
  CHECK(s.materials[0].name == "concrete");
  CHECK(s.triggers.empty());
  CHECK(s.cameras.empty());

  const Scene t = parse_scene(
      R"({"version": 1, "buildings": [{}], "triggers": [{"type": "impact"}, {"type": "shake", "time": 1}, {}],
          "cameras": [{"keys": [{}]}]})");
  REQUIRE(t.triggers.size() == 3);
  check_same(t.triggers[0], [] { Trigger d; d.type = TriggerType::impact; return d; }());
  CHECK(t.triggers[1].type == TriggerType::shake);
  CHECK(t.triggers[1].amplitude == Trigger{}.amplitude);
  check_same(t.triggers[2], Trigger{});  // type defaults to charge
  check_same(t.cameras, std::vector<Camera>{Camera{"main", {CameraKey{}}}});
}

TEST_CASE("num_frames, material_index, trigger_type_name") {
  Scene s;
  s.fps = 24;
  s.duration = 5;
  CHECK(s.num_frames() == 120);
  s.duration = 0.01;
  CHECK(s.num_frames() == 1);
  s.fps = 3;
  s.duration = 2.5;
  CHECK(s.num_frames() == 8);  // 7.5 rounds half away from zero

  s.materials.push_back(Material{"glass", "glass", 2500, 0.4, 0.3, 5e5});
  CHECK(s.material_index("glass") == 1);
  CHECK_THROWS_WITH_AS(s.material_index("wood"), doctest::Contains("unknown material \"wood\" (known: concrete, glass)"),
                       drb::Error);
  CHECK(code_of([&] { s.material_index("wood"); }) == ErrorCode::not_found);

  CHECK(std::string(trigger_type_name(TriggerType::remove_supports)) == "remove_supports");
  CHECK(std::string(trigger_type_name(TriggerType::impact)) == "impact");
}

TEST_CASE("schema violations name the JSON path") {
  struct Case {
    std::vector<Patch> patches;
    std::string message;
  };
  const json camera_keys_tied = json::parse(R"([{"time": 1}, {"time": 1}])");
  const std::vector<Case> cases = {
      // unknown keys at several depths
      {{{"/colour", "red"}}, "colour: unknown key"},
      {{{"/buildings/0/colour", "red"}}, "buildings[0].colour: unknown key"},
      {{{"/buildings/0/windows/tint", 0.5}}, "buildings[0].windows.tint: unknown key"},
      {{{"/cameras/0/keys/0/zoom", 2}}, "cameras[0].keys[0].zoom: unknown key"},
      {{{"/dust/colour", "grey"}}, "dust.colour: unknown key"},
      {{{"/limits/max_bytes", 1}}, "limits.max_bytes: unknown key"},
      {{{"/triggers/0/fuse", 1}}, "triggers[0].fuse: unknown key"},
      // wrong JSON types
      {{{"/fps", "24"}}, "fps: must be a number, got string"},
      {{{"/buildings/0/floors", 2.5}}, "buildings[0].floors: must be an integer, got number 2.5"},
      {{{"/buildings/0/floors", int64_t{1} << 40}}, "buildings[0].floors: integer out of range, got 1099511627776"},
      {{{"/buildings/0/name", 7}}, "buildings[0].name: must be a string, got number 7"},
      {{{"/buildings/0/position", json::array({1, 2, 3})}}, "buildings[0].position: must be an array of 2 numbers"},
      {{{"/buildings/0/footprint/1", nullptr}}, "buildings[0].footprint[1]: must be a number, got null"},
      {{{"/buildings/0/windows/enabled", 1}}, "buildings[0].windows.enabled: must be a boolean, got number 1"},
      {{{"/ground", 3}}, "ground: must be an object, got number 3"},
      {{{"/buildings", json::object()}}, "buildings: must be an array, got object"},
      {{{"/triggers/0/floors", 0}}, "triggers[0].floors: must be an array, got number 0"},
      {{{"/seed", -1}}, "seed: must be a non-negative integer, got number -1"},
      {{{"/version", "1"}}, "version: must be an integer, got string"},
      // out-of-range values
      {{{"/buildings/0/floors", -3}}, "buildings[0].floors: must be a positive integer, got -3"},
      {{{"/buildings/0/floors", 500}}, "buildings[0].floors: must be at most 200, got 500"},
      {{{"/buildings/0/bays/1", 0}}, "buildings[0].bays[1]: must be a positive integer, got 0"},
      {{{"/buildings/0/bays/0", 51}}, "buildings[0].bays[0]: must be at most 50, got 51"},
      {{{"/buildings/0/chunks_per_panel", 65}}, "buildings[0].chunks_per_panel: must be at most 64, got 65"},
      {{{"/buildings/0/footprint/0", -8}}, "buildings[0].footprint[0]: must be a positive number, got -8"},
      {{{"/buildings/0/floor_height", 0}}, "buildings[0].floor_height: must be a positive number, got 0"},
      {{{"/fps", 0}}, "fps: must be in (0, 240], got 0"},
      {{{"/fps", 300}}, "fps: must be in (0, 240], got 300"},
      {{{"/duration", 601}}, "duration: must be in (0, 600], got 601"},
      {{{"/intensity", 1.5}}, "intensity: must be in [0, 1], got 1.5"},
      {{{"/substeps", 0}}, "substeps: must be a positive integer, got 0"},
      {{{"/substeps", 65}}, "substeps: must be at most 64, got 65"},
      {{{"/ground/friction", -0.1}}, "ground.friction: must be in [0, 10], got -0.1"},
      {{{"/ground/restitution", 2}}, "ground.restitution: must be in [0, 1], got 2"},
      {{{"/units", "cm"}}, "units: unsupported units \"cm\""},
      {{{"/materials", json::array({{{"density", 0}}})}}, "materials[0].density: must be a positive number, got 0"},
      {{{"/materials", json::array({{{"look", "wood"}}})}}, "materials[0].look: unknown look \"wood\""},
      {{{"/materials", json::array({{{"friction", 11}}})}}, "materials[0].friction: must be in [0, 10], got 11"},
      {{{"/materials", json::array({json::object(), json::object()})}}, "materials[1].name: duplicate name \"concrete\""},
      {{{"/materials", json::array()}}, "materials: must list at least one material"},
      {{{"/buildings", json::array()}}, "buildings: must list at least one building"},
      {{{"/buildings/0/material", "steel"}}, "buildings[0].material: unknown material \"steel\" (known: concrete)"},
      {{{"/buildings/0/name", ""}}, "buildings[0].name: must be a non-empty string"},
      // geometry that does not fit (bay width 4 m, floor height 3 m)
      {{{"/buildings/0/column_size", 4.5}}, "buildings[0].column_size: must be smaller than the bay width 4,"},
      {{{"/buildings/0/wall_thickness", 2.5}}, "buildings[0].wall_thickness: must be smaller than half the bay width"},
      {{{"/buildings/0/slab_thickness", 3}}, "buildings[0].slab_thickness: must be smaller than floor_height 3,"},
      {{{"/buildings/0/windows/height", 2.0}}, "buildings[0].windows.height: sill + height = 2.9 must be below"},
      {{{"/buildings/0/windows/width", 3.7}}, "buildings[0].windows.width: must be smaller than the bay width minus"},
      {{{"/buildings/0/windows/sill", -0.5}}, "buildings[0].windows.sill: must be a non-negative number, got -0.5"},
      // triggers
      {{{"/triggers/0/type", "nuke"}},
       "triggers[0].type: unknown trigger type \"nuke\" (known: charge, impact, shake, remove_supports)"},
      {{{"/triggers/0/mass", 10}}, "triggers[0].mass: not a field of type \"charge\" (it belongs to impact"},
      {{{"/triggers/0/columns", json::array({0})}}, "triggers[0].columns: not a field of type \"charge\""},
      {{{"/triggers/0", json{{"type", "impact"}, {"floors", json::array({0})}}}},
       "triggers[0].floors: not a field of type \"impact\" (it belongs to charge, remove_supports"},
      {{{"/triggers/0", json{{"type", "shake"}, {"energy", 1}}}}, "triggers[0].energy: not a field of type \"shake\""},
      {{{"/triggers/0/time", 9}}, "triggers[0].time: must be in [0, 2], got 9"},
      {{{"/triggers/0/time", -1}}, "triggers[0].time: must be in [0, 2], got -1"},
      {{{"/triggers/0/building", 3}}, "triggers[0].building: must be a building index in [0, 1), got 3"},
      {{{"/triggers/0/floors", json::array({5})}}, "triggers[0].floors[0]: must be a floor index in [0, 3), got 5"},
      {{{"/triggers/0/floors", json::array({0, 0})}}, "triggers[0].floors[1]: duplicate floor 0"},
      {{{"/triggers/0/floors", json::array()}}, "triggers[0].floors: must list at least one floor"},
      {{{"/triggers/0/energy", -1}}, "triggers[0].energy: must be a positive number, got -1"},
      {{{"/triggers/0", json{{"type", "remove_supports"}, {"columns", json::array({2, 9})}}}},
       "triggers[0].columns[1]: must be a column index in [0, 9), got 9"},
      {{{"/triggers/0", json{{"type", "impact"}, {"mass", 0}}}}, "triggers[0].mass: must be a positive number, got 0"},
      {{{"/triggers/0", json{{"type", "shake"}, {"frequency", -2}}}},
       "triggers[0].frequency: must be a positive number, got -2"},
      // cameras
      {{{"/cameras/0/keys/0/target", json::array({0, 1.7, 25})}},
       "cameras[0].keys[0]: degenerate camera: position equals target"},
      {{{"/cameras/0/keys/0/up", json::array({0, -2.3, 25})}},
       "cameras[0].keys[0].up: must not be zero or parallel to the view direction"},
      {{{"/cameras/0/keys/0/focal_length_mm", 0}}, "cameras[0].keys[0].focal_length_mm: must be a positive number"},
      {{{"/cameras/0/keys/0/sensor_height_mm", -1}}, "cameras[0].keys[0].sensor_height_mm: must be a positive number"},
      {{{"/cameras/0/keys", json::array()}}, "cameras[0].keys: must list at least one key"},
      {{{"/cameras/0/keys", camera_keys_tied}}, "cameras[0].keys[1].time: key times must strictly increase, got 1 after 1"},
      {{{"/cameras/0/name", ""}}, "cameras[0].name: must be a non-empty string"},
      // dust
      {{{"/dust/drag", -1}}, "dust.drag: must be a non-negative number, got -1"},
      {{{"/dust/particles_per_break", -1}}, "dust.particles_per_break: must be a non-negative integer, got -1"},
      {{{"/dust/max_particles", 20000000}}, "dust.max_particles: must be at most 10000000, got 20000000"},
      // version and required keys
      {{{"/version", std::nullopt}}, "version: required key missing"},
      {{{"/version", 2}}, "version: unsupported scene version 2 (this build reads 1)"},
      {{{"/version", 2}, {"/colour", 1}}, "version: unsupported scene version 2"},  // checked first
      {{{"/buildings", std::nullopt}}, "buildings: required key missing"},
      // size limits
      {{{"/fps", 240}, {"/duration", 200}}, "duration * fps = 48000 frames exceeds limits.max_frames = 20000"},
      {{{"/limits", json{{"max_frames", 40}}}}, "duration * fps = 48 frames exceeds limits.max_frames = 40"},
      {{{"/limits", json{{"max_pieces", 10}}}},
       "buildings: the buildings would fracture into about 99 pieces, above limits.max_pieces = 10"},
      {{{"/buildings/0/floors", 200}, {"/buildings/0/bays", json::array({50, 50})}, {"/buildings/0/footprint", json::array({500, 500})},
        {"/buildings/0/chunks_per_panel", 64}},
       "the buildings would fracture into about 35080200 pieces, above limits.max_pieces = 20000"},
      {{{"/limits/max_pieces", 2000000}}, "limits.max_pieces: must be at most 1000000, got 2000000"},
      {{{"/limits/max_frames", 0}}, "limits.max_frames: must be a positive integer, got 0"},
  };
  for (const Case& c : cases) {
    const std::string text = patched(c.patches);
    INFO(c.message);
    INFO(text);
    CHECK_THROWS_WITH_AS(parse_scene(text), doctest::Contains(c.message.c_str()), drb::Error);
    CHECK(code_of([&] { parse_scene(text); }) == ErrorCode::invalid_argument);
  }
  // The base document itself is valid.
  CHECK_NOTHROW(parse_scene(patched({})));
}

TEST_CASE("malformed JSON is a parse error with the byte position") {
  struct Case {
    std::string text;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"", "scene: malformed JSON at byte 1: parse error at line 1, column 1"},
      {R"({"version": 1, "buildings": [)", "scene: malformed JSON at byte 30: parse error at line 1, column 30"},
      {R"({"version": 1,})", "scene: malformed JSON at byte 15"},
      {"{\"version\": 1}\n garbage", "scene: malformed JSON at byte 17"},
      {"[1, 2]", "scene: the document must be a JSON object, got array"},
      {"42", "scene: the document must be a JSON object, got number"},
      {std::string(100000, '['), "scene: malformed JSON"},
      {std::string(100000, '[') + std::string(100000, ']'), "scene: the document must be a JSON object, got array"},
  };
  for (const Case& c : cases) {
    INFO(c.message);
    CHECK_THROWS_WITH_AS(parse_scene(c.text), doctest::Contains(c.message.c_str()), drb::Error);
    CHECK(code_of([&] { parse_scene(c.text); }) == ErrorCode::parse);
  }
  // Deep nesting inside a valid document is a schema error, not a crash.
  const std::string deep = R"({"version": 1, "buildings": )" + std::string(100000, '[') + std::string(100000, ']') + "}";
  CHECK_THROWS_WITH_AS(parse_scene(deep), doctest::Contains("buildings[0]: must be an object, got array"), drb::Error);
}

TEST_CASE("load_scene: missing files, directories and errors name the file") {
  const std::string missing = "/nonexistent/derrumbe/scene.json";
  CHECK_THROWS_WITH_AS(load_scene(missing), doctest::Contains(missing.c_str()), drb::Error);
  CHECK(code_of([&] { load_scene(missing); }) == ErrorCode::file_not_found);
  CHECK(code_of([&] { load_scene(std::string(DRB_TEST_DATA_DIR)); }) == ErrorCode::io);

  const auto path = std::filesystem::temp_directory_path() / "derrumbe_test_scene_bad.json";
  {
    std::ofstream out(path);
    out << R"({"version": 1, "buildings": [{"floors": 0}]})";
  }
  CHECK_THROWS_WITH_AS(load_scene(path.string()),
                       doctest::Contains((path.string() + ": buildings[0].floors: must be a positive integer").c_str()),
                       drb::Error);
  CHECK(code_of([&] { load_scene(path.string()); }) == ErrorCode::invalid_argument);
  {
    std::ofstream out(path);
    out << R"({"version": 1, )";
  }
  CHECK(code_of([&] { load_scene(path.string()); }) == ErrorCode::parse);
  std::filesystem::remove(path);
}

TEST_CASE("validate checks scenes built in code") {
  Scene s;
  CHECK_THROWS_WITH_AS(validate(s), doctest::Contains("buildings: must list at least one building"), drb::Error);
  s.buildings.push_back(Building{});
  CHECK_NOTHROW(validate(s));

  Scene nan_fps = s;
  nan_fps.fps = std::nan("");
  CHECK_THROWS_WITH_AS(validate(nan_fps), doctest::Contains("fps: must be in (0, 240], got nan"), drb::Error);

  Scene inf_position = s;
  inf_position.buildings[0].position.y() = INFINITY;
  CHECK_THROWS_WITH_AS(validate(inf_position), doctest::Contains("buildings[0].position[1]: must be finite, got inf"),
                       drb::Error);

  Scene version = s;
  version.version = 2;
  CHECK_THROWS_WITH_AS(validate(version), doctest::Contains("version: unsupported scene version 2 (this build reads 1)"),
                       drb::Error);

  Scene bad_trigger = s;
  Trigger t;
  t.building = -1;
  bad_trigger.triggers.push_back(t);
  CHECK_THROWS_WITH_AS(validate(bad_trigger), doctest::Contains("triggers[0].building: must be a building index"),
                       drb::Error);

  Scene cameras = s;
  cameras.cameras = {Camera{"a", {CameraKey{}}}, Camera{"a", {CameraKey{}}}};
  CHECK_THROWS_WITH_AS(validate(cameras), doctest::Contains("cameras[1].name: duplicate name \"a\""), drb::Error);

  Scene no_windows = s;  // windows that would not fit are fine when disabled
  no_windows.buildings[0].windows.enabled = false;
  no_windows.buildings[0].windows.height = 10;
  CHECK_NOTHROW(validate(no_windows));
}

TEST_CASE("the example in docs/scene.md parses") {
  const std::string doc = read_text(std::string(DRB_TEST_DATA_DIR) + "/../docs/scene.md");
  const std::string fence = "```json\n";
  const size_t begin = doc.rfind(fence);
  REQUIRE(begin != std::string::npos);
  const size_t end = doc.find("```", begin + fence.size());
  REQUIRE(end != std::string::npos);
  const Scene s = parse_scene(doc.substr(begin + fence.size(), end - begin - fence.size()));
  check_same(s, load_scene(example("small.json")));  // the doc shows small.json
}
