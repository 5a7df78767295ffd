// Errors: every failure in derrumbe is a drb::Error with a code and a message that names
// the offending value, key or file. The C API maps codes to drb_status one to one.
#pragma once
#include <stdexcept>
#include <string>

#if defined(DRB_BUILDING_LIBRARY)
#define DRB_EXPORT __attribute__((visibility("default")))
#else
#define DRB_EXPORT
#endif

namespace drb {

enum class ErrorCode : int {
  invalid_argument = 1,  // a bad value, shape, dtype or name given by the caller
  not_found = 2,         // a missing file, key or name
  io = 3,                // reading or writing failed
  parse = 4,             // a malformed file or document
  cancelled = 5,         // a callback asked to stop
  model = 6,             // the model (a callback, a Python callable) failed or misbehaved
  unsupported = 7,       // valid input this build cannot handle
  internal = 8,          // a bug in derrumbe
  file_not_found = 10,   // a path that does not exist (C: DRB_ERR_NOT_FOUND)
};

class DRB_EXPORT Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message);
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

// Throws Error(code, message) when `ok` is false. Use for every check on caller input.
inline void check(bool ok, ErrorCode code, const std::string& message) {
  if (!ok) throw Error(code, message);
}
inline void check_arg(bool ok, const std::string& message) {
  if (!ok) throw Error(ErrorCode::invalid_argument, message);
}

DRB_EXPORT const char* error_code_name(ErrorCode code) noexcept;

}  // namespace drb
