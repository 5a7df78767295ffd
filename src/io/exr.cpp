// OpenEXR frames for compositing (beauty, AOVs, Cryptomatte, camera) and EXR plates.
//
// Depth: depth.Z keeps the renderer's +inf where nothing was hit, as path tracers write
// "nothing" for a camera-depth pass; a compositor's depth tools treat it as infinitely far.
#include <OpenEXR/ImfChannelList.h>
#include <OpenEXR/ImfFrameBuffer.h>
#include <OpenEXR/ImfHeader.h>
#include <OpenEXR/ImfInputFile.h>
#include <OpenEXR/ImfOutputFile.h>
#include <OpenEXR/ImfStandardAttributes.h>
#include <OpenEXR/ImfStringAttribute.h>
#include <OpenEXR/ImfTestFile.h>
#include <Imath/half.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "derrumbe/io/exr.hpp"
#include "detail.hpp"

namespace drb::io {
namespace {
using detail::quoted;

constexpr int64_t kMaxSide = 1 << 16;
constexpr int64_t kMaxPixels = int64_t(1) << 28;

const Imf::Chromaticities kRec709Chromaticities;  // OpenEXR's default: Rec.709 primaries, D65
const Imf::Chromaticities kAP1Chromaticities(Imath::V2f(0.713f, 0.293f), Imath::V2f(0.165f, 0.830f),
                                             Imath::V2f(0.128f, 0.044f), Imath::V2f(0.32168f, 0.33767f));

bool same_chromaticities(const Imf::Chromaticities& a, const Imf::Chromaticities& b) {
  auto near = [](const Imath::V2f& p, const Imath::V2f& q) { return (p - q).length() < 1e-3f; };
  return near(a.red, b.red) && near(a.green, b.green) && near(a.blue, b.blue) && near(a.white, b.white);
}

char* bytes(const void* p) { return const_cast<char*>(static_cast<const char*>(p)); }  // Slices take char*; only read

// A float channel inside an interleaved buffer: first element and pixel stride (in floats).
struct FloatChannel {
  const char* name;
  const float* data;
  size_t stride;
};

template <class T, size_t N>
void check_shape(const xt::xtensor<T, N>& a, const char* field, int W, int H, size_t components,
                 const std::string& context) {
  bool ok = a.shape()[0] == size_t(H) && a.shape()[1] == size_t(W);
  if constexpr (N == 3) ok = ok && a.shape()[2] == components;
  check_arg(ok, context + ": AOV '" + field + "' does not have the frame's size " + std::to_string(W) + "x" +
                    std::to_string(H) + (N == 3 ? " with " + std::to_string(components) + " components" : ""));
}

void check_aovs(const render::AOVs& a, int W, int H, const std::string& context) {
  check_arg(a.width == W && a.height == H, context + ": AOVs are " + std::to_string(a.width) + "x" +
                                               std::to_string(a.height) + ", the frame is " + std::to_string(W) +
                                               "x" + std::to_string(H));
  check_shape(a.depth, "depth", W, H, 1, context);
  check_shape(a.piece_id, "piece_id", W, H, 1, context);
  check_shape(a.normal, "normal", W, H, 3, context);
  check_shape(a.alpha, "alpha", W, H, 1, context);
  check_shape(a.dust, "dust", W, H, 1, context);
  check_shape(a.flow_forward, "flow_forward", W, H, 2, context);
  check_shape(a.flow_backward, "flow_backward", W, H, 2, context);
  check_shape(a.occlusion, "occlusion", W, H, 1, context);
}

std::vector<FloatChannel> aov_channels(const render::AOVs& a) {
  return {{"depth.Z", a.depth.data(), 1},
          {"forward.u", a.flow_forward.data(), 2},
          {"forward.v", a.flow_forward.data() + 1, 2},
          {"backward.u", a.flow_backward.data(), 2},
          {"backward.v", a.flow_backward.data() + 1, 2},
          {"N.x", a.normal.data(), 3},
          {"N.y", a.normal.data() + 1, 3},
          {"N.z", a.normal.data() + 2, 3},
          {"coverage.A", a.alpha.data(), 1},
          {"dust.A", a.dust.data(), 1},
          {"occlusion.A", a.occlusion.data(), 1}};
}

std::string hex8(uint32_t v) {
  char text[9];
  std::snprintf(text, sizeof text, "%08x", v);
  return text;
}

uint32_t float_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

// The pixel buffers a frame buffer points into; they must outlive the write.
struct Planes {
  std::vector<half> rgb, alpha;
  std::vector<float> crypto;  // per pixel: {layer}00.R G B A, {layer}01.R G B A
};

void add_beauty(const ExrFrame& f, int W, int H, Planes& planes, Imf::Header& header, Imf::FrameBuffer& fb) {
  const Image linear = srgb_to_scene_linear(*f.beauty, f.beauty_space);
  planes.rgb.assign(linear.pixels.begin(), linear.pixels.end());
  const char* names[3] = {"R", "G", "B"};
  for (int c = 0; c < 3; ++c) {
    header.channels().insert(names[c], Imf::Channel(Imf::HALF));
    fb.insert(names[c], Imf::Slice(Imf::HALF, bytes(planes.rgb.data() + c), 3 * sizeof(half), 3 * sizeof(half) * W));
  }
  Imf::addChromaticities(header, f.beauty_space == ColorSpace::acescg ? kAP1Chromaticities : kRec709Chromaticities);
}

// A: the render's coverage when there are AOVs, else opaque.
void add_alpha(const ExrFrame& f, int W, int H, Planes& planes, Imf::Header& header, Imf::FrameBuffer& fb) {
  if (f.aovs != nullptr)
    planes.alpha.assign(f.aovs->alpha.begin(), f.aovs->alpha.end());
  else
    planes.alpha.assign(size_t(W) * size_t(H), half(1.0f));
  header.channels().insert("A", Imf::Channel(Imf::HALF));
  fb.insert("A", Imf::Slice(Imf::HALF, bytes(planes.alpha.data()), sizeof(half), sizeof(half) * W));
}

void add_aovs(const render::AOVs& a, int W, Imf::Header& header, Imf::FrameBuffer& fb) {
  for (const FloatChannel& c : aov_channels(a)) {
    header.channels().insert(c.name, Imf::Channel(Imf::FLOAT));
    fb.insert(c.name, Imf::Slice(Imf::FLOAT, bytes(c.data), c.stride * sizeof(float), c.stride * sizeof(float) * W));
  }
}

// Rank 0 is the pixel's piece with the pixel's coverage; the renderer resolves one piece per
// pixel, so ranks 1 to 3 stay 0 (no object), as do empty pixels.
void fill_cryptomatte(const render::AOVs& a, const std::vector<std::string>& names, std::vector<float>& out,
                      const std::string& context) {
  std::vector<float> ids(names.size());
  for (size_t i = 0; i < names.size(); ++i) ids[i] = cryptomatte_id(names[i]);
  const size_t n = a.piece_id.size();
  out.assign(8 * n, 0.0f);
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = a.piece_id.data()[i];
    if (id < 0) continue;
    check_arg(size_t(id) < names.size(), context + ": piece id " + std::to_string(id) + " has no name (" +
                                             std::to_string(names.size()) + " piece names given)");
    out[8 * i] = ids[size_t(id)];
    out[8 * i + 1] = a.alpha.data()[i];
  }
}

std::string manifest(const std::vector<std::string>& names, const std::string& context) {
  nlohmann::json m = nlohmann::json::object();
  for (const std::string& name : names) m[name] = hex8(float_bits(cryptomatte_id(name)));
  try {
    return m.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::invalid_argument, context + ": a piece name is not valid UTF-8: " + e.what());
  }
}

