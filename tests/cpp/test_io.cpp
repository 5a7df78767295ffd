// io: atomic writes, frame patterns, PNG (read back with libpng's independent simplified API),
// colour maths, MurmurHash3 and Cryptomatte ids, EXR frames read back with OpenEXR itself,
// MP4 round trips through libavcodec, plates, and bad or damaged input of every kind.
#include <doctest/doctest.h>

#include "checks.hpp"

#include <OpenEXR/ImfChannelList.h>
#include <OpenEXR/ImfCompression.h>
#include <OpenEXR/ImfFrameBuffer.h>
#include <OpenEXR/ImfHeader.h>
#include <OpenEXR/ImfInputFile.h>
#include <OpenEXR/ImfStandardAttributes.h>
#include <OpenEXR/ImfStringAttribute.h>
#include <png.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "derrumbe/io/exr.hpp"
#include "derrumbe/io/image.hpp"
#include "derrumbe/io/video.hpp"

extern "C" {
#include <libavutil/log.h>
}

using namespace drb::io;
using drb::ErrorCode;
using drb::test::expect_error;
namespace fs = std::filesystem;

namespace {

struct ScratchDir {
  fs::path path = fs::temp_directory_path() / ("drb_test_io_" + std::to_string(::getpid()));
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

// A fresh empty folder inside the scratch folder.
fs::path fresh_dir(const std::string& name) {
  const fs::path p = scratch() / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

void truncate_copy(const std::string& from, const std::string& to, double fraction) {
  const std::string data = read_text(from);
  write_text(to, data.substr(0, size_t(double(data.size()) * fraction)));
}

// A smooth image: horizontal and vertical ramps plus a per-frame shift.
Image gradient(int W, int H, int channels, int frame = 0) {
  Image image = Image::blank(W, H, channels);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < channels; ++c)
        image.at(y, x, c) = float(0.1 + 0.8 * std::fmod((x + 2.0 * frame) / W + 0.3 * c, 1.0) * (0.5 + 0.5 * y / H));
  return image;
}

double mean_abs_error(const Image& a, const Image& b) {
  REQUIRE(a.pixels.size() == b.pixels.size());
  double sum = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) sum += std::abs(double(a.pixels[i]) - b.pixels[i]);
  return sum / double(a.pixels.size());
}

// ---- independent PNG reading (libpng's simplified API) ----------------------------------------

// 8-bit files are read as 8-bit sRGB and 16-bit files as 16-bit linear: both unchanged for a
// file without colour chunks, so this returns the stored samples.
std::vector<uint32_t> png_samples(const std::string& path, uint32_t format, int& channels) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  REQUIRE_MESSAGE(png_image_begin_read_from_file(&image, path.c_str()) != 0, image.message);
  image.format = format;
  channels = int(PNG_IMAGE_SAMPLE_CHANNELS(format));
  std::vector<uint32_t> out(PNG_IMAGE_SIZE(image) / PNG_IMAGE_SAMPLE_COMPONENT_SIZE(format));
  if (format & PNG_FORMAT_FLAG_LINEAR) {
    std::vector<uint16_t> data(out.size());
    REQUIRE_MESSAGE(png_image_finish_read(&image, nullptr, data.data(), 0, nullptr) != 0, image.message);
    std::copy(data.begin(), data.end(), out.begin());
  } else {
    std::vector<uint8_t> data(out.size());
    REQUIRE_MESSAGE(png_image_finish_read(&image, nullptr, data.data(), 0, nullptr) != 0, image.message);
    std::copy(data.begin(), data.end(), out.begin());
  }
  return out;
}

void write_png_simplified(const std::string& path, int W, int H, uint32_t format, const std::vector<uint8_t>& data,
                          const std::vector<uint8_t>& colormap = {}, int entries = 0) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = png_uint_32(W);
  image.height = png_uint_32(H);
  image.format = format;
  image.colormap_entries = png_uint_32(entries);
  REQUIRE_MESSAGE(png_image_write_to_file(&image, path.c_str(), 0, data.data(), 0,
                                          colormap.empty() ? nullptr : colormap.data()) != 0,
                  image.message);
}

// ---- AOVs built by hand ---------------------------------------------------------------------

const float kInf = std::numeric_limits<float>::infinity();

drb::render::AOVs make_aovs(int W, int H) {
  auto a = drb::render::AOVs::blank(W, H);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const bool empty = (x + y) % 5 == 0;
      a.depth(y, x) = empty ? kInf : 2.0f + 0.25f * x + 0.5f * y;
      a.piece_id(y, x) = empty ? -1 : (x / 3 + y) % 4;
      a.alpha(y, x) = empty ? 0.0f : 0.25f + 0.05f * x;
      for (int c = 0; c < 3; ++c) a.normal(y, x, c) = empty ? 0.0f : 0.1f * float(c + 1) + 0.01f * x;
      a.dust(y, x) = 0.02f * float(x + y);
      a.flow_forward(y, x, 0) = 1.5f - 0.125f * x;
      a.flow_forward(y, x, 1) = -0.75f + 0.25f * y;
      a.flow_backward(y, x, 0) = -3.0f + x;
      a.flow_backward(y, x, 1) = 0.5f * y;
      a.occlusion(y, x) = (x * y) % 3 == 0 ? 1.0f : 0.0f;
    }
  return a;
}

