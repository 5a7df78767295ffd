// AOV output: EXR round trips (bitwise), the files read with OpenEXR itself, sequences, PNG
// previews read back with libpng, the flow colour wheel, and bad input of every kind (each a
// drb::Error with a clear message). AOVs are built by hand: no rasterizer involved.
#include <doctest/doctest.h>

#include "checks.hpp"

#include <OpenEXR/ImfChannelList.h>
#include <OpenEXR/ImfCompression.h>
#include <OpenEXR/ImfFrameBuffer.h>
#include <OpenEXR/ImfHeader.h>
#include <OpenEXR/ImfInputFile.h>
#include <OpenEXR/ImfOutputFile.h>
#include <png.h>
#include <Imath/half.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include <xtensor/xbuilder.hpp>

#include "derrumbe/core/error.hpp"
#include "derrumbe/render/output.hpp"

using namespace drb::render;
using drb::ErrorCode;
namespace fs = std::filesystem;

namespace {

using drb::test::expect_error;

// A per-process scratch folder, removed at exit.
struct ScratchDir {
  fs::path path = fs::temp_directory_path() / ("drb_test_output_" + std::to_string(::getpid()));
  ScratchDir() { fs::create_directories(path); }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};
const fs::path& scratch() {
  static ScratchDir dir;
  return dir.path;
}
std::string scratch_file(const std::string& name) { return (scratch() / name).string(); }

const float kInf = std::numeric_limits<float>::infinity();

// Varied AOVs: empty pixels (inf depth, id -1), fractional alpha, negative and large flows,
// out-of-range shading, a NaN, a negative zero, a denormal and the largest exact id.
AOVs make_aovs(int W = 37, int H = 23, int seed = 0) {
  AOVs a = AOVs::blank(W, H);
  const size_t h = size_t(H), w = size_t(W);
  for (size_t y = 0; y < h; ++y)
    for (size_t x = 0; x < w; ++x) {
      const float fx = float(x), fy = float(y), s = float(seed);
      const bool empty = (x * 7 + y * 3 + size_t(seed)) % 11 == 0;
      a.depth(y, x) = empty ? kInf : 1.0f + 0.37f * fx + 0.11f * fy + std::sin(fx * fy + s) * 0.01f;
      a.piece_id(y, x) = empty ? -1 : int32_t((x / 5 + y / 4 * 8 + size_t(seed)) % 29);
      const float nx = std::sin(0.3f * fx + s), ny = std::cos(0.2f * fy), nz = 0.5f;
      const float len = std::sqrt(nx * nx + ny * ny + nz * nz);
      for (int c = 0; c < 3; ++c) a.normal(y, x, c) = empty ? 0.0f : (c == 0 ? nx : c == 1 ? ny : nz) / len;
      a.alpha(y, x) = empty ? 0.0f : std::fmod(0.1f + 0.013f * fx * fy, 1.0f);
      for (int c = 0; c < 3; ++c) a.rgb(y, x, c) = -0.25f + 0.05f * fx + 0.031f * fy * float(c + 1) + 0.1f * s;
      a.dust(y, x) = std::fmod(0.07f * fx + 0.05f * fy, 1.0f);
      a.flow_forward(y, x, 0) = empty ? 0.0f : -3.5f + 0.25f * fx - s;
      a.flow_forward(y, x, 1) = empty ? 0.0f : 2.0f - 0.4f * fy + 0.001f * fx * fy;
      a.flow_backward(y, x, 0) = -a.flow_forward(y, x, 0) * 1.01f;
      a.flow_backward(y, x, 1) = -a.flow_forward(y, x, 1) + 1e-3f;
      a.occlusion(y, x) = (x + y) % 5 == 0 ? 1.0f : 0.0f;
    }
  a.piece_id(0, 0) = (1 << 24) - 1;
  a.piece_id(0, 1) = 1 << 24;
  a.rgb(1, 1, 0) = std::numeric_limits<float>::quiet_NaN();
  a.rgb(1, 1, 1) = -0.0f;
  a.rgb(1, 1, 2) = std::numeric_limits<float>::denorm_min();
  a.flow_forward(2, 2, 0) = -1234.5f;
  return a;
}

template <class A>
bool bitwise_equal(const A& x, const A& y) {
  return x.shape() == y.shape() && std::memcmp(x.data(), y.data(), x.size() * sizeof(*x.data())) == 0;
}

void check_bitwise_equal(const AOVs& a, const AOVs& b) {
  CHECK(a.width == b.width);
  CHECK(a.height == b.height);
  CHECK(bitwise_equal(a.depth, b.depth));
  CHECK(bitwise_equal(a.piece_id, b.piece_id));
  CHECK(bitwise_equal(a.normal, b.normal));
  CHECK(bitwise_equal(a.alpha, b.alpha));
  CHECK(bitwise_equal(a.rgb, b.rgb));
  CHECK(bitwise_equal(a.dust, b.dust));
  CHECK(bitwise_equal(a.flow_forward, b.flow_forward));
  CHECK(bitwise_equal(a.flow_backward, b.flow_backward));
  CHECK(bitwise_equal(a.occlusion, b.occlusion));
}


const std::vector<std::string> kChannelNames{"Z",         "id",         "N.x",        "N.y",       "N.z",
                                             "A",         "R",          "G",          "B",         "dust",
                                             "forward.u", "forward.v",  "backward.u", "backward.v", "occlusion"};

// ---- PNG reading (libpng's simplified API) ---------------------------------------------------

struct Rgb8 {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;
  std::array<int, 3> at(int x, int y) const {
    const size_t i = 3 * (size_t(y) * size_t(width) + size_t(x));
    return {pixels[i], pixels[i + 1], pixels[i + 2]};
  }
};

Rgb8 read_png_rgb(const std::string& path) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  REQUIRE_MESSAGE(png_image_begin_read_from_file(&image, path.c_str()) != 0, image.message);
  CHECK((image.format & PNG_FORMAT_FLAG_COLOR) != 0);
  CHECK((image.format & PNG_FORMAT_FLAG_ALPHA) == 0);
  CHECK((image.format & PNG_FORMAT_FLAG_LINEAR) == 0);  // 8-bit
  image.format = PNG_FORMAT_RGB;
  Rgb8 out;
  out.width = int(image.width);
  out.height = int(image.height);
  out.pixels.resize(PNG_IMAGE_SIZE(image));
  REQUIRE_MESSAGE(png_image_finish_read(&image, nullptr, out.pixels.data(), 0, nullptr) != 0, image.message);
  return out;
}

