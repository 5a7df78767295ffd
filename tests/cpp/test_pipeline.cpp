// The pipeline's plain parts: SHA-256 (the cache keys), ShotParams' JSON form and checks, and
// the model bundle's errors. The stages themselves are tested end to end in tests/python/test_shot.py.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "checks.hpp"
#include "derrumbe/core/hash.hpp"
#include "derrumbe/models/wan/bundle.hpp"
#include "derrumbe/pipeline/shot.hpp"

using drb::ErrorCode;
using drb::pipeline::ShotParams;
using drb::test::expect_error;

TEST_CASE("SHA-256 matches the FIPS 180-4 examples") {
  CHECK(drb::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(drb::sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(drb::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  drb::Sha256 million;  // one million 'a', fed in uneven pieces across block boundaries
  const std::string piece(997, 'a');
  size_t fed = 0;
  while (fed + piece.size() <= 1000000) million.update(piece), fed += piece.size();
  million.update(std::string(1000000 - fed, 'a'));
  CHECK(million.hex() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Fields are length-prefixed: ("ab", "c") and ("a", "bc") differ.
  CHECK(drb::Sha256().field("ab").field("c").hex() != drb::Sha256().field("a").field("bc").hex());
  expect_error([] { drb::sha256_file("/nonexistent/file"); }, ErrorCode::file_not_found, {"/nonexistent/file"});
}

TEST_CASE("ShotParams round-trip through JSON, every field") {
  ShotParams p;
  p.source = "scene.json";
  p.intensity = 0.25;
  p.camera.name = "dolly";
  p.camera.keys.push_back({});
  p.camera.keys[0].time = 0.5;
  p.camera.keys[0].position = {1, 2, 3};
  p.frames = 33, p.width = 320, p.height = 192, p.fps = 25, p.first_frame = 1;
  p.model = "/models/wan", p.prompt = "a \"quoted\" prompt", p.negative_prompt = "";
  p.max_sequence_length = 77, p.sampler = "euler", p.schedule = "flow_euler", p.steps = 30, p.shift = 5.0;
  p.guidance = "apg", p.guidance_scale = 6.5, p.seed = 18446744073709551615ull;
  p.guide.noise_warp = false, p.guide.noise_degradation = 0.3, p.guide.sdedit_strength = 0.6;
  p.guide.plate = "plate.%04d.exr", p.guide.plate_first_frame = 100, p.guide.mask = {"ids"};
  p.guide.mask_ids = {3, 4}, p.guide.repaint = 2, p.guide.free_tail_steps = 5, p.guide.flow_energy = 0.1;
  p.guide.flow_energy_sigma_end = 0.5;
  p.output.dir = "out", p.output.png = true, p.output.png_bits = 16, p.output.color_space = "srgb";
  p.cache_dir = "cache", p.checkpoint_every = 3, p.preview = true;

  const std::string text = p.to_json();
  const ShotParams q = ShotParams::from_json(text);
  CHECK(q.to_json() == text);
  CHECK(q.seed == p.seed);
  CHECK(q.camera.keys.size() == 1);
  drb::test::check_same(q.camera.keys[0], p.camera.keys[0]);
  CHECK(q.guide.flow_energy_sigma_start == std::numeric_limits<double>::infinity());
  CHECK(q.intensity == 0.25);
  // Missing keys keep their defaults.
  CHECK(ShotParams::from_json("{}").to_json() == ShotParams().to_json());
}

TEST_CASE("ShotParams errors name the field") {
  expect_error([] { ShotParams::from_json("{\"frames\": \"many\"}"); }, ErrorCode::invalid_argument, {"frames"});
  expect_error([] { ShotParams::from_json("{\"guide\": {\"sdedit\": 1}}"); }, ErrorCode::invalid_argument,
               {"guide.sdedit", "unknown key"});
  expect_error([] { ShotParams::from_json("{\"seed\": -1}"); }, ErrorCode::invalid_argument, {"seed"});
  expect_error([] { ShotParams::from_json("[1, 2"); }, ErrorCode::parse, {"malformed"});
  expect_error([] { ShotParams::from_json("{\"version\": 9}"); }, ErrorCode::invalid_argument, {"version"});
  expect_error([] { ShotParams::from_json("{\"camera\": {\"keys\": [{\"position\": [1, 2]}]}}"); },
               ErrorCode::invalid_argument, {"camera.keys"});
  ShotParams p;
  p.source = "s.json";
  p.validate();
  auto invalid = [&](auto change, const std::string& field) {
    ShotParams q = p;
    change(q);
    expect_error([&] { q.validate(); }, ErrorCode::invalid_argument, {field});
  };
  invalid([](ShotParams& q) { q.frames = 0; }, "frames");
  invalid([](ShotParams& q) { q.width = 100000; }, "width");
  invalid([](ShotParams& q) { q.sampler = "nonsense"; }, "sampler");
  invalid([](ShotParams& q) { q.guide.mask = {"ids"}; }, "guide.mask_ids");
  invalid([](ShotParams& q) { q.guide.repaint = 8; }, "guide.repaint");
  invalid([](ShotParams& q) { q.output.png_bits = 12; }, "output.png_bits");
  invalid([](ShotParams& q) { q.source.clear(); }, "source");
}

TEST_CASE("a model bundle names what is missing") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "drb_test_bundle";
  fs::remove_all(dir);
  expect_error([&] { drb::models::wan::Bundle::load(dir.string()); }, ErrorCode::file_not_found, {dir.string()});
  fs::create_directories(dir);
  expect_error([&] { drb::models::wan::Bundle::load(dir.string()); }, ErrorCode::file_not_found, {"model_index.json"});
  { std::ofstream(dir / "model_index.json") << "{}"; }
  expect_error([&] { drb::models::wan::Bundle::load(dir.string()); }, ErrorCode::file_not_found, {"transformer/"});
  fs::remove_all(dir);
  // The default model of this source tree is found and loads, its sizes read from its configs.
  const auto bundle = drb::models::wan::Bundle::load(drb::models::wan::default_model_path());
  CHECK(bundle.spatial_factor() == 8);
  CHECK(bundle.temporal_factor() == 4);
  CHECK(bundle.latent_channels() == 16);
  CHECK(bundle.patch_height() == 2);
  CHECK(bundle.flow_shift == 3.0);
  CHECK(bundle.component_hash("vae") != bundle.component_hash("transformer"));
}
