#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <doctest/doctest.h>

#include "derrumbe/core/error.hpp"
#include "derrumbe/core/philox.hpp"
#include "derrumbe/core/rng.hpp"

using drb::NoiseAddress;

TEST_CASE("philox4x32-10 matches the Random123 known-answer vectors") {
  using drb::philox::U32x4;
  auto run = [](U32x4 c, uint32_t k0, uint32_t k1) { return drb::philox::philox4x32_10(c, k0, k1); };
  U32x4 r = run(U32x4{{0, 0, 0, 0}}, 0, 0);
  CHECK(r.v[0] == 0x6627e8d5u);
  CHECK(r.v[1] == 0xe169c58du);
  CHECK(r.v[2] == 0xbc57ac4cu);
  CHECK(r.v[3] == 0x9b00dbd8u);
  r = run(U32x4{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu);
  CHECK(r.v[0] == 0x408f276du);
  CHECK(r.v[1] == 0x41c83b0eu);
  CHECK(r.v[2] == 0xa20bc7c6u);
  CHECK(r.v[3] == 0x6d5451fdu);
  r = run(U32x4{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u);
  CHECK(r.v[0] == 0xd16cfe09u);
  CHECK(r.v[1] == 0x94fdccebu);
  CHECK(r.v[2] == 0x5001e420u);
  CHECK(r.v[3] == 0x24126ea1u);
}

TEST_CASE("randn is standard normal") {
  const at::Tensor n = drb::randn({4, 250000}, NoiseAddress{7, 0}, at::TensorOptions().dtype(at::kDouble));
  CHECK(std::abs(n.mean().item<double>()) < 0.005);
  CHECK(std::abs(n.var().item<double>() - 1.0) < 0.01);
  // Tail mass: P(|z| > 2) = 0.0455.
  CHECK(std::abs((n.abs() > 2).to(at::kDouble).mean().item<double>() - 0.0455) < 0.002);
  // Neighbouring elements uncorrelated.
  const at::Tensor f = n.flatten();
  const double corr = (f.slice(0, 0, -1) * f.slice(0, 1)).mean().item<double>();
  CHECK(std::abs(corr) < 0.005);
  // Different seeds and streams give different noise.
  const at::Tensor other = drb::randn({4, 250000}, NoiseAddress{8, 0}, at::TensorOptions().dtype(at::kDouble));
  CHECK(std::abs((n * other).mean().item<double>()) < 0.005);
}

TEST_CASE("randn is the same for any batch split, thread count and frame count") {
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor whole = drb::randn({4, 3, 5, 6, 7}, NoiseAddress{42, 3}, f64);
  // Batch split: items 2..3 generated alone with batch_offset 2.
  const at::Tensor tail = drb::randn({2, 3, 5, 6, 7}, NoiseAddress{42, 3, 2, 0}, f64);
  CHECK(at::equal(whole.slice(0, 2), tail));
  // More frames: the first 5 frames are unchanged.
  const at::Tensor longer = drb::randn({4, 3, 9, 6, 7}, NoiseAddress{42, 3}, f64);
  CHECK(at::equal(whole, longer.slice(2, 0, 5)));
  // Chunked frames: frames 5..8 generated alone with frame_offset 5.
  const at::Tensor chunk = drb::randn({4, 3, 4, 6, 7}, NoiseAddress{42, 3, 0, 5}, f64);
  CHECK(at::equal(longer.slice(2, 5), chunk));
  // Thread count.
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor single = drb::randn({4, 3, 5, 6, 7}, NoiseAddress{42, 3}, f64);
  at::set_num_threads(threads);
  CHECK(at::equal(whole, single));
  // float32 is the float64 value rounded.
  const at::Tensor f32 = drb::randn({4, 3, 5, 6, 7}, NoiseAddress{42, 3}, at::TensorOptions().dtype(at::kFloat));
  CHECK(at::equal(f32, whole.to(at::kFloat)));
}

TEST_CASE("randn rejects bad input with clear errors") {
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  CHECK_THROWS_WITH_AS(drb::randn({}, NoiseAddress{}, f32), doctest::Contains("at least one dimension"), drb::Error);
  CHECK_THROWS_WITH_AS(drb::randn({2, -1}, NoiseAddress{}, f32), doctest::Contains("negative dimension"), drb::Error);
  CHECK_THROWS_WITH_AS(drb::randn({2}, NoiseAddress{}, at::TensorOptions().dtype(at::kInt)),
                       doctest::Contains("floating point"), drb::Error);
  CHECK_THROWS_WITH_AS(drb::randn({2, 3}, NoiseAddress{0, 0, 0, 4}, f32), doctest::Contains("frame_offset"), drb::Error);
  CHECK(drb::randn({0, 3}, NoiseAddress{}, f32).numel() == 0);
}