void add_cryptomatte(const ExrFrame& f, int W, Planes& planes, Imf::Header& header, Imf::FrameBuffer& fb,
                     const std::string& context) {
  const std::string& layer = f.cryptomatte_layer;
  check_arg(!layer.empty() && layer.find('.') == std::string::npos,
            context + ": invalid Cryptomatte layer name " + quoted(layer) + " (non-empty, without '.')");
  fill_cryptomatte(*f.aovs, *f.piece_names, planes.crypto, context);
  const char* parts[8] = {"00.R", "00.G", "00.B", "00.A", "01.R", "01.G", "01.B", "01.A"};
  for (int k = 0; k < 8; ++k) {
    const std::string name = layer + parts[k];
    header.channels().insert(name, Imf::Channel(Imf::FLOAT));
    fb.insert(name, Imf::Slice(Imf::FLOAT, bytes(planes.crypto.data() + k), 8 * sizeof(float), 8 * sizeof(float) * W));
  }
  const std::string prefix = "cryptomatte/" + hex8(murmur3_32(layer)).substr(0, 7) + "/";
  header.insert(prefix + "name", Imf::StringAttribute(layer));
  header.insert(prefix + "hash", Imf::StringAttribute("MurmurHash3_32"));
  header.insert(prefix + "conversion", Imf::StringAttribute("uint32_to_float32"));
  header.insert(prefix + "manifest", Imf::StringAttribute(manifest(*f.piece_names, context)));
}

