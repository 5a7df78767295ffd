// The `derrumbe` command line, callable from the executable (apps/main.cpp) and from Python
// (`python -m derrumbe`, the `derrumbe` script pip installs). Returns the exit code.
#pragma once

namespace drb::cli {
int run(int argc, const char* const* argv);
}  // namespace drb::cli
