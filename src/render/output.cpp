// AOV output: multi-channel OpenEXR (write, read, sequences), 8-bit PNG previews and the
// optical-flow colour wheel.
//
// EXR layout: one scanline image, data window (0, 0) - (W-1, H-1), every channel 32-bit FLOAT,
// named as aov_channel_names(): Z, id, N.x N.y N.z, A, R G B, dust, forward.u forward.v,
// backward.u backward.v, occlusion ("forward.u" is channel u of layer forward for Nuke). Depth
// +inf (empty) is stored as-is; the piece id is stored as a float, exact because ids are below
// 2^24 (checked on write). ZIP compression (lossless) or none.
#include <OpenEXR/ImfChannelList.h>
#include <OpenEXR/ImfFrameBuffer.h>
#include <OpenEXR/ImfHeader.h>
#include <OpenEXR/ImfInputFile.h>
#include <OpenEXR/ImfOutputFile.h>
#include <OpenEXR/ImfTestFile.h>
#include <png.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <numbers>
#include <string>
#include <vector>

#include "derrumbe/core/error.hpp"
#include "derrumbe/render/output.hpp"

namespace drb::render {
namespace {

// ---- the channel table -----------------------------------------------------------------------

// Which AOV buffer a channel comes from. Same order as aov_channel_names().
enum class Buffer { depth, piece_id, normal, alpha, rgb, dust, flow_forward, flow_backward, occlusion };

struct ChannelSpec {
  const char* name;
  Buffer buffer;
  int component;  // index along the last axis of a [H, W, K] buffer; 0 for [H, W] buffers
};

constexpr std::array<ChannelSpec, 15> kChannels{{
    {"Z", Buffer::depth, 0},
    {"id", Buffer::piece_id, 0},
    {"N.x", Buffer::normal, 0},
    {"N.y", Buffer::normal, 1},
    {"N.z", Buffer::normal, 2},
    {"A", Buffer::alpha, 0},
    {"R", Buffer::rgb, 0},
    {"G", Buffer::rgb, 1},
    {"B", Buffer::rgb, 2},
    {"dust", Buffer::dust, 0},
    {"forward.u", Buffer::flow_forward, 0},
    {"forward.v", Buffer::flow_forward, 1},
    {"backward.u", Buffer::flow_backward, 0},
    {"backward.v", Buffer::flow_backward, 1},
    {"occlusion", Buffer::occlusion, 0},
}};

// The largest id stored exactly as a float.
constexpr int32_t kMaxExactId = 1 << 24;
// Sides beyond this are treated as corrupt headers (the renderer's own limit is 16384).
constexpr int64_t kMaxSide = 1 << 16;
constexpr int64_t kMaxPixels = int64_t(1) << 28;

std::string quoted(const std::string& s) { return "'" + s + "'"; }

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

void check_path(const std::string& path, const char* fn) {
  check_arg(!path.empty(), std::string(fn) + ": empty path");
  check_arg(path.find('\0') == std::string::npos, std::string(fn) + ": path contains a NUL character");
}

// ---- shape checks ----------------------------------------------------------------------------

template <class T, size_t N>
void check_shape(const xt::xtensor<T, N>& a, const char* field, const AOVs& aovs, size_t components,
                 const std::string& context) {
  std::array<size_t, 3> want{size_t(aovs.height), size_t(aovs.width), components};
  bool ok = a.shape().size() == N;
  for (size_t i = 0; ok && i < N; ++i) ok = a.shape()[i] == want[i];
  if (ok) return;
  std::string got, expected;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) got += ", ", expected += ", ";
    got += std::to_string(a.shape()[i]);
    expected += std::to_string(want[i]);
  }
  throw Error(ErrorCode::invalid_argument,
              context + ": AOV '" + field + "' has shape [" + got + "], expected [" + expected + "]");
}

void check_size(const AOVs& aovs, const std::string& context) {
  check_arg(aovs.width > 0 && aovs.height > 0, context + ": AOVs have size " + std::to_string(aovs.width) + "x" +
                                                   std::to_string(aovs.height) + ", expected a positive size");
}