drb::render::View make_view(int W, int H) {
  drb::render::View v;
  v.width = W, v.height = H;
  v.rotation = Eigen::AngleAxisd(0.3, Eigen::Vector3d(0.2, 1.0, -0.1).normalized()).toRotationMatrix();
  v.translation = {0.5, -1.25, 7.0};
  v.fx = 40.0, v.fy = 42.0, v.cx = W / 2.0 + 1.5, v.cy = H / 2.0 - 0.75;
  return v;
}

// Reads one FLOAT channel of an EXR whose data window starts at (0, 0).
std::vector<float> exr_channel(Imf::InputFile& file, const char* name) {
  const Imath::Box2i dw = file.header().dataWindow();
  const int W = dw.max.x + 1, H = dw.max.y + 1;
  std::vector<float> out(size_t(W) * size_t(H));
  Imf::FrameBuffer fb;
  fb.insert(name, Imf::Slice(Imf::FLOAT, reinterpret_cast<char*>(out.data()), sizeof(float), sizeof(float) * W));
  file.setFrameBuffer(fb);
  file.readPixels(0, H - 1);
  return out;
}

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

}  // namespace

// ---- frame_path ------------------------------------------------------------------------------

TEST_CASE("frame_path formats one printf field or run of '#'") {
  CHECK(frame_path("shot.%04d.exr", 1001) == "shot.1001.exr");
  CHECK(frame_path("shot.%04d.exr", 7) == "shot.0007.exr");
  CHECK(frame_path("shot.%04d.exr", 123456) == "shot.123456.exr");
  CHECK(frame_path("f%d.png", 42) == "f42.png");
  CHECK(frame_path("f%06d.png", -3) == "f-00003.png");
  CHECK(frame_path("dir/name.####.png", 12) == "dir/name.0012.png");
  CHECK(frame_path("#", 5) == "5");
  CHECK(frame_path("100%%_%03d", 5) == "100%_005");
  expect_error([] { frame_path("plate.png", 1); }, ErrorCode::invalid_argument, {"plate.png", "it has 0"});
  expect_error([] { frame_path("a.%04d.%d.png", 1); }, ErrorCode::invalid_argument, {"it has 2"});
  expect_error([] { frame_path("a.####.%04d.png", 1); }, ErrorCode::invalid_argument, {"it has 2"});
  expect_error([] { frame_path("a.%s.png", 1); }, ErrorCode::invalid_argument, {"%s"});
  expect_error([] { frame_path("a.%04", 1); }, ErrorCode::invalid_argument, {"unsupported field"});
}

// ---- atomic writes ---------------------------------------------------------------------------

TEST_CASE("write_atomically writes through a temporary beside the target and leaves nothing else") {
  const fs::path dir = fresh_dir("atomic");
  const std::string target = (dir / "out.txt").string();
  std::string seen;
  write_atomically(target, [&](const std::string& tmp) {
    seen = tmp;
    CHECK(fs::path(tmp).parent_path() == dir);
    CHECK(fs::path(tmp).filename().string().rfind(".out.txt.tmp." + std::to_string(::getpid()), 0) == 0);
    CHECK_FALSE(fs::exists(target));  // nothing visible under the final name while writing
    write_text(tmp, "first");
  });
  CHECK(read_text(target) == "first");
  CHECK_FALSE(fs::exists(seen));
  CHECK(names_in(dir) == std::vector<std::string>{"out.txt"});

  // An existing file is replaced.
  write_atomically(target, [](const std::string& tmp) { write_text(tmp, "second"); });
  CHECK(read_text(target) == "second");
  CHECK(names_in(dir) == std::vector<std::string>{"out.txt"});
}

TEST_CASE("a writer that throws leaves the target unchanged and no temporary") {
  const fs::path dir = fresh_dir("atomic_throw");
  const std::string target = (dir / "keep.txt").string();
  write_text(target, "original");
  CHECK_THROWS_AS(write_atomically(target,
                                   [](const std::string& tmp) {
                                     write_text(tmp, "half a fi");
                                     throw std::runtime_error("writer failed");
                                   }),
                  std::runtime_error);
  CHECK(read_text(target) == "original");
  CHECK(names_in(dir) == std::vector<std::string>{"keep.txt"});

  // A library writer failing half-way (an invalid argument found late) behaves the same.
  expect_error([&] { write_atomically(target, [](const std::string&) { drb::check_arg(false, "late"); }); },
               ErrorCode::invalid_argument, {"late"});
  CHECK(read_text(target) == "original");
  CHECK(names_in(dir) == std::vector<std::string>{"keep.txt"});
}

TEST_CASE("an unwritable or missing folder is a clear io error naming the path") {
  const fs::path dir = fresh_dir("unwritable");
  write_text(dir / "a_file", "x");
  const std::string under_file = (dir / "a_file" / "out.png").string();
  expect_error([&] { write_atomically(under_file, [](const std::string&) {}); }, ErrorCode::io,
               {under_file, "cannot create a file"});
  const std::string missing = (dir / "missing" / "out.png").string();
  expect_error([&] { write_png(Image::blank(2, 2, 3), missing); }, ErrorCode::io, {missing});
  expect_error([&] { write_mp4({Image::blank(2, 2, 3)}, missing + ".mp4"); }, ErrorCode::io, {missing});
  expect_error([&] { write_atomically(dir.string(), [](const std::string&) {}); }, ErrorCode::io, {"directory"});
  if (::geteuid() != 0) {  // root ignores permission bits
    const fs::path locked = fresh_dir("locked");
    fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
    const std::string target = (locked / "out.png").string();
    expect_error([&] { write_png(Image::blank(2, 2, 3), target); }, ErrorCode::io, {target, "Permission denied"});
    fs::permissions(locked, fs::perms::owner_all);
  }
  CHECK(names_in(dir) == std::vector<std::string>{"a_file"});
}

