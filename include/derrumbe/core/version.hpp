// The library version, "MAJOR.MINOR.PATCH", set in one place (CMakeLists.txt's project()).
#pragma once
#include "derrumbe/core/error.hpp"

namespace drb {
DRB_EXPORT const char* version() noexcept;
}  // namespace drb