void check_buffer(const AOVs& aovs, Buffer b, const std::string& context) {
  switch (b) {
    case Buffer::depth: return check_shape(aovs.depth, "depth", aovs, 1, context);
    case Buffer::piece_id: return check_shape(aovs.piece_id, "piece_id", aovs, 1, context);
    case Buffer::normal: return check_shape(aovs.normal, "normal", aovs, 3, context);
    case Buffer::alpha: return check_shape(aovs.alpha, "alpha", aovs, 1, context);
    case Buffer::rgb: return check_shape(aovs.rgb, "rgb", aovs, 3, context);
    case Buffer::dust: return check_shape(aovs.dust, "dust", aovs, 1, context);
    case Buffer::flow_forward: return check_shape(aovs.flow_forward, "flow_forward", aovs, 2, context);
    case Buffer::flow_backward: return check_shape(aovs.flow_backward, "flow_backward", aovs, 2, context);
    case Buffer::occlusion: return check_shape(aovs.occlusion, "occlusion", aovs, 1, context);
  }
}

void check_all_buffers(const AOVs& aovs, const std::string& context) {
  check_size(aovs, context);
  for (Buffer b : {Buffer::depth, Buffer::piece_id, Buffer::normal, Buffer::alpha, Buffer::rgb, Buffer::dust,
                   Buffer::flow_forward, Buffer::flow_backward, Buffer::occlusion})
    check_buffer(aovs, b, context);
}

// A float channel of the AOVs as (first element, pixel stride in floats). Not for piece_id.
struct FloatView {
  float* data;
  size_t stride;
};

FloatView float_view(AOVs& a, const ChannelSpec& c) {
  switch (c.buffer) {
    case Buffer::depth: return {a.depth.data(), 1};
    case Buffer::normal: return {a.normal.data() + c.component, 3};
    case Buffer::alpha: return {a.alpha.data(), 1};
    case Buffer::rgb: return {a.rgb.data() + c.component, 3};
    case Buffer::dust: return {a.dust.data(), 1};
    case Buffer::flow_forward: return {a.flow_forward.data() + c.component, 2};
    case Buffer::flow_backward: return {a.flow_backward.data() + c.component, 2};
    case Buffer::occlusion: return {a.occlusion.data(), 1};
    case Buffer::piece_id: break;
  }
  throw Error(ErrorCode::internal, "float_view: piece_id is not a float buffer");
}

// ---- PNG -------------------------------------------------------------------------------------

// Writes an 8-bit RGB image [H, W, 3] with libpng's simplified API (which marks it sRGB).
void write_rgb8_png(const xt::xtensor<uint8_t, 3>& image, const std::string& path, const std::string& context) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr)
    throw Error(ErrorCode::io, context + ": cannot open " + quoted(path) + " for writing: " + std::strerror(errno));
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.shape()[1]);
  png.height = static_cast<png_uint_32>(image.shape()[0]);
  png.format = PNG_FORMAT_RGB;
  const int ok = png_image_write_to_stdio(&png, file, 0, image.data(), 0, nullptr);
  const std::string message = ok ? "" : png.message;
  png_image_free(&png);
  const bool closed = std::fclose(file) == 0;
  if (!ok || !closed) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
    throw Error(ErrorCode::io, context + ": writing " + quoted(path) + " failed: " +
                                   (ok ? std::string("cannot flush the file") : message));
  }
}

uint8_t to_u8(double v) {
  if (!(v > 0)) return 0;  // also NaN
  if (v >= 1) return 255;
  return static_cast<uint8_t>(std::lround(v * 255.0));
}

double srgb_encode(double linear) {
  if (!(linear > 0)) return 0;
  if (linear <= 0.0031308) return 12.92 * linear;
  return 1.055 * std::pow(linear, 1.0 / 2.4) - 0.055;
}

// A well-spread, never-black colour for a piece id (murmur3's 32-bit finalizer).
std::array<uint8_t, 3> id_color(int32_t id) {
  uint32_t x = static_cast<uint32_t>(id);
  x ^= x >> 16;
  x *= 0x85ebca6bu;
  x ^= x >> 13;
  x *= 0xc2b2ae35u;
  x ^= x >> 16;
  std::array<uint8_t, 3> rgb;
  for (int c = 0; c < 3; ++c) rgb[c] = static_cast<uint8_t>(48 + ((x >> (8 * c)) & 0xffu) * 207u / 255u);
  return rgb;
}

