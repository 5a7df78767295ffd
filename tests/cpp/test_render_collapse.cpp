// The renderer on a simulated collapse: the exact flow is consistent with the images it
// describes. Warping frame t by frame t+1's backward flow reproduces frame t+1's proxy render
// where the surface is visible in both frames, and forward and backward flows cancel.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>

#include "derrumbe/physics/simulate.hpp"
#include "derrumbe/render/aovs.hpp"

using namespace drb;

namespace {

float bilinear(const xt::xtensor<float, 3>& img, double x, double y, size_t c) {
  // Pixel centres at integer + 0.5.
  const double fx = x - 0.5, fy = y - 0.5;
  const auto x0 = static_cast<long>(std::floor(fx)), y0 = static_cast<long>(std::floor(fy));
  const double ax = fx - static_cast<double>(x0), ay = fy - static_cast<double>(y0);
  const long w = static_cast<long>(img.shape(1)), h = static_cast<long>(img.shape(0));
  auto at = [&](long yy, long xx) {
    xx = std::clamp(xx, 0L, w - 1);
    yy = std::clamp(yy, 0L, h - 1);
    return static_cast<double>(img(static_cast<size_t>(yy), static_cast<size_t>(xx), c));
  };
  return static_cast<float>((1 - ay) * ((1 - ax) * at(y0, x0) + ax * at(y0, x0 + 1)) +
                            ay * ((1 - ax) * at(y0 + 1, x0) + ax * at(y0 + 1, x0 + 1)));
}

}  // namespace

TEST_CASE("backward warping reproduces the next frame on a simulated collapse") {
  physics::Scene scene;
  scene.fps = 24;
  scene.duration = 1.5;
  scene.seed = 4;
  physics::Building b;
  b.floors = 3;
  b.footprint = physics::Vec2(8, 8);
  b.bays = {2, 2};
  b.chunks_per_panel = 3;
  scene.buildings = {b};
  physics::Trigger charge;
  charge.type = physics::TriggerType::charge;
  charge.time = 0.1;
  charge.floors = {0};
  charge.energy = 3e6;
  scene.triggers = {charge};
  const physics::SimTrack track = physics::simulate(scene);
  physics::Camera camera;
  physics::CameraKey key;
  key.position = physics::Vec3(6, 4, 22);
  key.target = physics::Vec3(0, 4, 0);
  camera.keys = {key};
  render::RenderOptions opt;
  opt.width = 320;
  opt.height = 192;
  const auto frames = render::render_sequence(track, camera, 10, 22, opt);

  double color_error = 0, unwarped_error = 0, cycle_error = 0;
  int64_t compared = 0, agree = 0, cycled = 0, turned = 0, moving = 0;
  for (size_t f = 0; f + 1 < frames.size(); ++f) {
    const auto& a = frames[f];
    const auto& n = frames[f + 1];
    for (size_t y = 0; y < static_cast<size_t>(n.height); ++y)
      for (size_t x = 0; x < static_cast<size_t>(n.width); ++x) {
        const int32_t id = n.piece_id(y, x);
        if (id < 0) continue;
        // Where this surface point was in frame f; compare only if it was visible there too
        // (same piece at the source pixel and its neighbours: away from silhouettes).
        const double sx = static_cast<double>(x) + 0.5 + n.flow_backward(y, x, 0);
        const double sy = static_cast<double>(y) + 0.5 + n.flow_backward(y, x, 1);
        const long px = static_cast<long>(std::floor(sx)), py = static_cast<long>(std::floor(sy));
        if (px < 1 || py < 1 || px + 1 >= a.width || py + 1 >= a.height) continue;
        // Flat-shaded faces: interpolate only inside one face (same piece and normal around).
        bool visible = true;
        for (long dy = -1; dy <= 1; ++dy)
          for (long dx = -1; dx <= 1; ++dx) {
            const auto yy = static_cast<size_t>(py + dy), xx = static_cast<size_t>(px + dx);
            visible = visible && a.piece_id(yy, xx) == id;
            for (size_t c = 0; c < 3; ++c)
              visible = visible && std::abs(a.normal(yy, xx, c) - a.normal(static_cast<size_t>(py), static_cast<size_t>(px), c)) < 1e-4f;
          }
        if (!visible) continue;
        // Lambert shading follows the face orientation: compare where it did not turn (a
        // rotated face is legitimately shaded differently), which leaves the flow to explain
        // every difference.
        bool same_orientation = true;
        for (size_t c = 0; c < 3; ++c)
          same_orientation = same_orientation &&
                             std::abs(a.normal(static_cast<size_t>(py), static_cast<size_t>(px), c) - n.normal(y, x, c)) < 2e-3f;
        if (!same_orientation) {
          ++turned;
          continue;
        }
        double err = 0, still = 0;
        for (size_t c = 0; c < 3; ++c) {
          err += std::abs(bilinear(a.rgb, sx, sy, c) - n.rgb(y, x, c));
          still += std::abs(a.rgb(y, x, c) - n.rgb(y, x, c));  // no warp: what the motion changes
        }
        err /= 3;
        color_error += err;
        moving += std::hypot(n.flow_backward(y, x, 0), n.flow_backward(y, x, 1)) > 0.5;
        unwarped_error += still / 3;
        agree += err < 0.02;
        ++compared;
        // Cycle: the forward flow of frame f at the source point leads back to (x, y).
        if (a.occlusion(static_cast<size_t>(py), static_cast<size_t>(px)) == 0) {
          const double fu = bilinear(a.flow_forward, sx, sy, 0), fv = bilinear(a.flow_forward, sx, sy, 1);
          cycle_error += std::hypot(sx + fu - (static_cast<double>(x) + 0.5), sy + fv - (static_cast<double>(y) + 0.5));
          ++cycled;
        }
      }
  }
  REQUIRE(compared > 5000);
  REQUIRE(moving > 5000);  // the comparison covers moving debris, not only the standing part
  REQUIRE(cycled > 5000);
  const double mean_color = color_error / static_cast<double>(compared);
  const double agree_fraction = static_cast<double>(agree) / static_cast<double>(compared);
  const double mean_epe = cycle_error / static_cast<double>(cycled);
  const double mean_unwarped = unwarped_error / static_cast<double>(compared);
  std::printf("warp check: %lld pixels (%lld on turned faces left out), mean |rgb error| %.5f warped vs %.4f "
              "unwarped, %.2f%% within 0.02, forward-backward EPE %.4f px\n",
              static_cast<long long>(compared), static_cast<long long>(turned), mean_color, mean_unwarped,
              100 * agree_fraction, mean_epe);
  CHECK(mean_epe < 0.05);
  CHECK(mean_color < 0.1 * mean_unwarped);
  CHECK(agree_fraction > 0.98);
}