TEST_CASE("write_directory_atomically creates, replaces, and keeps the old folder when the writer throws") {
  const fs::path dir = fresh_dir("atomic_dir");
  const std::string target = (dir / "seq").string();
  write_directory_atomically(target, [](const std::string& tmp) {
    CHECK(fs::is_directory(tmp));
    write_text(fs::path(tmp) / "a.txt", "A");
  });
  CHECK(names_in(target) == std::vector<std::string>{"a.txt"});
  write_directory_atomically(target, [](const std::string& tmp) { write_text(fs::path(tmp) / "b.txt", "B"); });
  CHECK(names_in(target) == std::vector<std::string>{"b.txt"});
  CHECK_THROWS_AS(write_directory_atomically(target,
                                             [](const std::string& tmp) {
                                               write_text(fs::path(tmp) / "c.txt", "C");
                                               throw std::runtime_error("stop");
                                             }),
                  std::runtime_error);
  CHECK(names_in(target) == std::vector<std::string>{"b.txt"});
  CHECK(names_in(dir) == std::vector<std::string>{"seq"});
}

// ---- PNG -------------------------------------------------------------------------------------

TEST_CASE("PNG round trips are exact at 8 and 16 bits, for 1 to 4 channels") {
  for (int depth : {8, 16}) {
    const int top = depth == 8 ? 255 : 65535;
    for (int channels = 1; channels <= 4; ++channels) {
      CAPTURE(depth);
      CAPTURE(channels);
      Image image = Image::blank(37, 11, channels);
      for (size_t i = 0; i < image.pixels.size(); ++i) image.pixels[i] = float(((i * 7919) % (top + 1)) / double(top));
      const std::string path = scratch_file("rt" + std::to_string(depth) + "_" + std::to_string(channels) + ".png");
      write_png(image, path, depth);
      const Image back = read_png(path);
      CHECK(back.width == 37);
      CHECK(back.height == 11);
      CHECK(back.channels == channels);
      CHECK(back.pixels == image.pixels);
    }
  }
}

TEST_CASE("PNG samples are what an independent reader sees (16-bit stored big-endian)") {
  Image image = Image::blank(4, 2, 1);
  const std::vector<int> levels{0, 1, 255, 256, 4660, 65280, 65534, 65535};
  for (size_t i = 0; i < levels.size(); ++i) image.pixels[i] = float(levels[i] / 65535.0);
  write_png(image, scratch_file("be16.png"), 16);
  int channels = 0;
  const std::vector<uint32_t> samples = png_samples(scratch_file("be16.png"), PNG_FORMAT_LINEAR_Y, channels);
  REQUIRE(samples.size() == levels.size());
  for (size_t i = 0; i < levels.size(); ++i) CHECK(samples[i] == uint32_t(levels[i]));

  Image rgb = gradient(9, 5, 3);
  write_png(rgb, scratch_file("rgb8.png"));
  const std::vector<uint32_t> rgb_samples = png_samples(scratch_file("rgb8.png"), PNG_FORMAT_RGB, channels);
  REQUIRE(rgb_samples.size() == rgb.pixels.size());
  for (size_t i = 0; i < rgb.pixels.size(); ++i) CHECK(rgb_samples[i] == uint32_t(std::lround(rgb.pixels[i] * 255)));
}

TEST_CASE("PNG values are clamped to [0, 1], NaN to 0; bad arguments are errors") {
  Image image = Image::blank(4, 1, 1);
  image.pixels = {-0.5f, 2.0f, std::numeric_limits<float>::quiet_NaN(), 0.5f};
  write_png(image, scratch_file("clamp.png"));
  CHECK(read_png(scratch_file("clamp.png")).pixels == std::vector<float>{0.0f, 1.0f, 0.0f, float(128 / 255.0)});
  expect_error([&] { write_png(image, scratch_file("x.png"), 12); }, ErrorCode::invalid_argument, {"bit_depth", "12"});
  expect_error([&] { write_png(Image::blank(2, 2, 5), scratch_file("x.png")); }, ErrorCode::invalid_argument,
               {"channels", "5"});
  expect_error([&] { write_png(Image::blank(0, 2, 3), scratch_file("x.png")); }, ErrorCode::invalid_argument, {"size"});
  CHECK_FALSE(fs::exists(scratch_file("x.png")));
}

TEST_CASE("read_png keeps the file's channels: grey+alpha, palette, palette with transparency") {
  const int W = 3, H = 2;
  std::vector<uint8_t> ga{0, 255, 50, 128, 100, 0, 150, 10, 200, 20, 255, 30};
  write_png_simplified(scratch_file("ga.png"), W, H, PNG_FORMAT_GA, ga);
  Image back = read_png(scratch_file("ga.png"));
  CHECK(back.channels == 2);
  for (size_t i = 0; i < ga.size(); ++i) CHECK(back.pixels[i] == float(ga[i] / 255.0));

  const std::vector<uint8_t> palette{255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30};
  const std::vector<uint8_t> index{0, 1, 2, 3, 2, 1};
  write_png_simplified(scratch_file("pal.png"), W, H, PNG_FORMAT_RGB_COLORMAP, index, palette, 4);
  back = read_png(scratch_file("pal.png"));
  REQUIRE(back.channels == 3);
  for (size_t p = 0; p < index.size(); ++p)
    for (int c = 0; c < 3; ++c) CHECK(back.pixels[3 * p + c] == float(palette[3 * index[p] + c] / 255.0));

  const std::vector<uint8_t> palette_a{255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 255, 0};
  write_png_simplified(scratch_file("pal_a.png"), W, H, PNG_FORMAT_RGBA_COLORMAP, {0, 1, 2, 2, 1, 0}, palette_a, 3);
  back = read_png(scratch_file("pal_a.png"));
  REQUIRE(back.channels == 4);
  CHECK(back.at(0, 1, 3) == float(128 / 255.0));
  CHECK(back.at(0, 2, 3) == 0.0f);
  CHECK(back.at(0, 0, 3) == 1.0f);
}

