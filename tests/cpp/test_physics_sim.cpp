// Fracture and simulation: a building stands, a charge brings it down, intensity raises the
// destruction, and the same scene gives bitwise identical tracks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include <xtensor/xview.hpp>

#include "derrumbe/physics/simulate.hpp"

using namespace drb::physics;

namespace {

Scene small_scene(int floors = 3, double duration = 2.0) {
  Scene s;
  s.fps = 24;
  s.duration = duration;
  s.seed = 1;
  Building b;
  b.floors = floors;
  b.footprint = Vec2(8, 8);
  b.bays = {2, 2};
  b.chunks_per_panel = 3;
  s.buildings = {b};
  return s;
}

Trigger charge(double time, std::vector<int> floors, double energy = 4e6) {
  Trigger t;
  t.type = TriggerType::charge;
  t.time = time;
  t.floors = std::move(floors);
  t.energy = energy;
  return t;
}

double max_displacement(const SimTrack& t) {
  double worst = 0;
  for (int64_t p = 0; p < t.num_pieces(); ++p)
    worst = std::max(worst, (t.pose(t.num_frames() - 1, p).translation() - t.pose(0, p).translation()).norm());
  return worst;
}

double volume_of(const Mesh& m) {
  double v = 0;
  for (const auto& tri : m.triangles)
    v += m.vertices[tri[0]].cast<double>().dot(m.vertices[tri[1]].cast<double>().cross(m.vertices[tri[2]].cast<double>())) / 6;
  return v;
}

}  // namespace

TEST_CASE("fracture: pieces are closed convex prisms with the building's mass, bonded together") {
  const Scene s = small_scene();
  const Fractured fr = fracture(s);
  const Building& b = s.buildings[0];
  int columns = 0;
  double mass = 0;
  for (const auto& p : fr.pieces) {
    columns += p.kind == PieceKind::column;
    const double vol = volume_of(p.mesh);
    CHECK(vol > 0);
    CHECK(p.mass == doctest::Approx(vol * s.materials[0].density).epsilon(1e-4));
    // The local frame is centred at the centre of mass.
    Eigen::Vector3d mean(0, 0, 0);
    for (const auto& v : p.mesh.vertices) mean += v.cast<double>();
    CHECK((p.inertia.array() > 0).all());
    mass += p.mass;
  }
  CHECK(columns == (b.bays[0] + 1) * (b.bays[1] + 1) * b.floors);
  // Total volume: columns + slabs + walls minus windows, computed independently.
  const double W = b.footprint.x(), D = b.footprint.y(), cs = b.column_size, st = b.slab_thickness;
  const double h = b.floor_height - st;
  const double cols = columns * cs * cs * h;
  const double slabs = b.floors * (W + cs) * (D + cs) * st;
  const double wall_len = 2 * (W - b.bays[0] * cs) + 2 * (D - b.bays[1] * cs);
  const int windows = 2 * (b.bays[0] + b.bays[1]) * b.floors;
  const double walls = b.floors * wall_len * h * b.wall_thickness -
                       windows * b.windows.width * b.windows.height * b.wall_thickness;
  CHECK(mass == doctest::Approx((cols + slabs + walls) * s.materials[0].density).epsilon(1e-6));
  // Every ground-floor column is bonded to the ground; every piece has at least one bond.
  std::vector<int> bonds_of(fr.pieces.size(), 0);
  int ground = 0;
  for (const auto& bond : fr.bonds) {
    CHECK(bond.area > 0);
    CHECK(bond.strength > 0);
    ++bonds_of[bond.piece_a];
    if (bond.piece_b == kGroundPiece) ++ground;
    else ++bonds_of[bond.piece_b];
  }
  CHECK(ground >= (b.bays[0] + 1) * (b.bays[1] + 1));
  CHECK(std::count(bonds_of.begin(), bonds_of.end(), 0) == 0);
  // Seeded: the same scene fractures identically, another seed differently.
  const Fractured again = fracture(s);
  REQUIRE(again.pieces.size() == fr.pieces.size());
  for (size_t i = 0; i < fr.pieces.size(); ++i) CHECK(again.pieces[i].mesh.vertices == fr.pieces[i].mesh.vertices);
  Scene other = s;
  other.seed = 2;
  const Fractured different = fracture(other);
  bool differs = different.pieces.size() != fr.pieces.size();
  for (size_t i = 0; !differs && i < fr.pieces.size(); ++i) differs = different.pieces[i].mesh.vertices != fr.pieces[i].mesh.vertices;
  CHECK(differs);
}

TEST_CASE("a building with no trigger stands still") {
  const SimTrack t = simulate(small_scene(4, 3.0));
  CHECK(t.num_frames() == 72);
  CHECK(t.breaks.empty());
  CHECK(max_displacement(t) < 0.02);
}

TEST_CASE("a building woken by an event that misses it still stands") {
  // A projectile flying away wakes the whole simulation: the building must hold its own weight.
  Scene s = small_scene(4, 3.0);
  Trigger miss;
  miss.type = TriggerType::impact;
  miss.time = 0.1;
  miss.mass = 10;
  miss.radius = 0.2;
  miss.position = Vec3(-30, 5, 0);
  miss.velocity = Vec3(-10, 0, 0);
  s.triggers = {miss};
  SimTrack t = simulate(s);
  t.pieces.pop_back();  // the projectile
  t.poses = xt::view(t.poses, xt::all(), xt::range(0, t.num_pieces()), xt::all());
  CHECK(max_displacement(t) < 0.02);
  CHECK(t.breaks.size() < 10);
}

