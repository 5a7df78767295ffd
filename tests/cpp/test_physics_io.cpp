// SimTrack files: the .glb export / import and the binary cache. Round trips, a hand-made
// DCC-style .glb, structural checks of the export, and corrupt input of every kind (each must be
// a drb::Error with a clear message, never a crash or an out-of-bounds read).
#include <doctest/doctest.h>

#include "checks.hpp"
#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numbers>
#include <string>
#include <vector>

#include <unistd.h>

#include <xtensor/xbuilder.hpp>

#include "derrumbe/core/error.hpp"
#include "derrumbe/physics/io.hpp"

using namespace drb::physics;
using drb::ErrorCode;
using json = nlohmann::json;

namespace {

// ---- files -----------------------------------------------------------------------------------

// A per-process scratch folder, removed at exit.
struct ScratchDir {
  std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("drb_test_io_" + std::to_string(::getpid()));
  ScratchDir() { std::filesystem::create_directories(path); }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

std::string temp_path(const std::string& name) {
  static const ScratchDir dir;
  return (dir.path / name).string();
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.is_open());
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

template <class T>
T read_le(const std::vector<uint8_t>& bytes, size_t offset) {
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(T));
  return v;
}
template <class T>
void write_le(std::vector<uint8_t>& bytes, size_t offset, T v) {
  std::memcpy(bytes.data() + offset, &v, sizeof(T));
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

// Runs f and accepts success or a drb::Error; anything else (another exception) fails.
bool succeeds_or_drb_error(const std::function<void()>& f) {
  try {
    f();
    return true;
  } catch (const drb::Error&) {
    return true;
  } catch (...) {
    return false;
  }
}

// ---- a track built by hand ---------------------------------------------------------------------

Mesh box_mesh(float hx, float hy, float hz) {
  Mesh m;
  for (int i = 0; i < 8; ++i)
    m.vertices.emplace_back((i & 1) ? hx : -hx, (i & 2) ? hy : -hy, (i & 4) ? hz : -hz);
  // Outward counter-clockwise faces (two triangles each).
  const uint32_t quads[6][4] = {{0, 4, 6, 2}, {1, 3, 7, 5}, {0, 1, 5, 4}, {2, 6, 7, 3}, {0, 2, 3, 1}, {4, 5, 7, 6}};
  for (const auto& q : quads) {
    m.triangles.push_back({q[0], q[1], q[2]});
    m.triangles.push_back({q[0], q[2], q[3]});
  }
  return m;
}

// The tetrahedron (0,0,0), (1,0,0), (0,1,0), (0,0,1): volume 1/6, centroid (1/4, 1/4, 1/4).
const std::vector<std::array<uint32_t, 3>> kTetraTriangles = {{0, 2, 1}, {0, 1, 3}, {0, 3, 2}, {1, 2, 3}};
const float kTetra[4][3] = {{0, 0, 0}, {1, 0, 0}, {0, 1, 0}, {0, 0, 1}};

Mesh tetra_mesh() {  // centred at its centroid
  Mesh m;
  for (const auto& v : kTetra) m.vertices.emplace_back(v[0] - 0.25f, v[1] - 0.25f, v[2] - 0.25f);
  m.triangles = kTetraTriangles;
  return m;
}

SimTrack make_track(size_t frames = 30) {
  SimTrack t;
  t.fps = 24.0;
  Material concrete;
  Material brick;
  brick.name = "old brick";
  brick.look = "brick";
  brick.density = 1900.0;
  brick.friction = 0.61;
  brick.bond_strength = 1.25e6;
  t.materials = {concrete, brick};

  const Mesh meshes[3] = {box_mesh(0.5f, 0.25f, 1.0f), box_mesh(1.5f, 0.2f, 0.2f), tetra_mesh()};
  const PieceKind kinds[3] = {PieceKind::slab, PieceKind::column, PieceKind::debris};
  for (uint32_t p = 0; p < 3; ++p) {
    Piece piece;
    piece.id = 40 + p;
    piece.kind = kinds[p];
    piece.building = p == 2 ? -1 : 0;
    piece.material = p % 2;
    piece.mesh = meshes[p];
    piece.mass = 100.0 + 17.25 * p;
    piece.inertia = Vec3(1.5 + p, 2.25, 3.125 * (p + 1));
    t.pieces.push_back(piece);
  }

  t.poses = xt::xtensor<float, 3>::from_shape({frames, 3, 7});
  for (size_t f = 0; f < frames; ++f)
    for (size_t p = 0; p < 3; ++p) {
      const double time = static_cast<double>(f) / t.fps;
      const Vec3 axis = Vec3(1.0, 0.5 * p, 0.3 - 0.2 * p).normalized();
      Quat q(Eigen::AngleAxisd(0.4 + (1.5 + p) * time * (1 + time), axis));
      if (p == 2 && f % 3 == 1) q.coeffs() = -q.coeffs();  // q and -q are the same rotation
      const Vec3 x(2.0 * p + std::sin(3.0 * time), 8.0 - 4.9 * time * time, 0.3 * time - p);
      const double pose[7] = {q.x(), q.y(), q.z(), q.w(), x.x(), x.y(), x.z()};
      for (size_t c = 0; c < 7; ++c) t.poses(f, p, c) = static_cast<float>(pose[c]);
    }

  BreakEvent b;
  b.frame = static_cast<int32_t>(std::min<size_t>(12, frames));
  b.piece_a = 0;
  b.piece_b = 1;
  b.position = Eigen::Vector3f(0.25f, 7.5f, -0.125f);
  b.energy = 1234.5f;
  t.breaks.push_back(b);

  for (size_t f = 0; f < frames; ++f) {
    const size_t n = f < 12 ? 0 : f - 10;
    auto d = xt::xtensor<float, 2>::from_shape({n, 5});
    for (size_t i = 0; i < n; ++i)
      for (size_t c = 0; c < 5; ++c) d(i, c) = 0.01f * static_cast<float>(f * 7 + i * 3 + c);
    t.dust.push_back(d);
  }

  Camera main;
  main.name = "main";
  for (int k = 0; k < 3; ++k) {
    CameraKey key;
    key.time = 0.5 * k;
    key.position = Vec3(10.0 - 2 * k, 1.7 + k, 30.0 - 5 * k);
    key.target = Vec3(0.0, 6.0 - k, 0.0);
    key.focal_length_mm = 35.0 + 10 * k;
    main.keys.push_back(key);
  }
  Camera orbit;
  orbit.name = "orbit";
  CameraKey key;
  key.time = 0.25;
  key.position = Vec3(-20, 15, 5);
  key.target = Vec3(1, 2, 3);
  key.up = Vec3(0.1, 1.0, 0.0);
  key.focal_length_mm = 24.0;
  key.sensor_width_mm = 23.5;
  key.sensor_height_mm = 15.6;
  orbit.keys.push_back(key);
  t.cameras = {main, orbit};
  t.validate();
  return t;
}

// ---- comparisons ---------------------------------------------------------------------------------

void check_same_materials(const SimTrack& a, const SimTrack& b) {
  REQUIRE(a.materials.size() == b.materials.size());
  for (size_t i = 0; i < a.materials.size(); ++i) drb::test::check_same(a.materials[i], b.materials[i]);
}

void check_same_cameras(const SimTrack& a, const SimTrack& b) {
  REQUIRE(a.cameras.size() == b.cameras.size());
  for (size_t c = 0; c < a.cameras.size(); ++c) drb::test::check_same(a.cameras[c], b.cameras[c]);
}

void check_same_breaks(const SimTrack& a, const SimTrack& b) {
  REQUIRE(a.breaks.size() == b.breaks.size());
  for (size_t i = 0; i < a.breaks.size(); ++i) {
    CHECK(a.breaks[i].frame == b.breaks[i].frame);
    CHECK(a.breaks[i].piece_a == b.breaks[i].piece_a);
    CHECK(a.breaks[i].piece_b == b.breaks[i].piece_b);
    CHECK(a.breaks[i].position == b.breaks[i].position);
    CHECK(a.breaks[i].energy == b.breaks[i].energy);
  }
}

void check_same_piece_scalars(const Piece& a, const Piece& b) {
  CHECK(a.id == b.id);
  CHECK(a.kind == b.kind);
  CHECK(a.building == b.building);
  CHECK(a.material == b.material);
  CHECK(a.mass == b.mass);
  CHECK(a.inertia == b.inertia);
}

// Largest difference of rotation matrices and of translations over all frames and pieces, and of
// every mesh vertex placed in the world at every frame.
struct PoseError {
  double rotation = 0, translation = 0, world_vertex = 0;
};
PoseError pose_error(const SimTrack& a, const SimTrack& b) {
  PoseError e;
  for (int64_t f = 0; f < a.num_frames(); ++f)
    for (int64_t p = 0; p < a.num_pieces(); ++p) {
      const Eigen::Isometry3d x = a.pose(f, p), y = b.pose(f, p);
      e.rotation = std::max(e.rotation, (x.linear() - y.linear()).cwiseAbs().maxCoeff());
      e.translation = std::max(e.translation, (x.translation() - y.translation()).cwiseAbs().maxCoeff());
      const auto& va = a.pieces[p].mesh.vertices;
      const auto& vb = b.pieces[p].mesh.vertices;
      REQUIRE(va.size() == vb.size());
      for (size_t v = 0; v < va.size(); ++v)
        e.world_vertex = std::max(e.world_vertex, (x * va[v].cast<double>() - y * vb[v].cast<double>()).cwiseAbs().maxCoeff());
    }
  return e;
}

// ---- .glb by hand -------------------------------------------------------------------------------

std::vector<uint8_t> glb_bytes(const std::string& json_text, const std::vector<uint8_t>& bin) {
  std::string text = json_text;
  while (text.size() % 4) text.push_back(' ');
  std::vector<uint8_t> b = bin;
  while (b.size() % 4) b.push_back(0);
  std::vector<uint8_t> out(12);
  auto put32 = [&](uint32_t v) {
    const size_t at = out.size();
    out.resize(at + 4);
    write_le(out, at, v);
  };
  put32(static_cast<uint32_t>(text.size()));
  put32(0x4E4F534A);
  out.insert(out.end(), text.begin(), text.end());
  if (!b.empty()) {
    put32(static_cast<uint32_t>(b.size()));
    put32(0x004E4942);
    out.insert(out.end(), b.begin(), b.end());
  }
  write_le<uint32_t>(out, 0, 0x46546C67);
  write_le<uint32_t>(out, 4, 2);
  write_le<uint32_t>(out, 8, static_cast<uint32_t>(out.size()));
  return out;
}

template <class T>
void append(std::vector<uint8_t>& bin, std::initializer_list<T> values) {
  for (T v : values) {
    const size_t at = bin.size();
    bin.resize(at + sizeof(T));
    write_le(bin, at, v);
  }
}

// A DCC-style file: a parent node (translation (1, 2, 3), scale 2) with a child "rock" holding the
// tetrahedron (interleaved positions, byteStride 16, UNSIGNED_SHORT indices); the child has a
// LINEAR translation (0,0,0) → (1,0,0) over [0, 1] s and a STEP rotation: identity, then 90°
// about +Y from 0.5 s. A perspective camera node at (0, 1, 10) looks down -Z.
struct HandMade {
  json doc;
  std::vector<uint8_t> bin;
};
HandMade hand_made() {
  HandMade h;
  auto& bin = h.bin;
  for (const auto& v : kTetra) {  // bufferView 0: 64 bytes, stride 16
    append<float>(bin, {v[0], v[1], v[2]});
    append<uint32_t>(bin, {0xDEADBEEF});
  }
  for (const auto& t : kTetraTriangles)  // bufferView 1: 24 bytes at 64
    append<uint16_t>(bin, {static_cast<uint16_t>(t[0]), static_cast<uint16_t>(t[1]), static_cast<uint16_t>(t[2])});
  append<float>(bin, {0.0f, 1.0f});                      // 2: translation times at 88
  append<float>(bin, {0, 0, 0, 1, 0, 0});                 // 3: translations at 96
  append<float>(bin, {0.0f, 0.5f});                      // 4: rotation times at 120
  const float s = std::sqrt(0.5f);
  append<float>(bin, {0, 0, 0, 1, 0, s, 0, s});           // 5: rotations at 128
  REQUIRE(bin.size() == 160);
  h.doc = json::parse(R"({
    "asset": {"version": "2.0", "generator": "hand"},
    "scene": 0,
    "scenes": [{"nodes": [0, 2]}],
    "nodes": [
      {"name": "parent", "translation": [1, 2, 3], "scale": [2, 2, 2], "children": [1]},
      {"name": "rock", "mesh": 0},
      {"name": "shot cam", "camera": 0, "translation": [0, 1, 10]}
    ],
    "cameras": [{"type": "perspective", "perspective": {"yfov": 0.8, "aspectRatio": 1.5, "znear": 0.1}}],
    "meshes": [{"name": "rock", "primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
    "buffers": [{"byteLength": 160}],
    "bufferViews": [
      {"buffer": 0, "byteOffset": 0, "byteLength": 64, "byteStride": 16},
      {"buffer": 0, "byteOffset": 64, "byteLength": 24},
      {"buffer": 0, "byteOffset": 88, "byteLength": 8},
      {"buffer": 0, "byteOffset": 96, "byteLength": 24},
      {"buffer": 0, "byteOffset": 120, "byteLength": 8},
      {"buffer": 0, "byteOffset": 128, "byteLength": 32}
    ],
    "accessors": [
      {"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3", "min": [0, 0, 0], "max": [1, 1, 1]},
      {"bufferView": 1, "componentType": 5123, "count": 12, "type": "SCALAR"},
      {"bufferView": 2, "componentType": 5126, "count": 2, "type": "SCALAR", "min": [0], "max": [1]},
      {"bufferView": 3, "componentType": 5126, "count": 2, "type": "VEC3"},
      {"bufferView": 4, "componentType": 5126, "count": 2, "type": "SCALAR", "min": [0], "max": [0.5]},
      {"bufferView": 5, "componentType": 5126, "count": 2, "type": "VEC4"}
    ],
    "animations": [{
      "name": "Take 001",
      "samplers": [{"input": 2, "output": 3, "interpolation": "LINEAR"}, {"input": 4, "output": 5, "interpolation": "STEP"}],
      "channels": [{"sampler": 0, "target": {"node": 1, "path": "translation"}},
                   {"sampler": 1, "target": {"node": 1, "path": "rotation"}}]
    }]
  })");
  return h;
}

std::string write_glb(const std::string& name, const json& doc, const std::vector<uint8_t>& bin) {
  const std::string path = temp_path(name);
  write_bytes(path, glb_bytes(doc.dump(), bin));
  return path;
}

}  // namespace

// ================================================================================================

TEST_CASE("glb: export then import restores poses, meshes and the whole track") {
  const SimTrack track = make_track();
  const std::string path = temp_path("roundtrip.glb");
  export_glb(track, path);
  const SimTrack back = import_glb(path, track.fps);

  CHECK(back.fps == track.fps);
  REQUIRE(back.num_frames() == track.num_frames());
  REQUIRE(back.num_pieces() == track.num_pieces());
  const PoseError e = pose_error(track, back);
  CHECK(e.rotation < 1e-5);
  CHECK(e.translation < 1e-5);
  CHECK(e.world_vertex < 2e-5);
  for (size_t p = 0; p < track.pieces.size(); ++p) {
    check_same_piece_scalars(track.pieces[p], back.pieces[p]);
    CHECK(back.pieces[p].mesh.vertices == track.pieces[p].mesh.vertices);
    CHECK(back.pieces[p].mesh.triangles == track.pieces[p].mesh.triangles);
  }
  check_same_materials(track, back);
  check_same_breaks(track, back);
  check_same_cameras(track, back);
  CHECK(back.dust.empty());  // dust is not exported to glTF; the cache keeps it

  SUBCASE("another fps resamples the animation and moves the break frame") {
    const SimTrack half = import_glb(path, 12.0);
    CHECK(half.num_frames() == 15);  // 29 / 24 s at 12 fps
    CHECK(half.breaks.at(0).frame == 6);
    for (int64_t f = 0; f < half.num_frames(); ++f)
      for (int64_t p = 0; p < 3; ++p) {
        CHECK((half.pose(f, p).linear() - track.pose(2 * f, p).linear()).cwiseAbs().maxCoeff() < 1e-5);
        CHECK((half.pose(f, p).translation() - track.pose(2 * f, p).translation()).cwiseAbs().maxCoeff() < 1e-5);
      }
  }
}

TEST_CASE("glb: the export is structurally valid glTF 2.0") {
  const SimTrack track = make_track();
  const std::string path = temp_path("structure.glb");
  export_glb(track, path);
  const std::vector<uint8_t> bytes = read_bytes(path);

  REQUIRE(bytes.size() >= 20);
  CHECK(std::memcmp(bytes.data(), "glTF", 4) == 0);
  CHECK(read_le<uint32_t>(bytes, 4) == 2);
  CHECK(read_le<uint32_t>(bytes, 8) == bytes.size());
  const auto json_length = read_le<uint32_t>(bytes, 12);
  CHECK(read_le<uint32_t>(bytes, 16) == 0x4E4F534Au);
  CHECK(json_length % 4 == 0);
  REQUIRE(20 + json_length + 8 <= bytes.size());
  const auto bin_length = read_le<uint32_t>(bytes, 20 + json_length);
  CHECK(read_le<uint32_t>(bytes, 24 + json_length) == 0x004E4942u);
  CHECK(bin_length % 4 == 0);
  CHECK(28 + json_length + bin_length == bytes.size());
  const uint8_t* bin = bytes.data() + 28 + json_length;
  const json doc = json::parse(bytes.begin() + 20, bytes.begin() + 20 + json_length);

  CHECK(doc["asset"]["version"] == "2.0");
  CHECK(doc["asset"]["generator"] == "derrumbe");
  REQUIRE(doc["buffers"].size() == 1);
  CHECK(!doc["buffers"][0].contains("uri"));
  const size_t buffer_length = doc["buffers"][0]["byteLength"];
  CHECK(buffer_length <= bin_length);
  for (const json& view : doc["bufferViews"])
    CHECK(view.value("byteOffset", 0) + view["byteLength"].get<size_t>() <= buffer_length);
  for (const json& acc : doc["accessors"]) {
    const json& view = doc["bufferViews"][acc["bufferView"].get<size_t>()];
    const int comps = acc["type"] == "SCALAR" ? 1 : acc["type"] == "VEC3" ? 3 : 4;
    CHECK((acc["componentType"] == 5126 || acc["componentType"] == 5125));
    CHECK(acc["count"].get<size_t>() >= 1);
    CHECK(acc.value("byteOffset", 0) + acc["count"].get<size_t>() * comps * 4 <= view["byteLength"].get<size_t>());
    CHECK(view.value("byteOffset", 0) % 4 == 0);
  }

  // Pieces: named nodes with extras, meshes whose POSITION has the true min / max.
  REQUIRE(doc["nodes"].size() == 5);  // 3 pieces + 2 cameras
  for (size_t p = 0; p < 3; ++p) {
    const json& node = doc["nodes"][p];
    CHECK(node["name"] == "piece_0004" + std::to_string(p));
    CHECK(node["extras"]["derrumbe"]["id"] == 40 + p);
    CHECK(node["extras"]["derrumbe"]["kind"] == piece_kind_name(track.pieces[p].kind));
    const json& prim = doc["meshes"][node["mesh"].get<size_t>()]["primitives"][0];
    CHECK(prim["material"] == track.pieces[p].material);
    const json& pos = doc["accessors"][prim["attributes"]["POSITION"].get<size_t>()];
    REQUIRE(pos.contains("min"));
    REQUIRE(pos.contains("max"));
    const json& view = doc["bufferViews"][pos["bufferView"].get<size_t>()];
    const auto* v = reinterpret_cast<const float*>(bin + view["byteOffset"].get<size_t>());
    for (int c = 0; c < 3; ++c) {
      float lo = INFINITY, hi = -INFINITY;
      for (size_t i = 0; i < pos["count"].get<size_t>(); ++i) {
        lo = std::min(lo, v[i * 3 + c]);
        hi = std::max(hi, v[i * 3 + c]);
      }
      CHECK(pos["min"][c].get<double>() == lo);
      CHECK(pos["max"][c].get<double>() == hi);
    }
    const json& idx = doc["accessors"][prim["indices"].get<size_t>()];
    CHECK(idx["componentType"] == 5125);
    CHECK(idx["count"] == 3 * track.pieces[p].mesh.triangles.size());
  }
  REQUIRE(doc["materials"].size() == 2);
  CHECK(doc["materials"][1]["name"] == "old brick");
  CHECK(doc["materials"][1]["pbrMetallicRoughness"]["baseColorFactor"].size() == 4);

  // One animation "simulation": 2 channels per piece over a shared time accessor with min / max,
  // 2 per camera.
  REQUIRE(doc["animations"].size() == 1);
  const json& anim = doc["animations"][0];
  CHECK(anim["name"] == "simulation");
  CHECK(anim["channels"].size() == 3 * 2 + 2 * 2);
  const json& time = doc["accessors"][anim["samplers"][0]["input"].get<size_t>()];
  CHECK(time["min"][0] == 0.0);
  CHECK(time["max"][0].get<double>() == doctest::Approx(29.0 / 24.0).epsilon(1e-6));
  for (const json& s : anim["samplers"]) {
    CHECK(s["interpolation"] == "LINEAR");
    CHECK(doc["accessors"][s["input"].get<size_t>()].contains("min"));
    CHECK(doc["accessors"][s["input"].get<size_t>()].contains("max"));
  }

  // Cameras: perspective, yfov from the lens, looking at the target down local -Z.
  REQUIRE(doc["cameras"].size() == 2);
  const json& cam = doc["cameras"][1]["perspective"];
  CHECK(cam["yfov"].get<double>() == doctest::Approx(2 * std::atan(15.6 / 2 / 24.0)));
  CHECK(cam["aspectRatio"].get<double>() == doctest::Approx(23.5 / 15.6));
  const json& cam_node = doc["nodes"][4];
  CHECK(cam_node["camera"] == 1);
  const auto& r = cam_node["rotation"];
  const Quat q(r[3].get<double>(), r[0].get<double>(), r[1].get<double>(), r[2].get<double>());
  const Vec3 look = q * Vec3(0, 0, -1);
  const Vec3 expected = (Vec3(1, 2, 3) - Vec3(-20, 15, 5)).normalized();
  CHECK((look - expected).norm() < 1e-6);
  CHECK(std::abs((q * Vec3(1, 0, 0)).dot(Vec3(0.1, 1.0, 0.0))) < 1e-6);  // right is level with the given up
  CHECK((q * Vec3(0, 1, 0)).dot(Vec3(0.1, 1.0, 0.0)) > 0.8);

  CHECK(doc["extras"]["derrumbe"]["fps"] == 24.0);
  CHECK(doc["extras"]["derrumbe"]["breaks"].size() == 1);
}

TEST_CASE("glb: a track without frames, cameras or materials still exports and imports") {
  SimTrack t;
  Piece piece;
  piece.mesh = tetra_mesh();
  t.pieces.push_back(piece);
  t.poses = xt::zeros<float>({1, 1, 7});
  t.poses(0, 0, 3) = 1.0f;
  const std::string path = temp_path("tiny.glb");
  export_glb(t, path);
  const SimTrack back = import_glb(path);
  CHECK(back.num_frames() == 1);
  REQUIRE(back.num_pieces() == 1);
  CHECK(back.pieces[0].mesh.vertices == piece.mesh.vertices);
  CHECK(back.materials.empty());
  CHECK(pose_error(t, back).world_vertex < 1e-6);
}

TEST_CASE("glb: a hand-made DCC file imports with parent transforms, LINEAR and STEP keys") {
  const HandMade h = hand_made();
  const std::string path = write_glb("handmade.glb", h.doc, h.bin);
  const SimTrack t = import_glb(path, 4.0);

  REQUIRE(t.num_frames() == 5);  // keys span [0, 1] s
  REQUIRE(t.num_pieces() == 1);
  const Piece& piece = t.pieces[0];
  CHECK(piece.kind == PieceKind::debris);
  CHECK(piece.building == -1);
  REQUIRE(t.materials.size() == 1);
  CHECK(piece.material == 0);
  // The rest scale 2 is baked into the vertices: volume 8/6, the closed-mesh mass at 2400 kg/m^3.
  CHECK(piece.mass == doctest::Approx(2400.0 * 8.0 / 6.0));
  // Inertia of the tetrahedron about its centroid, scaled by 2: Ixx = m (3/80) (2^2) (b^2 + c^2)...
  // computed independently: the tetrahedron's covariance about the origin is V/20 (I + 11^T) for
  // unit legs, so about the centroid C = V/20 (I + 11^T) - V c c^T; I_xx = C_yy + C_zz.
  {
    const double V = 8.0 / 6.0, L = 2.0;
    const double cov_diag = V / 20.0 * 2.0 * L * L - V * (0.25 * L) * (0.25 * L);
    CHECK(piece.inertia.x() == doctest::Approx(2400.0 * 2.0 * cov_diag));
    CHECK(piece.inertia.y() == doctest::Approx(piece.inertia.x()));
  }
  REQUIRE(piece.mesh.vertices.size() == 4);
  Vec3 mean = Vec3::Zero();
  for (const auto& v : piece.mesh.vertices) mean += v.cast<double>();
  CHECK(mean.norm() < 1e-6);  // re-centred on the centre of mass (the tetrahedron's centroid)

  const Eigen::Matrix3d ry90 = Eigen::AngleAxisd(std::numbers::pi / 2, Vec3::UnitY()).toRotationMatrix();
  for (int64_t f = 0; f < 5; ++f) {
    const double time = f / 4.0;
    const Eigen::Matrix3d r = time < 0.5 ? Eigen::Matrix3d::Identity() : ry90;  // STEP
    CHECK((t.pose(f, 0).linear() - r).cwiseAbs().maxCoeff() < 1e-6);
    for (size_t v = 0; v < 4; ++v) {
      const Vec3 local(kTetra[v][0], kTetra[v][1], kTetra[v][2]);
      const Vec3 expected = Vec3(1, 2, 3) + 2.0 * (Vec3(time, 0, 0) + r * local);  // LINEAR x(t) = t
      const Vec3 got = t.pose(f, 0) * piece.mesh.vertices[v].cast<double>();
      CHECK((got - expected).cwiseAbs().maxCoeff() < 1e-5);
    }
  }

  REQUIRE(t.cameras.size() == 1);
  const Camera& cam = t.cameras[0];
  CHECK(cam.name == "shot cam");
  REQUIRE(cam.keys.size() == 5);
  const CameraKey& k = cam.keys[3];
  CHECK(k.time == doctest::Approx(0.75));
  CHECK((k.position - Vec3(0, 1, 10)).norm() < 1e-12);
  CHECK((k.target - k.position).normalized().isApprox(Vec3(0, 0, -1)));
  CHECK(k.up.isApprox(Vec3(0, 1, 0)));
  CHECK(2 * std::atan(0.5 * k.sensor_height_mm / k.focal_length_mm) == doctest::Approx(0.8));
  CHECK(k.sensor_width_mm / k.sensor_height_mm == doctest::Approx(1.5));

  SUBCASE("several primitives, UNSIGNED_BYTE indices or none, normalized rotations") {
    HandMade g = hand_made();
    // A second primitive: one triangle without indices, and the first with UNSIGNED_BYTE indices.
    const size_t extra = g.bin.size();
    append<float>(g.bin, {0, 0, 0, 1, 0, 0, 0, 1, 0});
    const size_t ubyte = g.bin.size();
    for (const auto& tri : kTetraTriangles)
      for (uint32_t i : tri) g.bin.push_back(static_cast<uint8_t>(i));
    while (g.bin.size() % 4) g.bin.push_back(0);
    const size_t rot_short = g.bin.size();
    append<int16_t>(g.bin, {0, 0, 0, 32767, 0, 23170, 0, 23170});
    g.doc["buffers"][0]["byteLength"] = g.bin.size();
    g.doc["bufferViews"].push_back({{"buffer", 0}, {"byteOffset", extra}, {"byteLength", 36}});
    g.doc["bufferViews"].push_back({{"buffer", 0}, {"byteOffset", ubyte}, {"byteLength", 12}});
    g.doc["bufferViews"].push_back({{"buffer", 0}, {"byteOffset", rot_short}, {"byteLength", 16}});
    g.doc["accessors"].push_back({{"bufferView", 6}, {"componentType", 5126}, {"count", 3}, {"type", "VEC3"}});
    g.doc["accessors"].push_back({{"bufferView", 7}, {"componentType", 5121}, {"count", 12}, {"type", "SCALAR"}});
    g.doc["accessors"].push_back(
        {{"bufferView", 8}, {"componentType", 5122}, {"normalized", true}, {"count", 2}, {"type", "VEC4"}});
    g.doc["meshes"][0]["primitives"][0]["indices"] = 7;
    g.doc["meshes"][0]["primitives"].push_back({{"attributes", {{"POSITION", 6}}}});
    g.doc["animations"][0]["samplers"][1]["output"] = 8;
    const SimTrack m = import_glb(write_glb("primitives.glb", g.doc, g.bin), 4.0);
    REQUIRE(m.num_pieces() == 1);
    CHECK(m.pieces[0].mesh.vertices.size() == 7);
    REQUIRE(m.pieces[0].mesh.triangles.size() == 5);
    CHECK(m.pieces[0].mesh.triangles[4] == std::array<uint32_t, 3>{4, 5, 6});
    CHECK(m.pieces[0].mass > 0);  // open surface now: the bounding-box approximation
    CHECK((m.pose(4, 0).linear() - ry90).cwiseAbs().maxCoeff() < 1e-4);
  }
}

TEST_CASE("glb: corrupt and unsupported files are clear errors") {
  const HandMade h = hand_made();
  const auto good = glb_bytes(h.doc.dump(), h.bin);
  const std::string path = temp_path("bad.glb");
  auto import_bytes = [&](const std::vector<uint8_t>& bytes) {
    write_bytes(path, bytes);
    return import_glb(path, 4.0);
  };
  auto import_doc = [&](const json& doc) { return import_bytes(glb_bytes(doc.dump(), h.bin)); };

  CHECK_NOTHROW(import_bytes(good));
  CHECK(code_of([&] { import_glb(temp_path("does_not_exist.glb")); }) == ErrorCode::file_not_found);
  CHECK_THROWS_WITH_AS(import_bytes({}), doctest::Contains("empty file"), drb::Error);

  {
    auto bad = good;
    bad[0] = 'x';
    CHECK_THROWS_WITH_AS(import_bytes(bad), doctest::Contains("bad magic"), drb::Error);
    const std::string text = R"({"asset": {"version": "2.0"}})";
    CHECK_THROWS_WITH_AS(import_bytes(std::vector<uint8_t>(text.begin(), text.end())),
                         doctest::Contains(".gltf JSON file"), drb::Error);
  }
  {
    auto bad = good;
    write_le<uint32_t>(bad, 4, 1);
    CHECK_THROWS_WITH_AS(import_bytes(bad), doctest::Contains("glTF version 1 is unsupported"), drb::Error);
    CHECK(code_of([&] { import_bytes(bad); }) == ErrorCode::unsupported);
  }
  for (size_t length : {size_t{3}, size_t{11}, size_t{12}, size_t{19}, size_t{40}, good.size() - 160, good.size() - 1}) {
    CAPTURE(length);
    const std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(length));
    CHECK_THROWS_WITH_AS(import_bytes(cut), doctest::Contains("truncated"), drb::Error);
  }
  {
    auto bad = good;
    write_le<uint32_t>(bad, 12, 1000000);  // the JSON chunk overruns the file
    write_le<uint32_t>(bad, 8, static_cast<uint32_t>(bad.size()));
    CHECK_THROWS_WITH_AS(import_bytes(bad), doctest::Contains("overruns"), drb::Error);
  }
  CHECK_THROWS_WITH_AS(import_bytes(glb_bytes("{\"asset\": [1, 2", h.bin)), doctest::Contains("not valid JSON"),
                       drb::Error);
  CHECK_THROWS_WITH_AS(import_bytes(glb_bytes("[1, 2]", h.bin)), doctest::Contains("not a JSON object"), drb::Error);

  struct Case {
    std::function<void(json&)> edit;
    const char* message;
    ErrorCode code = ErrorCode::parse;
  };
  const std::vector<Case> cases = {
      {[](json& d) { d["accessors"][0]["count"] = 5; }, "accessor 0 (mesh 0 (\"rock\") primitive 0 POSITION): out of bounds"},
      {[](json& d) { d["accessors"][3]["byteOffset"] = 8; }, "accessor 3"},
      {[](json& d) { d["bufferViews"][5]["byteLength"] = 64; }, "bufferView 5: bytes [128, 192) are out of bounds of buffer 0"},
      {[](json& d) { d["buffers"][0]["byteLength"] = 4096; }, "exceeds the 160-byte BIN chunk"},
      {[](json& d) { d["accessors"][1]["count"] = 9; d["accessors"][0]["count"] = 2; }, "out of range of the 2 vertices"},
      {[](json& d) { d["accessors"][1]["count"] = 10; }, "10 indices do not make whole triangles"},
      {[](json& d) { d["accessors"][0].erase("count"); }, "missing the required field \"count\""},
      {[](json& d) { d["accessors"][0]["count"] = -1; }, "\"count\" must be a non-negative integer"},
      {[](json& d) { d["accessors"][0]["type"] = "VEC2"; }, "type is VEC2, expected VEC3"},
      {[](json& d) { d["accessors"][0]["componentType"] = 5130; }, "unknown componentType 5130"},
      {[](json& d) { d["accessors"][0]["bufferView"] = 17; }, "refers to bufferViews[17] but the file has 6"},
      {[](json& d) { d["nodes"][1]["mesh"] = 4; }, "refers to meshes[4] but the file has 1"},
      {[](json& d) { d["nodes"][0]["children"] = {7}; }, "unknown child node 7"},
      {[](json& d) { d["nodes"][2]["children"] = {1}; }, "has more than one parent"},
      {[](json& d) { d["scenes"][0]["nodes"] = {0, 1}; }, "which has a parent"},
      {[](json& d) { d["animations"][0]["channels"][0]["target"]["node"] = 9; }, "targets unknown node 9"},
      {[](json& d) { d["animations"][0]["channels"][0]["sampler"] = 5; }, "refers to unknown sampler 5"},
      {[](json& d) { d["animations"][0]["samplers"][1]["interpolation"] = "CUBICSPLINE"; },
       "animation 0 (\"Take 001\") sampler 1: CUBICSPLINE interpolation is unsupported", ErrorCode::unsupported},
      {[](json& d) { d["animations"][0]["channels"][0]["target"]["path"] = "weights"; }, "not a rigid motion",
       ErrorCode::unsupported},
      {[](json& d) { d["animations"][0]["samplers"][0]["output"] = 5; }, "type is VEC4, expected VEC3"},
      {[](json& d) { d["accessors"][2]["count"] = 1; }, "has 2 output values for 1 key times"},
      {[](json& d) { d["buffers"][0]["uri"] = "rock.bin"; }, "external or data URI (\"rock.bin\") is unsupported",
       ErrorCode::unsupported},
      {[](json& d) { d["meshes"][0]["primitives"][0]["mode"] = 1; }, "mode 1 is unsupported", ErrorCode::unsupported},
      {[](json& d) { d["meshes"][0]["primitives"][0].erase("attributes"); }, "missing the required field \"attributes\""},
      {[](json& d) { d["accessors"][0]["sparse"] = json::object(); }, "sparse accessors are unsupported",
       ErrorCode::unsupported},
      {[](json& d) { d["nodes"][1]["rotation"] = {0, 0, 0, 0}; }, "zero quaternion"},
      {[](json& d) { d["nodes"][0]["scale"] = {0, 1, 1}; }, "degenerate (zero-scale) transform"},
      {[](json& d) { d["nodes"][0]["translation"] = {1, 2}; }, "\"translation\" must be an array of 3 numbers"},
      {[](json& d) { d["extensionsRequired"] = {"KHR_draco_mesh_compression"}; },
       "extension KHR_draco_mesh_compression is unsupported", ErrorCode::unsupported},
      {[](json& d) { d["nodes"][1]["skin"] = 0; }, "skinned meshes are unsupported", ErrorCode::unsupported},
      {[](json& d) { d["nodes"][1]["matrix"] = json::array({1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}); },
       "is animated but has a \"matrix\""},
      {[](json& d) { d["scene"] = 3; }, "refers to scenes[3] but the file has 1"},
      {[](json& d) { d["nodes"] = json::object(); }, "\"nodes\" must be an array"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.message);
    json doc = h.doc;
    c.edit(doc);
    CHECK_THROWS_WITH_AS(import_doc(doc), doctest::Contains(c.message), drb::Error);
    CHECK(code_of([&] { import_doc(doc); }) == c.code);
  }
  // A scale that changes over time (STEP from (1, 1, 1) to (1, 2, 1) at 0.5 s).
  {
    json doc = h.doc;
    auto bin = h.bin;
    append<float>(bin, {1, 1, 1, 1, 2, 1});
    doc["buffers"][0]["byteLength"] = bin.size();
    doc["bufferViews"].push_back({{"buffer", 0}, {"byteOffset", 160}, {"byteLength", 24}});
    doc["accessors"].push_back({{"bufferView", 6}, {"componentType", 5126}, {"count", 2}, {"type", "VEC3"}});
    doc["animations"][0]["samplers"][1]["output"] = 6;
    doc["animations"][0]["channels"][1]["target"]["path"] = "scale";
    write_bytes(path, glb_bytes(doc.dump(), bin));
    CHECK_THROWS_WITH_AS(import_glb(path, 4.0),
                         doctest::Contains("node 1 (\"rock\"): its scale or shear changes at frame 2"), drb::Error);
    CHECK_THROWS_WITH_AS(import_glb(path, 4.0), doctest::Contains("animated scale is not a rigid motion"), drb::Error);
    // A constant scale channel is fine (baked into the vertices).
    append<float>(bin, {1, 2, 1, 1, 2, 1});
    doc["buffers"][0]["byteLength"] = bin.size();
    doc["bufferViews"][6]["byteOffset"] = 184;
    write_bytes(path, glb_bytes(doc.dump(), bin));
    const SimTrack t = import_glb(path, 4.0);
    CHECK(t.pieces[0].mass == doctest::Approx(2400.0 * 8.0 * 2.0 / 6.0));
  }
  // A corrupt key time far in the future: refused before sampling or allocating.
  {
    auto bin = h.bin;
    write_le<float>(bin, 92, 3.0e7f);
    write_bytes(path, glb_bytes(h.doc.dump(), bin));
    CHECK_THROWS_WITH_AS(import_glb(path), doctest::Contains("over the limit of 100000"), drb::Error);
  }
  // Deeply nested JSON (parsed iteratively; extras are not walked).
  {
    json doc = h.doc;
    doc["extras"] = json::object();
    std::string text = doc.dump();
    text.pop_back();  // drop the closing brace
    text += R"(, "deep": )" + std::string(100000, '[') + std::string(100000, ']') + "}";
    write_bytes(path, glb_bytes(text, h.bin));
    CHECK(import_glb(path, 4.0).num_frames() == 5);
  }
  // Every message names the file.
  {
    json doc = h.doc;
    doc["accessors"][0]["count"] = 5;
    CHECK_THROWS_WITH_AS(import_doc(doc), doctest::Contains(path.c_str()), drb::Error);
  }
  // NaN in the data.
  {
    auto bin = h.bin;
    write_le<float>(bin, 16 + 4, std::nanf(""));
    write_bytes(path, glb_bytes(h.doc.dump(), bin));
    CHECK_THROWS_WITH_AS(import_glb(path), doctest::Contains("element 1 holds a NaN or infinite value"), drb::Error);
  }
  // A decreasing key time.
  {
    auto bin = h.bin;
    write_le<float>(bin, 88, 2.0f);
    write_bytes(path, glb_bytes(h.doc.dump(), bin));
    CHECK_THROWS_WITH_AS(import_glb(path), doctest::Contains("key times must increase"), drb::Error);
  }
  CHECK(code_of([&] { import_glb(path, 0.0); }) == ErrorCode::invalid_argument);
}

TEST_CASE("glb: every truncation and every flipped byte is an error or a valid track, never a crash") {
  SimTrack small = make_track(4);
  small.cameras.resize(1);
  const std::string src = temp_path("fuzz_src.glb");
  export_glb(small, src);
  const auto good = read_bytes(src);
  const std::string path = temp_path("fuzz.glb");
  int failures = 0;
  for (size_t length = 0; length < good.size(); length += 7) {
    write_bytes(path, std::vector<uint8_t>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(length)));
    failures += !succeeds_or_drb_error([&] { import_glb(path); });
  }
  for (size_t i = 0; i < good.size(); i += 3) {
    auto bad = good;
    bad[i] ^= static_cast<uint8_t>(0x5A + i);
    write_bytes(path, bad);
    failures += !succeeds_or_drb_error([&] { import_glb(path); });
  }
  CHECK(failures == 0);
}