TEST_CASE("corrupt, truncated or missing PNGs are errors naming the file") {
  Image image = gradient(64, 32, 3);
  const std::string good = scratch_file("good.png");
  write_png(image, good);
  const std::string data = read_text(good);

  const std::string half = scratch_file("half.png");
  truncate_copy(good, half, 0.5);
  expect_error([&] { read_png(half); }, ErrorCode::parse, {half});
  const std::string no_end = scratch_file("no_end.png");
  write_text(no_end, data.substr(0, data.size() - 12));  // without the IEND chunk
  expect_error([&] { read_png(no_end); }, ErrorCode::parse, {no_end});
  const std::string header_only = scratch_file("header_only.png");
  write_text(header_only, data.substr(0, 20));
  expect_error([&] { read_png(header_only); }, ErrorCode::parse, {header_only});
  std::string flipped = data;
  flipped[data.size() / 2] = char(flipped[data.size() / 2] ^ 0x5a);  // inside IDAT: CRC mismatch
  const std::string bad_crc = scratch_file("bad_crc.png");
  write_text(bad_crc, flipped);
  expect_error([&] { read_png(bad_crc); }, ErrorCode::parse, {bad_crc});
  const std::string text = scratch_file("text.png");
  write_text(text, "not a png at all");
  expect_error([&] { read_png(text); }, ErrorCode::parse, {text, "not a PNG"});
  expect_error([] { read_png("/nonexistent/x.png"); }, ErrorCode::file_not_found, {"/nonexistent/x.png"});
  expect_error([&] { read_png(scratch().string()); }, ErrorCode::io, {"directory"});
}

// ---- colour ----------------------------------------------------------------------------------

TEST_CASE("the sRGB curves are inverse of each other and continuous at the break") {
  for (double x = -0.2; x <= 1.5; x += 0.001) {
    const float f = float(x);
    CHECK(srgb_to_linear(linear_to_srgb(f)) == doctest::Approx(f).epsilon(1e-5).scale(1e-6));
    CHECK(linear_to_srgb(srgb_to_linear(f)) == doctest::Approx(f).epsilon(1e-5).scale(1e-6));
  }
  CHECK(srgb_to_linear(0.0f) == 0.0f);
  CHECK(srgb_to_linear(1.0f) == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(linear_to_srgb(1.0f) == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(srgb_to_linear(0.04045f) == doctest::Approx(srgb_to_linear(0.040451f)).epsilon(1e-4));
  CHECK(linear_to_srgb(0.0031308f) == doctest::Approx(linear_to_srgb(0.0031309f)).epsilon(1e-4));
  CHECK(srgb_to_linear(0.5f) == doctest::Approx(0.214041).epsilon(1e-5));  // ((0.5 + 0.055) / 1.055)^2.4
}

TEST_CASE("rec709_to_acescg matches the published sRGB -> ACEScg matrix and keeps white") {
  const Eigen::Matrix3d m = rec709_to_acescg();
  const double published[3][3] = {{0.6131, 0.3395, 0.0474}, {0.0702, 0.9164, 0.0134}, {0.0206, 0.1096, 0.8698}};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) CHECK(std::abs(m(i, j) - published[i][j]) < 2e-3);
  const Eigen::Vector3d white = m * Eigen::Vector3d::Ones();
  for (int i = 0; i < 3; ++i) CHECK(std::abs(white[i] - 1.0) < 1e-4);
}

TEST_CASE("srgb_to_scene_linear removes the curve, converts primaries for acescg, keeps alpha") {
  Image image = Image::blank(2, 1, 4);
  image.pixels = {1.0f, 0.0f, 0.0f, 0.3f, 0.5f, 0.5f, 0.5f, 0.7f};
  const Image srgb = srgb_to_scene_linear(image, ColorSpace::srgb);
  CHECK(srgb.pixels[0] == doctest::Approx(1.0));
  CHECK(srgb.pixels[3] == 0.3f);
  CHECK(srgb.pixels[4] == doctest::Approx(0.214041).epsilon(1e-5));
  const Image aces = srgb_to_scene_linear(image, ColorSpace::acescg);
  const Eigen::Matrix3d m = rec709_to_acescg();
  for (int c = 0; c < 3; ++c) CHECK(aces.pixels[c] == doctest::Approx(m(c, 0)).epsilon(1e-5));
  CHECK(aces.pixels[3] == 0.3f);
  for (int c = 4; c < 7; ++c) CHECK(aces.pixels[c] == doctest::Approx(0.214041).epsilon(1e-4));  // grey stays grey
  CHECK(aces.pixels[7] == 0.7f);
  CHECK(color_space_from_name("acescg") == ColorSpace::acescg);
  CHECK(std::string(color_space_name(color_space_from_name("srgb"))) == "srgb");
  expect_error([] { color_space_from_name("rec2020"); }, ErrorCode::invalid_argument, {"rec2020"});
}

// ---- MurmurHash3 and Cryptomatte ids ----------------------------------------------------------

TEST_CASE("murmur3_32 gives MurmurHash3_x86_32's published values") {
  // SMHasher's verification vectors as commonly tabulated, and the Cryptomatte specification's
  // manifest example ("bunny" -> 13851a76). The Python test checks many more against mmh3.
  CHECK(murmur3_32("", 0) == 0u);
  CHECK(murmur3_32("", 1) == 0x514e28b7u);
  CHECK(murmur3_32("", 0xffffffffu) == 0x81f16f39u);
  CHECK(murmur3_32(std::string(4, '\0'), 0) == 0x2362f9deu);
  CHECK(murmur3_32("aaaa", 0x9747b28cu) == 0x5a97808au);
  CHECK(murmur3_32("aaa", 0x9747b28cu) == 0x283e0130u);
  CHECK(murmur3_32("aa", 0x9747b28cu) == 0x5d211726u);
  CHECK(murmur3_32("a", 0x9747b28cu) == 0x7fa09ea6u);
  CHECK(murmur3_32("Hello, world!", 0x9747b28cu) == 0x24884cbau);
  CHECK(murmur3_32("The quick brown fox jumps over the lazy dog", 0x9747b28cu) == 0x2fa826cdu);
  CHECK(murmur3_32("bunny") == 0x13851a76u);
  CHECK(bits_of(cryptomatte_id("bunny")) == 0x13851a76u);
}

TEST_CASE("cryptomatte_id clamps the exponent to [1, 254] and keeps sign and mantissa") {
  int clamped_low = 0, clamped_high = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string name = "piece_" + std::to_string(i);
    const uint32_t h = murmur3_32(name), b = bits_of(cryptomatte_id(name));
    const uint32_t exponent = (h >> 23) & 0xffu;
    CHECK(std::isnormal(cryptomatte_id(name)));
    CHECK((b & 0x807fffffu) == (h & 0x807fffffu));
    const uint32_t want = exponent == 0 ? 1u : exponent == 255 ? 254u : exponent;
    CHECK(((b >> 23) & 0xffu) == want);
    clamped_low += exponent == 0;
    clamped_high += exponent == 255;
  }
  CHECK(clamped_low > 0);  // ~78 expected of each among 20000 names
  CHECK(clamped_high > 0);
}

