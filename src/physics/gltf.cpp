// glTF 2.0 binary (.glb) export and import of a SimTrack, written by hand on nlohmann::json.
//
// Export: one node + mesh per piece (POSITION with min/max, UNSIGNED_INT indices, no NORMAL: the
// spec asks viewers to compute flat normals), node extras {"derrumbe": {kind, mass, material,
// building, id, inertia}}, materials by look, one animation "simulation" (per piece a LINEAR
// translation and rotation channel over one shared time accessor), cameras as perspective nodes
// animated along their keys, and the whole track (fps, materials, breaks, camera keys) in the
// root extras so that import_glb restores a derrumbe export. Dust is NOT exported to glTF
// (particles have no rigid node form); the cache (save_track) keeps it.
//
// Import: any animated .glb as a DCC writes it. Pieces are the mesh nodes of the scene (their
// parent chains applied); node animation (translation / rotation / scale, LINEAR or STEP) is
// sampled at f / fps. Each piece's local frame is its node's world rotation at frame 0 with the
// origin moved to the centre of mass; the rest scale (and any shear from parents) is baked into
// the vertices, and a scale or shear that changes over time is refused (not a rigid motion).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <numbers>
#include <optional>
#include <set>

#include <Eigen/SVD>
#include <nlohmann/json.hpp>

#include "binary_io.hpp"
#include "geometry.hpp"
#include "derrumbe/physics/io.hpp"

namespace drb::physics {
namespace {

using json = nlohmann::json;
using detail::ByteReader;
using detail::ByteWriter;

constexpr uint32_t kGlbMagic = 0x46546C67;   // "glTF"
constexpr uint32_t kChunkJson = 0x4E4F534A;  // "JSON"
constexpr uint32_t kChunkBin = 0x004E4942;   // "BIN\0"
constexpr size_t kGlbHeaderBytes = 12;
constexpr int kByte = 5120, kUnsignedByte = 5121, kShort = 5122, kUnsignedShort = 5123, kUnsignedInt = 5125,
              kFloat = 5126;
constexpr int kArrayBuffer = 34962, kElementArrayBuffer = 34963;
constexpr int kTriangles = 4;
constexpr double kImportDensity = 2400.0;      // kg/m^3 for imported pieces (glTF has no density)
constexpr double kImportTargetDistance = 10.0;  // m in front of an imported camera
// Bounds on what a (possibly corrupt) key time can make us sample and allocate.
constexpr int64_t kMaxFrames = 100'000;
constexpr uint64_t kMaxPoseValues = uint64_t{1} << 28;  // frames * pieces * 7 floats (1 GiB)

// ---------------------------------------------------------------------------------------------
// Shared helpers

std::optional<PieceKind> kind_from_name(const std::string& name) {
  for (auto k : {PieceKind::column, PieceKind::slab, PieceKind::wall, PieceKind::debris})
    if (name == piece_kind_name(k)) return k;
  return std::nullopt;
}

// A camera rotation: local -Z looks at the target, local +Y is as close to `up` as possible.
Quat look_rotation(const Vec3& position, const Vec3& target, const Vec3& up) {
  Vec3 forward = target - position;
  if (forward.norm() < 1e-12) return Quat::Identity();
  forward.normalize();
  Vec3 right = forward.cross(up);
  if (right.norm() < 1e-9) right = forward.cross(std::abs(forward.y()) < 0.9 ? Vec3::UnitY() : Vec3::UnitZ());
  right.normalize();
  const Vec3 true_up = right.cross(forward);
  Eigen::Matrix3d r;
  r.col(0) = right;
  r.col(1) = true_up;
  r.col(2) = -forward;
  return Quat(r).normalized();
}

double yfov_of(const CameraKey& k) { return 2.0 * std::atan(0.5 * k.sensor_height_mm / k.focal_length_mm); }

json vec_json(const double* v, int n) {
  json a = json::array();
  for (int i = 0; i < n; ++i) a.push_back(v[i]);
  return a;
}
json vec_json(const Vec3& v) { return vec_json(v.data(), 3); }

json camera_key_json(const CameraKey& k) {
  return {{"time", k.time},
          {"position", vec_json(k.position)},
          {"target", vec_json(k.target)},
          {"up", vec_json(k.up)},
          {"focal_length_mm", k.focal_length_mm},
          {"sensor_width_mm", k.sensor_width_mm},
          {"sensor_height_mm", k.sensor_height_mm}};
}

// ---------------------------------------------------------------------------------------------
// Export

json pbr_for_look(const std::string& look) {
  if (look == "brick") return {{"baseColorFactor", {0.55, 0.24, 0.17, 1.0}}, {"metallicFactor", 0.0}, {"roughnessFactor", 0.9}};
  if (look == "glass") return {{"baseColorFactor", {0.55, 0.63, 0.70, 0.4}}, {"metallicFactor", 0.0}, {"roughnessFactor", 0.05}};
  if (look == "steel") return {{"baseColorFactor", {0.56, 0.57, 0.58, 1.0}}, {"metallicFactor", 1.0}, {"roughnessFactor", 0.4}};
  return {{"baseColorFactor", {0.55, 0.55, 0.53, 1.0}}, {"metallicFactor", 0.0}, {"roughnessFactor", 0.95}};  // concrete
}

// Accumulates the BIN chunk and the bufferViews / accessors that describe it.
class GlbBuilder {
 public:
  json doc = json::object();

  // Appends `count` elements (components of `comps` floats or u32s) as one bufferView + accessor.
  template <class T>
  int add_accessor(const T* data, size_t count, int comps, std::optional<int> target, bool with_min_max) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, uint32_t>);
    bin_.pad_to(4, 0);
    json view = {{"buffer", 0}, {"byteOffset", bin_.size()}, {"byteLength", count * comps * sizeof(T)}};
    if (target) view["target"] = *target;
    bin_.put_array(data, count * comps);
    views_.push_back(std::move(view));
    static const char* kTypes[] = {"", "SCALAR", "VEC2", "VEC3", "VEC4"};
    json acc = {{"bufferView", views_.size() - 1},
                {"componentType", std::is_same_v<T, float> ? kFloat : kUnsignedInt},
                {"count", count},
                {"type", kTypes[comps]}};
    if (with_min_max) {
      std::vector<double> lo(comps, INFINITY), hi(comps, -INFINITY);
      for (size_t i = 0; i < count; ++i)
        for (int c = 0; c < comps; ++c) {
          lo[c] = std::min<double>(lo[c], data[i * comps + c]);
          hi[c] = std::max<double>(hi[c], data[i * comps + c]);
        }
      acc["min"] = lo;
      acc["max"] = hi;
    }
    accessors_.push_back(std::move(acc));
    return static_cast<int>(accessors_.size() - 1);
  }

  std::vector<uint8_t> finish() {
    bin_.pad_to(4, 0);
    if (bin_.size()) {
      doc["buffers"] = json::array({{{"byteLength", bin_.size()}}});
      doc["bufferViews"] = views_;
      doc["accessors"] = accessors_;
    }
    std::string text = doc.dump();
    while (text.size() % 4) text.push_back(' ');
    const uint64_t total = kGlbHeaderBytes + 8 + text.size() + (bin_.size() ? 8 + bin_.size() : 0);
    check(total <= UINT32_MAX, ErrorCode::invalid_argument,
          "export_glb: the track needs " + std::to_string(total) + " bytes, over the 4 GiB limit of a .glb");
    ByteWriter out;
    out.reserve(total);
    out.put(kGlbMagic);
    out.put(uint32_t{2});
    out.put(static_cast<uint32_t>(total));
    out.put(static_cast<uint32_t>(text.size()));
    out.put(kChunkJson);
    out.put_bytes(text.data(), text.size());
    if (bin_.size()) {
      out.put(static_cast<uint32_t>(bin_.size()));
      out.put(kChunkBin);
      out.put_bytes(bin_.bytes().data(), bin_.size());
    }
    return out.bytes();
  }

 private:
  ByteWriter bin_;
  json views_ = json::array(), accessors_ = json::array();
};

}  // namespace

