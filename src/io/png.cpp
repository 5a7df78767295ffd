// PNG through libpng. libpng reports errors by longjmp to a setjmp point, so each libpng call
// sequence runs in a small function holding no C++ objects with destructors (a longjmp over
// them would skip their destructors); buffers are owned by the callers.
#include <png.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "derrumbe/io/image.hpp"
#include "detail.hpp"

namespace drb::io {
namespace {
using detail::quoted;

// Larger frames are taken as a corrupt header rather than allocated.
constexpr uint64_t kMaxPngValues = uint64_t(1) << 30;

// Where libpng's error callback leaves its message before jumping back.
struct PngMessage {
  char text[256] = "";
};

void on_error(png_structp png, png_const_charp message) {
  auto* out = static_cast<PngMessage*>(png_get_error_ptr(png));
  std::snprintf(out->text, sizeof out->text, "%s", message != nullptr ? message : "unknown libpng error");
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}  // benign (e.g. a bad ancillary chunk, which libpng skips)

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

// ---- writing ---------------------------------------------------------------------------------

struct WriteStructs {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~WriteStructs() { png_destroy_write_struct(&png, info != nullptr ? &info : nullptr); }
};

int png_color_type(int channels) {
  switch (channels) {
    case 1: return PNG_COLOR_TYPE_GRAY;
    case 2: return PNG_COLOR_TYPE_GRAY_ALPHA;
    case 3: return PNG_COLOR_TYPE_RGB;
    default: return PNG_COLOR_TYPE_RGBA;
  }
}

bool write_rows(png_structp png, png_infop info, std::FILE* file, const Image& image, int bit_depth, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_init_io(png, file);
  png_set_IHDR(png, info, png_uint_32(image.width), png_uint_32(image.height), bit_depth, png_color_type(image.channels),
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  return true;
}

// Values clamped to [0, 1] (NaN to 0), rounded to the nearest level; 16-bit samples big-endian
// as PNG stores them.
std::vector<png_byte> quantize(const Image& image, int bit_depth) {
  const double top = bit_depth == 16 ? 65535.0 : 255.0;
  const int bytes = bit_depth / 8;
  std::vector<png_byte> out(image.pixels.size() * size_t(bytes));
  for (size_t i = 0; i < image.pixels.size(); ++i) {
    const float v = image.pixels[i];
    const auto q = static_cast<uint32_t>(std::lround((v > 0.0f ? std::min(v, 1.0f) : 0.0f) * top));
    if (bytes == 2) {
      out[2 * i] = png_byte(q >> 8);
      out[2 * i + 1] = png_byte(q & 0xffu);
    } else {
      out[i] = png_byte(q);
    }
  }
  return out;
}

void write_png_file(const Image& image, int bit_depth, const std::string& tmp, const std::string& path) {
  std::vector<png_byte> data = quantize(image, bit_depth);
  const size_t stride = size_t(image.width) * size_t(image.channels) * size_t(bit_depth / 8);
  std::vector<png_bytep> rows(size_t(image.height));
  for (size_t y = 0; y < rows.size(); ++y) rows[y] = data.data() + y * stride;

  File file(std::fopen(tmp.c_str(), "wb"));
  if (!file) throw Error(ErrorCode::io, "write_png: cannot open " + quoted(path) + " for writing: " + std::strerror(errno));
  PngMessage message;
  WriteStructs s;
  s.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &message, on_error, on_warning);
  if (s.png != nullptr) s.info = png_create_info_struct(s.png);
  check(s.info != nullptr, ErrorCode::io, "write_png: libpng could not allocate its state for " + quoted(path));
  check(write_rows(s.png, s.info, file.get(), image, bit_depth, rows.data()), ErrorCode::io,
        "write_png: writing " + quoted(path) + " failed: " + message.text);
  check(std::fclose(file.release()) == 0, ErrorCode::io,
        "write_png: writing " + quoted(path) + " failed: " + std::strerror(errno));
}

// ---- reading ---------------------------------------------------------------------------------

struct ReadStructs {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~ReadStructs() { png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr); }
};

struct PngLayout {
  png_uint_32 width = 0, height = 0;
  int channels = 0, bit_depth = 0;
};

// Reads the header and asks libpng for 8- or 16-bit samples with the file's own channels:
// palette -> RGB (RGBA with transparency), low-bit grey -> 8 bits, tRNS -> an alpha channel.
bool read_layout(png_structp png, png_infop info, std::FILE* file, PngLayout* layout) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_init_io(png, file);
  png_set_sig_bytes(png, 8);
  png_read_info(png, info);
  const int color_type = png_get_color_type(png, info);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  layout->width = png_get_image_width(png, info);
  layout->height = png_get_image_height(png, info);
  layout->channels = png_get_channels(png, info);
  layout->bit_depth = png_get_bit_depth(png, info);
  return true;
}