std::array<int, 3> color_at(const xt::xtensor<uint8_t, 3>& img, size_t x, size_t y) {
  return {img(y, x, 0), img(y, x, 1), img(y, x, 2)};
}

void truncate_copy(const std::string& from, const std::string& to, size_t bytes) {
  std::ifstream in(from, std::ios::binary);
  std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(bytes < data.size());
  std::ofstream out(to, std::ios::binary);
  out.write(data.data(), std::streamsize(bytes));
}

}  // namespace

// ---- EXR -------------------------------------------------------------------------------------

TEST_CASE("write_exr then read_exr is bitwise identical, compressed and not") {
  const AOVs a = make_aovs();
  for (bool compress : {true, false}) {
    CAPTURE(compress);
    const std::string path = scratch_file(compress ? "zip.exr" : "raw.exr");
    write_exr(a, path, compress);
    const AOVs b = read_exr(path);
    check_bitwise_equal(a, b);
    CHECK(b.piece_id(0, 0) == (1 << 24) - 1);
    CHECK(b.piece_id(0, 1) == (1 << 24));
    CHECK(std::isinf(b.depth(0, 0)) == std::isinf(a.depth(0, 0)));
    CHECK(std::isnan(b.rgb(1, 1, 0)));
    CHECK(std::signbit(b.rgb(1, 1, 1)));

    Imf::InputFile file(path.c_str());
    CHECK(file.header().compression() == (compress ? Imf::ZIP_COMPRESSION : Imf::NO_COMPRESSION));
  }
  CHECK(fs::file_size(scratch_file("zip.exr")) < fs::file_size(scratch_file("raw.exr")));
}

