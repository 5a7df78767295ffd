// SimTrack files: glTF 2.0 binary (.glb) with one node per piece animated by translation and
// rotation channels (opens in Blender and Houdini), and a compact versioned cache.
#pragma once
#include <string>

#include "derrumbe/physics/track.hpp"

namespace drb::physics {

// Writes the track as a .glb: one mesh + node per piece, one animation with LINEAR
// translation and rotation samplers at the track's frame times, cameras as perspective nodes.
DRB_EXPORT void export_glb(const SimTrack& track, const std::string& path);
// Reads an animated .glb (rigid pieces with node animation, as a DCC exports them) as a
// SimTrack sampled at `fps`. Errors name the offending file, chunk, accessor or node.
DRB_EXPORT SimTrack import_glb(const std::string& path, double fps = 24.0);

// The cache: a small binary file with a magic, a version and a checksum, checked on load.
DRB_EXPORT void save_track(const SimTrack& track, const std::string& path);
DRB_EXPORT SimTrack load_track(const std::string& path);

}  // namespace drb::physics
