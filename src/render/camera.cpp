// Keyframed camera interpolation and the pinhole view.
//
// Position and target follow centripetal Catmull-Rom splines through the keys. The tangent at
// each key is the centripetal (alpha = 1/2) Catmull-Rom tangent with respect to the chordal knot
// parameter; it is converted to a velocity in time with the mean knot-per-second rate of the two
// adjacent segments, and each segment is the cubic Hermite curve in time between its keys. The
// curve passes through every key, is C1 in time (one velocity per key), reduces to exactly the
// centripetal spline when the keys are spaced in time like their knots, to a straight line for
// two keys, and to a constant for one. Up and lens are interpolated linearly.
#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "derrumbe/render/camera.hpp"

namespace drb::render {
namespace {

std::string fmt(double v) {
  std::ostringstream s;
  s.precision(10);
  s << v;
  return s.str();
}

std::string fmt(const Vec3& v) { return "(" + fmt(v.x()) + ", " + fmt(v.y()) + ", " + fmt(v.z()) + ")"; }

// Centripetal knot interval between two points (never exactly 0, so coincident keys stay finite).
double knot_interval(const Vec3& a, const Vec3& b) { return std::max(std::sqrt((b - a).norm()), 1e-12); }

// Per-key velocities (d/dtime) of the C1 centripetal spline through `points` at `times`.
std::vector<Vec3> key_velocities(const std::vector<Vec3>& points, const std::vector<double>& times) {
  const size_t n = points.size();
  std::vector<Vec3> velocity(n, Vec3::Zero());
  if (n < 2) return velocity;
  velocity[0] = (points[1] - points[0]) / (times[1] - times[0]);
  velocity[n - 1] = (points[n - 1] - points[n - 2]) / (times[n - 1] - times[n - 2]);
  for (size_t i = 1; i + 1 < n; ++i) {
    const Vec3 &p0 = points[i - 1], &p1 = points[i], &p2 = points[i + 1];
    const double d01 = knot_interval(p0, p1), d12 = knot_interval(p1, p2);
    // Derivative with respect to the knot parameter (Barry-Goldman / non-uniform Catmull-Rom).
    const Vec3 tangent = (p1 - p0) / d01 - (p2 - p0) / (d01 + d12) + (p2 - p1) / d12;
    const double knots_per_second = (d01 + d12) / (times[i + 1] - times[i - 1]);
    velocity[i] = tangent * knots_per_second;
  }
  return velocity;
}

Vec3 hermite(const Vec3& p0, const Vec3& v0, const Vec3& p1, const Vec3& v1, double dt, double s) {
  const double s2 = s * s, s3 = s2 * s;
  const double h00 = 2 * s3 - 3 * s2 + 1, h10 = s3 - 2 * s2 + s, h01 = -2 * s3 + 3 * s2, h11 = s3 - s2;
  return h00 * p0 + (h10 * dt) * v0 + h01 * p1 + (h11 * dt) * v1;
}

}  // namespace

CameraState camera_at(const physics::Camera& camera, double time) {
  check_arg(!camera.keys.empty(), "camera_at: camera '" + camera.name + "' has no keys");
  check_arg(std::isfinite(time), "camera_at: time must be finite, got " + fmt(time));
  std::vector<physics::CameraKey> keys = camera.keys;
  for (const auto& k : keys)
    check_arg(std::isfinite(k.time), "camera_at: camera '" + camera.name + "' has a key with time " + fmt(k.time));
  std::stable_sort(keys.begin(), keys.end(), [](const auto& a, const auto& b) { return a.time < b.time; });
  for (size_t i = 1; i < keys.size(); ++i)
    check_arg(keys[i].time > keys[i - 1].time, "camera_at: camera '" + camera.name + "' has two keys at time " +
                                                   fmt(keys[i].time) + " (key times must be distinct)");

  auto state_of = [time](physics::CameraKey k) {
    k.time = time;
    return k;
  };
  if (keys.size() == 1 || time <= keys.front().time) return state_of(keys.front());
  if (time >= keys.back().time) return state_of(keys.back());

  // The segment [keys[i], keys[i + 1]] holding `time`.
  const auto it = std::upper_bound(keys.begin(), keys.end(), time, [](double t, const auto& k) { return t < k.time; });
  const size_t i = static_cast<size_t>(it - keys.begin()) - 1;
  const physics::CameraKey &a = keys[i], &b = keys[i + 1];
  const double dt = b.time - a.time;
  const double s = std::clamp((time - a.time) / dt, 0.0, 1.0);

  // Velocities depend only on the key and its neighbours: compute them on a window of <= 4 keys.
  const size_t lo = i > 0 ? i - 1 : i, hi = std::min(keys.size() - 1, i + 2);
  std::vector<double> times;
  std::vector<Vec3> positions, targets;
  for (size_t k = lo; k <= hi; ++k) {
    times.push_back(keys[k].time);
    positions.push_back(keys[k].position);
    targets.push_back(keys[k].target);
  }
  const std::vector<Vec3> vp = key_velocities(positions, times), vt = key_velocities(targets, times);
  const size_t ia = i - lo, ib = ia + 1;
  // The window's end velocities are one-sided only where the window ends at the first/last key.
  CameraState out;
  out.time = time;
  out.position = hermite(a.position, vp[ia], b.position, vp[ib], dt, s);
  out.target = hermite(a.target, vt[ia], b.target, vt[ib], dt, s);
  out.up = (1 - s) * a.up + s * b.up;
  out.focal_length_mm = (1 - s) * a.focal_length_mm + s * b.focal_length_mm;
  out.sensor_width_mm = (1 - s) * a.sensor_width_mm + s * b.sensor_width_mm;
  out.sensor_height_mm = (1 - s) * a.sensor_height_mm + s * b.sensor_height_mm;
  return out;
}

View make_view(const CameraState& camera, int width, int height) {
  check_arg(width >= 1 && width <= 16384, "make_view: width must be in [1, 16384], got " + std::to_string(width));
  check_arg(height >= 1 && height <= 16384, "make_view: height must be in [1, 16384], got " + std::to_string(height));
  check_arg(std::isfinite(camera.focal_length_mm) && camera.focal_length_mm > 0,
            "make_view: focal length must be positive, got " + fmt(camera.focal_length_mm) + " mm");
  check_arg(std::isfinite(camera.sensor_width_mm) && camera.sensor_width_mm > 0,
            "make_view: sensor width must be positive, got " + fmt(camera.sensor_width_mm) + " mm");
  check_arg(std::isfinite(camera.sensor_height_mm) && camera.sensor_height_mm > 0,
            "make_view: sensor height must be positive, got " + fmt(camera.sensor_height_mm) + " mm");
  check_arg(camera.position.allFinite(), "make_view: camera position must be finite, got " + fmt(camera.position));
  check_arg(camera.target.allFinite(), "make_view: camera target must be finite, got " + fmt(camera.target));
  check_arg(camera.up.allFinite(), "make_view: camera up must be finite, got " + fmt(camera.up));

  const Vec3 forward = camera.target - camera.position;
  const double scale = std::max({1.0, camera.position.norm(), camera.target.norm()});
  check_arg(forward.norm() > 1e-9 * scale, "make_view: camera target " + fmt(camera.target) +
                                               " equals the position " + fmt(camera.position));
  check_arg(camera.up.norm() > 0, "make_view: camera up must be non-zero, got " + fmt(camera.up));
  const Vec3 z = forward.normalized();
  const Vec3 x_raw = z.cross(camera.up.normalized());
  check_arg(x_raw.norm() > 1e-6, "make_view: camera up " + fmt(camera.up) + " is parallel to the view direction " +
                                     fmt(z));
  const Vec3 x = x_raw.normalized();
  const Vec3 y = z.cross(x);  // image down

  View view;
  view.width = width;
  view.height = height;
  view.rotation.row(0) = x.transpose();
  view.rotation.row(1) = y.transpose();
  view.rotation.row(2) = z.transpose();
  view.position = camera.position;
  view.translation = -(view.rotation * camera.position);
  view.fx = camera.focal_length_mm / camera.sensor_width_mm * width;
  view.fy = view.fx;
  view.cx = 0.5 * width;
  view.cy = 0.5 * height;
  return view;
}

}  // namespace drb::render