const std::vector<std::string>& png_kinds() {
  static const std::vector<std::string> kinds{"rgb", "depth", "id", "normal", "flow", "occlusion", "dust"};
  return kinds;
}

// ---- the Middlebury colour wheel ---------------------------------------------------------------

// The 55 colours of the wheel in Baker et al., "A Database and Evaluation Methodology for
// Optical Flow" (IJCV 2011), flow-code/colorcode.cpp: red-yellow 15, yellow-green 6,
// green-cyan 4, cyan-blue 11, blue-magenta 13, magenta-red 6 steps.
std::vector<std::array<float, 3>> make_wheel() {
  const int RY = 15, YG = 6, GC = 4, CB = 11, BM = 13, MR = 6;
  std::vector<std::array<float, 3>> wheel;
  auto add = [&](int r, int g, int b) { wheel.push_back({float(r), float(g), float(b)}); };
  for (int i = 0; i < RY; ++i) add(255, 255 * i / RY, 0);
  for (int i = 0; i < YG; ++i) add(255 - 255 * i / YG, 255, 0);
  for (int i = 0; i < GC; ++i) add(0, 255, 255 * i / GC);
  for (int i = 0; i < CB; ++i) add(0, 255 - 255 * i / CB, 255);
  for (int i = 0; i < BM; ++i) add(255 * i / BM, 0, 255);
  for (int i = 0; i < MR; ++i) add(255, 0, 255 - 255 * i / MR);
  return wheel;
}

}  // namespace

// ---- EXR -------------------------------------------------------------------------------------

void write_exr(const AOVs& aovs, const std::string& path, bool compress) {
  const std::string context = "write_exr(" + quoted(path) + ")";
  check_path(path, "write_exr");
  check_all_buffers(aovs, context);
  const int W = aovs.width, H = aovs.height;

  std::vector<float> ids(size_t(W) * size_t(H));
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = aovs.piece_id.data()[i];
    check_arg(id >= -1 && id <= kMaxExactId, context + ": piece id " + std::to_string(id) +
                                                 " is outside [-1, 2^24] and cannot be stored exactly as a float");
    ids[i] = static_cast<float>(id);
  }

  Imf::Header header(W, H, 1.0f, Imath::V2f(0, 0), 1.0f, Imf::INCREASING_Y,
                     compress ? Imf::ZIP_COMPRESSION : Imf::NO_COMPRESSION);
  Imf::FrameBuffer frame_buffer;
  AOVs& writable = const_cast<AOVs&>(aovs);  // OpenEXR slices take char*; the data is only read
  for (const ChannelSpec& c : kChannels) {
    header.channels().insert(c.name, Imf::Channel(Imf::FLOAT));
    if (c.buffer == Buffer::piece_id) {
      frame_buffer.insert(c.name, Imf::Slice(Imf::FLOAT, reinterpret_cast<char*>(ids.data()), sizeof(float),
                                             sizeof(float) * size_t(W)));
    } else {
      const FloatView v = float_view(writable, c);
      frame_buffer.insert(c.name, Imf::Slice(Imf::FLOAT, reinterpret_cast<char*>(v.data), sizeof(float) * v.stride,
                                             sizeof(float) * v.stride * size_t(W)));
    }
  }

  std::unique_ptr<Imf::OutputFile> file;
  try {
    file = std::make_unique<Imf::OutputFile>(path.c_str(), header);
  } catch (const std::exception& e) {
    throw Error(ErrorCode::io, "write_exr: cannot open " + quoted(path) + " for writing: " + e.what());
  }
  try {
    file->setFrameBuffer(frame_buffer);
    file->writePixels(H);
    file.reset();  // writes the line offset table and closes the file
  } catch (const std::exception& e) {
    file.reset();
    std::error_code ec;
    std::filesystem::remove(path, ec);  // we created it: leave no half-written file behind
    throw Error(ErrorCode::io, "write_exr: writing " + quoted(path) + " failed: " + e.what());
  }
}