void export_glb(const SimTrack& track, const std::string& path) {
  track.validate();
  const size_t frames = static_cast<size_t>(track.num_frames()), num_pieces = track.pieces.size();
  GlbBuilder b;
  json& doc = b.doc;
  doc["asset"] = {{"version", "2.0"}, {"generator", "derrumbe"}};

  json materials = json::array();
  for (const Material& m : track.materials) {
    json material = {{"name", m.name}, {"pbrMetallicRoughness", pbr_for_look(m.look)}};
    if (m.look == "glass") material["alphaMode"] = "BLEND";
    materials.push_back(std::move(material));
  }
  if (!materials.empty()) doc["materials"] = materials;

  json nodes = json::array(), meshes = json::array(), samplers = json::array(), channels = json::array();
  auto add_channel = [&](int input, int output, size_t node, const char* path) {
    samplers.push_back({{"input", input}, {"output", output}, {"interpolation", "LINEAR"}});
    channels.push_back({{"sampler", samplers.size() - 1}, {"target", {{"node", node}, {"path", path}}}});
  };

  std::optional<int> time_accessor;
  if (frames > 0) {
    std::vector<float> times(frames);
    for (size_t f = 0; f < frames; ++f) times[f] = static_cast<float>(static_cast<double>(f) / track.fps);
    time_accessor = b.add_accessor(times.data(), frames, 1, std::nullopt, true);
  }

  std::vector<float> translation(frames * 3), rotation(frames * 4);
  for (size_t p = 0; p < num_pieces; ++p) {
    const Piece& piece = track.pieces[p];
    json node = {{"name", piece_name(piece.id)},
                 {"extras",
                  {{"derrumbe",
                    {{"id", piece.id},
                     {"kind", piece_kind_name(piece.kind)},
                     {"building", piece.building},
                     {"material", piece.material},
                     {"mass", piece.mass},
                     {"inertia", vec_json(piece.inertia)}}}}}};
    // Unit quaternions, sign-continuous from frame to frame (so that any slerp takes the short way).
    Eigen::Vector4d previous(0, 0, 0, 1);
    for (size_t f = 0; f < frames; ++f) {
      Eigen::Vector4d q(track.poses(f, p, 0), track.poses(f, p, 1), track.poses(f, p, 2), track.poses(f, p, 3));
      q.normalize();
      if (f > 0 && q.dot(previous) < 0) q = -q;
      previous = q;
      for (int c = 0; c < 4; ++c) rotation[f * 4 + c] = static_cast<float>(q[c]);
      for (int c = 0; c < 3; ++c) translation[f * 3 + c] = track.poses(f, p, 4 + c);
    }
    if (frames > 0) {
      node["translation"] = {translation[0], translation[1], translation[2]};
      node["rotation"] = {rotation[0], rotation[1], rotation[2], rotation[3]};
    }
    // A piece without triangles has no glTF mesh (a primitive needs faces); its node is kept.
    if (!piece.mesh.triangles.empty()) {
      json primitive = {
          {"attributes",
           {{"POSITION", b.add_accessor(piece.mesh.vertices.front().data(), piece.mesh.vertices.size(), 3,
                                        kArrayBuffer, true)}}},
          {"indices", b.add_accessor(piece.mesh.triangles.front().data(), piece.mesh.triangles.size() * 3, 1,
                                     kElementArrayBuffer, false)},
          {"mode", kTriangles}};
      if (piece.material < track.materials.size()) primitive["material"] = piece.material;
      meshes.push_back({{"name", piece_name(piece.id)}, {"primitives", json::array({primitive})}});
      node["mesh"] = meshes.size() - 1;
    }
    nodes.push_back(std::move(node));
    if (frames > 0) {
      add_channel(*time_accessor, b.add_accessor(translation.data(), frames, 3, std::nullopt, false), p,
                  "translation");
      add_channel(*time_accessor, b.add_accessor(rotation.data(), frames, 4, std::nullopt, false), p, "rotation");
    }
  }

  // Cameras: lens of the first key on the glTF camera (core glTF cannot animate it), the key path
  // as the node's animation, every key in the root extras.
  json cameras = json::array(), stored_cameras = json::array();
  for (const Camera& cam : track.cameras) {
    json stored = {{"name", cam.name}, {"node", -1}, {"keys", json::array()}};
    for (size_t k = 0; k < cam.keys.size(); ++k) {
      const CameraKey& key = cam.keys[k];
      const std::string where = "export_glb: camera \"" + cam.name + "\" key " + std::to_string(k);
      check_arg(std::isfinite(key.time) && key.position.allFinite() && key.target.allFinite() && key.up.allFinite(),
                where + " has a non-finite value");
      check_arg(key.focal_length_mm > 0 && key.sensor_width_mm > 0 && key.sensor_height_mm > 0 &&
                    std::isfinite(key.focal_length_mm + key.sensor_width_mm + key.sensor_height_mm),
                where + ": focal length and sensor sizes must be positive");
      stored["keys"].push_back(camera_key_json(key));
    }
    if (!cam.keys.empty()) {
      // Keys in time order with strictly increasing float times, as glTF requires.
      std::vector<CameraKey> keys = cam.keys;
      std::stable_sort(keys.begin(), keys.end(), [](const auto& a, const auto& c) { return a.time < c.time; });
      std::vector<float> times, t, r;
      for (const CameraKey& key : keys) {
        const auto time = static_cast<float>(key.time);
        if (!times.empty() && time <= times.back()) continue;
        times.push_back(time);
        const Quat q = look_rotation(key.position, key.target, key.up);
        for (double x : {q.x(), q.y(), q.z(), q.w()}) r.push_back(static_cast<float>(x));
        for (int c = 0; c < 3; ++c) t.push_back(static_cast<float>(key.position[c]));
      }
      const CameraKey& first = keys.front();
      cameras.push_back({{"name", cam.name},
                         {"type", "perspective"},
                         {"perspective",
                          {{"yfov", yfov_of(first)},
                           {"aspectRatio", first.sensor_width_mm / first.sensor_height_mm},
                           {"znear", 0.1}}}});
      const size_t node = nodes.size();
      nodes.push_back({{"name", cam.name},
                       {"camera", cameras.size() - 1},
                       {"translation", {t[0], t[1], t[2]}},
                       {"rotation", {r[0], r[1], r[2], r[3]}}});
      stored["node"] = node;
      const int input = b.add_accessor(times.data(), times.size(), 1, std::nullopt, true);
      add_channel(input, b.add_accessor(t.data(), times.size(), 3, std::nullopt, false), node, "translation");
      add_channel(input, b.add_accessor(r.data(), times.size(), 4, std::nullopt, false), node, "rotation");
    }
    stored_cameras.push_back(std::move(stored));
  }

  json scene_nodes = json::array();
  for (size_t n = 0; n < nodes.size(); ++n) scene_nodes.push_back(n);
  doc["scene"] = 0;
  doc["scenes"] = json::array({{{"name", "derrumbe"}, {"nodes", scene_nodes}}});
  if (!nodes.empty()) doc["nodes"] = nodes;
  if (!meshes.empty()) doc["meshes"] = meshes;
  if (!cameras.empty()) doc["cameras"] = cameras;
  if (!channels.empty())
    doc["animations"] = json::array({{{"name", "simulation"}, {"samplers", samplers}, {"channels", channels}}});

  json stored_materials = json::array(), stored_breaks = json::array();
  for (const Material& m : track.materials)
    stored_materials.push_back({{"name", m.name},
                                {"look", m.look},
                                {"density", m.density},
                                {"friction", m.friction},
                                {"restitution", m.restitution},
                                {"bond_strength", m.bond_strength}});
  for (const BreakEvent& e : track.breaks) {
    const Vec3 position = e.position.cast<double>();
    stored_breaks.push_back({{"frame", e.frame},
                             {"node_a", e.piece_a},  // piece p is node p
                             {"node_b", e.piece_b},
                             {"position", vec_json(position)},
                             {"energy", e.energy}});
  }
  doc["extras"] = {{"derrumbe",
                    {{"format", 1},
                     {"fps", track.fps},
                     {"num_frames", frames},
                     {"materials", stored_materials},
                     {"breaks", stored_breaks},
                     {"cameras", stored_cameras}}}};

  detail::write_file(path, b.finish());
}

