// Private to src/physics: a little-endian byte writer and a bounds-checked byte reader, shared by
// the track cache (cache.cpp) and the .glb code (gltf.cpp). Every read is checked against the
// bytes that remain, so a corrupt file is an Error(parse) naming the file, never an out-of-bounds
// read; counts are checked against the remaining bytes before anything is allocated.
#pragma once
#include <Eigen/Core>

#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "derrumbe/core/error.hpp"

namespace drb::physics::detail {

static_assert(std::endian::native == std::endian::little,
              "derrumbe's binary formats (cache, .glb) are little-endian and written as raw memory");

// Types written and read as raw memory: trivially copyable ones and packed float triples.
template <class T>
constexpr bool kRawCopyable = std::is_trivially_copyable_v<T> ||
                              (std::is_same_v<T, Eigen::Vector3f> && sizeof(T) == 3 * sizeof(float));

// 64-bit FNV-1a.
inline uint64_t fnv1a64(const uint8_t* data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= data[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

// Reads a whole file. Missing → Error(file_not_found); unreadable → Error(io).
inline std::vector<uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  check(std::filesystem::exists(status), ErrorCode::file_not_found, path + ": no such file");
  check(std::filesystem::is_regular_file(status), ErrorCode::io, path + ": not a regular file");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  check(in.good(), ErrorCode::io, path + ": cannot open for reading");
  const std::streamoff size = in.tellg();
  check(size >= 0, ErrorCode::io, path + ": cannot determine the file size");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  check(in.good(), ErrorCode::io, path + ": read failed");
  return bytes;
}

inline void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  check(out.good(), ErrorCode::io, path + ": cannot open for writing");
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  check(!out.fail(), ErrorCode::io, path + ": write failed");
}

class ByteWriter {
 public:
  template <class T>
  void put(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    put_bytes(&value, sizeof(T));
  }
  void put_bytes(const void* data, size_t size) {
    const auto* b = static_cast<const uint8_t*>(data);
    bytes_.insert(bytes_.end(), b, b + size);
  }
  // A contiguous array of trivially copyable elements, written with one copy (no count).
  template <class T>
  void put_array(const T* data, size_t count) {
    static_assert(kRawCopyable<T>);
    put_bytes(data, count * sizeof(T));
  }
  void put_string(std::string_view s) {
    put(static_cast<uint32_t>(s.size()));
    put_bytes(s.data(), s.size());
  }
  void pad_to(size_t alignment, uint8_t fill) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(fill);
  }
  template <class T>
  void patch(size_t offset, const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    std::memcpy(bytes_.data() + offset, &value, sizeof(T));
  }
  void reserve(size_t size) { bytes_.reserve(size); }
  size_t size() const { return bytes_.size(); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

// Reads [data, data + size); `context` (the file name) starts every error message.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size, std::string context)
      : data_(data), size_(size), context_(std::move(context)) {}

  size_t offset() const { return pos_; }
  size_t size() const { return size_; }
  size_t remaining() const { return size_ - pos_; }
  const std::string& context() const { return context_; }

  [[noreturn]] void fail(const std::string& message, ErrorCode code = ErrorCode::parse) const {
    throw Error(code, context_ + ": " + message);
  }

  // The next `size` bytes; `what` names them in the error when the data ends first.
  const uint8_t* take(size_t size, std::string_view what) {
    if (size > remaining())
      fail("truncated: " + std::string(what) + " needs " + std::to_string(size) + " bytes at offset " +
           std::to_string(pos_) + " but only " + std::to_string(remaining()) + " remain");
    const uint8_t* p = data_ + pos_;
    pos_ += size;
    return p;
  }
  void skip(size_t size, std::string_view what) { take(size, what); }

  template <class T>
  T get(std::string_view what) {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    std::memcpy(&value, take(sizeof(T), what), sizeof(T));
    return value;
  }

  // Checks that `count` elements of `element_bytes` bytes each (a lower bound for variable-size
  // elements) fit in the remaining bytes: a corrupt count fails here instead of allocating.
  size_t check_count(uint64_t count, size_t element_bytes, std::string_view what) const {
    const uint64_t limit = element_bytes == 0 ? remaining() : remaining() / element_bytes;
    if (count > limit)
      fail("corrupt count: " + std::string(what) + " claims " + std::to_string(count) + " elements of " +
           std::to_string(element_bytes) + " bytes but only " + std::to_string(remaining()) + " bytes remain");
    return static_cast<size_t>(count);
  }
  // Reads a count of type CountT and checks it as check_count does.
  template <class CountT>
  size_t get_count(size_t element_bytes, std::string_view what) {
    return check_count(get<CountT>(what), element_bytes, what);
  }

  // Fills `out` with `count` raw elements (count checked first), one copy.
  template <class T>
  void get_array(std::vector<T>& out, uint64_t count, std::string_view what) {
    static_assert(kRawCopyable<T>);
    const size_t n = check_count(count, sizeof(T), what);
    const uint8_t* p = take(n * sizeof(T), what);
    out.resize(n);
    if (n) std::memcpy(static_cast<void*>(out.data()), p, n * sizeof(T));
  }

  std::string get_string(std::string_view what) {
    const size_t n = get_count<uint32_t>(1, what);
    const uint8_t* p = take(n, what);
    return std::string(reinterpret_cast<const char*>(p), n);
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string context_;
};

}  // namespace drb::physics::detail