TEST_CASE("the EXR is a standard multi-channel file: OpenEXR reads its channels") {
  const AOVs a = make_aovs();
  const std::string path = scratch_file("standard.exr");
  write_exr(a, path);

  Imf::InputFile file(path.c_str());
  const Imf::Header& header = file.header();
  const Imath::Box2i dw = header.dataWindow();
  CHECK(dw.min.x == 0);
  CHECK(dw.min.y == 0);
  CHECK(dw.max.x == a.width - 1);
  CHECK(dw.max.y == a.height - 1);
  CHECK(header.displayWindow() == dw);

  std::set<std::string> names;
  for (auto it = header.channels().begin(); it != header.channels().end(); ++it) {
    names.insert(it.name());
    CHECK_MESSAGE(it.channel().type == Imf::FLOAT, it.name());
    CHECK(it.channel().xSampling == 1);
    CHECK(it.channel().ySampling == 1);
  }
  CHECK(names == std::set<std::string>(kChannelNames.begin(), kChannelNames.end()));
  // Nuke-style layers: forward.{u,v}, backward.{u,v}, N.{x,y,z}.
  std::set<std::string> layers;
  header.channels().layers(layers);
  CHECK(layers == std::set<std::string>{"N", "backward", "forward"});

  // Read forward.u, id and Z straight into our own buffers.
  const size_t W = size_t(a.width), H = size_t(a.height);
  std::vector<float> u(W * H), id(W * H), z(W * H);
  Imf::FrameBuffer fb;
  fb.insert("forward.u", Imf::Slice(Imf::FLOAT, reinterpret_cast<char*>(u.data()), sizeof(float), sizeof(float) * W));
  fb.insert("id", Imf::Slice(Imf::FLOAT, reinterpret_cast<char*>(id.data()), sizeof(float), sizeof(float) * W));
  fb.insert("Z", Imf::Slice(Imf::FLOAT, reinterpret_cast<char*>(z.data()), sizeof(float), sizeof(float) * W));
  file.setFrameBuffer(fb);
  file.readPixels(dw.min.y, dw.max.y);
  int infinite = 0;
  for (size_t y = 0; y < H; ++y)
    for (size_t x = 0; x < W; ++x) {
      const size_t i = y * W + x;
      REQUIRE(u[i] == a.flow_forward(y, x, 0));
      REQUIRE(id[i] == float(a.piece_id(y, x)));
      REQUIRE(std::memcmp(&z[i], &a.depth(y, x), sizeof(float)) == 0);
      infinite += std::isinf(z[i]) && z[i] > 0;
    }
  CHECK(infinite > 0);
  CHECK(u[2 * W + 2] == -1234.5f);
}

TEST_CASE("read_exr reads a foreign EXR: offset data window, HALF channels, extra channels") {
  const int W = 6, H = 4, ox = -3, oy = 10;
  const std::string path = scratch_file("foreign.exr");
  {
    Imath::Box2i dw(Imath::V2i(ox, oy), Imath::V2i(ox + W - 1, oy + H - 1));
    Imf::Header header(dw, dw);
    std::vector<float> values(size_t(W * H));
    std::vector<half> halves(size_t(W * H));
    std::vector<float> ids(size_t(W * H));
    for (int i = 0; i < W * H; ++i) {
      values[size_t(i)] = 0.25f * float(i);
      halves[size_t(i)] = half(0.5f * float(i));
      ids[size_t(i)] = float(i % 3 - 1);
    }
    Imf::FrameBuffer fb;
    for (const std::string& name : kChannelNames) {
      const bool is_half = name == "R" || name == "G";
      header.channels().insert(name, Imf::Channel(is_half ? Imf::HALF : Imf::FLOAT));
      char* base = name == "id" ? reinterpret_cast<char*>(ids.data())
                   : is_half    ? reinterpret_cast<char*>(halves.data())
                                : reinterpret_cast<char*>(values.data());
      const size_t size = is_half ? sizeof(half) : sizeof(float);
      fb.insert(name, Imf::Slice::Make(is_half ? Imf::HALF : Imf::FLOAT, base, dw, size, size * W));
    }
    header.channels().insert("extra", Imf::Channel(Imf::FLOAT));
    fb.insert("extra", Imf::Slice::Make(Imf::FLOAT, values.data(), dw, sizeof(float), sizeof(float) * W));
    Imf::OutputFile out(path.c_str(), header);
    out.setFrameBuffer(fb);
    out.writePixels(H);
  }
  const AOVs a = read_exr(path);
  CHECK(a.width == W);
  CHECK(a.height == H);
  CHECK(a.depth.shape() == std::array<size_t, 2>{size_t(H), size_t(W)});
  CHECK(a.flow_forward.shape() == std::array<size_t, 3>{size_t(H), size_t(W), 2});
  CHECK(a.depth(0, 0) == 0.0f);
  CHECK(a.depth(3, 5) == 0.25f * 23);
  CHECK(a.rgb(2, 1, 0) == 0.5f * 13);  // HALF converted to float
  CHECK(a.rgb(2, 1, 2) == 0.25f * 13);
  CHECK(a.flow_backward(1, 4, 1) == 0.25f * 10);
  CHECK(a.piece_id(0, 0) == -1);
  CHECK(a.piece_id(0, 2) == 1);
}

