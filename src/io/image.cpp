// Images, atomic writes, frame-number patterns and plates.
#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "derrumbe/io/image.hpp"
#include "derrumbe/io/video.hpp"
#include "detail.hpp"

namespace drb::io {
namespace fs = std::filesystem;
using detail::quoted;

namespace {

// Far beyond any frame we make, small enough that width * height * channels floats fit in memory.
constexpr int64_t kMaxImageValues = int64_t(1) << 32;

// A hidden name beside the target: ".name.tmp.<pid>.<n>". The pid tells which process left it
// (a crash), the counter keeps two threads writing the same target apart.
fs::path temporary_beside(const fs::path& target, const char* kind) {
  static std::atomic<uint64_t> counter{0};
  std::string name = ".";
  name.append(target.filename().string()).append(".").append(kind);
  name.append(".").append(std::to_string(::getpid())).append(".").append(std::to_string(counter++));
  return target.parent_path() / name;
}

fs::path folder_of(const fs::path& target) { return target.parent_path().empty() ? fs::path(".") : target.parent_path(); }

std::string errno_text(int err) { return std::strerror(err); }

// Flushes a file's (or directory's) data to the disk, so that the rename never publishes a name
// whose content is still only in the page cache. Directories may refuse; that is not an error.
void sync_path(const fs::path& p, bool required, const std::string& target) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (required) throw Error(ErrorCode::io, "writing " + quoted(target) + ": cannot reopen the temporary file " +
                                                 quoted(p.string()) + ": " + errno_text(errno));
    return;
  }
  const bool ok = ::fsync(fd) == 0 || !required;
  const int err = errno;
  ::close(fd);
  if (!ok) throw Error(ErrorCode::io, "writing " + quoted(target) + ": fsync failed: " + errno_text(err));
}

void check_target(const std::string& path, const char* what) {
  check_arg(!path.empty(), std::string(what) + ": empty path");
  check_arg(path.find('\0') == std::string::npos, std::string(what) + ": path contains a NUL character");
}

// Replaces `target` (which exists) by `fresh`: an atomic exchange where the filesystem offers
// one, otherwise the old one is moved aside first.
void replace_directory(const fs::path& fresh, const fs::path& target) {
  if (::renameat2(AT_FDCWD, fresh.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
    std::error_code ec;
    fs::remove_all(fresh, ec);  // now holds the old content
    return;
  }
  const fs::path old = temporary_beside(target, "old");
  if (::rename(target.c_str(), old.c_str()) != 0)
    throw Error(ErrorCode::io, "cannot replace " + quoted(target.string()) + ": " + errno_text(errno));
  if (::rename(fresh.c_str(), target.c_str()) != 0) {
    const int err = errno;
    ::rename(old.c_str(), target.c_str());
    throw Error(ErrorCode::io, "cannot replace " + quoted(target.string()) + ": " + errno_text(err));
  }
  std::error_code ec;
  fs::remove_all(old, ec);
}

// A frame number as printf's %d with a width: zero-padded, or space-padded when `zero` is false.
std::string format_number(int64_t frame, int width, bool zero) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, zero ? "%0*lld" : "%*lld", width, static_cast<long long>(frame));
  return buffer;
}

// Parses the conversion at pattern[i] == '%' ("%d", "%4d", "%04d"); advances i past it.
std::string printf_field(const std::string& pattern, size_t& i, int64_t frame) {
  const size_t start = i++;
  const bool zero = i < pattern.size() && pattern[i] == '0';
  if (zero) ++i;
  int width = 0;
  while (i < pattern.size() && std::isdigit(static_cast<unsigned char>(pattern[i])) && width <= 32)
    width = width * 10 + (pattern[i++] - '0');
  check_arg(i < pattern.size() && pattern[i] == 'd' && width <= 32,
            "frame_path: pattern " + quoted(pattern) + " has the unsupported field " +
                quoted(pattern.substr(start, std::min(pattern.size(), i + 1) - start)) +
                "; use %d, %04d or #### for the frame number");
  return format_number(frame, width, zero);
}

// A plate frame as 3-channel RGB: grey is replicated, alpha dropped.
Image to_rgb(const Image& image) {
  if (image.channels == 3) return image;
  Image out = Image::blank(image.width, image.height, 3);
  const size_t n = size_t(image.width) * size_t(image.height);
  for (size_t i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c) out.pixels[3 * i + c] = image.pixels[i * image.channels + (image.channels >= 3 ? c : 0)];
  return out;
}

bool is_video_extension(const std::string& ext) {
  for (const char* v : {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})
    if (ext == v) return true;
  return false;
}

std::vector<Image> read_sequence(const std::string& pattern, const std::string& ext, int64_t first, int64_t count) {
  std::vector<Image> frames;
  for (int64_t f = first; f < first + count; ++f) {
    const std::string path = frame_path(pattern, f);
    detail::check_readable_file(path, "read_plate: frame " + std::to_string(f));
    Image image = ext == ".png" ? to_rgb(read_png(path)) : detail::read_exr_as_display_srgb(path);
    if (!frames.empty())
      check_arg(image.width == frames[0].width && image.height == frames[0].height,
                "read_plate: frame " + quoted(path) + " is " + std::to_string(image.width) + "x" +
                    std::to_string(image.height) + ", the plate's first frame is " + std::to_string(frames[0].width) +
                    "x" + std::to_string(frames[0].height));
    frames.push_back(std::move(image));
  }
  return frames;
}

}  // namespace