// ---------------------------------------------------------------------------------------------
// Import

namespace {

// The parsed container: the JSON document and the BIN chunk, with checked JSON accessors whose
// errors name the file and the element.
class GlbDocument {
 public:
  std::string path;
  json doc;
  std::vector<uint8_t> bytes;
  const uint8_t* bin = nullptr;
  size_t bin_size = 0;
  bool has_bin = false;

  GlbDocument(const GlbDocument&) = delete;  // `bin` points into `bytes`
  GlbDocument& operator=(const GlbDocument&) = delete;
  explicit GlbDocument(const std::string& file) : path(file), bytes(detail::read_file(file)) {
    ByteReader r(bytes.data(), bytes.size(), path);
    if (bytes.empty()) r.fail("empty file: not a .glb");
    if (bytes.size() >= 4 && bytes[0] != 'g') {
      const bool looks_json = bytes[0] == '{' || bytes[0] == ' ' || bytes[0] == '\n' || bytes[0] == '\r';
      if (looks_json) r.fail("not a .glb (bad magic): this looks like a .gltf JSON file; export binary glTF (.glb)");
    }
    if (r.get<uint32_t>("the glb magic") != kGlbMagic) r.fail("not a .glb file (bad magic; expected \"glTF\")");
    const auto version = r.get<uint32_t>("the glb version");
    if (version != 2) r.fail("glTF version " + std::to_string(version) + " is unsupported (only 2.0)", ErrorCode::unsupported);
    const auto length = r.get<uint32_t>("the glb length");
    if (length > bytes.size())
      r.fail("truncated: the header says " + std::to_string(length) + " bytes but the file has " +
             std::to_string(bytes.size()));
    if (length < kGlbHeaderBytes) r.fail("the header's length " + std::to_string(length) + " is too small");
    ByteReader body(bytes.data() + kGlbHeaderBytes, length - kGlbHeaderBytes, path);
    const uint8_t* json_data = nullptr;
    size_t json_size = 0;
    for (int chunk = 0; body.remaining() > 0; ++chunk) {
      const std::string name = "chunk " + std::to_string(chunk);
      const auto chunk_length = body.get<uint32_t>(name + " header");
      const auto type = body.get<uint32_t>(name + " header");
      if (chunk_length > body.remaining())
        body.fail("truncated: " + name + " declares " + std::to_string(chunk_length) +
                  " bytes, which overruns the file (" + std::to_string(body.remaining()) + " remain)");
      const uint8_t* data = body.take(chunk_length, name);
      body.skip(std::min<size_t>((4 - chunk_length % 4) % 4, body.remaining()), name + " padding");
      if (chunk == 0) {
        if (type != kChunkJson) body.fail("the first chunk is not JSON");
        json_data = data;
        json_size = chunk_length;
      } else if (type == kChunkBin && !has_bin) {
        bin = data;
        bin_size = chunk_length;
        has_bin = true;
      }
    }
    if (!json_data) r.fail("truncated: no JSON chunk");
    while (json_size > 0 && (json_data[json_size - 1] == ' ' || json_data[json_size - 1] == 0)) --json_size;
    doc = json::parse(json_data, json_data + json_size, nullptr, false);
    if (doc.is_discarded()) r.fail("the JSON chunk is not valid JSON");
    if (!doc.is_object()) r.fail("the JSON chunk is not a JSON object");
  }

  [[noreturn]] void fail(const std::string& where, const std::string& message,
                         ErrorCode code = ErrorCode::parse) const {
    throw Error(code, path + ": " + where + ": " + message);
  }