TEST_CASE("write_exr_sequence writes one file per frame with the pattern's names") {
  const fs::path dir = scratch() / "seq";
  fs::create_directories(dir);
  std::vector<AOVs> frames{make_aovs(37, 23, 0), make_aovs(37, 23, 1), make_aovs(37, 23, 2)};
  write_exr_sequence(frames, (dir / "aov.%04d.exr").string(), 7);
  std::set<std::string> written;
  for (const auto& entry : fs::directory_iterator(dir)) written.insert(entry.path().filename().string());
  CHECK(written == std::set<std::string>{"aov.0007.exr", "aov.0008.exr", "aov.0009.exr"});
  for (int i = 0; i < 3; ++i) check_bitwise_equal(frames[size_t(i)], read_exr((dir / ("aov.000" + std::to_string(7 + i) + ".exr")).string()));

  // %% is a literal percent sign; other integer forms work; negative frame numbers (handles) too.
  write_exr_sequence({frames[0], frames[1]}, (dir / "p%%_%i.exr").string(), -1);
  CHECK(fs::exists(dir / "p%_-1.exr"));
  CHECK(fs::exists(dir / "p%_0.exr"));
  write_exr_sequence({frames[2]}, (dir / "w%5d.exr").string(), 12);
  CHECK(fs::exists(dir / "w   12.exr"));
  // An empty sequence writes nothing (the pattern is still checked).
  write_exr_sequence({}, (dir / "none.%04d.exr").string());
  CHECK_FALSE(fs::exists(dir / "none.0000.exr"));
}

TEST_CASE("write_exr_sequence rejects bad patterns and writes nothing") {
  const fs::path dir = scratch() / "badseq";
  fs::create_directories(dir);
  const std::vector<AOVs> frames{make_aovs(5, 4)};
  const std::vector<std::pair<std::string, std::string>> cases{
      {"aov.exr", "exactly one"},      {"aov.%04d.%04d.exr", "exactly one"}, {"aov.%s.exr", "'%s'"},
      {"aov.%f.exr", "'%f'"},           {"aov.%04ld.exr", "'%04l'"},         {"aov.%", "ends inside"},
      {"aov.%n.exr", "'%n'"},           {"aov.%999999d.exr", "over 99"},      {"", "empty"}};
  for (const auto& [pattern, part] : cases) {
    CAPTURE(pattern);
    const std::string full = pattern.empty() ? "" : (dir / pattern).string();
    expect_error([&] { write_exr_sequence(frames, full, 0); }, ErrorCode::invalid_argument, {part});
  }
  CHECK(fs::is_empty(dir));

  // A bad frame (wrong shape) is found before any file is written.
  std::vector<AOVs> mixed{make_aovs(5, 4), make_aovs(5, 4)};
  mixed[1].dust = xt::xtensor<float, 2>::from_shape({4, 6});
  expect_error([&] { write_exr_sequence(mixed, (dir / "m.%d.exr").string(), 3); }, ErrorCode::invalid_argument,
               {"frame 4", "dust", "[4, 6]", "[4, 5]"});
  CHECK(fs::is_empty(dir));

  // An unwritable location: an error naming the path, and no directory is created.
  const fs::path missing = scratch() / "no_such_dir";
  expect_error([&] { write_exr_sequence(frames, (missing / "a.%04d.exr").string(), 0); }, ErrorCode::io,
               {(missing / "a.0000.exr").string()});
  CHECK_FALSE(fs::exists(missing));
}

// ---- EXR errors ------------------------------------------------------------------------------