Imath::M44f to_m44f(const std::array<float, 16>& a) {
  Imath::M44f m;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) m[i][j] = a[size_t(4 * i + j)];
  return m;
}

// Imath's row-vector layout of a matrix written for column vectors (p' = M p): its transpose.
std::array<float, 16> row_vector_layout(const Eigen::Matrix4d& m) {
  std::array<float, 16> out{};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) out[size_t(4 * i + j)] = static_cast<float>(m(j, i));
  return out;
}

// The frame's size: the beauty's, else the AOVs'; both must agree.
void frame_size(const ExrFrame& f, int& W, int& H, const std::string& context) {
  check_arg(f.beauty != nullptr || f.aovs != nullptr, context + ": nothing to write (no beauty and no AOVs)");
  if (f.beauty != nullptr) {
    const Image& b = *f.beauty;
    check_arg(b.channels == 3, context + ": the beauty has " + std::to_string(b.channels) + " channels, expected 3");
    check_arg(b.pixels.size() == size_t(b.width) * size_t(b.height) * 3,
              context + ": the beauty holds " + std::to_string(b.pixels.size()) + " values, expected width * height * 3");
  }
  W = f.beauty != nullptr ? f.beauty->width : f.aovs->width;
  H = f.beauty != nullptr ? f.beauty->height : f.aovs->height;
  check_arg(W >= 1 && H >= 1 && W <= kMaxSide && H <= kMaxSide,
            context + ": invalid frame size " + std::to_string(W) + "x" + std::to_string(H));
  if (f.aovs != nullptr) {
    check_aovs(*f.aovs, W, H, context);
    check_arg(f.piece_names != nullptr, context + ": AOVs need piece_names for the Cryptomatte manifest");
  }
}

}  // namespace

CameraMatrices camera_matrices(const render::View& view, double near, double far) {
  check_arg(std::isfinite(near) && std::isfinite(far) && near > 0 && far > near,
            "camera_matrices: need 0 < near < far, got near " + std::to_string(near) + ", far " + std::to_string(far));
  check_arg(view.width >= 1 && view.height >= 1 && view.fx > 0 && view.fy > 0,
            "camera_matrices: invalid view (size " + std::to_string(view.width) + "x" + std::to_string(view.height) +
                ", fx " + std::to_string(view.fx) + ", fy " + std::to_string(view.fy) + ")");
  // OpenCV camera (y down) -> OpenEXR/RenderMan camera (y up, still looking down +z).
  const Eigen::Matrix3d flip = Eigen::Vector3d(1, -1, 1).asDiagonal();
  Eigen::Matrix4d to_camera = Eigen::Matrix4d::Identity();
  to_camera.topLeftCorner<3, 3>() = flip * view.rotation;
  to_camera.topRightCorner<3, 1>() = flip * view.translation;
  // Camera -> NDC before the divide by w = z: x = u / width, y = v / height with
  // u = fx X/Z + cx, v = -fy y/z + cy (y is up here); z maps near -> 0, far -> 1.
  const double W = view.width, H = view.height;
  Eigen::Matrix4d projection;
  projection << view.fx / W, 0, view.cx / W, 0,  //
      0, -view.fy / H, view.cy / H, 0,            //
      0, 0, far / (far - near), -far * near / (far - near), 0, 0, 1, 0;
  CameraMatrices m;
  m.world_to_camera = row_vector_layout(to_camera);
  m.world_to_ndc = row_vector_layout(projection * to_camera);
  return m;
}

