// Colour: the sRGB transfer curves (IEC 61966-2-1) and the Rec.709 -> ACEScg matrix, derived
// from the primaries' chromaticities rather than copied, so the derivation can be checked.
#include <Eigen/Dense>

#include <algorithm>
#include <cmath>

#include "derrumbe/io/exr.hpp"
#include "detail.hpp"

namespace drb::io {
namespace {

// CIE xy chromaticities of a colour space's primaries and white point.
struct Primaries {
  Eigen::Vector2d red, green, blue, white;
};

const Primaries kRec709{{0.64, 0.33}, {0.30, 0.60}, {0.15, 0.06}, {0.3127, 0.3290}};
const Primaries kAP1{{0.713, 0.293}, {0.165, 0.830}, {0.128, 0.044}, {0.32168, 0.33767}};

// XYZ of a chromaticity at luminance Y = 1.
Eigen::Vector3d xyz(const Eigen::Vector2d& xy) { return {xy.x() / xy.y(), 1.0, (1.0 - xy.x() - xy.y()) / xy.y()}; }

// Linear RGB -> XYZ: the primaries' XYZ as columns, each scaled so that RGB (1, 1, 1) is the
// white point at Y = 1.
Eigen::Matrix3d rgb_to_xyz(const Primaries& p) {
  Eigen::Matrix3d m;
  m << xyz(p.red), xyz(p.green), xyz(p.blue);
  const Eigen::Vector3d scale = m.colPivHouseholderQr().solve(xyz(p.white));
  return m * scale.asDiagonal();
}

// Bradford chromatic adaptation from one white point to another: scale the cone-like
// responses of the Bradford matrix by the ratio of the two whites' responses.
Eigen::Matrix3d bradford(const Eigen::Vector2d& from, const Eigen::Vector2d& to) {
  Eigen::Matrix3d b;
  b << 0.8951, 0.2664, -0.1614, -0.7502, 1.7135, 0.0367, 0.0389, -0.0685, 1.0296;
  const Eigen::Vector3d ratio = (b * xyz(to)).cwiseQuotient(b * xyz(from));
  return b.inverse() * ratio.asDiagonal() * b;
}

float clamp01(float v) { return v > 0.0f ? std::min(v, 1.0f) : 0.0f; }  // NaN -> 0

}  // namespace

ColorSpace color_space_from_name(const std::string& name) {
  if (name == "acescg") return ColorSpace::acescg;
  if (name == "srgb") return ColorSpace::srgb;
  throw Error(ErrorCode::invalid_argument, "unknown colour space " + detail::quoted(name) + "; known: acescg, srgb");
}

const char* color_space_name(ColorSpace space) noexcept { return space == ColorSpace::acescg ? "acescg" : "srgb"; }

// Negative values continue the linear segment, so the two curves stay inverse for any input.
float srgb_to_linear(float encoded) noexcept {
  if (encoded <= 0.04045f) return encoded / 12.92f;
  return std::pow((encoded + 0.055f) / 1.055f, 2.4f);
}

float linear_to_srgb(float linear) noexcept {
  if (linear <= 0.0031308f) return linear * 12.92f;
  return 1.055f * std::pow(linear, 1.0f / 2.4f) - 0.055f;
}

Eigen::Matrix3d rec709_to_acescg() {
  static const Eigen::Matrix3d m =
      rgb_to_xyz(kAP1).inverse() * bradford(kRec709.white, kAP1.white) * rgb_to_xyz(kRec709);
  return m;
}

// Channels past the third (alpha) are coverage, not colour, and pass through unchanged; grey
// images only lose the curve (white maps to white, so grey stays grey in AP1).
Image srgb_to_scene_linear(const Image& image, ColorSpace space) {
  Image out = image;
  const int colour = std::min(out.channels, 3);
  const size_t n = size_t(out.width) * size_t(out.height);
  for (size_t i = 0; i < n; ++i)
    for (int c = 0; c < colour; ++c) out.pixels[i * out.channels + c] = srgb_to_linear(out.pixels[i * out.channels + c]);
  if (space != ColorSpace::acescg || colour < 3) return out;
  const Eigen::Matrix3f m = rec709_to_acescg().cast<float>();
  for (size_t i = 0; i < n; ++i) {
    float* p = &out.pixels[i * out.channels];
    const Eigen::Vector3f rgb = m * Eigen::Vector3f(p[0], p[1], p[2]);
    p[0] = rgb[0], p[1] = rgb[1], p[2] = rgb[2];
  }
  return out;
}

namespace detail {

void scene_linear_to_display_srgb(Image& image, bool rec709) {
  const Eigen::Matrix3f m = rec709 ? Eigen::Matrix3f::Identity() : Eigen::Matrix3f(rec709_to_acescg().inverse().cast<float>());
  const size_t n = size_t(image.width) * size_t(image.height);
  for (size_t i = 0; i < n; ++i) {
    float* p = &image.pixels[i * image.channels];
    const Eigen::Vector3f rgb = m * Eigen::Vector3f(p[0], p[1], p[2]);
    for (int c = 0; c < 3; ++c) p[c] = clamp01(linear_to_srgb(rgb[c]));
  }
}

}  // namespace detail
}  // namespace drb::io