TEST_CASE("EXR errors: unwritable path, missing file, not an EXR, truncated, missing channels, bad AOVs") {
  const AOVs a = make_aovs();
  const std::string unwritable = (scratch() / "no_such_dir" / "x.exr").string();
  expect_error([&] { write_exr(a, unwritable); }, ErrorCode::io, {"cannot open", unwritable});
  CHECK_FALSE(fs::exists(scratch() / "no_such_dir"));

  const std::string missing = scratch_file("missing.exr");
  expect_error([&] { read_exr(missing); }, ErrorCode::file_not_found, {"not found", missing});
  expect_error([&] { read_exr(scratch().string()); }, ErrorCode::io, {"directory"});

  const std::string text = scratch_file("text.exr");
  std::ofstream(text) << "this is a text file, not an image\n";
  expect_error([&] { read_exr(text); }, ErrorCode::parse, {"not an OpenEXR file", text});
  const std::string empty = scratch_file("empty.exr");
  std::ofstream(empty).close();
  expect_error([&] { read_exr(empty); }, ErrorCode::parse, {empty});

  for (bool compress : {true, false}) {
    const std::string good = scratch_file(compress ? "good_zip.exr" : "good_raw.exr");
    write_exr(a, good, compress);
    const size_t size = fs::file_size(good);
    for (size_t bytes : {size_t(6), size_t(40), size_t(300), size / 2, size - 10, size - 1}) {
      CAPTURE(compress);
      CAPTURE(bytes);
      const std::string cut = scratch_file("truncated.exr");
      truncate_copy(good, cut, bytes);
      expect_error([&] { read_exr(cut); }, ErrorCode::parse, {cut});
    }
  }

  // A valid EXR without our channels: the missing ones are listed.
  const std::string rgb_only = scratch_file("rgb_only.exr");
  {
    Imf::Header header(4, 3);
    std::vector<float> values(12, 0.5f);
    Imf::FrameBuffer fb;
    for (const char* name : {"R", "G", "B"}) {
      header.channels().insert(name, Imf::Channel(Imf::FLOAT));
      fb.insert(name, Imf::Slice(Imf::FLOAT, reinterpret_cast<char*>(values.data()), 4, 16));
    }
    Imf::OutputFile out(rgb_only.c_str(), header);
    out.setFrameBuffer(fb);
    out.writePixels(3);
  }
  expect_error([&] { read_exr(rgb_only); }, ErrorCode::invalid_argument,
               {rgb_only, "lacks the channels", "Z, id, N.x", "forward.u", "occlusion", "it has: B, G, R"});

  // Bad AOVs on write: mismatched shapes, no size, ids not exact as floats.
  AOVs bad = make_aovs(5, 4);
  bad.normal = xt::xtensor<float, 3>::from_shape({4, 5, 2});
  expect_error([&] { write_exr(bad, scratch_file("bad.exr")); }, ErrorCode::invalid_argument,
               {"normal", "[4, 5, 2]", "[4, 5, 3]"});
  expect_error([&] { write_exr(AOVs{}, scratch_file("bad.exr")); }, ErrorCode::invalid_argument, {"positive size"});
  bad = make_aovs(5, 4);
  bad.piece_id(3, 4) = (1 << 24) + 1;
  expect_error([&] { write_exr(bad, scratch_file("bad.exr")); }, ErrorCode::invalid_argument, {"16777217", "2^24"});
  CHECK_FALSE(fs::exists(scratch_file("bad.exr")));
}

// ---- PNG -------------------------------------------------------------------------------------