void write_exr_frame(const ExrFrame& f, const std::string& path) {
  const std::string context = "write_exr_frame(" + quoted(path) + ")";
  int W = 0, H = 0;
  frame_size(f, W, H, context);
  Imf::Header header(W, H, 1.0f, Imath::V2f(0, 0), 1.0f, Imf::INCREASING_Y, Imf::ZIP_COMPRESSION);
  Imf::FrameBuffer fb;
  Planes planes;
  if (f.beauty != nullptr) add_beauty(f, W, H, planes, header, fb);
  add_alpha(f, W, H, planes, header, fb);
  if (f.aovs != nullptr) {
    add_aovs(*f.aovs, W, header, fb);
    add_cryptomatte(f, W, planes, header, fb, context);
  }
  if (f.camera != nullptr) {
    Imf::addWorldToCamera(header, to_m44f(f.camera->world_to_camera));
    Imf::addWorldToNDC(header, to_m44f(f.camera->world_to_ndc));
  }
  write_atomically(path, [&](const std::string& tmp) {
    try {
      Imf::OutputFile file(tmp.c_str(), header);
      file.setFrameBuffer(fb);
      file.writePixels(H);
    } catch (const std::exception& e) {
      throw Error(ErrorCode::io, context + ": writing failed: " + e.what());
    }
  });
}

namespace detail {

Image read_exr_as_display_srgb(const std::string& path) {
  check_readable_file(path, "read_plate");
  bool tiled = false, deep = false, multipart = false;
  check(Imf::isOpenExrFile(path.c_str(), tiled, deep, multipart), ErrorCode::parse,
        "read_plate: " + quoted(path) + " is not an OpenEXR file");
  check(!deep, ErrorCode::unsupported, "read_plate: " + quoted(path) + " holds deep data");
  try {
    Imf::InputFile file(path.c_str());
    const Imath::Box2i dw = file.header().dataWindow();
    const int64_t W = int64_t(dw.max.x) - dw.min.x + 1, H = int64_t(dw.max.y) - dw.min.y + 1;
    check(W >= 1 && H >= 1 && W <= kMaxSide && H <= kMaxSide && W * H <= kMaxPixels, ErrorCode::parse,
          "read_plate: " + quoted(path) + " has an invalid data window");
    const Imf::ChannelList& channels = file.header().channels();
    check(channels.findChannel("R") && channels.findChannel("G") && channels.findChannel("B"), ErrorCode::parse,
          "read_plate: " + quoted(path) + " has no R, G, B channels");
    check(file.isComplete(), ErrorCode::parse, "read_plate: " + quoted(path) + " is truncated");
    Image image = Image::blank(int(W), int(H), 3);
    Imf::FrameBuffer fb;
    const char* names[3] = {"R", "G", "B"};
    for (int c = 0; c < 3; ++c)  // any stored pixel type is converted to float by the library
      fb.insert(names[c], Imf::Slice::Make(Imf::FLOAT, image.pixels.data() + c, dw, 3 * sizeof(float),
                                           3 * sizeof(float) * size_t(W)));
    file.setFrameBuffer(fb);
    file.readPixels(dw.min.y, dw.max.y);
    const bool rec709 = Imf::hasChromaticities(file.header()) &&
                        same_chromaticities(Imf::chromaticities(file.header()), kRec709Chromaticities);
    scene_linear_to_display_srgb(image, rec709);
    return image;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(ErrorCode::parse, "read_plate: cannot read " + quoted(path) + ": " + e.what());
  }
}

}  // namespace detail
}  // namespace drb::io