// ================================================================================================

TEST_CASE("cache: save then load is bit-exact") {
  const SimTrack track = make_track();
  const std::string path = temp_path("track.drbtrack");
  save_track(track, path);
  const SimTrack back = load_track(path);

  CHECK(back.fps == track.fps);
  REQUIRE(back.poses.shape() == track.poses.shape());
  CHECK(std::memcmp(back.poses.data(), track.poses.data(), track.poses.size() * sizeof(float)) == 0);
  REQUIRE(back.pieces.size() == track.pieces.size());
  for (size_t p = 0; p < track.pieces.size(); ++p) {
    check_same_piece_scalars(track.pieces[p], back.pieces[p]);
    CHECK(back.pieces[p].mesh.vertices == track.pieces[p].mesh.vertices);
    CHECK(back.pieces[p].mesh.triangles == track.pieces[p].mesh.triangles);
  }
  check_same_materials(track, back);
  check_same_breaks(track, back);
  check_same_cameras(track, back);
  REQUIRE(back.dust.size() == track.dust.size());
  for (size_t f = 0; f < track.dust.size(); ++f) {
    CHECK(back.dust[f].shape() == track.dust[f].shape());
    CHECK(back.dust[f] == track.dust[f]);
  }
  // Deterministic: saving the loaded track gives the same bytes.
  const std::string again = temp_path("track_again.drbtrack");
  save_track(back, again);
  CHECK(read_bytes(again) == read_bytes(path));

  SUBCASE("an empty track") {
    SimTrack empty;
    save_track(empty, path);
    const SimTrack e = load_track(path);
    CHECK(e.num_frames() == 0);
    CHECK(e.num_pieces() == 0);
  }
}