AOVs read_exr(const std::string& path) {
  check_path(path, "read_exr");
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  check(std::filesystem::exists(status), ErrorCode::file_not_found, "read_exr: file not found: " + quoted(path));
  check(!std::filesystem::is_directory(status), ErrorCode::io,
        "read_exr: " + quoted(path) + " is a directory, not an EXR file");
  bool tiled = false, deep = false, multipart = false;
  check(Imf::isOpenExrFile(path.c_str(), tiled, deep, multipart), ErrorCode::parse,
        "read_exr: " + quoted(path) + " is not an OpenEXR file (bad magic number or unreadable)");
  check(!deep, ErrorCode::unsupported, "read_exr: " + quoted(path) + " holds deep data, which is not supported");

  try {
    Imf::InputFile file(path.c_str());
    const Imf::Header& header = file.header();
    const Imath::Box2i dw = header.dataWindow();
    const int64_t W = int64_t(dw.max.x) - dw.min.x + 1, H = int64_t(dw.max.y) - dw.min.y + 1;
    check(W >= 1 && H >= 1 && W <= kMaxSide && H <= kMaxSide && W * H <= kMaxPixels, ErrorCode::parse,
          "read_exr: " + quoted(path) + " has an invalid or too large data window (" + std::to_string(W) + "x" +
              std::to_string(H) + ")");

    std::vector<std::string> missing;
    for (const ChannelSpec& c : kChannels)
      if (header.channels().findChannel(c.name) == nullptr) missing.push_back(c.name);
    if (!missing.empty()) {
      std::vector<std::string> present;
      for (auto it = header.channels().begin(); it != header.channels().end(); ++it) present.push_back(it.name());
      throw Error(ErrorCode::invalid_argument, "read_exr: " + quoted(path) + " lacks the channels " + join(missing) +
                                                   " (it has: " + (present.empty() ? "none" : join(present)) + ")");
    }
    check(file.isComplete(), ErrorCode::parse,
          "read_exr: " + quoted(path) + " is incomplete (truncated or not finished writing)");

    AOVs a = AOVs::blank(static_cast<int>(W), static_cast<int>(H));
    const size_t h = size_t(H), w = size_t(W);
    std::vector<float> ids(h * w);

    Imf::FrameBuffer frame_buffer;
    for (const ChannelSpec& c : kChannels) {
      // Slice::Make offsets the base pointer by the data window's origin; channels stored as
      // HALF or UINT are converted to float by the library.
      if (c.buffer == Buffer::piece_id) {
        frame_buffer.insert(c.name, Imf::Slice::Make(Imf::FLOAT, ids.data(), dw, sizeof(float), sizeof(float) * w));
      } else {
        const FloatView v = float_view(a, c);
        frame_buffer.insert(c.name, Imf::Slice::Make(Imf::FLOAT, v.data, dw, sizeof(float) * v.stride,
                                                     sizeof(float) * v.stride * w));
      }
    }
    file.setFrameBuffer(frame_buffer);
    file.readPixels(dw.min.y, dw.max.y);

    for (size_t i = 0; i < ids.size(); ++i) {
      const float f = ids[i];
      check(std::isfinite(f) && f == std::floor(f) && f >= -2147483648.0f && f < 2147483648.0f, ErrorCode::parse,
            "read_exr: " + quoted(path) + " has a non-integer piece id " + std::to_string(f) + " at pixel (" +
                std::to_string(i % w) + ", " + std::to_string(i / w) + ")");
      a.piece_id.data()[i] = static_cast<int32_t>(f);
    }
    return a;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(ErrorCode::parse, "read_exr: cannot read " + quoted(path) + ": " + e.what());
  }
}

