#include "derrumbe/core/version.hpp"

namespace drb {
const char* version() noexcept { return DRB_VERSION_STRING; }
}  // namespace drb
