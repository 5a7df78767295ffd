// The SimTrack cache: a compact, versioned, checksummed binary file.
//
// Layout (little-endian):
//   header   "DRBTRACK" | u32 version (1) | u64 payload bytes | u64 FNV-1a 64 of the payload
//   payload  f64 fps
//            u32 materials, each: str name, str look, f64 density, friction, restitution, bond_strength
//            u32 pieces, each: u32 id, u8 kind, i32 building, u32 material, f64 mass, f64 inertia[3],
//                              u32 vertices, f32 xyz[vertices], u32 triangles, u32 abc[triangles]
//            u64 frames, u64 pose pieces, f32 poses[frames * pieces * 7]
//            u32 breaks, each: i32 frame, u32 piece_a, u32 piece_b, f32 position[3], f32 energy
//            u32 dust frames, each: u64 rows, u64 cols, f32 values[rows * cols]
//            u32 cameras, each: str name, u32 keys, each key: f64 time, position[3], target[3], up[3],
//                               focal_length_mm, sensor_width_mm, sensor_height_mm
//   (str = u32 length + bytes). Big arrays are written and read with one copy each.
#include <array>
#include <cmath>
#include <cstring>

#include "binary_io.hpp"
#include "derrumbe/physics/io.hpp"

namespace drb::physics {
namespace {

using detail::ByteReader;
using detail::ByteWriter;

constexpr char kMagic[8] = {'D', 'R', 'B', 'T', 'R', 'A', 'C', 'K'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = sizeof(kMagic) + 4 + 8 + 8;
// Fixed-size parts of the variable-size records: lower bounds used to check counts.
constexpr size_t kMaterialMinBytes = 4 + 4 + 4 * 8;
constexpr size_t kPieceMinBytes = 4 + 1 + 4 + 4 + 8 + 3 * 8 + 4 + 4;
constexpr size_t kBreakBytes = 4 + 4 + 4 + 3 * 4 + 4;
constexpr size_t kDustMinBytes = 8 + 8;
constexpr size_t kCameraMinBytes = 4 + 4;
constexpr size_t kCameraKeyBytes = 13 * 8;

static_assert(sizeof(Eigen::Vector3f) == 3 * sizeof(float), "vertices are written as packed float triples");
static_assert(sizeof(std::array<uint32_t, 3>) == 3 * sizeof(uint32_t));

void put_vec3(ByteWriter& w, const Vec3& v) { w.put_array(v.data(), 3); }
Vec3 get_vec3(ByteReader& r, std::string_view what) {
  Vec3 v;
  for (int i = 0; i < 3; ++i) v[i] = r.get<double>(what);
  return v;
}

void write_payload(const SimTrack& track, ByteWriter& w) {
  w.put(track.fps);

  w.put(static_cast<uint32_t>(track.materials.size()));
  for (const Material& m : track.materials) {
    w.put_string(m.name);
    w.put_string(m.look);
    for (double x : {m.density, m.friction, m.restitution, m.bond_strength}) w.put(x);
  }

  w.put(static_cast<uint32_t>(track.pieces.size()));
  for (const Piece& p : track.pieces) {
    w.put(p.id);
    w.put(static_cast<uint8_t>(p.kind));
    w.put(p.building);
    w.put(p.material);
    w.put(p.mass);
    put_vec3(w, p.inertia);
    w.put(static_cast<uint32_t>(p.mesh.vertices.size()));
    w.put_array(p.mesh.vertices.data(), p.mesh.vertices.size());
    w.put(static_cast<uint32_t>(p.mesh.triangles.size()));
    w.put_array(p.mesh.triangles.data(), p.mesh.triangles.size());
  }

  w.put(static_cast<uint64_t>(track.poses.shape(0)));
  w.put(static_cast<uint64_t>(track.poses.shape(1)));
  w.put_array(track.poses.data(), track.poses.size());

  w.put(static_cast<uint32_t>(track.breaks.size()));
  for (const BreakEvent& b : track.breaks) {
    w.put(b.frame);
    w.put(b.piece_a);
    w.put(b.piece_b);
    w.put_array(b.position.data(), 3);
    w.put(b.energy);
  }

  w.put(static_cast<uint32_t>(track.dust.size()));
  for (const auto& d : track.dust) {
    w.put(static_cast<uint64_t>(d.shape(0)));
    w.put(static_cast<uint64_t>(d.shape(1)));
    w.put_array(d.data(), d.size());
  }

  w.put(static_cast<uint32_t>(track.cameras.size()));
  for (const Camera& c : track.cameras) {
    w.put_string(c.name);
    w.put(static_cast<uint32_t>(c.keys.size()));
    for (const CameraKey& k : c.keys) {
      w.put(k.time);
      put_vec3(w, k.position);
      put_vec3(w, k.target);
      put_vec3(w, k.up);
      for (double x : {k.focal_length_mm, k.sensor_width_mm, k.sensor_height_mm}) w.put(x);
    }
  }
}

SimTrack read_payload(ByteReader& r) {
  SimTrack t;
  t.fps = r.get<double>("fps");

  t.materials.resize(r.get_count<uint32_t>(kMaterialMinBytes, "material count"));
  for (Material& m : t.materials) {
    m.name = r.get_string("material name");
    m.look = r.get_string("material look");
    for (double* x : {&m.density, &m.friction, &m.restitution, &m.bond_strength}) *x = r.get<double>("material");
  }

  t.pieces.resize(r.get_count<uint32_t>(kPieceMinBytes, "piece count"));
  for (size_t i = 0; i < t.pieces.size(); ++i) {
    Piece& p = t.pieces[i];
    p.id = r.get<uint32_t>("piece id");
    const auto kind = r.get<uint8_t>("piece kind");
    if (kind > static_cast<uint8_t>(PieceKind::debris))
      r.fail("piece " + std::to_string(i) + " has unknown kind " + std::to_string(kind));
    p.kind = static_cast<PieceKind>(kind);
    p.building = r.get<int32_t>("piece building");
    p.material = r.get<uint32_t>("piece material");
    p.mass = r.get<double>("piece mass");
    p.inertia = get_vec3(r, "piece inertia");
    r.get_array(p.mesh.vertices, r.get<uint32_t>("vertex count"), "piece vertices");
    r.get_array(p.mesh.triangles, r.get<uint32_t>("triangle count"), "piece triangles");
  }

  const uint64_t frames = r.get<uint64_t>("pose frame count");
  const uint64_t pose_pieces = r.get<uint64_t>("pose piece count");
  if (pose_pieces != t.pieces.size())
    r.fail("poses hold " + std::to_string(pose_pieces) + " pieces but the file has " +
           std::to_string(t.pieces.size()));
  const uint64_t per_frame = pose_pieces * 7;  // pose_pieces < 2^32: no overflow
  r.check_count(frames, per_frame * sizeof(float), "pose frames");
  t.poses = xt::xtensor<float, 3>::from_shape({static_cast<size_t>(frames), static_cast<size_t>(pose_pieces), 7});
  const uint8_t* poses = r.take(t.poses.size() * sizeof(float), "poses");
  if (t.poses.size()) std::memcpy(t.poses.data(), poses, t.poses.size() * sizeof(float));

  t.breaks.resize(r.get_count<uint32_t>(kBreakBytes, "break count"));
  for (BreakEvent& b : t.breaks) {
    b.frame = r.get<int32_t>("break frame");
    b.piece_a = r.get<uint32_t>("break piece");
    b.piece_b = r.get<uint32_t>("break piece");
    for (int i = 0; i < 3; ++i) b.position[i] = r.get<float>("break position");
    b.energy = r.get<float>("break energy");
  }

  t.dust.resize(r.get_count<uint32_t>(kDustMinBytes, "dust frame count"));
  for (auto& d : t.dust) {
    const uint64_t rows = r.get<uint64_t>("dust rows");
    const uint64_t cols = r.get<uint64_t>("dust columns");
    if (cols == 0) r.check_count(rows, 0, "dust rows");
    r.check_count(cols, sizeof(float), "dust columns");
    if (cols != 0) r.check_count(rows, cols * sizeof(float), "dust rows");
    d = xt::xtensor<float, 2>::from_shape({static_cast<size_t>(rows), static_cast<size_t>(cols)});
    const uint8_t* values = r.take(d.size() * sizeof(float), "dust values");
    if (d.size()) std::memcpy(d.data(), values, d.size() * sizeof(float));
  }

  t.cameras.resize(r.get_count<uint32_t>(kCameraMinBytes, "camera count"));
  for (Camera& c : t.cameras) {
    c.name = r.get_string("camera name");
    c.keys.resize(r.get_count<uint32_t>(kCameraKeyBytes, "camera key count"));
    for (CameraKey& k : c.keys) {
      k.time = r.get<double>("camera key");
      k.position = get_vec3(r, "camera key");
      k.target = get_vec3(r, "camera key");
      k.up = get_vec3(r, "camera key");
      for (double* x : {&k.focal_length_mm, &k.sensor_width_mm, &k.sensor_height_mm}) *x = r.get<double>("camera key");
    }
  }
  if (r.remaining() != 0) r.fail(std::to_string(r.remaining()) + " unexpected bytes after the payload");
  return t;
}

}  // namespace

void save_track(const SimTrack& track, const std::string& path) {
  track.validate();
  ByteWriter w;
  size_t estimate = kHeaderBytes + track.poses.size() * sizeof(float);
  for (const Piece& p : track.pieces) estimate += 64 + 12 * (p.mesh.vertices.size() + p.mesh.triangles.size());
  for (const auto& d : track.dust) estimate += 16 + d.size() * sizeof(float);
  w.reserve(estimate);

  w.put_bytes(kMagic, sizeof(kMagic));
  w.put(kVersion);
  w.put(uint64_t{0});  // payload bytes, patched below
  w.put(uint64_t{0});  // checksum, patched below
  write_payload(track, w);
  const uint8_t* payload = w.bytes().data() + kHeaderBytes;
  const uint64_t payload_bytes = w.size() - kHeaderBytes;
  w.patch(sizeof(kMagic) + 4, payload_bytes);
  w.patch(sizeof(kMagic) + 4 + 8, detail::fnv1a64(payload, payload_bytes));
  detail::write_file(path, w.bytes());
}

SimTrack load_track(const std::string& path) {
  const std::vector<uint8_t> bytes = detail::read_file(path);
  ByteReader header(bytes.data(), bytes.size(), path);
  if (bytes.empty()) header.fail("empty file: not a derrumbe track cache");
  const uint8_t* magic = header.take(sizeof(kMagic), "the DRBTRACK magic");
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0)
    header.fail("not a derrumbe track cache (bad magic; expected \"DRBTRACK\")");
  const auto version = header.get<uint32_t>("the version");
  if (version != kVersion)
    header.fail("track cache version " + std::to_string(version) + " is not supported (this build reads version " +
                    std::to_string(kVersion) + "); re-create the cache",
                ErrorCode::unsupported);
  const auto payload_bytes = header.get<uint64_t>("the payload length");
  const auto checksum = header.get<uint64_t>("the checksum");
  if (payload_bytes > header.remaining())
    header.fail("truncated: the header announces " + std::to_string(payload_bytes) + " payload bytes but only " +
                std::to_string(header.remaining()) + " follow");
  if (payload_bytes < header.remaining())
    header.fail("the header announces " + std::to_string(payload_bytes) + " payload bytes but " +
                std::to_string(header.remaining()) + " follow (trailing data)");
  const uint8_t* payload = bytes.data() + header.offset();
  if (detail::fnv1a64(payload, payload_bytes) != checksum) header.fail("checksum mismatch: the file is corrupt");

  ByteReader r(payload, payload_bytes, path);
  SimTrack track = read_payload(r);
  try {
    track.validate();
  } catch (const Error& e) {
    throw Error(ErrorCode::parse, path + ": " + e.what());
  }
  return track;
}

}  // namespace drb::physics