namespace {

// Checks that `pattern` has exactly one integer conversion (%d or %i, with optional flags,
// width and precision) and otherwise only literal text and "%%".
void check_frame_pattern(const std::string& pattern) {
  const std::string context = "write_exr_sequence: path pattern " + quoted(pattern);
  check_arg(!pattern.empty(), "write_exr_sequence: empty path pattern");
  check_arg(pattern.find('\0') == std::string::npos, context + " contains a NUL character");
  int conversions = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '%') continue;
    const size_t start = i++;
    if (i < pattern.size() && pattern[i] == '%') continue;
    while (i < pattern.size() && std::strchr("-+ #0", pattern[i]) != nullptr) ++i;
    auto digits = [&](const char* what) {
      const size_t first = i;
      while (i < pattern.size() && pattern[i] >= '0' && pattern[i] <= '9') ++i;
      check_arg(i - first <= 2, context + " has a " + what + " over 99 in " + quoted(pattern.substr(start, i - start)));
    };
    digits("field width");
    if (i < pattern.size() && pattern[i] == '.') {
      ++i;
      digits("precision");
    }
    check_arg(i < pattern.size(), context + " ends inside a conversion " + quoted(pattern.substr(start)));
    check_arg(pattern[i] == 'd' || pattern[i] == 'i', context + " has the conversion " +
                                                          quoted(pattern.substr(start, i - start + 1)) +
                                                          "; only one integer conversion such as %04d is allowed");
    ++conversions;
  }
  check_arg(conversions == 1, context + " must have exactly one frame-number conversion such as %04d, it has " +
                                  std::to_string(conversions));
}

std::string format_frame_path(const std::string& pattern, int frame) {
  const int n = std::snprintf(nullptr, 0, pattern.c_str(), frame);
  check(n >= 0, ErrorCode::invalid_argument, "write_exr_sequence: cannot format the path pattern " + quoted(pattern));
  std::string out(size_t(n) + 1, '\0');
  std::snprintf(out.data(), out.size(), pattern.c_str(), frame);
  out.resize(size_t(n));
  return out;
}

}  // namespace

void write_exr_sequence(const std::vector<AOVs>& frames, const std::string& path_pattern, int first_frame) {
  check_frame_pattern(path_pattern);
  check_arg(frames.empty() || first_frame <= std::numeric_limits<int>::max() - int(frames.size() - 1),
            "write_exr_sequence: frame numbers overflow from first_frame " + std::to_string(first_frame));
  // Validate every frame before writing any, so bad input leaves no partial sequence.
  for (size_t i = 0; i < frames.size(); ++i)
    check_all_buffers(frames[i], "write_exr_sequence: frame " + std::to_string(first_frame + int(i)));
  for (size_t i = 0; i < frames.size(); ++i) {
    const int frame = first_frame + int(i);
    write_exr(frames[i], format_frame_path(path_pattern, frame), true);
  }
}

// ---- PNG previews ----------------------------------------------------------------------------

void write_png(const AOVs& aovs, const std::string& what, const std::string& path) {
  const std::string context = "write_png(" + quoted(what) + ", " + quoted(path) + ")";
  const auto& kinds = png_kinds();
  check_arg(std::find(kinds.begin(), kinds.end(), what) != kinds.end(),
            "write_png: unknown preview kind " + quoted(what) + "; known: " + join(kinds));
  check_path(path, "write_png");
  check_size(aovs, context);
  const size_t H = size_t(aovs.height), W = size_t(aovs.width), n = H * W;
  xt::xtensor<uint8_t, 3> image = xt::xtensor<uint8_t, 3>::from_shape({H, W, 3});
  uint8_t* out = image.data();
  auto gray = [&](const xt::xtensor<float, 2>& a, const char* field) {
    check_shape(a, field, aovs, 1, context);
    for (size_t i = 0; i < n; ++i) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = to_u8(a.data()[i]);
  };

  if (what == "rgb") {
    check_buffer(aovs, Buffer::rgb, context);
    for (size_t i = 0; i < 3 * n; ++i) out[i] = to_u8(srgb_encode(aovs.rgb.data()[i]));
  } else if (what == "depth") {
    // Normalized between the nearest (white) and farthest (black) finite depth; empty
    // (non-finite) pixels are black. A constant depth is all white.
    check_buffer(aovs, Buffer::depth, context);
    const float* d = aovs.depth.data();
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (size_t i = 0; i < n; ++i)
      if (std::isfinite(d[i])) lo = std::min(lo, double(d[i])), hi = std::max(hi, double(d[i]));
    for (size_t i = 0; i < n; ++i) {
      const uint8_t v = !std::isfinite(d[i]) ? 0 : hi > lo ? to_u8((hi - d[i]) / (hi - lo)) : 255;
      out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = v;
    }
  } else if (what == "id") {
    check_buffer(aovs, Buffer::piece_id, context);
    for (size_t i = 0; i < n; ++i) {
      const int32_t id = aovs.piece_id.data()[i];
      const std::array<uint8_t, 3> c = id < 0 ? std::array<uint8_t, 3>{0, 0, 0} : id_color(id);
      std::copy(c.begin(), c.end(), out + 3 * i);
    }
  } else if (what == "normal") {
    // (n + 1) / 2 per component: empty pixels (n = 0) are mid-grey.
    check_buffer(aovs, Buffer::normal, context);
    for (size_t i = 0; i < 3 * n; ++i) out[i] = to_u8((double(aovs.normal.data()[i]) + 1.0) * 0.5);
  } else if (what == "flow") {
    check_buffer(aovs, Buffer::flow_forward, context);
    image = flow_to_color(aovs.flow_forward);
  } else if (what == "occlusion") {
    gray(aovs.occlusion, "occlusion");
  } else {  // dust
    gray(aovs.dust, "dust");
  }
  write_rgb8_png(image, path, "write_png");
}