TEST_CASE("cache: corrupt files are clear errors") {
  const SimTrack track = make_track();
  const std::string src = temp_path("good.drbtrack");
  save_track(track, src);
  const auto good = read_bytes(src);
  const std::string path = temp_path("bad.drbtrack");
  auto load_bytes = [&](const std::vector<uint8_t>& bytes) {
    write_bytes(path, bytes);
    return load_track(path);
  };
  // The payload starts after the 28-byte header; fixes the checksum after an edit.
  auto reseal = [](std::vector<uint8_t> bytes) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 28; i < bytes.size(); ++i) h = (h ^ bytes[i]) * 0x100000001b3ull;
    write_le(bytes, 20, h);
    return bytes;
  };
  REQUIRE(reseal(good) == good);  // the test's FNV-1a matches the file's checksum

  CHECK(code_of([&] { load_track(temp_path("missing.drbtrack")); }) == ErrorCode::file_not_found);
  CHECK_THROWS_WITH_AS(load_track(temp_path("missing.drbtrack")), doctest::Contains("missing.drbtrack"), drb::Error);
  CHECK_THROWS_WITH_AS(load_bytes({}), doctest::Contains("empty file"), drb::Error);
  for (size_t length : {size_t{1}, size_t{8}, size_t{12}, size_t{27}, size_t{28}, size_t{100}, good.size() / 2,
                        good.size() - 1}) {
    CAPTURE(length);
    const std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(length));
    CHECK_THROWS_WITH_AS(load_bytes(cut), doctest::Contains("truncated"), drb::Error);
    CHECK(code_of([&] { load_bytes(cut); }) == ErrorCode::parse);
  }
  {
    auto bad = good;
    bad[good.size() / 2] ^= 0x10;
    CHECK_THROWS_WITH_AS(load_bytes(bad), doctest::Contains("checksum mismatch: the file is corrupt"), drb::Error);
  }
  {
    auto bad = good;
    bad.push_back(0);
    CHECK_THROWS_WITH_AS(load_bytes(bad), doctest::Contains("trailing data"), drb::Error);
  }
  {
    auto bad = good;
    bad[3] = 'X';
    CHECK_THROWS_WITH_AS(load_bytes(bad), doctest::Contains("bad magic"), drb::Error);
  }
  {
    auto bad = good;
    write_le<uint32_t>(bad, 8, 2);
    CHECK_THROWS_WITH_AS(load_bytes(bad), doctest::Contains("version 2 is not supported (this build reads version 1)"),
                         drb::Error);
    CHECK(code_of([&] { load_bytes(bad); }) == ErrorCode::unsupported);
  }
  // Huge counts (checksum fixed up, so only the count check stands in the way).
  {
    auto bad = good;
    write_le<uint32_t>(bad, 28 + 8, 0xFFFFFFF0u);  // material count after fps
    CHECK_THROWS_WITH_AS(load_bytes(reseal(bad)), doctest::Contains("corrupt count: material count"), drb::Error);
  }
  {
    auto bad = good;
    write_le<uint32_t>(bad, 28 + 8 + 4, 0x7FFFFFFFu);  // first material's name length
    CHECK_THROWS_WITH_AS(load_bytes(reseal(bad)), doctest::Contains("corrupt count: material name"), drb::Error);
  }
  {
    // The pose frame count: find it after the pieces by re-reading the layout from the front.
    size_t at = 28 + 8 + 4;
    for (size_t m = 0; m < 2; ++m) {
      at += 4 + read_le<uint32_t>(good, at);
      at += 4 + read_le<uint32_t>(good, at);
      at += 32;
    }
    at += 4;  // piece count
    for (size_t p = 0; p < 3; ++p) {
      at += 4 + 1 + 4 + 4 + 8 + 24;
      at += 4 + 12 * read_le<uint32_t>(good, at);
      at += 4 + 12 * read_le<uint32_t>(good, at);
    }
    REQUIRE(read_le<uint64_t>(good, at) == 30);
    auto bad = good;
    write_le<uint64_t>(bad, at, uint64_t{1} << 60);
    CHECK_THROWS_WITH_AS(load_bytes(reseal(bad)), doctest::Contains("corrupt count: pose frames"), drb::Error);
    bad = good;
    write_le<uint64_t>(bad, at + 8, 4);
    CHECK_THROWS_WITH_AS(load_bytes(reseal(bad)), doctest::Contains("poses hold 4 pieces but the file has 3"),
                         drb::Error);
    // A NaN pose passes the checksum but not validate().
    bad = good;
    write_le<float>(bad, at + 16, std::nanf(""));
    CHECK_THROWS_WITH_AS(load_bytes(reseal(bad)), doctest::Contains("finite"), drb::Error);
  }
  // Every truncation of the payload (checksum fixed up) and every flipped byte: an error, no crash.
  int failures = 0;
  for (size_t length = 28; length < good.size(); length += 5) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(length));
    write_le<uint64_t>(cut, 12, length - 28);
    failures += !succeeds_or_drb_error([&] { load_bytes(reseal(cut)); });
  }
  for (size_t i = 28; i < good.size(); i += 3) {
    auto bad = good;
    bad[i] ^= 0xFF;
    failures += !succeeds_or_drb_error([&] { load_bytes(reseal(bad)); });
  }
  CHECK(failures == 0);
}

TEST_CASE("io: unwritable paths are io errors") {
  const SimTrack track = make_track(2);
  const std::string dir = temp_path("no_such_dir") + "/x";
  CHECK(code_of([&] { save_track(track, dir + ".drbtrack"); }) == ErrorCode::io);
  CHECK(code_of([&] { export_glb(track, dir + ".glb"); }) == ErrorCode::io);
  SimTrack bad = track;
  bad.poses(0, 0, 4) = NAN;
  CHECK(code_of([&] { save_track(bad, temp_path("nan.drbtrack")); }) == ErrorCode::invalid_argument);
  CHECK(code_of([&] { export_glb(bad, temp_path("nan.glb")); }) == ErrorCode::invalid_argument);
}