// ---- EXR frames ------------------------------------------------------------------------------

TEST_CASE("write_exr_frame: channels, pixel types, values, Cryptomatte and camera, read with OpenEXR") {
  const int W = 12, H = 7;
  const Image beauty = gradient(W, H, 3);
  const auto aovs = make_aovs(W, H);
  const std::vector<std::string> names{"wall_left", "wall_right", "roof", "pillar/3", "unused piece"};
  const CameraMatrices camera = camera_matrices(make_view(W, H));
  ExrFrame frame;
  frame.beauty = &beauty;
  frame.aovs = &aovs;
  frame.piece_names = &names;
  frame.camera = &camera;
  const std::string path = scratch_file("frame.1001.exr");
  write_exr_frame(frame, path);

  Imf::InputFile file(path.c_str());
  const Imf::Header& header = file.header();
  CHECK(header.compression() == Imf::ZIP_COMPRESSION);
  CHECK(header.dataWindow().max.x == W - 1);
  CHECK(header.dataWindow().max.y == H - 1);
  std::map<std::string, Imf::PixelType> types;
  for (auto it = header.channels().begin(); it != header.channels().end(); ++it) types[it.name()] = it.channel().type;
  std::map<std::string, Imf::PixelType> expected;
  for (const char* c : {"R", "G", "B", "A"}) expected[c] = Imf::HALF;
  for (const char* c : {"depth.Z", "forward.u", "forward.v", "backward.u", "backward.v", "N.x", "N.y", "N.z",
                        "coverage.A", "dust.A", "occlusion.A", "CryptoObject00.R", "CryptoObject00.G",
                        "CryptoObject00.B", "CryptoObject00.A", "CryptoObject01.R", "CryptoObject01.G",
                        "CryptoObject01.B", "CryptoObject01.A"})
    expected[c] = Imf::FLOAT;
  CHECK(types == expected);

  // Beauty: ACEScg in half float, with AP1 chromaticities.
  const Image linear = srgb_to_scene_linear(beauty, ColorSpace::acescg);
  const std::vector<float> R = exr_channel(file, "R"), B = exr_channel(file, "B"), A = exr_channel(file, "A");
  for (size_t i = 0; i < R.size(); ++i) {
    CHECK(R[i] == doctest::Approx(linear.pixels[3 * i]).epsilon(1e-3));
    CHECK(B[i] == doctest::Approx(linear.pixels[3 * i + 2]).epsilon(1e-3));
    CHECK(A[i] == doctest::Approx(aovs.alpha.data()[i]).epsilon(1e-3));
  }
  REQUIRE(Imf::hasChromaticities(header));
  const Imf::Chromaticities chroma = Imf::chromaticities(header);
  CHECK(chroma.red.x == doctest::Approx(0.713));
  CHECK(chroma.green.y == doctest::Approx(0.830));
  CHECK(chroma.white.x == doctest::Approx(0.32168));

  // AOVs: exact floats, +inf depth kept.
  CHECK(exr_channel(file, "depth.Z") == std::vector<float>(aovs.depth.begin(), aovs.depth.end()));
  const std::vector<float> fv = exr_channel(file, "forward.v"), nz = exr_channel(file, "N.z");
  for (size_t i = 0; i < fv.size(); ++i) {
    CHECK(fv[i] == aovs.flow_forward.data()[2 * i + 1]);
    CHECK(nz[i] == aovs.normal.data()[3 * i + 2]);
  }
  CHECK(exr_channel(file, "occlusion.A") == std::vector<float>(aovs.occlusion.begin(), aovs.occlusion.end()));

  // Cryptomatte: rank 0 = (id of the piece's name, coverage), the rest 0; empty pixels 0.
  const std::vector<float> r0 = exr_channel(file, "CryptoObject00.R"), c0 = exr_channel(file, "CryptoObject00.G");
  for (const char* rest : {"CryptoObject00.B", "CryptoObject00.A", "CryptoObject01.R", "CryptoObject01.A"})
    for (float v : exr_channel(file, rest)) CHECK(v == 0.0f);
  for (size_t i = 0; i < r0.size(); ++i) {
    const int32_t id = aovs.piece_id.data()[i];
    CHECK(bits_of(r0[i]) == (id < 0 ? 0u : bits_of(cryptomatte_id(names[size_t(id)]))));
    CHECK(c0[i] == (id < 0 ? 0.0f : aovs.alpha.data()[i]));
  }
  char key[9];
  std::snprintf(key, sizeof key, "%08x", murmur3_32("CryptoObject"));
  const std::string prefix = "cryptomatte/" + std::string(key, 7) + "/";
  auto text = [&](const std::string& name) {
    const auto* a = header.findTypedAttribute<Imf::StringAttribute>(name);
    REQUIRE_MESSAGE(a != nullptr, name);
    return a->value();
  };
  CHECK(text(prefix + "name") == "CryptoObject");
  CHECK(text(prefix + "hash") == "MurmurHash3_32");
  CHECK(text(prefix + "conversion") == "uint32_to_float32");
  const auto manifest = nlohmann::json::parse(text(prefix + "manifest"));
  CHECK(manifest.size() == names.size());
  for (const std::string& n : names) {
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08x", bits_of(cryptomatte_id(n)));
    CHECK(manifest.at(n).get<std::string>() == hex);
  }

  // Camera: the attributes hold the matrices given.
  REQUIRE(Imf::hasWorldToCamera(header));
  REQUIRE(Imf::hasWorldToNDC(header));
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      CHECK(Imf::worldToCamera(header)[i][j] == camera.world_to_camera[size_t(4 * i + j)]);
      CHECK(Imf::worldToNDC(header)[i][j] == camera.world_to_ndc[size_t(4 * i + j)]);
    }
}

