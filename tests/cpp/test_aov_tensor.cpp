// aovs_to_tensor: shapes, channel order, resizing (area for images, nearest for ids and
// occlusion, scaled flow vectors, depth with +inf background) and errors. AOVs built by hand.
#include <doctest/doctest.h>

#include "checks.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "derrumbe/core/error.hpp"
#include "derrumbe/render/tensor.hpp"

using namespace drb::render;
using drb::ErrorCode;

namespace {

using drb::test::expect_error;

const float kInf = std::numeric_limits<float>::infinity();

const std::vector<std::string> kAll{"Z",         "id",        "N.x",        "N.y",        "N.z",
                                    "A",         "R",         "G",          "B",          "dust",
                                    "forward.u", "forward.v", "backward.u", "backward.v", "occlusion"};

// Every channel c of frame f holds 1000 f + 100 c + (y W + x) (ids as int32), except depth,
// which is +inf on the first row (empty).
AOVs make_aovs(int W, int H, int f = 0) {
  AOVs a = AOVs::blank(W, H);
  const size_t h = size_t(H), w = size_t(W);
  for (size_t y = 0; y < h; ++y)
    for (size_t x = 0; x < w; ++x) {
      auto v = [&](int c) { return float(1000 * f + 100 * c) + float(y * w + x); };
      a.depth(y, x) = y == 0 ? kInf : v(0);
      a.piece_id(y, x) = int32_t(v(1));
      for (int k = 0; k < 3; ++k) a.normal(y, x, k) = v(2 + k);
      a.alpha(y, x) = v(5);
      for (int k = 0; k < 3; ++k) a.rgb(y, x, k) = v(6 + k);
      a.dust(y, x) = v(9);
      for (int k = 0; k < 2; ++k) a.flow_forward(y, x, k) = v(10 + k);
      for (int k = 0; k < 2; ++k) a.flow_backward(y, x, k) = v(12 + k);
      a.occlusion(y, x) = v(14);
    }
  return a;
}


bool sizes_are(const at::Tensor& t, const std::vector<int64_t>& sizes) { return t.sizes().vec() == sizes; }

bool all_equal(const at::Tensor& t, double value) { return at::all(t == value).item<bool>(); }

}  // namespace

TEST_CASE("aovs_to_tensor: shape, dtype and every channel in order") {
  const int W = 7, H = 5;
  const std::vector<AOVs> frames{make_aovs(W, H, 0), make_aovs(W, H, 1), make_aovs(W, H, 2)};
  const at::Tensor t = aovs_to_tensor(frames, kAll);
  REQUIRE(sizes_are(t, {3, 15, H, W}));
  CHECK((t.scalar_type() == at::kFloat));
  CHECK(t.device().is_cpu());
  CHECK(t.is_contiguous());
  const auto acc = t.accessor<float, 4>();
  for (int f = 0; f < 3; ++f)
    for (int c = 0; c < 15; ++c)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          const float want = (c == 0 && y == 0) ? kInf : float(1000 * f + 100 * c + y * W + x);
          REQUIRE_MESSAGE(acc[f][c][y][x] == want, "f " << f << " c " << kAll[size_t(c)] << " y " << y << " x " << x);
        }

  // A subset in the caller's order (duplicates allowed); same size given explicitly = no resize.
  const at::Tensor s = aovs_to_tensor(frames, {"backward.v", "Z", "id", "backward.v"}, H, W);
  REQUIRE(sizes_are(s, {3, 4, H, W}));
  CHECK(at::equal(s.select(1, 0), t.select(1, 13)));
  CHECK(at::equal(s.select(1, 2), t.select(1, 1)));
  CHECK(at::equal(s.select(1, 3), t.select(1, 13)));
  CHECK(at::isinf(s.select(1, 1).select(1, 0)).all().item<bool>());
  CHECK(at::equal(s.select(1, 1).narrow(1, 1, H - 1), t.select(1, 0).narrow(1, 1, H - 1)));
}