TEST_CASE("write_png previews read back with libpng") {
  AOVs a = make_aovs();
  const int W = a.width, H = a.height;
  // Known values.
  a.rgb(0, 0, 0) = 1.0f, a.rgb(0, 0, 1) = 0.5f, a.rgb(0, 0, 2) = 0.0f;
  a.rgb(0, 1, 0) = 2.0f, a.rgb(0, 1, 1) = -1.0f, a.rgb(0, 1, 2) = 0.0031308f * 0.5f;
  a.normal(2, 3, 0) = 0, a.normal(2, 3, 1) = 0, a.normal(2, 3, 2) = 1;
  a.normal(2, 4, 0) = -1, a.normal(2, 4, 1) = 0, a.normal(2, 4, 2) = 0;
  a.dust(5, 6) = 0.5f;
  a.dust(5, 7) = 1.5f;
  a.occlusion(5, 6) = 1.0f;
  a.occlusion(5, 7) = 0.0f;
  a.flow_forward.fill(0.0f);
  a.flow_forward(4, 3, 0) = 4.0f;   // right: red
  a.flow_forward(4, 5, 0) = -4.0f;  // left: cyan
  a.flow_forward(4, 7, 1) = 2.0f;   // down, half the max magnitude

  for (const std::string kind : {"rgb", "depth", "id", "normal", "flow", "occlusion", "dust"}) {
    CAPTURE(kind);
    const std::string path = scratch_file("preview_" + kind + ".png");
    write_png(a, kind, path);
    const Rgb8 img = read_png_rgb(path);
    REQUIRE(img.width == W);
    REQUIRE(img.height == H);
    if (kind == "rgb") {
      CHECK(img.at(0, 0) == std::array<int, 3>{255, 188, 0});  // sRGB(0.5) = 0.7354
      CHECK(img.at(1, 0) == std::array<int, 3>{255, 0, 5});    // clamped; linear segment 12.92 x
      CHECK(img.at(1, 1) == std::array<int, 3>{0, 0, 0});      // NaN, -0, denormal
    } else if (kind == "depth") {
      size_t nearest = 0, farthest = 0;
      for (size_t i = 0; i < a.depth.size(); ++i) {
        const float d = a.depth.data()[i];
        if (!std::isfinite(d)) continue;
        if (d < a.depth.data()[nearest] || !std::isfinite(a.depth.data()[nearest])) nearest = i;
        if (d > a.depth.data()[farthest] || !std::isfinite(a.depth.data()[farthest])) farthest = i;
      }
      CHECK(img.at(int(nearest % size_t(W)), int(nearest / size_t(W))) == std::array<int, 3>{255, 255, 255});
      CHECK(img.at(int(farthest % size_t(W)), int(farthest / size_t(W))) == std::array<int, 3>{0, 0, 0});
      REQUIRE(std::isinf(a.depth(0, 0)));
      CHECK(img.at(0, 0) == std::array<int, 3>{0, 0, 0});
      const auto mid = img.at(10, 10);
      CHECK(mid[0] == mid[1]);
      CHECK(mid[0] > 0);
      CHECK(mid[0] < 255);
    } else if (kind == "id") {
      REQUIRE(a.piece_id(0, 0) != -1);
      REQUIRE(a.piece_id(1, 0) == a.piece_id(1, 1));
      REQUIRE(a.piece_id(1, 4) != a.piece_id(1, 6));
      CHECK(img.at(0, 1) == img.at(1, 1));
      CHECK(img.at(4, 1) != img.at(6, 1));
      int empty_pixels = 0;
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          const auto c = img.at(x, y);
          const bool black = c == std::array<int, 3>{0, 0, 0};
          CHECK(black == (a.piece_id(size_t(y), size_t(x)) < 0));
          empty_pixels += black;
        }
      CHECK(empty_pixels > 0);
    } else if (kind == "normal") {
      CHECK(img.at(3, 2) == std::array<int, 3>{128, 128, 255});
      CHECK(img.at(4, 2) == std::array<int, 3>{0, 128, 128});
    } else if (kind == "flow") {
      CHECK(img.at(0, 0) == std::array<int, 3>{255, 255, 255});  // no motion: white
      const auto right = img.at(3, 4), left = img.at(5, 4), down = img.at(7, 4);
      CHECK(right[0] == 255);
      CHECK(right[1] == 0);
      CHECK(right[2] < 60);
      CHECK(left[0] == 0);
      CHECK(left[2] == 255);
      CHECK(left[1] > 150);
      CHECK(down[0] == 255);  // half saturated yellow-orange
      CHECK(down[1] > 180);
      CHECK(down[2] == 128);
      CHECK(right == color_at(flow_to_color(a.flow_forward), 3, 4));
    } else if (kind == "occlusion") {
      CHECK(img.at(6, 5) == std::array<int, 3>{255, 255, 255});
      CHECK(img.at(7, 5) == std::array<int, 3>{0, 0, 0});
    } else if (kind == "dust") {
      CHECK(img.at(6, 5) == std::array<int, 3>{128, 128, 128});
      CHECK(img.at(7, 5) == std::array<int, 3>{255, 255, 255});
    }
  }
}