TEST_CASE("camera_matrices follow OpenEXR's camera and NDC conventions (row vectors)") {
  const int W = 64, H = 36;
  const drb::render::View view = make_view(W, H);
  const CameraMatrices m = camera_matrices(view, 0.1, 1000.0);
  Imath::M44f to_camera, to_ndc;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      to_camera[i][j] = m.world_to_camera[size_t(4 * i + j)];
      to_ndc[i][j] = m.world_to_ndc[size_t(4 * i + j)];
    }
  for (const Eigen::Vector3d& p : {Eigen::Vector3d(0.3, -0.2, 1.0), Eigen::Vector3d(-2.0, 1.5, 4.0),
                                   Eigen::Vector3d(1.0, 2.0, -3.0)}) {
    const Eigen::Vector3d cv = view.to_camera(p);  // OpenCV: y down
    const double u = view.fx * cv.x() / cv.z() + view.cx, v = view.fy * cv.y() / cv.z() + view.cy;
    Imath::V3f cam, ndc;
    to_camera.multVecMatrix(Imath::V3f(float(p.x()), float(p.y()), float(p.z())), cam);
    to_ndc.multVecMatrix(Imath::V3f(float(p.x()), float(p.y()), float(p.z())), ndc);
    CHECK(cam.x == doctest::Approx(cv.x()).epsilon(1e-5));
    CHECK(cam.y == doctest::Approx(-cv.y()).epsilon(1e-5));  // y up
    CHECK(cam.z == doctest::Approx(cv.z()).epsilon(1e-5));   // in front: z > 0
    CHECK(ndc.x == doctest::Approx(u / W).epsilon(1e-5));
    CHECK(ndc.y == doctest::Approx(v / H).epsilon(1e-5));
  }
  // The image's corners: NDC (0, 0) upper left, (1, 1) lower right.
  const Eigen::Vector3d centre = view.rotation.transpose() * (Eigen::Vector3d(0, 0, 5) - view.translation);
  Imath::V3f ndc;
  to_ndc.multVecMatrix(Imath::V3f(float(centre.x()), float(centre.y()), float(centre.z())), ndc);
  CHECK(ndc.x == doctest::Approx(view.cx / W).epsilon(1e-5));
  CHECK(ndc.y == doctest::Approx(view.cy / H).epsilon(1e-5));
  expect_error([&] { camera_matrices(view, 0.0, 10.0); }, ErrorCode::invalid_argument, {"near"});
}