TEST_CASE("aovs_to_tensor: flow vectors scale with the resize") {
  AOVs a = make_aovs(64, 32);
  for (size_t y = 0; y < 32; ++y)
    for (size_t x = 0; x < 64; ++x) {
      a.flow_forward(y, x, 0) = 4.0f;
      a.flow_forward(y, x, 1) = -2.0f;
      a.flow_backward(y, x, 0) = -4.0f;
      a.flow_backward(y, x, 1) = 1.0f;
    }
  const std::vector<std::string> flow{"forward.u", "forward.v", "backward.u", "backward.v"};

  // 64x32 -> 32x16: a constant 4 px motion becomes 2 px.
  const at::Tensor half = aovs_to_tensor({a}, flow, 16, 32);
  REQUIRE(sizes_are(half, {1, 4, 16, 32}));
  CHECK(all_equal(half.select(1, 0), 2.0));
  CHECK(all_equal(half.select(1, 1), -1.0));
  CHECK(all_equal(half.select(1, 2), -2.0));
  CHECK(all_equal(half.select(1, 3), 0.5));

  // Width only (height 0 keeps the render's): u halves, v stays.
  const at::Tensor narrow = aovs_to_tensor({a}, flow, 0, 32);
  REQUIRE(sizes_are(narrow, {1, 4, 32, 32}));
  CHECK(all_equal(narrow.select(1, 0), 2.0));
  CHECK(all_equal(narrow.select(1, 1), -2.0));

  // Upsampling 2x (bilinear): 8 px; mixed directions: width 3x, height / 2.
  const at::Tensor up = aovs_to_tensor({a}, flow, 64, 128);
  REQUIRE(sizes_are(up, {1, 4, 64, 128}));
  CHECK(at::allclose(up.select(1, 0), at::full({1, 64, 128}, 8.0f), 1e-6, 1e-5));
  CHECK(at::allclose(up.select(1, 3), at::full({1, 64, 128}, 2.0f), 1e-6, 1e-5));
  const at::Tensor mixed = aovs_to_tensor({a}, flow, 16, 192);
  CHECK(at::allclose(mixed.select(1, 0), at::full({1, 16, 192}, 12.0f), 1e-6, 1e-5));
  CHECK(at::allclose(mixed.select(1, 1), at::full({1, 16, 192}, -1.0f), 1e-6, 1e-5));

  // A non-flow image channel is not scaled: area average of a ramp.
  const at::Tensor alpha = aovs_to_tensor({a}, {"A"}, 16, 32);
  const at::Tensor src = aovs_to_tensor({a}, {"A"});
  CHECK(at::allclose(alpha, at::adaptive_avg_pool2d(src, {16, 32})));
}

TEST_CASE("aovs_to_tensor: nearest for id and occlusion, area for images") {
  // 8x8 with 2x2 blocks of one id; a 1-pixel checkerboard of occlusion and alpha.
  AOVs a = make_aovs(8, 8);
  for (size_t y = 0; y < 8; ++y)
    for (size_t x = 0; x < 8; ++x) {
      a.piece_id(y, x) = int32_t((y / 2) * 4 + x / 2) * 7 - 1;
      const bool on = (x + y) % 2 == 1;
      a.occlusion(y, x) = on ? 1.0f : 0.0f;
      a.alpha(y, x) = on ? 1.0f : 0.0f;
    }
  const at::Tensor down = aovs_to_tensor({a}, {"id", "occlusion", "A"}, 4, 4);
  REQUIRE(sizes_are(down, {1, 3, 4, 4}));
  const auto d = down.accessor<float, 4>();
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) {
      CHECK(d[0][0][y][x] == float((y * 4 + x) * 7 - 1));  // ids stay exact ids
      CHECK((d[0][1][y][x] == 0.0f || d[0][1][y][x] == 1.0f));  // occlusion stays 0/1
      CHECK(d[0][2][y][x] == 0.5f);  // alpha averaged
    }

  // Odd factor (8 -> 3): still only ids that exist in the input.
  const at::Tensor odd = aovs_to_tensor({a}, {"id"}, 3, 3);
  std::set<float> ids;
  for (size_t i = 0; i < 64; ++i) ids.insert(float(a.piece_id.data()[i]));
  const at::Tensor flat = odd.flatten().contiguous();
  for (int64_t i = 0; i < flat.numel(); ++i) CHECK(ids.count(flat[i].item<float>()) == 1);

  // Upsampling 2x: each id is repeated over a 2x2 block.
  const at::Tensor up = aovs_to_tensor({a}, {"id"}, 16, 16);
  const auto u = up.accessor<float, 4>();
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x) REQUIRE(u[0][0][y][x] == float(a.piece_id(size_t(y / 2), size_t(x / 2))));
}