  static const json* find(const json& obj, const char* key) {
    if (!obj.is_object()) return nullptr;
    const auto it = obj.find(key);
    return it == obj.end() ? nullptr : &*it;
  }
  const json& require(const json& obj, const char* key, const std::string& where) const {
    const json* v = find(obj, key);
    if (!v) fail(where, std::string("missing the required field \"") + key + "\"");
    return *v;
  }
  // A non-negative integer (indices, counts, offsets), bounded so that products cannot overflow.
  uint64_t uint(const json& obj, const char* key, const std::string& where,
                std::optional<uint64_t> fallback = std::nullopt) const {
    const json* v = find(obj, key);
    if (!v) {
      if (!fallback) fail(where, std::string("missing the required field \"") + key + "\"");
      return *fallback;
    }
    if (!v->is_number_integer() || (v->is_number_unsigned() ? false : v->get<int64_t>() < 0))
      fail(where, std::string("\"") + key + "\" must be a non-negative integer");
    const auto value = v->get<uint64_t>();
    if (value >= (uint64_t{1} << 40)) fail(where, std::string("\"") + key + "\" is too large");
    return value;
  }
  double number(const json& obj, const char* key, const std::string& where, std::optional<double> fallback) const {
    const json* v = find(obj, key);
    if (!v) {
      if (!fallback) fail(where, std::string("missing the required field \"") + key + "\"");
      return *fallback;
    }
    if (!v->is_number()) fail(where, std::string("\"") + key + "\" must be a number");
    const auto value = v->get<double>();
    if (!std::isfinite(value)) fail(where, std::string("\"") + key + "\" is not finite");
    return value;
  }
  std::string string(const json& obj, const char* key, const std::string& where,
                     std::optional<std::string> fallback) const {
    const json* v = find(obj, key);
    if (!v) {
      if (!fallback) fail(where, std::string("missing the required field \"") + key + "\"");
      return *fallback;
    }
    if (!v->is_string()) fail(where, std::string("\"") + key + "\" must be a string");
    return v->get<std::string>();
  }
  // An optional array field (an empty array when absent).
  const json& array(const json& obj, const char* key, const std::string& where) const {
    static const json empty = json::array();
    const json* v = find(obj, key);
    if (!v) return empty;
    if (!v->is_array()) fail(where, std::string("\"") + key + "\" must be an array");
    return *v;
  }
  // n numbers from an optional array field.
  template <int N>
  std::optional<Eigen::Matrix<double, N, 1>> numbers(const json& obj, const char* key, const std::string& where) const {
    const json* v = find(obj, key);
    if (!v) return std::nullopt;
    if (!v->is_array() || v->size() != N)
      fail(where, std::string("\"") + key + "\" must be an array of " + std::to_string(N) + " numbers");
    Eigen::Matrix<double, N, 1> out;
    for (int i = 0; i < N; ++i) {
      if (!(*v)[i].is_number()) fail(where, std::string("\"") + key + "\" must hold numbers");
      out[i] = (*v)[i].get<double>();
      if (!std::isfinite(out[i])) fail(where, std::string("\"") + key + "\" holds a non-finite value");
    }
    return out;
  }
  // The top-level element doc[key][index]; `who` is the referrer named in the error.
  const json& element(const char* key, uint64_t index, const std::string& who) const {
    const json& list = array(doc, key, "the document");
    if (index >= list.size())
      fail(who, "refers to " + std::string(key) + "[" + std::to_string(index) + "] but the file has " +
                    std::to_string(list.size()));
    return list[index];
  }
};

// An accessor's values as doubles (normalized integers mapped to [0, 1] or [-1, 1]).
struct AccessorData {
  size_t count = 0;
  int comps = 1;
  int component_type = kFloat;
  bool normalized = false;
  std::vector<double> values;  // count * comps
};

int component_bytes(int type) {
  switch (type) {
    case kByte: case kUnsignedByte: return 1;
    case kShort: case kUnsignedShort: return 2;
    case kUnsignedInt: case kFloat: return 4;
    default: return 0;
  }
}

double read_component(const uint8_t* p, int type, bool normalized) {
  switch (type) {
    case kByte: { int8_t v; std::memcpy(&v, p, 1); return normalized ? std::max(v / 127.0, -1.0) : v; }
    case kUnsignedByte: { uint8_t v; std::memcpy(&v, p, 1); return normalized ? v / 255.0 : v; }
    case kShort: { int16_t v; std::memcpy(&v, p, 2); return normalized ? std::max(v / 32767.0, -1.0) : v; }
    case kUnsignedShort: { uint16_t v; std::memcpy(&v, p, 2); return normalized ? v / 65535.0 : v; }
    case kUnsignedInt: { uint32_t v; std::memcpy(&v, p, 4); return normalized ? v / 4294967295.0 : v; }
    default: { float v; std::memcpy(&v, p, 4); return v; }
  }
}

int type_components(const std::string& type) {
  if (type == "SCALAR") return 1;
  if (type == "VEC2") return 2;
  if (type == "VEC3") return 3;
  if (type == "VEC4") return 4;
  return 0;
}

// One animated property of a node: key times and values (3 or 4 components).
struct Channel {
  std::shared_ptr<const std::vector<double>> times;
  std::vector<double> values;
  bool step = false;
};

struct Node {
  std::string name;
  int64_t parent = -1;
  std::optional<Eigen::Matrix4d> matrix;
  Vec3 translation{0, 0, 0}, scale{1, 1, 1};
  Quat rotation = Quat::Identity();
  std::optional<uint64_t> mesh, camera;
  const json* derrumbe = nullptr;  // extras.derrumbe, when it is an object
  std::optional<Channel> animated[3];  // translation, rotation, scale
};

struct RawMesh {
  std::vector<Vec3> vertices;
  std::vector<std::array<uint32_t, 3>> triangles;
  std::optional<uint64_t> material;
};

// L = R P with R a rotation and P symmetric (P carries scale, shear and a possible mirror).
struct Polar {
  Eigen::Matrix3d rotation, stretch;
};
std::optional<Polar> polar_decomposition(const Eigen::Matrix3d& linear) {
  Eigen::JacobiSVD<Eigen::Matrix3d> svd(linear, Eigen::ComputeFullU | Eigen::ComputeFullV);
  Eigen::Matrix3d u = svd.matrixU();
  Vec3 s = svd.singularValues();
  const Eigen::Matrix3d& v = svd.matrixV();
  if (!(s[2] > 1e-12 * std::max(1.0, s[0]))) return std::nullopt;
  if ((u * v.transpose()).determinant() < 0) {
    u.col(2) = -u.col(2);
    s[2] = -s[2];
  }
  return Polar{u * v.transpose(), v * s.asDiagonal() * v.transpose()};
}

// Where time t falls among the keys: interpolate keys i0 and i1 by s. Times within a rounding
// tolerance of a key snap to it (keys written as float seconds).
struct KeySpan {
  size_t i0, i1;
  double s;
};
KeySpan locate(const std::vector<double>& times, double t, bool step) {
  const double tol = 5e-7 * std::max(1.0, std::abs(t));
  const size_t n = times.size();
  if (t <= times.front() + tol) return {0, 0, 0.0};
  if (t >= times.back() - tol) return {n - 1, n - 1, 0.0};
  const size_t i1 = static_cast<size_t>(std::upper_bound(times.begin(), times.end(), t) - times.begin());
  const size_t i0 = i1 - 1;
  if (times[i1] - t <= tol) return {i1, i1, 0.0};
  if (step || t - times[i0] <= tol) return {i0, i0, 0.0};
  return {i0, i1, (t - times[i0]) / (times[i1] - times[i0])};
}

Vec3 sample_vec3(const Channel& c, double t) {
  const KeySpan k = locate(*c.times, t, c.step);
  const Vec3 a(c.values[k.i0 * 3], c.values[k.i0 * 3 + 1], c.values[k.i0 * 3 + 2]);
  const Vec3 b(c.values[k.i1 * 3], c.values[k.i1 * 3 + 1], c.values[k.i1 * 3 + 2]);
  return a + k.s * (b - a);
}

Quat sample_quat(const Channel& c, double t) {
  const KeySpan k = locate(*c.times, t, c.step);
  auto key = [&](size_t i) {
    return Quat(c.values[i * 4 + 3], c.values[i * 4], c.values[i * 4 + 1], c.values[i * 4 + 2]).normalized();
  };
  return k.i0 == k.i1 ? key(k.i0) : key(k.i0).slerp(k.s, key(k.i1));
}

// Mass properties of a solid: the closed-mesh integrals (divergence theorem over the triangles)
// when the surface is closed, else a solid box over the bounding box.
struct Solid {
  double mass;
  Vec3 centre, inertia;  // inertia: the diagonal of the tensor about the centre, in the mesh axes
};

bool is_closed(const std::vector<Vec3>& vertices, const std::vector<std::array<uint32_t, 3>>& triangles) {
  // Weld equal positions (exporters split vertices at seams and material boundaries).
  std::map<std::array<double, 3>, uint32_t> weld;
  std::vector<uint32_t> id(vertices.size());
  for (size_t i = 0; i < vertices.size(); ++i)
    id[i] = weld.emplace(std::array<double, 3>{vertices[i].x(), vertices[i].y(), vertices[i].z()},
                         static_cast<uint32_t>(weld.size()))
                .first->second;
  std::vector<uint64_t> edges;
  for (const auto& t : triangles) {
    const uint32_t a = id[t[0]], b = id[t[1]], c = id[t[2]];
    if (a == b || b == c || a == c) continue;
    for (auto [u, v] : {std::pair{a, b}, std::pair{b, c}, std::pair{c, a}})
      edges.push_back((uint64_t{std::min(u, v)} << 32) | std::max(u, v));
  }
  if (edges.empty()) return false;
  std::sort(edges.begin(), edges.end());
  for (size_t i = 0; i < edges.size();) {
    size_t j = i;
    while (j < edges.size() && edges[j] == edges[i]) ++j;
    if (j - i != 2) return false;
    i = j;
  }
  return true;
}

Solid solid_properties(const std::vector<Vec3>& vertices, const std::vector<std::array<uint32_t, 3>>& triangles,
                       double density) {
  Vec3 lo = Vec3::Constant(INFINITY), hi = Vec3::Constant(-INFINITY);
  for (const Vec3& v : vertices) {
    lo = lo.cwiseMin(v);
    hi = hi.cwiseMax(v);
  }
  if (vertices.empty()) return {0.0, Vec3::Zero(), Vec3::Zero()};
  const Vec3 extent = hi - lo;
  if (is_closed(vertices, triangles)) {
    detail::MassProperties mp = detail::mass_properties(vertices, triangles, density);
    if (mp.mass < 0) {  // inward-facing triangles: the same solid with the opposite sign
      mp.mass = -mp.mass;
      mp.inertia = -mp.inertia;
    }
    if (std::isfinite(mp.mass) && mp.mass > 1e-9 * density * std::pow(extent.maxCoeff(), 3) && mp.com.allFinite())
      return {mp.mass, mp.com, mp.inertia.diagonal()};
  }
  const double mass = density * extent.prod();
  const Vec3 sq = extent.cwiseProduct(extent);
  return {mass, 0.5 * (lo + hi), mass / 12.0 * Vec3(sq.y() + sq.z(), sq.x() + sq.z(), sq.x() + sq.y())};
}

Material material_from_gltf(const GlbDocument& g, const json& m, uint64_t index) {
  Material out;
  out.name = g.string(m, "name", "material " + std::to_string(index), "material_" + std::to_string(index));
  std::string lower = out.name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  const json* pbr = GlbDocument::find(m, "pbrMetallicRoughness");
  const double metallic = pbr ? g.number(*pbr, "metallicFactor", "material " + std::to_string(index), 1.0) : 1.0;
  if (lower.find("glass") != std::string::npos) out.look = "glass";
  else if (lower.find("brick") != std::string::npos) out.look = "brick";
  else if (lower.find("steel") != std::string::npos || lower.find("metal") != std::string::npos ||
           (pbr && GlbDocument::find(*pbr, "metallicFactor") && metallic > 0.5))
    out.look = "steel";
  out.density = kImportDensity;
  return out;
}

class Importer {
 public:
  Importer(const std::string& path, double fps) : g_(path), fps_(fps) {}