TEST_CASE("PNG errors: unknown kind, unwritable path, bad shapes") {
  const AOVs a = make_aovs(5, 4);
  expect_error([&] { write_png(a, "normals", scratch_file("x.png")); }, ErrorCode::invalid_argument,
               {"unknown preview kind 'normals'", "rgb, depth, id, normal, flow, occlusion, dust"});
  const std::string unwritable = (scratch() / "no_such_dir" / "x.png").string();
  expect_error([&] { write_png(a, "rgb", unwritable); }, ErrorCode::io, {"cannot open", unwritable});
  CHECK_FALSE(fs::exists(scratch() / "no_such_dir"));
  AOVs bad = a;
  bad.rgb = xt::xtensor<float, 3>::from_shape({4, 5, 4});
  expect_error([&] { write_png(bad, "rgb", scratch_file("bad.png")); }, ErrorCode::invalid_argument,
               {"rgb", "[4, 5, 4]", "[4, 5, 3]"});
  write_png(bad, "depth", scratch_file("depth_only.png"));  // only the previewed AOV must be valid
  CHECK_FALSE(fs::exists(scratch_file("bad.png")));
}

// ---- flow colour wheel -----------------------------------------------------------------------

TEST_CASE("flow_to_color: white at rest, hue from direction, saturation from magnitude") {
  auto one = [](float u, float v, double max_magnitude) {
    xt::xtensor<float, 3> f = xt::xtensor<float, 3>::from_shape({1, 1, 2});
    f(0, 0, 0) = u;
    f(0, 0, 1) = v;
    return color_at(flow_to_color(f, max_magnitude), 0, 0);
  };
  // Zero flow is white (neutral), whatever the normalization; an all-zero frame too.
  CHECK(one(0, 0, 5) == std::array<int, 3>{255, 255, 255});
  CHECK(one(0, 0, 0) == std::array<int, 3>{255, 255, 255});

  // The Middlebury directions (u right, v down): right red, down yellow, left cyan, up blue.
  const auto right = one(3, 0, 3), left = one(-3, 0, 3), down = one(0, 3, 3), up = one(0, -3, 3);
  CHECK(right[0] == 255);
  CHECK(right[1] == 0);
  CHECK(left[0] == 0);
  CHECK(left[2] == 255);
  CHECK(down[0] == 255);
  CHECK(down[2] == 0);
  CHECK(up[1] == 0);
  CHECK(up[2] == 255);
  CHECK(up[0] < up[2]);
  for (const auto& [p, q] : {std::pair{right, left}, std::pair{down, up}}) {
    int diff = 0;
    for (int c = 0; c < 3; ++c) diff += std::abs(p[c] - q[c]);
    CHECK(diff > 300);  // opposite directions: clearly different hues
  }

  // Magnitude: r = |f| / max clamped to 1. Saturated at and beyond the max, paler below it.
  CHECK(one(6, 0, 3) == right);
  CHECK(one(1, 0, 2) == one(2, 0, 4));
  const auto half = one(1.5f, 0, 3);
  CHECK(half[0] == 255);
  CHECK(half[1] == 128);  // 1 - 0.5 (1 - 0)
  CHECK(std::min({half[0], half[1], half[2]}) > std::min({right[0], right[1], right[2]}));
  // Diagonal: between the two neighbouring directions, same magnitude rule.
  const auto diag = one(2, 2, std::sqrt(8.0));
  CHECK(diag != right);
  CHECK(diag != down);

  // max_magnitude 0: the frame's largest finite magnitude; NaN and inf pixels are black.
  xt::xtensor<float, 3> f = xt::zeros<float>({2, 3, 2});
  f(0, 0, 0) = 2;
  f(0, 1, 0) = 4;
  f(1, 0, 1) = std::numeric_limits<float>::quiet_NaN();
  f(1, 1, 0) = kInf;
  const auto automatic = flow_to_color(f, 0);
  const auto explicit_max = flow_to_color(f, 4);
  CHECK(automatic == explicit_max);
  CHECK(automatic.shape() == std::array<size_t, 3>{2, 3, 3});
  CHECK(color_at(automatic, 0, 1) == std::array<int, 3>{0, 0, 0});
  CHECK(color_at(automatic, 1, 1) == std::array<int, 3>{0, 0, 0});
  CHECK(color_at(automatic, 1, 0) == right);
  CHECK(color_at(automatic, 2, 1) == std::array<int, 3>{255, 255, 255});

  expect_error([&] { flow_to_color(f, -1); }, ErrorCode::invalid_argument, {"max_magnitude"});
  expect_error([&] { flow_to_color(f, std::numeric_limits<double>::quiet_NaN()); }, ErrorCode::invalid_argument,
               {"max_magnitude"});
  expect_error([&] { flow_to_color(xt::xtensor<float, 3>::from_shape({2, 2, 3})); }, ErrorCode::invalid_argument,
               {"[H, W, 2]"});
}