TEST_CASE("a charge on the ground floor brings the building down") {
  Scene s = small_scene(4, 4.0);
  s.triggers = {charge(0.2, {0})};
  const SimTrack t = simulate(s);
  CHECK(!t.breaks.empty());
  const double height = s.buildings[0].floors * s.buildings[0].floor_height;
  int low = 0;
  for (int64_t p = 0; p < t.num_pieces(); ++p)
    low += t.pose(t.num_frames() - 1, p).translation().y() < height / 3;
  CHECK(low > 0.7 * t.num_pieces());
  // Dust was emitted at the breaks and lies above the ground.
  size_t particles = 0;
  for (const auto& d : t.dust) particles += d.shape(0);
  CHECK(particles > 0);
}

TEST_CASE("the same scene gives bitwise identical tracks") {
  Scene s = small_scene(3, 1.5);
  s.triggers = {charge(0.1, {0})};
  const SimTrack a = simulate(s), b = simulate(s);
  CHECK(a.poses == b.poses);
  REQUIRE(a.breaks.size() == b.breaks.size());
  for (size_t i = 0; i < a.breaks.size(); ++i) {
    CHECK(a.breaks[i].frame == b.breaks[i].frame);
    CHECK(a.breaks[i].position == b.breaks[i].position);
  }
  REQUIRE(a.dust.size() == b.dust.size());
  for (size_t f = 0; f < a.dust.size(); ++f) CHECK(a.dust[f] == b.dust[f]);
}

TEST_CASE("raising intensity raises destruction") {
  // Mean over seeds of broken bonds and of debris spread (mean horizontal distance from the
  // building's axis at the end), at increasing intensity.
  std::vector<double> broken, spread;
  for (double intensity : {0.1, 0.5, 0.9}) {
    double b = 0, d = 0;
    for (uint64_t seed : {1, 2, 3}) {
      Scene s = small_scene(3, 2.5);
      s.seed = seed;
      s.intensity = intensity;
      s.triggers = {charge(0.1, {0}, 2e6)};
      const SimTrack t = simulate(s);
      b += static_cast<double>(t.breaks.size());
      double r = 0;
      for (int64_t p = 0; p < t.num_pieces(); ++p) {
        const auto x = t.pose(t.num_frames() - 1, p).translation();
        r += std::hypot(x.x(), x.z());
      }
      d += r / static_cast<double>(t.num_pieces());
    }
    broken.push_back(b / 3);
    spread.push_back(d / 3);
  }
  CAPTURE(broken[0]);
  CAPTURE(broken[1]);
  CAPTURE(broken[2]);
  CAPTURE(spread[0]);
  CAPTURE(spread[1]);
  CAPTURE(spread[2]);
  CHECK(broken[0] < broken[1]);
  CHECK(broken[1] < broken[2]);
  CHECK(spread[0] < spread[1]);
  CHECK(spread[1] < spread[2]);
}

TEST_CASE("impact, shake and support removal triggers act") {
  Scene s = small_scene(3, 2.0);
  Trigger hit;
  hit.type = TriggerType::impact;
  hit.time = 0.2;
  hit.mass = 5000;
  hit.radius = 0.6;
  hit.position = Vec3(-10, 2, 0);
  hit.velocity = Vec3(30, 0, 0);
  s.triggers = {hit};
  const SimTrack t = simulate(s);
  const int64_t ball = t.num_pieces() - 1;
  CHECK(t.pieces[static_cast<size_t>(ball)].kind == PieceKind::debris);
  CHECK(t.pose(3, ball).translation().x() == doctest::Approx(-10.0));  // waits until its time
  CHECK(!t.breaks.empty());

  Scene shaken = small_scene(3, 2.0);
  Trigger quake;
  quake.type = TriggerType::shake;
  quake.time = 0.0;
  quake.amplitude = 0.3;
  quake.frequency = 2.0;
  quake.duration = 2.0;
  shaken.intensity = 1.0;
  shaken.triggers = {quake};
  CHECK(max_displacement(simulate(shaken)) > 0.05);

  Scene removed = small_scene(3, 3.0);
  Trigger remove;
  remove.type = TriggerType::remove_supports;
  remove.time = 0.1;
  remove.floors = {0};
  removed.triggers = {remove};
  CHECK(max_displacement(simulate(removed)) > 1.0);
}

TEST_CASE("simulation reports progress and can be cancelled") {
  Scene s = small_scene(2, 1.0);
  int64_t calls = 0;
  simulate(s, [&](int64_t frame, int64_t total) {
    ++calls;
    CHECK(total == 24);
    return false;
  });
  CHECK(calls == 23);
  CHECK_THROWS_WITH_AS(simulate(s, [](int64_t frame, int64_t) { return frame == 5; }), doctest::Contains("cancelled"),
                       drb::Error);
}