  SimTrack run() {
    check_extensions();
    read_nodes();
    read_animations();
    const json* root_extras = GlbDocument::find(g_.doc, "extras");
    stored_ = root_extras ? GlbDocument::find(*root_extras, "derrumbe") : nullptr;
    if (stored_ && !stored_->is_object()) g_.fail("extras", "\"derrumbe\" must be an object");

    SimTrack track;
    track.fps = fps_;
    select_pieces_and_cameras();
    const int64_t frames = num_frames();
    if (static_cast<uint64_t>(frames) * pieces_.size() * 7 > kMaxPoseValues)
      g_.fail("animations", std::to_string(frames) + " frames of " + std::to_string(pieces_.size()) +
                                " pieces are more poses than one track holds; import at a lower fps");
    read_materials(track);
    track.poses = xt::xtensor<float, 3>::from_shape({static_cast<size_t>(frames), pieces_.size(), 7});
    track.pieces.resize(pieces_.size());
    std::vector<Eigen::Matrix3d> rest_stretch(pieces_.size());
    std::vector<Vec3> centre(pieces_.size());
    std::vector<std::vector<CameraKey>> sampled_keys(camera_nodes_.size());
    std::vector<Eigen::Matrix4d> world(nodes_.size(), Eigen::Matrix4d::Identity());

    for (int64_t f = 0; f < frames; ++f) {
      const double t = static_cast<double>(f) / fps_;
      for (size_t n : order_) {
        const Eigen::Matrix4d local = local_transform(nodes_[n], t);
        world[n] = nodes_[n].parent < 0 ? local : world[static_cast<size_t>(nodes_[n].parent)] * local;
      }
      for (size_t p = 0; p < pieces_.size(); ++p) {
        const size_t n = pieces_[p];
        const auto polar = polar_decomposition(world[n].topLeftCorner<3, 3>());
        if (!polar) g_.fail(node_name(n), "degenerate (zero-scale) transform at frame " + std::to_string(f));
        if (f == 0) {
          rest_stretch[p] = polar->stretch;
          centre[p] = build_piece(track, p, polar->stretch);
        } else if ((polar->stretch - rest_stretch[p]).cwiseAbs().maxCoeff() >
                   1e-4 * std::max(1.0, rest_stretch[p].cwiseAbs().maxCoeff())) {
          g_.fail(node_name(n), "its scale or shear changes at frame " + std::to_string(f) + " (t = " +
                                    std::to_string(t) + " s): animated scale is not a rigid motion",
                  ErrorCode::unsupported);
        }
        const Quat q(polar->rotation);
        const Vec3 translation = world[n].topRightCorner<3, 1>() + polar->rotation * centre[p];
        const double pose[7] = {q.x(), q.y(), q.z(), q.w(), translation.x(), translation.y(), translation.z()};
        for (size_t c = 0; c < 7; ++c) track.poses(static_cast<size_t>(f), p, c) = static_cast<float>(pose[c]);
      }
      for (size_t c = 0; c < camera_nodes_.size(); ++c)
        if (!camera_stored_[c]) sampled_keys[c].push_back(camera_key(camera_nodes_[c], world[camera_nodes_[c]], t));
    }
    read_cameras(track, sampled_keys);
    read_breaks(track);
    try {
      track.validate();
    } catch (const Error& e) {
      throw Error(ErrorCode::parse, g_.path + ": " + e.what());
    }
    return track;
  }

 private:
  GlbDocument g_;
  double fps_;
  std::vector<Node> nodes_;
  std::vector<size_t> order_;  // scene nodes, parents before children
  std::vector<size_t> pieces_, camera_nodes_;
  std::vector<bool> camera_stored_;
  double duration_ = 0.0;
  const json* stored_ = nullptr;  // root extras.derrumbe of a derrumbe export
  std::map<uint64_t, RawMesh> meshes_;
  std::map<uint64_t, uint32_t> material_of_gltf_;
  std::map<uint64_t, std::shared_ptr<const std::vector<double>>> times_;

  std::string node_name(size_t n) const {
    return "node " + std::to_string(n) + (nodes_[n].name.empty() ? "" : " (\"" + nodes_[n].name + "\")");
  }

  void check_extensions() {
    // Required extensions that change how geometry or animation is stored cannot be ignored.
    static const std::set<std::string> harmless = {"KHR_mesh_quantization", "KHR_texture_transform",
                                                   "KHR_lights_punctual",   "KHR_texture_basisu",
                                                   "EXT_texture_webp",      "KHR_materials_variants"};
    for (const json& e : g_.array(g_.doc, "extensionsRequired", "the document")) {
      if (!e.is_string()) g_.fail("extensionsRequired", "entries must be strings");
      const auto name = e.get<std::string>();
      if (!harmless.count(name) && name.rfind("KHR_materials_", 0) != 0)
        g_.fail("extensionsRequired", "extension " + name + " is unsupported", ErrorCode::unsupported);
    }
  }

  // The accessor's values, every byte checked against its bufferView, buffer and the BIN chunk.
  AccessorData read_accessor(uint64_t index, const std::string& who, const char* expected_type) {
    const json& acc = g_.element("accessors", index, who);
    const std::string where = "accessor " + std::to_string(index) + " (" + who + ")";
    AccessorData out;
    out.count = g_.uint(acc, "count", where);
    if (out.count == 0) g_.fail(where, "count must be at least 1");
    out.component_type = static_cast<int>(g_.uint(acc, "componentType", where));
    const int csize = component_bytes(out.component_type);
    if (csize == 0) g_.fail(where, "unknown componentType " + std::to_string(out.component_type));
    const std::string type = g_.string(acc, "type", where, std::nullopt);
    out.comps = type_components(type);
    if (type != expected_type) g_.fail(where, "type is " + type + ", expected " + expected_type);
    const json* normalized = GlbDocument::find(acc, "normalized");
    out.normalized = normalized && normalized->is_boolean() && normalized->get<bool>();
    if (GlbDocument::find(acc, "sparse"))
      g_.fail(where, "sparse accessors are unsupported", ErrorCode::unsupported);
    const size_t element = static_cast<size_t>(out.comps * csize);

    if (!GlbDocument::find(acc, "bufferView")) {  // no data: all zeros, as the spec says
      if (out.count > (uint64_t{1} << 24)) g_.fail(where, "count is too large for an accessor without data");
      out.values.assign(out.count * out.comps, 0.0);
      return out;
    }
    const uint64_t view_index = g_.uint(acc, "bufferView", where);
    const json& view = g_.element("bufferViews", view_index, where);
    const std::string view_where = "bufferView " + std::to_string(view_index);
    const uint64_t view_offset = g_.uint(view, "byteOffset", view_where, 0);
    const uint64_t view_length = g_.uint(view, "byteLength", view_where);
    uint64_t stride = g_.uint(view, "byteStride", view_where, 0);
    if (stride == 0) stride = element;
    if (stride < element)
      g_.fail(view_where, "byteStride " + std::to_string(stride) + " is smaller than the " + std::to_string(element) +
                              "-byte elements of " + where);
    const uint64_t buffer_index = g_.uint(view, "buffer", view_where);
    const json& buffer = g_.element("buffers", buffer_index, view_where);
    const std::string buffer_where = "buffer " + std::to_string(buffer_index);
    if (const json* uri = GlbDocument::find(buffer, "uri")) {
      const std::string shown = uri->is_string() ? uri->get<std::string>().substr(0, 40) : "?";
      g_.fail(buffer_where, "external or data URI (\"" + shown + "\") is unsupported: only buffers embedded in the "
                            "GLB BIN chunk are read",
              ErrorCode::unsupported);
    }
    if (buffer_index != 0) g_.fail(buffer_where, "only buffer 0 can refer to the GLB BIN chunk");
    if (!g_.has_bin) g_.fail(buffer_where, "the file has no BIN chunk");
    const uint64_t buffer_length = g_.uint(buffer, "byteLength", buffer_where);
    if (buffer_length > g_.bin_size)
      g_.fail(buffer_where, "byteLength " + std::to_string(buffer_length) + " exceeds the " +
                                std::to_string(g_.bin_size) + "-byte BIN chunk (truncated file?)");
    if (view_offset + view_length > buffer_length)
      g_.fail(view_where, "bytes [" + std::to_string(view_offset) + ", " + std::to_string(view_offset + view_length) +
                              ") are out of bounds of " + buffer_where + " (" + std::to_string(buffer_length) +
                              " bytes)");
    const uint64_t offset = g_.uint(acc, "byteOffset", where, 0);
    if (offset > view_length || element > view_length - offset ||
        out.count - 1 > (view_length - offset - element) / stride)
      g_.fail(where, "out of bounds: " + std::to_string(out.count) + " elements of " + std::to_string(element) +
                         " bytes (stride " + std::to_string(stride) + ") from byteOffset " + std::to_string(offset) +
                         " do not fit in " + view_where + " (" + std::to_string(view_length) + " bytes)");
    const uint8_t* base = g_.bin + view_offset + offset;
    out.values.resize(out.count * out.comps);
    for (size_t i = 0; i < out.count; ++i)
      for (int c = 0; c < out.comps; ++c)
        out.values[i * out.comps + c] =
            read_component(base + i * stride + c * csize, out.component_type, out.normalized);
    for (size_t i = 0; i < out.values.size(); ++i)
      if (!std::isfinite(out.values[i]))
        g_.fail(where, "element " + std::to_string(i / out.comps) + " holds a NaN or infinite value");
    return out;
  }