TEST_CASE("write_exr_frame: beauty only (sRGB primaries), AOVs only, and bad input") {
  const int W = 6, H = 4;
  const Image beauty = gradient(W, H, 3);
  ExrFrame frame;
  frame.beauty = &beauty;
  frame.beauty_space = ColorSpace::srgb;
  write_exr_frame(frame, scratch_file("beauty.exr"));
  {
    Imf::InputFile file(scratch_file("beauty.exr").c_str());
    std::set<std::string> names;
    for (auto it = file.header().channels().begin(); it != file.header().channels().end(); ++it)
      names.insert(it.name());
    CHECK(names == std::set<std::string>{"A", "B", "G", "R"});
    CHECK(Imf::chromaticities(file.header()).red.x == doctest::Approx(0.64));
    CHECK(Imf::chromaticities(file.header()).white.x == doctest::Approx(0.3127));
    for (float a : exr_channel(file, "A")) CHECK(a == 1.0f);
    CHECK_FALSE(Imf::hasWorldToCamera(file.header()));
  }

  const auto aovs = make_aovs(W, H);
  const std::vector<std::string> names{"a", "b", "c", "d"};
  ExrFrame only_aovs;
  only_aovs.aovs = &aovs;
  only_aovs.piece_names = &names;
  only_aovs.cryptomatte_layer = "CryptoPiece";
  write_exr_frame(only_aovs, scratch_file("aovs.exr"));
  {
    Imf::InputFile file(scratch_file("aovs.exr").c_str());
    CHECK(file.header().channels().findChannel("R") == nullptr);
    CHECK(file.header().channels().findChannel("CryptoPiece01.B") != nullptr);
  }

  const std::string bad = scratch_file("bad.exr");
  expect_error([&] { write_exr_frame(ExrFrame{}, bad); }, ErrorCode::invalid_argument, {bad, "nothing to write"});
  ExrFrame no_names = only_aovs;
  no_names.piece_names = nullptr;
  expect_error([&] { write_exr_frame(no_names, bad); }, ErrorCode::invalid_argument, {"piece_names"});
  const std::vector<std::string> too_few{"a", "b"};
  ExrFrame few = only_aovs;
  few.piece_names = &too_few;
  expect_error([&] { write_exr_frame(few, bad); }, ErrorCode::invalid_argument, {"piece id 2", "2 piece names"});
  const Image other = gradient(W + 2, H, 3);
  ExrFrame mismatch = only_aovs;
  mismatch.beauty = &other;
  expect_error([&] { write_exr_frame(mismatch, bad); }, ErrorCode::invalid_argument, {"AOVs are 6x4"});
  const Image rgba = gradient(W, H, 4);
  ExrFrame four;
  four.beauty = &rgba;
  expect_error([&] { write_exr_frame(four, bad); }, ErrorCode::invalid_argument, {"4 channels"});
  CHECK_FALSE(fs::exists(bad));
}

// ---- MP4 -------------------------------------------------------------------------------------

namespace {

std::vector<Image> gradient_frames(int W, int H, int n) {
  std::vector<Image> frames;
  for (int f = 0; f < n; ++f) frames.push_back(gradient(W, H, 3, f));
  return frames;
}

const std::vector<Image>& shared_video() {
  static const std::vector<Image> frames = gradient_frames(64, 48, 12);
  static const bool written = (write_mp4(frames, scratch_file("shared.mp4")), true);
  (void)written;
  return frames;
}

}  // namespace

TEST_CASE("write_mp4 then read_video: frame count, size and small error") {
  const std::vector<Image>& frames = shared_video();
  const std::vector<Image> back = read_video(scratch_file("shared.mp4"));
  REQUIRE(back.size() == frames.size());
  for (size_t f = 0; f < frames.size(); ++f) {
    CAPTURE(f);
    REQUIRE(back[f].width == 64);
    REQUIRE(back[f].height == 48);
    REQUIRE(back[f].channels == 3);
    CHECK(mean_abs_error(back[f], frames[f]) < 0.03);
  }
  CHECK(read_video(scratch_file("shared.mp4"), 5).size() == 5);
  for (const std::string& name : names_in(scratch())) CHECK_MESSAGE(name.find(".tmp.") == name.npos, name);
}

TEST_CASE("saturated colours survive the BT.709 encode and decode") {
  // Wide bars of primaries and secondaries: a matrix mismatch (BT.601 vs 709) would shift them
  // by several percent; chroma subsampling only blurs the edges, which are left out.
  const int W = 96, H = 32, bar = 16;
  const float colours[6][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {1, 1, 0}, {0, 1, 1}, {1, 0, 1}};
  Image image = Image::blank(W, H, 3);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < 3; ++c) image.at(y, x, c) = 0.1f + 0.8f * colours[x / bar][c];
  write_mp4({image, image}, scratch_file("bars.mp4"), {24.0, 10, "fast"});
  const std::vector<Image> back = read_video(scratch_file("bars.mp4"));
  REQUIRE(back.size() == 2);
  double worst = 0;
  for (int y = 4; y < H - 4; ++y)
    for (int x = 0; x < W; ++x) {
      if (x % bar < 3 || x % bar > bar - 4) continue;
      for (int c = 0; c < 3; ++c) worst = std::max(worst, double(std::abs(back[1].at(y, x, c) - image.at(y, x, c))));
    }
  CHECK(worst < 0.04);
}

TEST_CASE("a truncated, corrupt or missing video is an error naming the file") {
  shared_video();
  const std::string cut = scratch_file("cut60.mp4");
  truncate_copy(scratch_file("shared.mp4"), cut, 0.6);
  expect_error([&] { read_video(cut); }, ErrorCode::parse, {cut});
  const std::string cut10 = scratch_file("cut10.mp4");
  truncate_copy(scratch_file("shared.mp4"), cut10, 0.1);
  expect_error([&] { read_video(cut10); }, ErrorCode::parse, {cut10});
  const std::string text = scratch_file("text.mp4");
  write_text(text, std::string(4096, 'x'));
  expect_error([&] { read_video(text); }, ErrorCode::parse, {text});
  expect_error([] { read_video("/nonexistent/v.mp4"); }, ErrorCode::file_not_found, {"/nonexistent/v.mp4"});
}

