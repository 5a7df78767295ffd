// Checks shared by the doctest executables.
#pragma once
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "derrumbe/core/error.hpp"
#include "derrumbe/physics/types.hpp"

namespace drb::test {

// Runs f, which must throw a drb::Error with `code` whose message contains every part.
inline void expect_error(const std::function<void()>& f, ErrorCode code, const std::vector<std::string>& parts) {
  bool thrown = false;
  try {
    f();
  } catch (const drb::Error& e) {
    thrown = true;
    CHECK_MESSAGE(e.code() == code, "code " << drb::error_code_name(e.code()) << ", message: " << e.what());
    for (const std::string& p : parts)
      CHECK_MESSAGE(std::string(e.what()).find(p) != std::string::npos, "'" << p << "' not in: " << e.what());
  }
  CHECK_MESSAGE(thrown, "no drb::Error thrown");
}

// Field-by-field equality, so a failure names the field.
inline void check_same(const physics::Material& a, const physics::Material& b) {
  CHECK(a.name == b.name);
  CHECK(a.look == b.look);
  CHECK(a.density == b.density);
  CHECK(a.friction == b.friction);
  CHECK(a.restitution == b.restitution);
  CHECK(a.bond_strength == b.bond_strength);
}

inline void check_same(const physics::CameraKey& a, const physics::CameraKey& b) {
  CHECK(a.time == b.time);
  CHECK(a.position == b.position);
  CHECK(a.target == b.target);
  CHECK(a.up == b.up);
  CHECK(a.focal_length_mm == b.focal_length_mm);
  CHECK(a.sensor_width_mm == b.sensor_width_mm);
  CHECK(a.sensor_height_mm == b.sensor_height_mm);
}

inline void check_same(const physics::Camera& a, const physics::Camera& b) {
  CHECK(a.name == b.name);
  REQUIRE(a.keys.size() == b.keys.size());
  for (size_t i = 0; i < a.keys.size(); ++i) check_same(a.keys[i], b.keys[i]);
}

}  // namespace drb::test
