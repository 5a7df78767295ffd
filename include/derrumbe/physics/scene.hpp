// The scene: a versioned JSON description of buildings, a destruction event and cameras
// (documented in docs/scene.md). Parsing validates everything and names each problem by its
// JSON path, e.g. "buildings[0].floors: must be a positive integer, got -3".
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "derrumbe/physics/types.hpp"

namespace drb::physics {

inline constexpr int kSceneVersion = 1;

struct Ground {
  double friction = 0.8;
  double restitution = 0.05;
};

struct Windows {
  bool enabled = true;
  double width = 1.2;   // m, one opening centred in each bay of each wall panel
  double height = 1.4;  // m
  double sill = 0.9;    // m above the floor slab
};

struct Building {
  std::string name = "building";
  Vec2 position{0, 0};       // centre of the footprint on the ground (x, z)
  double rotation_deg = 0;   // about the vertical axis
  Vec2 footprint{12, 12};    // width (x) and depth (z), m
  int floors = 5;
  double floor_height = 3.2;  // m
  std::array<int, 2> bays{3, 3};  // column bays along x and z
  double column_size = 0.5;   // m, square columns
  double wall_thickness = 0.25;
  double slab_thickness = 0.3;
  Windows windows;
  int chunks_per_panel = 4;   // Voronoi cells each wall/slab panel is split into
  std::string material = "concrete";  // a name in Scene::materials
};

enum class TriggerType { charge, impact, shake, remove_supports };
DRB_EXPORT const char* trigger_type_name(TriggerType t) noexcept;

struct Trigger {
  TriggerType type = TriggerType::charge;
  double time = 0.5;  // s
  // charge / remove_supports: which building and floors (0 = ground floor).
  int building = 0;
  std::vector<int> floors{0};
  double energy = 5.0e6;  // charge: J released per floor, split over the floor's columns
  // remove_supports: which columns, by index in the floor's column grid (empty = all).
  std::vector<int> columns;
  // impact: a spherical projectile.
  double mass = 2000.0;   // kg
  double radius = 0.5;    // m
  Vec3 position{-20, 6, 0};
  Vec3 velocity{40, 0, 0};  // m/s
  // shake: horizontal ground motion a sin(2 pi f t) for `duration` seconds.
  double amplitude = 0.1;  // m
  double frequency = 2.0;  // Hz
  double duration = 3.0;   // s
};

struct DustSettings {
  bool enabled = true;
  int particles_per_break = 8;
  double drag = 1.5;        // 1/s, linear drag toward the air
  double buoyancy = 0.6;    // fraction of gravity cancelled
  double turbulence = 0.8;  // m/s^2, seeded curl-free noise amplitude
  double lifetime = 6.0;    // s
  double radius = 0.4;      // m, initial particle radius (grows with age)
  int max_particles = 200000;
};

struct Limits {
  int max_pieces = 20000;
  int max_frames = 20000;
};

struct Scene {
  int version = kSceneVersion;
  std::string units = "m";
  double fps = 24.0;
  double duration = 5.0;  // s
  uint64_t seed = 0;
  int substeps = 4;       // physics substeps per frame
  double intensity = 0.5; // [0, 1]: scales trigger energy, lowers bond strength
  Ground ground;
  std::vector<Material> materials{Material{}};
  std::vector<Building> buildings;
  std::vector<Trigger> triggers;
  DustSettings dust;
  std::vector<Camera> cameras;
  Limits limits;

  DRB_EXPORT int64_t num_frames() const;
  // Index of a material by name; throws Error(not_found) naming the known ones.
  DRB_EXPORT size_t material_index(const std::string& name) const;
};

// Parses and validates a scene document. Errors: ErrorCode::parse for malformed JSON,
// ErrorCode::invalid_argument for schema violations (message starts with the JSON path).
DRB_EXPORT Scene parse_scene(const std::string& json_text);
DRB_EXPORT Scene load_scene(const std::string& path);  // file_not_found if missing
// Serializes every field (parse_scene(to_json(s)) == s).
DRB_EXPORT std::string to_json(const Scene& scene);
// One camera as the scene file writes it (for documents that embed cameras, such as a shot's
// settings); parse_camera validates it as parse_scene does, errors starting with `path`.
DRB_EXPORT std::string camera_to_json(const Camera& camera);
DRB_EXPORT Camera parse_camera(const std::string& json_text, const std::string& path = "camera");
// The checks parse_scene applies, for scenes built in code.
DRB_EXPORT void validate(const Scene& scene);

}  // namespace drb::physics