TEST_CASE("every truncation of an MP4 is a parse error naming the file") {
  // Each cut point: inside the header, inside a packet (the demuxer marks it corrupt) and exactly
  // between packets (fewer frames than the stream declares) all have to be caught.
  shared_video();
  const int level = av_log_get_level();
  av_log_set_level(AV_LOG_QUIET);  // libav reports each damaged file on stderr
  const std::string data = read_text(scratch_file("shared.mp4"));
  const std::string path = scratch_file("sweep.mp4");
  int errors = 0, declared_count = 0;
  for (size_t n = 1; n < data.size(); ++n) {
    write_text(path, data.substr(0, n));
    try {
      read_video(path);
      FAIL("no error for the first " << n << " of " << data.size() << " bytes");
    } catch (const drb::Error& e) {
      ++errors;
      const std::string what = e.what();
      CHECK_MESSAGE(e.code() == ErrorCode::parse, n << ": " << what);
      CHECK_MESSAGE(what.find(path) != what.npos, n << ": " << what);
      declared_count += what.find("of its 12 frames") != what.npos;
    }
  }
  av_log_set_level(level);
  CHECK(errors == int(data.size()) - 1);
  CHECK(declared_count > 0);  // some cuts fall between packets
}

TEST_CASE("write_mp4 rejects what yuv420p H.264 cannot hold") {
  const std::string path = scratch_file("rejected.mp4");
  expect_error([&] { write_mp4({}, path); }, ErrorCode::invalid_argument, {path, "no frames"});
  expect_error([&] { write_mp4({Image::blank(63, 48, 3)}, path); }, ErrorCode::invalid_argument, {"63x48", "even"});
  expect_error([&] { write_mp4({Image::blank(64, 47, 3)}, path); }, ErrorCode::invalid_argument, {"even"});
  expect_error([&] { write_mp4({Image::blank(64, 48, 3), Image::blank(32, 48, 3)}, path); },
               ErrorCode::invalid_argument, {"frame 1", "32x48"});
  expect_error([&] { write_mp4({Image::blank(64, 48, 4)}, path); }, ErrorCode::invalid_argument, {"4 channels"});
  expect_error([&] { write_mp4({Image::blank(64, 48, 3)}, path, {24.0, 60, "medium"}); }, ErrorCode::invalid_argument,
               {"crf"});
  expect_error([&] { write_mp4({Image::blank(64, 48, 3)}, path, {0.0, 18, "medium"}); }, ErrorCode::invalid_argument,
               {"fps"});
  expect_error([&] { write_mp4({Image::blank(64, 48, 3)}, path, {24.0, 18, "warp9"}); }, ErrorCode::invalid_argument,
               {"warp9"});
  CHECK_FALSE(fs::exists(path));
}

// ---- plates ----------------------------------------------------------------------------------

TEST_CASE("read_plate: PNG and EXR sequences and videos as display sRGB") {
  const fs::path dir = fresh_dir("plates");
  const std::vector<Image> frames = gradient_frames(16, 8, 3);
  for (int f = 0; f < 3; ++f) write_png(frames[size_t(f)], frame_path((dir / "p.####.png").string(), 1001 + f), 16);
  const std::vector<Image> png = read_plate((dir / "p.####.png").string(), 1001, 3);
  REQUIRE(png.size() == 3);
  for (int f = 0; f < 3; ++f) CHECK(mean_abs_error(png[size_t(f)], frames[size_t(f)]) < 1e-4);

  // EXR plates: ACEScg by default, Rec.709 when the file's chromaticities say so.
  for (ColorSpace space : {ColorSpace::acescg, ColorSpace::srgb}) {
    for (int f = 0; f < 2; ++f) {
      ExrFrame e;
      e.beauty = &frames[size_t(f)];
      e.beauty_space = space;
      write_exr_frame(e, frame_path((dir / "e.%04d.exr").string(), f));
    }
    const std::vector<Image> exr = read_plate((dir / "e.%04d.exr").string(), 0, 2);
    REQUIRE(exr.size() == 2);
    CHECK(mean_abs_error(exr[1], frames[1]) < 2e-3);
  }

  write_mp4(gradient_frames(16, 8, 4), (dir / "v.mp4").string());
  CHECK(read_plate((dir / "v.mp4").string(), 0, 3).size() == 3);
  expect_error([&] { read_plate((dir / "v.mp4").string(), 0, 5); }, ErrorCode::invalid_argument, {"v.mp4", "has 4"});
}

TEST_CASE("read_plate errors: missing frame, size change, no field, unknown format") {
  const fs::path dir = fresh_dir("bad_plates");
  write_png(gradient(8, 4, 3), (dir / "s.0001.png").string());
  write_png(gradient(8, 6, 3), (dir / "s.0002.png").string());
  const std::string pattern = (dir / "s.%04d.png").string();
  expect_error([&] { read_plate(pattern, 1, 2); }, ErrorCode::invalid_argument, {"s.0002.png", "8x6"});
  expect_error([&] { read_plate(pattern, 0, 1); }, ErrorCode::file_not_found, {"s.0000.png"});
  expect_error([&] { read_plate((dir / "s.png").string(), 1, 1); }, ErrorCode::invalid_argument, {"frame-number"});
  expect_error([&] { read_plate((dir / "s.%04d.tif").string(), 1, 1); }, ErrorCode::unsupported, {".tif"});
  expect_error([&] { read_plate(pattern, 1, 0); }, ErrorCode::invalid_argument, {"count"});
}