// ---- flow colour wheel -----------------------------------------------------------------------

// Convention (Middlebury, Baker et al. 2011): flow (u, v) in pixels with u to the right and v
// downwards (image coordinates). The hue comes from the angle atan2(-v, -u) mapped onto the
// 55-colour wheel, so motion to the right is red, down is yellow-orange, left is cyan and up is
// blue-violet. r = |flow| / max_magnitude clamped to 1 sets saturation and value together:
// colour = 1 - r (1 - wheel), so zero flow is white and flow at max_magnitude or beyond is the
// fully saturated wheel colour. Pixels with a non-finite component are black.
xt::xtensor<uint8_t, 3> flow_to_color(const xt::xtensor<float, 3>& flow, double max_magnitude) {
  check_arg(flow.shape()[2] == 2, "flow_to_color: flow must have shape [H, W, 2], got last axis " +
                                      std::to_string(flow.shape()[2]));
  check_arg(std::isfinite(max_magnitude) && max_magnitude >= 0,
            "flow_to_color: max_magnitude must be finite and >= 0 (0: the frame's maximum), got " +
                std::to_string(max_magnitude));
  static const std::vector<std::array<float, 3>> wheel = make_wheel();
  const int ncols = static_cast<int>(wheel.size());
  const size_t H = flow.shape()[0], W = flow.shape()[1], n = H * W;
  const float* f = flow.data();

  double max_mag = max_magnitude;
  if (max_mag == 0) {
    for (size_t i = 0; i < n; ++i) {
      const double m = std::hypot(double(f[2 * i]), double(f[2 * i + 1]));
      if (std::isfinite(m)) max_mag = std::max(max_mag, m);
    }
  }

  xt::xtensor<uint8_t, 3> image = xt::xtensor<uint8_t, 3>::from_shape({H, W, 3});
  uint8_t* out = image.data();
  for (size_t i = 0; i < n; ++i) {
    const double u = f[2 * i], v = f[2 * i + 1];
    if (!std::isfinite(u) || !std::isfinite(v)) {
      out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = 0;
      continue;
    }
    const double mag = std::hypot(u, v);
    const double r = max_mag > 0 ? std::min(mag / max_mag, 1.0) : 0.0;
    const double a = std::atan2(-v, -u) / std::numbers::pi;  // [-1, 1]
    const double fk = (a + 1.0) / 2.0 * (ncols - 1);         // [0, ncols - 1]
    const int k0 = std::clamp(static_cast<int>(std::floor(fk)), 0, ncols - 1);
    const int k1 = (k0 + 1) % ncols;
    const double t = fk - k0;
    for (int c = 0; c < 3; ++c) {
      const double col = ((1 - t) * wheel[k0][c] + t * wheel[k1][c]) / 255.0;
      out[3 * i + c] = to_u8(1 - r * (1 - col));
    }
  }
  return image;
}

}  // namespace drb::render