Image Image::blank(int width, int height, int channels) {
  check_arg(width >= 0 && height >= 0 && channels >= 1,
            "Image::blank: invalid size " + std::to_string(width) + "x" + std::to_string(height) + "x" +
                std::to_string(channels));
  check_arg(int64_t(width) * height * channels <= kMaxImageValues,
            "Image::blank: " + std::to_string(width) + "x" + std::to_string(height) + "x" + std::to_string(channels) +
                " is too large");
  Image image;
  image.width = width, image.height = height, image.channels = channels;
  image.pixels.assign(size_t(width) * size_t(height) * size_t(channels), 0.0f);
  return image;
}

void write_atomically(const std::string& path, const std::function<void(const std::string& tmp)>& write) {
  check_target(path, "write_atomically");
  const fs::path target(path);
  std::error_code ec;
  check(!fs::is_directory(target, ec), ErrorCode::io, "cannot write " + quoted(path) + ": it is a directory");
  const fs::path tmp = temporary_beside(target, "tmp");
  // Creating the temporary first turns a missing or read-only folder into one clear message,
  // whatever the writer's own error would have said.
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0)
    throw Error(ErrorCode::io, "cannot write " + quoted(path) + ": cannot create a file in the folder " +
                                   quoted(folder_of(target).string()) + ": " + errno_text(errno));
  ::close(fd);
  try {
    write(tmp.string());
    sync_path(tmp, true, path);
    if (::rename(tmp.c_str(), target.c_str()) != 0)
      throw Error(ErrorCode::io, "cannot rename the finished file to " + quoted(path) + ": " + errno_text(errno));
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
  sync_path(folder_of(target), false, path);
}

void write_directory_atomically(const std::string& path, const std::function<void(const std::string& tmp_dir)>& write) {
  check_target(path, "write_directory_atomically");
  fs::path target(path);
  if (!target.has_filename()) target = target.parent_path();  // "out/" names the folder "out"
  const fs::path tmp = temporary_beside(target, "tmp");
  if (::mkdir(tmp.c_str(), 0777) != 0)
    throw Error(ErrorCode::io, "cannot write " + quoted(path) + ": cannot create a folder in " +
                                   quoted(folder_of(target).string()) + ": " + errno_text(errno));
  std::error_code ec;
  try {
    write(tmp.string());
    if (fs::exists(fs::symlink_status(target, ec)))
      replace_directory(tmp, target);
    else if (::rename(tmp.c_str(), target.c_str()) != 0)
      throw Error(ErrorCode::io, "cannot rename the finished folder to " + quoted(path) + ": " + errno_text(errno));
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  sync_path(folder_of(target), false, path);
}

std::string frame_path(const std::string& pattern, int64_t frame) {
  std::string out;
  int fields = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '%' && i + 1 < pattern.size() && pattern[i + 1] == '%') {
      out += '%';
      ++i;
    } else if (pattern[i] == '%') {
      out += printf_field(pattern, i, frame);
      ++fields;
    } else if (pattern[i] == '#') {
      const size_t run = pattern.find_first_not_of('#', i);
      const size_t width = (run == std::string::npos ? pattern.size() : run) - i;
      check_arg(width <= 32, "frame_path: pattern " + quoted(pattern) + " has a run of more than 32 '#'");
      out += format_number(frame, static_cast<int>(width), true);
      i += width - 1;
      ++fields;
    } else {
      out += pattern[i];
    }
  }
  check_arg(fields == 1, "frame_path: pattern " + quoted(pattern) + " must have exactly one frame-number field " +
                             "(%04d, %d or ####), it has " + std::to_string(fields));
  return out;
}

std::vector<Image> read_plate(const std::string& source, int64_t first_frame, int64_t count) {
  check_arg(!source.empty(), "read_plate: empty source");
  check_arg(count >= 1, "read_plate: count must be at least 1, got " + std::to_string(count));
  check_arg(first_frame <= std::numeric_limits<int64_t>::max() - count,
            "read_plate: frame numbers overflow from first_frame " + std::to_string(first_frame));
  const std::string ext = detail::lower_extension(source);
  if (ext == ".png" || ext == ".exr") return read_sequence(source, ext, first_frame, count);
  check(is_video_extension(ext), ErrorCode::unsupported,
        "read_plate: " + quoted(source) + " is neither an image sequence (.png, .exr) nor a video " +
            "(.mp4, .mov, .mkv, .avi, .webm, .m4v)");
  std::vector<Image> frames = read_video(source, count);
  check_arg(int64_t(frames.size()) == count, "read_plate: video " + quoted(source) + " has " +
                                                 std::to_string(frames.size()) + " frames, the plate needs " +
                                                 std::to_string(count));
  return frames;
}

namespace detail {

std::string lower_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext;
}

void check_readable_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  check(fs::exists(status), ErrorCode::file_not_found, what + ": file not found: " + quoted(path));
  check(!fs::is_directory(status), ErrorCode::io, what + ": " + quoted(path) + " is a directory, not a file");
}

}  // namespace detail
}  // namespace drb::io
