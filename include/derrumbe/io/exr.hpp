// OpenEXR frames for compositing: one multi-part-free, multi-channel file per frame holding the
// beauty (half float R, G, B, A) and the AOVs (float) under the names Nuke reads, piece ids as
// Cryptomatte 1.1 layers with their manifest, and the camera matrices as standard attributes.
#pragma once
#include <Eigen/Core>

#include <array>
#include <string>
#include <vector>

#include "derrumbe/io/image.hpp"
#include "derrumbe/render/aovs.hpp"
#include "derrumbe/render/camera.hpp"

namespace drb::io {

enum class ColorSpace { acescg, srgb };
DRB_EXPORT ColorSpace color_space_from_name(const std::string& name);  // "acescg", "srgb"
DRB_EXPORT const char* color_space_name(ColorSpace space) noexcept;

// The sRGB transfer function (IEC 61966-2-1) and its inverse, per value.
DRB_EXPORT float srgb_to_linear(float encoded) noexcept;
DRB_EXPORT float linear_to_srgb(float linear) noexcept;
// Linear Rec.709/sRGB primaries (D65) -> ACEScg (AP1, ACES white), with Bradford adaptation,
// derived from the primaries' chromaticities. Row-major 3x3, applied as rgb' = M rgb.
DRB_EXPORT Eigen::Matrix3d rec709_to_acescg();
// A display-referred sRGB image (values in [0, 1]) -> linear in `space` (the "sRGB - Texture"
// input transform for acescg; linear Rec.709 for srgb).
DRB_EXPORT Image srgb_to_scene_linear(const Image& image, ColorSpace space);

// MurmurHash3_x86_32 (seed 0) of a name, and the Cryptomatte 1.1 id: that hash as float32 bits
// with the exponent kept inside [1, 254] (no denormals, infinities or NaN).
DRB_EXPORT uint32_t murmur3_32(const std::string& data, uint32_t seed = 0) noexcept;
DRB_EXPORT float cryptomatte_id(const std::string& name) noexcept;

// The renderer's camera as EXR's standard attributes (ImfStandardAttributes.h), in Imath's
// row-vector convention (p' = p M, translation in the last row; the arrays are that matrix
// row-major, as Imath::M44f stores it):
// - worldToCamera maps world points to OpenEXR's camera space, which is RenderMan's: left-handed,
//   x right, y up, +z the viewing direction (objects in front have z > 0). render::View is OpenCV
//   style (y down), so its camera y is negated.
// - worldToNDC maps world points to OpenEXR's normalized device coordinates, also RenderMan's:
//   after the divide by w, (0, 0) is the upper-left and (1, 1) the lower-right corner of the
//   display window, y pointing down. A point the view projects to pixel (u, v) (pixel centres at
//   integer + 0.5) lands at x = u / width, y = v / height; z maps camera depth near -> 0,
//   far -> 1 (compositors discard it).
struct CameraMatrices {
  std::array<float, 16> world_to_camera{};
  std::array<float, 16> world_to_ndc{};
};
DRB_EXPORT CameraMatrices camera_matrices(const render::View& view, double near = 0.1, double far = 10000.0);

struct ExrFrame {
  const Image* beauty = nullptr;           // RGB display-referred sRGB in [0, 1], or null
  ColorSpace beauty_space = ColorSpace::acescg;
  const render::AOVs* aovs = nullptr;      // same size as the beauty, or null
  // Names of the pieces (index = piece id) for the Cryptomatte manifest; needed with aovs.
  const std::vector<std::string>* piece_names = nullptr;
  std::string cryptomatte_layer = "CryptoObject";
  const CameraMatrices* camera = nullptr;  // or null
};

// Writes one frame (through write_atomically), ZIP-compressed (lossless). Needs a beauty or AOVs
// (else invalid_argument); with both, their sizes must agree. Channels: R, G, B (half; converted to
// `beauty_space`, with the matching chromaticities attribute), A (half, the render's coverage
// or 1); depth.Z, forward.u, forward.v, backward.u, backward.v, N.x, N.y, N.z, coverage.A, dust.A,
// occlusion.A (float); {layer}00.R/G/B/A and {layer}01.R/G/B/A (float: id and coverage of rank
// 0 and 1); header attributes cryptomatte/<7-hex key>/{name, hash, conversion, manifest},
// worldToCamera, worldToNDC.
// Details: A is written whenever a beauty or AOVs are (the AOVs' alpha, or 1). depth.Z keeps
// +inf where nothing was hit. Cryptomatte rank 0 is (cryptomatte_id(piece_names[piece_id]),
// alpha), ranks 1-3 are 0, pixels with piece_id -1 are all 0; a piece id without a name is
// invalid_argument. The key is the first 7 hex digits of murmur3_32(layer); the manifest maps
// every given name to the 8 lowercase hex digits of its id's float32 bits.
DRB_EXPORT void write_exr_frame(const ExrFrame& frame, const std::string& path);

}  // namespace drb::io