  void read_nodes() {
    const json& list = g_.array(g_.doc, "nodes", "the document");
    nodes_.resize(list.size());
    for (size_t n = 0; n < list.size(); ++n) {
      const json& j = list[n];
      Node& node = nodes_[n];
      const std::string where = "node " + std::to_string(n);
      if (!j.is_object()) g_.fail(where, "must be an object");
      node.name = g_.string(j, "name", where, "");
      if (auto m = g_.numbers<16>(j, "matrix", where)) node.matrix = Eigen::Map<const Eigen::Matrix4d>(m->data());
      if (auto t = g_.numbers<3>(j, "translation", where)) node.translation = *t;
      if (auto s = g_.numbers<3>(j, "scale", where)) node.scale = *s;
      if (auto r = g_.numbers<4>(j, "rotation", where)) {
        if (r->norm() < 1e-12) g_.fail(where, "rotation is a zero quaternion");
        node.rotation = Quat((*r)[3], (*r)[0], (*r)[1], (*r)[2]).normalized();
      }
      if (GlbDocument::find(j, "mesh")) node.mesh = g_.uint(j, "mesh", where);
      if (GlbDocument::find(j, "camera")) node.camera = g_.uint(j, "camera", where);
      if (node.mesh && GlbDocument::find(j, "skin"))
        g_.fail(node_name(n), "skinned meshes are unsupported (not rigid pieces)", ErrorCode::unsupported);
      if (const json* extras = GlbDocument::find(j, "extras"))
        if (const json* d = GlbDocument::find(*extras, "derrumbe"); d && d->is_object()) node.derrumbe = d;
    }
    for (size_t n = 0; n < list.size(); ++n)
      for (const json& c : g_.array(list[n], "children", "node " + std::to_string(n))) {
        if (!c.is_number_unsigned() && !(c.is_number_integer() && c.get<int64_t>() >= 0))
          g_.fail(node_name(n), "children must be node indices");
        const auto child = c.get<uint64_t>();
        if (child >= nodes_.size())
          g_.fail(node_name(n), "has unknown child node " + std::to_string(child) + " (the file has " +
                                    std::to_string(nodes_.size()) + " nodes)");
        if (child == n || nodes_[child].parent >= 0)
          g_.fail(node_name(child), "has more than one parent (or is its own child)");
        nodes_[child].parent = static_cast<int64_t>(n);
      }

    // Roots: the default scene's nodes (all parentless nodes when the file has no scene).
    std::vector<size_t> roots;
    const json& scenes = g_.array(g_.doc, "scenes", "the document");
    if (scenes.empty()) {
      for (size_t n = 0; n < nodes_.size(); ++n)
        if (nodes_[n].parent < 0) roots.push_back(n);
    } else {
      const uint64_t s = g_.uint(g_.doc, "scene", "the document", 0);
      const json& scene = g_.element("scenes", s, "the document's \"scene\"");
      for (const json& r : g_.array(scene, "nodes", "scene " + std::to_string(s))) {
        if (!r.is_number_integer() || r.get<int64_t>() < 0 || r.get<uint64_t>() >= nodes_.size())
          g_.fail("scene " + std::to_string(s), "lists unknown node " + r.dump());
        const auto n = r.get<size_t>();
        if (nodes_[n].parent >= 0) g_.fail("scene " + std::to_string(s), "lists " + node_name(n) + ", which has a parent");
        roots.push_back(n);
      }
    }
    std::vector<bool> seen(nodes_.size(), false);
    for (size_t root : roots)
      if (!seen[root]) {
        seen[root] = true;
        order_.push_back(root);
      }
    for (size_t i = 0; i < order_.size(); ++i)  // breadth first: parents before children
      for (const json& c : g_.array(list[order_[i]], "children", "node"))
        if (!seen[c.get<size_t>()]) {
          seen[c.get<size_t>()] = true;
          order_.push_back(c.get<size_t>());
        }
  }

  std::shared_ptr<const std::vector<double>> read_times(uint64_t accessor, const std::string& who) {
    auto& cached = times_[accessor];
    if (!cached) {
      AccessorData input = read_accessor(accessor, who, "SCALAR");
      for (size_t i = 1; i < input.values.size(); ++i)
        if (input.values[i] < input.values[i - 1])
          g_.fail("accessor " + std::to_string(accessor) + " (" + who + ")",
                  "key times must increase (element " + std::to_string(i) + ")");
      cached = std::make_shared<const std::vector<double>>(std::move(input.values));
    }
    return cached;
  }

  void read_animations() {
    static const char* kPaths[] = {"translation", "rotation", "scale"};
    const json& animations = g_.array(g_.doc, "animations", "the document");
    for (size_t a = 0; a < animations.size(); ++a) {
      const json& anim = animations[a];
      const std::string name = g_.string(anim, "name", "animation " + std::to_string(a), "");
      const std::string where = "animation " + std::to_string(a) + (name.empty() ? "" : " (\"" + name + "\")");
      const json& samplers = g_.array(anim, "samplers", where);
      const json& channels = g_.array(anim, "channels", where);
      for (size_t c = 0; c < channels.size(); ++c) {
        const std::string cwhere = where + " channel " + std::to_string(c);
        const json& target = g_.require(channels[c], "target", cwhere);
        if (!GlbDocument::find(target, "node")) continue;  // targets of extensions (KHR_animation_pointer)
        const uint64_t n = g_.uint(target, "node", cwhere);
        if (n >= nodes_.size())
          g_.fail(cwhere, "targets unknown node " + std::to_string(n) + " (the file has " +
                              std::to_string(nodes_.size()) + " nodes)");
        const std::string path = g_.string(target, "path", cwhere, std::nullopt);
        if (path == "weights")
          g_.fail(cwhere, "morph-target (weights) animation is not a rigid motion", ErrorCode::unsupported);
        const int slot = path == "translation" ? 0 : path == "rotation" ? 1 : path == "scale" ? 2 : -1;
        if (slot < 0) g_.fail(cwhere, "unknown target path \"" + path + "\"");
        if (nodes_[n].matrix) g_.fail(node_name(n), "is animated but has a \"matrix\" (the spec forbids it)");
        if (nodes_[n].animated[slot])
          g_.fail(node_name(n), std::string("its ") + kPaths[slot] + " is animated by more than one channel");
        const uint64_t s = g_.uint(channels[c], "sampler", cwhere);
        if (s >= samplers.size())
          g_.fail(cwhere, "refers to unknown sampler " + std::to_string(s) + " (the animation has " +
                              std::to_string(samplers.size()) + ")");
        const std::string swhere = where + " sampler " + std::to_string(s);
        const std::string interpolation = g_.string(samplers[s], "interpolation", swhere, "LINEAR");
        if (interpolation == "CUBICSPLINE")
          g_.fail(swhere, "CUBICSPLINE interpolation is unsupported; export with LINEAR or STEP (sampled) keys",
                  ErrorCode::unsupported);
        if (interpolation != "LINEAR" && interpolation != "STEP")
          g_.fail(swhere, "unknown interpolation \"" + interpolation + "\"");
        Channel ch;
        ch.step = interpolation == "STEP";
        ch.times = read_times(g_.uint(samplers[s], "input", swhere), swhere + " input");
        AccessorData output =
            read_accessor(g_.uint(samplers[s], "output", swhere), swhere + " output", slot == 1 ? "VEC4" : "VEC3");
        if (output.count != ch.times->size())
          g_.fail(swhere, "has " + std::to_string(output.count) + " output values for " +
                              std::to_string(ch.times->size()) + " key times");
        if (slot == 1)
          for (size_t k = 0; k < output.count; ++k)
            if (Eigen::Map<const Eigen::Vector4d>(&output.values[k * 4]).norm() < 1e-12)
              g_.fail(swhere, "key " + std::to_string(k) + " is a zero quaternion");
        ch.values = std::move(output.values);
        duration_ = std::max(duration_, ch.times->back());
        nodes_[n].animated[slot] = std::move(ch);
      }
    }
  }