// png_read_end reads up to IEND, so a file cut after its pixel data is still reported.
bool read_rows(png_structp png, png_infop info, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_image(png, rows);
  png_read_end(png, nullptr);
  return true;
}

Image to_float(const std::vector<png_byte>& data, const PngLayout& layout) {
  Image image = Image::blank(int(layout.width), int(layout.height), layout.channels);
  if (layout.bit_depth == 16) {
    for (size_t i = 0; i < image.pixels.size(); ++i)
      image.pixels[i] = float((uint32_t(data[2 * i]) << 8 | data[2 * i + 1]) / 65535.0);
  } else {
    for (size_t i = 0; i < image.pixels.size(); ++i) image.pixels[i] = float(data[i] / 255.0);
  }
  return image;
}

}  // namespace

void write_png(const Image& image, const std::string& path, int bit_depth) {
  check_arg(bit_depth == 8 || bit_depth == 16,
            "write_png(" + quoted(path) + "): bit_depth must be 8 or 16, got " + std::to_string(bit_depth));
  check_arg(image.channels >= 1 && image.channels <= 4,
            "write_png(" + quoted(path) + "): images have 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA) channels, got " +
                std::to_string(image.channels));
  check_arg(image.width >= 1 && image.height >= 1 && image.width <= 1000000 && image.height <= 1000000,
            "write_png(" + quoted(path) + "): invalid size " + std::to_string(image.width) + "x" +
                std::to_string(image.height));
  check_arg(image.pixels.size() == size_t(image.width) * size_t(image.height) * size_t(image.channels),
            "write_png(" + quoted(path) + "): the image holds " + std::to_string(image.pixels.size()) +
                " values, expected width * height * channels");
  write_atomically(path, [&](const std::string& tmp) { write_png_file(image, bit_depth, tmp, path); });
}

Image read_png(const std::string& path) {
  detail::check_readable_file(path, "read_png");
  File file(std::fopen(path.c_str(), "rb"));
  if (!file) throw Error(ErrorCode::io, "read_png: cannot open " + quoted(path) + ": " + std::strerror(errno));
  png_byte signature[8] = {};
  check(std::fread(signature, 1, 8, file.get()) == 8 && png_sig_cmp(signature, 0, 8) == 0, ErrorCode::parse,
        "read_png: " + quoted(path) + " is not a PNG file (bad signature)");

  PngMessage message;
  ReadStructs s;
  s.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &message, on_error, on_warning);
  if (s.png != nullptr) s.info = png_create_info_struct(s.png);
  check(s.info != nullptr, ErrorCode::io, "read_png: libpng could not allocate its state for " + quoted(path));
  PngLayout layout;
  check(read_layout(s.png, s.info, file.get(), &layout), ErrorCode::parse,
        "read_png: " + quoted(path) + " is corrupt: " + message.text);
  const uint64_t values = uint64_t(layout.width) * layout.height * uint64_t(layout.channels);
  check(layout.width >= 1 && layout.height >= 1 && values <= kMaxPngValues &&
            (layout.bit_depth == 8 || layout.bit_depth == 16) && layout.channels >= 1 && layout.channels <= 4,
        ErrorCode::parse,
        "read_png: " + quoted(path) + " has an unsupported or implausible layout (" + std::to_string(layout.width) +
            "x" + std::to_string(layout.height) + ", " + std::to_string(layout.channels) + " channels, " +
            std::to_string(layout.bit_depth) + " bits)");

  const size_t stride = size_t(layout.width) * size_t(layout.channels) * size_t(layout.bit_depth / 8);
  std::vector<png_byte> data(stride * layout.height);
  std::vector<png_bytep> rows(layout.height);
  for (size_t y = 0; y < rows.size(); ++y) rows[y] = data.data() + y * stride;
  check(read_rows(s.png, s.info, rows.data()), ErrorCode::parse,
        "read_png: " + quoted(path) + " is truncated or corrupt: " + message.text);
  return to_float(data, layout);
}

}  // namespace drb::io