TEST_CASE("aovs_to_tensor: depth resizes over finite samples; +inf only where all are empty") {
  AOVs a = make_aovs(4, 4);
  // Top-left 2x2 block: all empty. Top-right: one empty, finite 1, 2, 3. Bottom: finite.
  const float depth[4][4] = {{kInf, kInf, kInf, 1}, {kInf, kInf, 2, 3}, {5, 5, 6, 8}, {5, 5, 10, 12}};
  for (size_t y = 0; y < 4; ++y)
    for (size_t x = 0; x < 4; ++x) a.depth(y, x) = depth[y][x];
  const at::Tensor down = aovs_to_tensor({a}, {"Z"}, 2, 2);
  const auto d = down.accessor<float, 4>();
  CHECK(std::isinf(d[0][0][0][0]));
  CHECK(d[0][0][0][0] > 0);
  CHECK(d[0][0][0][1] == doctest::Approx(2.0));
  CHECK(d[0][0][1][0] == doctest::Approx(5.0));
  CHECK(d[0][0][1][1] == doctest::Approx(9.0));

  // Upsampling never produces NaN; a pixel stays empty only with no finite neighbour.
  const at::Tensor up = aovs_to_tensor({a}, {"Z"}, 8, 8);
  CHECK_FALSE(at::isnan(up).any().item<bool>());
  CHECK(std::isinf(up[0][0][0][0].item<float>()));
  CHECK(std::isfinite(up[0][0][7][7].item<float>()));
  CHECK(up[0][0][7][0].item<float>() == doctest::Approx(5.0));
}

TEST_CASE("aovs_to_tensor: errors") {
  const AOVs a = make_aovs(6, 4);
  expect_error([&] { aovs_to_tensor({}, {"Z"}); }, ErrorCode::invalid_argument, {"no frames"});
  expect_error([&] { aovs_to_tensor({a}, {}); }, ErrorCode::invalid_argument, {"no channels"});
  expect_error([&] { aovs_to_tensor({a}, {"Z", "depth"}); }, ErrorCode::invalid_argument,
               {"unknown channel 'depth'", "Z, id, N.x, N.y, N.z, A, R, G, B, dust, forward.u, forward.v, backward.u, "
                                           "backward.v, occlusion"});
  expect_error([&] { aovs_to_tensor({a, make_aovs(6, 5)}, {"Z"}); }, ErrorCode::invalid_argument,
               {"frame 1 has size 6x5", "frame 0 has 6x4"});
  expect_error([&] { aovs_to_tensor({a}, {"Z"}, -1, 3); }, ErrorCode::invalid_argument, {"outside"});
  expect_error([&] { aovs_to_tensor({a}, {"Z"}, 4, 100000); }, ErrorCode::invalid_argument, {"outside"});
  expect_error([&] { aovs_to_tensor({AOVs{}}, {"Z"}); }, ErrorCode::invalid_argument, {"positive size"});
  AOVs bad = a;
  bad.flow_backward = xt::xtensor<float, 3>::from_shape({4, 6, 3});
  expect_error([&] { aovs_to_tensor({a, bad}, {"Z", "backward.v"}); }, ErrorCode::invalid_argument,
               {"frame 1", "flow_backward", "[4, 6, 3]", "[4, 6, 2]"});
  aovs_to_tensor({a, bad}, {"Z", "forward.v"});  // only the requested buffers must be valid
}