  int64_t num_frames() const {
    const double frames = std::floor(duration_ * fps_ + 1e-3) + 1;
    if (frames > static_cast<double>(kMaxFrames))
      g_.fail("animations", "last " + std::to_string(duration_) + " s: " + std::to_string(frames) +
                                " frames at " + std::to_string(fps_) + " fps, over the limit of " +
                                std::to_string(kMaxFrames));
    return static_cast<int64_t>(frames);
  }

  Eigen::Matrix4d local_transform(const Node& node, double t) const {
    if (node.matrix) return *node.matrix;
    const Vec3 translation = node.animated[0] ? sample_vec3(*node.animated[0], t) : node.translation;
    const Quat rotation = node.animated[1] ? sample_quat(*node.animated[1], t) : node.rotation;
    const Vec3 scale = node.animated[2] ? sample_vec3(*node.animated[2], t) : node.scale;
    Eigen::Matrix4d m = Eigen::Matrix4d::Identity();
    m.topLeftCorner<3, 3>() = rotation.toRotationMatrix() * scale.asDiagonal();
    m.topRightCorner<3, 1>() = translation;
    return m;
  }

  void select_pieces_and_cameras() {
    std::vector<size_t> sorted = order_;
    std::sort(sorted.begin(), sorted.end());  // pieces in node order (a derrumbe export: piece p = node p)
    for (size_t n : sorted) {
      if (nodes_[n].mesh || nodes_[n].derrumbe) pieces_.push_back(n);
      if (nodes_[n].camera) {
        const json& cam = g_.element("cameras", *nodes_[n].camera, node_name(n));
        if (g_.string(cam, "type", "camera " + std::to_string(*nodes_[n].camera), std::nullopt) == "perspective")
          camera_nodes_.push_back(n);  // orthographic cameras have no CameraKey form: skipped
      }
    }
    std::set<uint64_t> stored_nodes;
    if (stored_)
      for (const json& c : g_.array(*stored_, "cameras", "extras.derrumbe"))
        if (const json* node = GlbDocument::find(c, "node"); node && node->is_number_integer())
          stored_nodes.insert(node->get<uint64_t>());
    for (size_t n : camera_nodes_) camera_stored_.push_back(stored_nodes.count(n) > 0);
  }

  const RawMesh& mesh(uint64_t index, const std::string& who) {
    if (auto it = meshes_.find(index); it != meshes_.end()) return it->second;
    const json& m = g_.element("meshes", index, who);
    const std::string name = g_.string(m, "name", "mesh " + std::to_string(index), "");
    const std::string where = "mesh " + std::to_string(index) + (name.empty() ? "" : " (\"" + name + "\")");
    const json& primitives = g_.array(m, "primitives", where);
    if (primitives.empty()) g_.fail(where, "has no primitives");
    RawMesh out;
    for (size_t p = 0; p < primitives.size(); ++p) {
      const json& prim = primitives[p];
      const std::string pwhere = where + " primitive " + std::to_string(p);
      const uint64_t mode = g_.uint(prim, "mode", pwhere, kTriangles);
      if (mode != kTriangles)
        g_.fail(pwhere, "mode " + std::to_string(mode) + " is unsupported (only TRIANGLES, mode 4)",
                ErrorCode::unsupported);
      const json& attributes = g_.require(prim, "attributes", pwhere);
      const AccessorData pos = read_accessor(g_.uint(attributes, "POSITION", pwhere + " attributes"),
                                             pwhere + " POSITION", "VEC3");
      std::vector<uint32_t> indices;
      if (GlbDocument::find(prim, "indices")) {
        const uint64_t a = g_.uint(prim, "indices", pwhere);
        const AccessorData idx = read_accessor(a, pwhere + " indices", "SCALAR");
        if (idx.normalized || (idx.component_type != kUnsignedByte && idx.component_type != kUnsignedShort &&
                               idx.component_type != kUnsignedInt))
          g_.fail("accessor " + std::to_string(a), "indices must be UNSIGNED_BYTE, UNSIGNED_SHORT or UNSIGNED_INT");
        indices.reserve(idx.count);
        for (size_t i = 0; i < idx.count; ++i) {
          if (idx.values[i] >= static_cast<double>(pos.count))
            g_.fail(pwhere, "index " + std::to_string(static_cast<uint64_t>(idx.values[i])) + " (element " +
                                std::to_string(i) + " of accessor " + std::to_string(a) + ") is out of range of the " +
                                std::to_string(pos.count) + " vertices");
          indices.push_back(static_cast<uint32_t>(idx.values[i]));
        }
      } else {
        indices.resize(pos.count);
        for (size_t i = 0; i < pos.count; ++i) indices[i] = static_cast<uint32_t>(i);
      }
      if (indices.size() % 3 != 0)
        g_.fail(pwhere, std::to_string(indices.size()) + " indices do not make whole triangles");
      if (out.vertices.size() + pos.count >= UINT32_MAX) g_.fail(where, "too many vertices");
      const auto base = static_cast<uint32_t>(out.vertices.size());
      for (size_t v = 0; v < pos.count; ++v)
        out.vertices.emplace_back(pos.values[v * 3], pos.values[v * 3 + 1], pos.values[v * 3 + 2]);
      for (size_t i = 0; i < indices.size(); i += 3)
        out.triangles.push_back({base + indices[i], base + indices[i + 1], base + indices[i + 2]});
      if (p == 0 && GlbDocument::find(prim, "material")) {
        out.material = g_.uint(prim, "material", pwhere);
        g_.element("materials", *out.material, pwhere);
      }
    }
    return meshes_.emplace(index, std::move(out)).first->second;
  }

  void read_materials(SimTrack& track) {
    if (!stored_) return;
    for (const json& m : g_.array(*stored_, "materials", "extras.derrumbe")) {
      const std::string where = "extras.derrumbe.materials[" + std::to_string(track.materials.size()) + "]";
      Material mat;
      mat.name = g_.string(m, "name", where, mat.name);
      mat.look = g_.string(m, "look", where, mat.look);
      mat.density = g_.number(m, "density", where, mat.density);
      mat.friction = g_.number(m, "friction", where, mat.friction);
      mat.restitution = g_.number(m, "restitution", where, mat.restitution);
      mat.bond_strength = g_.number(m, "bond_strength", where, mat.bond_strength);
      track.materials.push_back(std::move(mat));
    }
  }

  // The track material for a glTF material (or for none): created on first use.
  uint32_t track_material(SimTrack& track, std::optional<uint64_t> gltf_material) {
    const uint64_t key = gltf_material ? *gltf_material : UINT64_MAX;
    if (auto it = material_of_gltf_.find(key); it != material_of_gltf_.end()) return it->second;
    Material m;
    if (gltf_material) m = material_from_gltf(g_, g_.element("materials", *gltf_material, "a primitive"), *gltf_material);
    m.density = kImportDensity;
    track.materials.push_back(std::move(m));
    return material_of_gltf_[key] = static_cast<uint32_t>(track.materials.size() - 1);
  }

