// Helpers shared by the io sources; not part of the public API.
#pragma once
#include <string>

#include "derrumbe/io/image.hpp"

namespace drb::io::detail {

inline std::string quoted(const std::string& s) { return "'" + s + "'"; }

// The extension of a path, lowercase, with its dot ("" when there is none).
std::string lower_extension(const std::string& path);

// Throws ErrorCode::file_not_found when `path` does not exist and ErrorCode::io when it is a
// directory, naming `what` (the calling function) and the path.
void check_readable_file(const std::string& path, const std::string& what);

// Reads R, G, B of an EXR (any pixel type) as linear values in the file's colour space and
// converts them to display-referred sRGB in [0, 1]: Rec.709 primaries when the file says so
// in its chromaticities attribute, ACEScg otherwise (see read_plate).
Image read_exr_as_display_srgb(const std::string& path);

// Linear ACEScg (or, with rec709, linear Rec.709) RGB in place -> display sRGB clamped to [0, 1].
void scene_linear_to_display_srgb(Image& image, bool rec709);

}  // namespace drb::io::detail