  // Fills track.pieces[p] from its node at frame 0: the rest stretch baked into the vertices,
  // re-centred on the centre of mass. Returns the centre in the node's rotated frame.
  Vec3 build_piece(SimTrack& track, size_t p, const Eigen::Matrix3d& stretch) {
    const size_t n = pieces_[p];
    const Node& node = nodes_[n];
    const std::string where = node_name(n);
    Piece& piece = track.pieces[p];
    RawMesh baked;
    if (node.mesh) baked = mesh(*node.mesh, where);
    if (!stretch.isIdentity(1e-9)) {
      for (Vec3& v : baked.vertices) v = stretch * v;
      if (stretch.determinant() < 0)  // a mirror: keep the triangles counter-clockwise from outside
        for (auto& t : baked.triangles) std::swap(t[1], t[2]);
    }
    Vec3 centre = Vec3::Zero();
    if (node.derrumbe) {  // a derrumbe export: already centred, scalars stored
      const json& d = *node.derrumbe;
      const std::string dwhere = where + " extras.derrumbe";
      piece.id = static_cast<uint32_t>(g_.uint(d, "id", dwhere, p));
      const std::string kind = g_.string(d, "kind", dwhere, "debris");
      const auto k = kind_from_name(kind);
      if (!k) g_.fail(dwhere, "unknown kind \"" + kind + "\"");
      piece.kind = *k;
      const double building = g_.number(d, "building", dwhere, -1.0);
      if (building != std::floor(building) || building < INT32_MIN || building > INT32_MAX)
        g_.fail(dwhere, "building must be an integer");
      piece.building = static_cast<int32_t>(building);
      piece.mass = g_.number(d, "mass", dwhere, 0.0);
      piece.inertia = g_.numbers<3>(d, "inertia", dwhere).value_or(Vec3::Zero());
      if (stored_) {
        piece.material = static_cast<uint32_t>(g_.uint(d, "material", dwhere, 0));
        if (piece.material >= track.materials.size() && !(track.materials.empty() && piece.material == 0))
          g_.fail(dwhere, "material " + std::to_string(piece.material) + " is not among the " +
                              std::to_string(track.materials.size()) + " stored materials");
      } else {
        piece.material = track_material(track, baked.material);
      }
    } else {
      piece.id = static_cast<uint32_t>(p);
      piece.kind = PieceKind::debris;
      piece.building = -1;
      piece.material = stored_ ? 0 : track_material(track, baked.material);
      if (stored_ && track.materials.empty()) track.materials.push_back(Material{});
      const double density = track.materials[piece.material].density;
      const Solid solid = solid_properties(baked.vertices, baked.triangles, density);
      piece.mass = solid.mass;
      piece.inertia = solid.inertia;
      centre = solid.centre;
    }
    piece.mesh.vertices.reserve(baked.vertices.size());
    for (const Vec3& v : baked.vertices) piece.mesh.vertices.push_back((v - centre).cast<float>());
    piece.mesh.triangles = std::move(baked.triangles);
    return centre;
  }

  CameraKey camera_key(size_t n, const Eigen::Matrix4d& world, double t) const {
    const json& cam = g_.element("cameras", *nodes_[n].camera, node_name(n));
    const std::string where = "camera " + std::to_string(*nodes_[n].camera);
    const json& persp = g_.require(cam, "perspective", where);
    const double yfov = g_.number(persp, "yfov", where + " perspective", std::nullopt);
    if (!(yfov > 0 && yfov < std::numbers::pi)) g_.fail(where, "yfov must be in (0, pi)");
    CameraKey key;
    const double aspect = g_.number(persp, "aspectRatio", where + " perspective", key.sensor_width_mm / key.sensor_height_mm);
    if (!(aspect > 0)) g_.fail(where, "aspectRatio must be positive");
    key.time = t;
    key.sensor_width_mm = key.sensor_height_mm * aspect;
    key.focal_length_mm = 0.5 * key.sensor_height_mm / std::tan(0.5 * yfov);
    const auto polar = polar_decomposition(world.topLeftCorner<3, 3>());
    if (!polar) g_.fail(node_name(n), "degenerate (zero-scale) camera transform");
    key.position = world.topRightCorner<3, 1>();
    key.target = key.position - kImportTargetDistance * polar->rotation.col(2);
    key.up = polar->rotation.col(1);
    return key;
  }

  void read_cameras(SimTrack& track, std::vector<std::vector<CameraKey>>& sampled) {
    if (stored_) {
      for (const json& c : g_.array(*stored_, "cameras", "extras.derrumbe")) {
        const std::string where = "extras.derrumbe.cameras[" + std::to_string(track.cameras.size()) + "]";
        Camera cam;
        cam.name = g_.string(c, "name", where, cam.name);
        for (const json& k : g_.array(c, "keys", where)) {
          CameraKey key;
          key.time = g_.number(k, "time", where, std::nullopt);
          key.position = g_.numbers<3>(k, "position", where).value_or(key.position);
          key.target = g_.numbers<3>(k, "target", where).value_or(key.target);
          key.up = g_.numbers<3>(k, "up", where).value_or(key.up);
          key.focal_length_mm = g_.number(k, "focal_length_mm", where, key.focal_length_mm);
          key.sensor_width_mm = g_.number(k, "sensor_width_mm", where, key.sensor_width_mm);
          key.sensor_height_mm = g_.number(k, "sensor_height_mm", where, key.sensor_height_mm);
          cam.keys.push_back(key);
        }
        track.cameras.push_back(std::move(cam));
      }
    }
    for (size_t c = 0; c < camera_nodes_.size(); ++c) {
      if (camera_stored_[c]) continue;
      const size_t n = camera_nodes_[c];
      const json& cam = g_.element("cameras", *nodes_[n].camera, node_name(n));
      Camera out;
      out.name = !nodes_[n].name.empty() ? nodes_[n].name
                                         : g_.string(cam, "name", "camera", "camera_" + std::to_string(c));
      out.keys = std::move(sampled[c]);
      track.cameras.push_back(std::move(out));
    }
  }

  // Breaks of a derrumbe export; frames rescaled to the import fps; a break whose pieces are not
  // in the file any more (deleted in a DCC) is dropped.
  void read_breaks(SimTrack& track) {
    if (!stored_) return;
    const double stored_fps = g_.number(*stored_, "fps", "extras.derrumbe", fps_);
    if (!(stored_fps > 0)) g_.fail("extras.derrumbe", "fps must be positive");
    std::map<uint64_t, uint32_t> piece_of_node;
    for (size_t p = 0; p < pieces_.size(); ++p) piece_of_node[pieces_[p]] = static_cast<uint32_t>(p);
    const json& breaks = g_.array(*stored_, "breaks", "extras.derrumbe");
    for (size_t i = 0; i < breaks.size(); ++i) {
      const std::string where = "extras.derrumbe.breaks[" + std::to_string(i) + "]";
      const auto a = piece_of_node.find(g_.uint(breaks[i], "node_a", where));
      const auto b = piece_of_node.find(g_.uint(breaks[i], "node_b", where));
      if (a == piece_of_node.end() || b == piece_of_node.end()) continue;
      BreakEvent e;
      const double frame = g_.number(breaks[i], "frame", where, std::nullopt);
      e.frame = static_cast<int32_t>(std::clamp(std::round(frame * fps_ / stored_fps), 0.0,
                                                static_cast<double>(track.num_frames())));
      e.piece_a = a->second;
      e.piece_b = b->second;
      e.position = g_.numbers<3>(breaks[i], "position", where).value_or(Vec3::Zero()).cast<float>();
      e.energy = static_cast<float>(g_.number(breaks[i], "energy", where, 0.0));
      track.breaks.push_back(e);
    }
  }
};

}  // namespace

SimTrack import_glb(const std::string& path, double fps) {
  check_arg(std::isfinite(fps) && fps > 0 && fps <= 1000, "import_glb: fps must be in (0, 1000], got " + std::to_string(fps));
  try {
    return Importer(path, fps).run();
  } catch (const json::exception& e) {  // a safety net: every access above is checked first
    throw Error(ErrorCode::parse, path + ": malformed glTF JSON: " + e.what());
  }
}

}  // namespace drb::physics
