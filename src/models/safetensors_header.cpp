// The safetensors header parser: torch-free (linked alone by the fuzz target). A SAX handler
// builds the entries directly from the JSON, so a hostile header cannot make us build a large
// DOM, duplicate keys are seen (a DOM keeps only the last one), and every value is checked
// for its type and range as it arrives.
#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "derrumbe/models/safetensors_header.hpp"

namespace drb::models {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr size_t kMaxTensors = 1'000'000;
constexpr size_t kMaxRank = 16;
constexpr uint64_t kMaxInteger = uint64_t{1} << 53;  // what a JSON number holds exactly everywhere
constexpr size_t kMaxDepth = 64;                       // nesting inside ignored values

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw Error(ErrorCode::parse, source + ": " + what);
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Keys and names as they appear in messages: quoted, with control bytes escaped.
std::string squote(const std::string& s) {
  std::string out = "'";
  const size_t limit = 200;
  for (size_t i = 0; i < s.size() && i < limit; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > limit) out += "...";
  return out + "'";
}

using Json = nlohmann::json;

// Builds the header from SAX events. Layout it accepts:
//   { name: {"dtype": str, "shape": [uint...], "data_offsets": [uint, uint], other: ignored},
//     "__metadata__": null | {str: str} }
class HeaderSax : public nlohmann::json_sax<Json> {
 public:
  explicit HeaderSax(const std::string& source) : source_(source) {}

  SafetensorsHeader header;

  bool null() override { return scalar("null", [&] {
      if (state_ == State::metadata_value_pending) { state_ = State::root; return true; }
      return false;
    }); }
  bool boolean(bool) override { return scalar("a boolean", [] { return false; }); }
  bool number_integer(number_integer_t v) override {
    if (v < 0) return scalar("a negative number (" + std::to_string(v) + ")", [] { return false; });
    return number(static_cast<uint64_t>(v));
  }
  bool number_unsigned(number_unsigned_t v) override { return number(v); }
  bool number_float(number_float_t, const string_t& s) override {
    return scalar("a non-integer number (" + s + ")", [] { return false; });
  }
  bool string(string_t& s) override {
    return scalar("a string", [&] {
      if (state_ == State::entry_value_pending && field_ == Field::dtype) {
        entry_.dtype = std::move(s);
        state_ = State::entry;
        return true;
      }
      if (state_ == State::metadata_entry_value) {
        header.metadata.emplace(std::move(meta_key_), std::move(s));
        state_ = State::metadata;
        return true;
      }
      return false;
    });
  }
  bool binary(binary_t&) override { return scalar("binary data", [] { return false; }); }

  bool start_object(std::size_t) override {
    if (skip_depth_ > 0) return push_skip();
    switch (state_) {
      case State::start: state_ = State::root; return true;
      case State::metadata_value_pending: state_ = State::metadata; return true;
      case State::tensor_value_pending:
        state_ = State::entry;
        entry_fields_.clear();
        return true;
      case State::entry_value_pending:
        if (field_ == Field::other) return push_skip();
        break;
      default: break;
    }
    return unexpected("an object");
  }
  bool key(string_t& k) override {
    if (skip_depth_ > 0) return true;
    switch (state_) {
      case State::root:
        if (!names_.insert(k).second) fail(source_, "duplicate key " + squote(k) + " in the header");
        if (k == "__metadata__") {
          state_ = State::metadata_value_pending;
        } else {
          if (header.entries.size() >= kMaxTensors)
            fail(source_, "more than " + std::to_string(kMaxTensors) + " tensors in the header");
          entry_ = SafetensorsEntry{};
          entry_.name = k;
          seen_dtype_ = seen_shape_ = seen_offsets_ = false;
          state_ = State::tensor_value_pending;
        }
        return true;
      case State::entry:
        if (!entry_fields_.insert(k).second)
          fail(source_, "tensor " + squote(entry_.name) + " has a duplicate key " + squote(k));
        if (k == "dtype") {
          field_ = Field::dtype;
          seen_dtype_ = true;
        } else if (k == "shape") {
          field_ = Field::shape;
          seen_shape_ = true;
        } else if (k == "data_offsets") {
          field_ = Field::offsets;
          seen_offsets_ = true;
        } else {
          field_ = Field::other;  // unknown fields are ignored, as the reference reader does
        }
        state_ = State::entry_value_pending;
        return true;
      case State::metadata:
        if (!meta_keys_.insert(k).second) fail(source_, "__metadata__ has a duplicate key " + squote(k));
        meta_key_ = k;
        state_ = State::metadata_entry_value;
        return true;
      default: break;
    }
    return unexpected("a key");  // not reached: keys come only inside objects
  }
  bool end_object() override {
    if (skip_depth_ > 0) return pop_skip();
    switch (state_) {
      case State::root: state_ = State::done; return true;
      case State::metadata: state_ = State::root; return true;
      case State::entry: finish_entry(); state_ = State::root; return true;
      default: break;
    }
    return unexpected("the end of an object");
  }
  bool start_array(std::size_t) override {
    if (skip_depth_ > 0) return push_skip();
    if (state_ == State::entry_value_pending) {
      if (field_ == Field::shape) { state_ = State::shape; entry_.shape.clear(); return true; }
      if (field_ == Field::offsets) { state_ = State::offsets; offsets_.clear(); return true; }
      if (field_ == Field::other) return push_skip();
    }
    return unexpected("an array");
  }
  bool end_array() override {
    if (skip_depth_ > 0) return pop_skip();
    if (state_ == State::shape) { state_ = State::entry; return true; }
    if (state_ == State::offsets) {
      if (offsets_.size() != 2)
        fail(source_, "tensor " + squote(entry_.name) + " has " + std::to_string(offsets_.size()) +
                          " data_offsets, expected 2 ([begin, end])");
      entry_.begin = offsets_[0];
      entry_.end = offsets_[1];
      state_ = State::entry;
      return true;
    }
    return unexpected("the end of an array");
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) override {
    fail(source_, std::string("invalid JSON in the header: ") + ex.what());
  }

  bool complete() const { return state_ == State::done; }

 private:
  enum class State {
    start, root, done,
    tensor_value_pending,             // after a tensor name
    entry, entry_value_pending,       // inside a tensor's object
    shape, offsets,                   // inside its arrays
    metadata_value_pending, metadata, metadata_entry_value,
  };
  enum class Field { dtype, shape, offsets, other };

  bool push_skip() {
    if (++skip_depth_ > kMaxDepth) fail(source_, "the header is nested more than " + std::to_string(kMaxDepth) + " deep");
    return true;
  }
  bool pop_skip() {
    if (--skip_depth_ == 0) state_ = State::entry;  // the ignored field's value is complete
    return true;
  }

  // A scalar value: inside an ignored field it is dropped; else `accept` decides.
  template <class F>
  bool scalar(const std::string& what, F&& accept) {
    if (skip_depth_ > 0) return true;
    if (state_ == State::entry_value_pending && field_ == Field::other) { state_ = State::entry; return true; }
    if (accept()) return true;
    return unexpected(what);
  }

  bool number(uint64_t v) {
    if (skip_depth_ > 0) return true;
    if (state_ == State::entry_value_pending && field_ == Field::other) { state_ = State::entry; return true; }
    if (state_ != State::shape && state_ != State::offsets) return unexpected("a number (" + std::to_string(v) + ")");
    if (v > kMaxInteger)
      fail(source_, "tensor " + squote(entry_.name) + " has " + (state_ == State::shape ? "a dimension" : "an offset") +
                        " of " + std::to_string(v) + ", more than 2^53");
    if (state_ == State::shape) {
      if (entry_.shape.size() >= kMaxRank)
        fail(source_, "tensor " + squote(entry_.name) + " has rank > " + std::to_string(kMaxRank));
      entry_.shape.push_back(static_cast<int64_t>(v));
    } else {
      if (offsets_.size() >= 2)
        fail(source_, "tensor " + squote(entry_.name) + " has more than 2 data_offsets, expected [begin, end]");
      offsets_.push_back(v);
    }
    return true;
  }

  // A value of the wrong kind for where it is: the message says where.
  [[noreturn]] bool unexpected(const std::string& what) {
    switch (state_) {
      case State::start: fail(source_, "the header is " + what + ", expected a JSON object");
      case State::tensor_value_pending:
        fail(source_, "tensor " + squote(entry_.name) + " is " + what + ", expected an object with dtype, shape, data_offsets");
      case State::entry_value_pending: {
        const char* name = field_ == Field::dtype ? "dtype" : field_ == Field::shape ? "shape" : "data_offsets";
        const char* want = field_ == Field::dtype ? "a string" : field_ == Field::shape
                                                                      ? "an array of non-negative integers"
                                                                      : "an array [begin, end]";
        fail(source_, "tensor " + squote(entry_.name) + ": '" + name + "' is " + what + ", expected " + want);
      }
      case State::shape:
        fail(source_, "tensor " + squote(entry_.name) + ": a shape element is " + what + ", expected a non-negative integer");
      case State::offsets:
        fail(source_, "tensor " + squote(entry_.name) + ": a data_offsets element is " + what +
                          ", expected a non-negative integer");
      case State::metadata_value_pending: fail(source_, "__metadata__ is " + what + ", expected an object of strings");
      case State::metadata_entry_value:
        fail(source_, "__metadata__ value for key " + squote(meta_key_) + " is " + what + ", expected a string");
      default: fail(source_, "unexpected " + what + " in the header");
    }
  }

  void finish_entry() {
    const std::string name = squote(entry_.name);
    if (!seen_dtype_) fail(source_, "tensor " + name + " has no 'dtype'");
    if (!seen_shape_) fail(source_, "tensor " + name + " has no 'shape'");
    if (!seen_offsets_) fail(source_, "tensor " + name + " has no 'data_offsets'");
    const size_t esize = safetensors_dtype_size(entry_.dtype);
    if (esize == 0) fail(source_, "tensor " + name + " has an unknown or unsupported dtype " + squote(entry_.dtype));
    if (entry_.begin > entry_.end)
      fail(source_, "tensor " + name + " has data_offsets [" + std::to_string(entry_.begin) + ", " +
                        std::to_string(entry_.end) + "] with begin after end");
    uint64_t bytes = esize;
    bool overflow = false;
    for (int64_t d : entry_.shape) overflow = overflow || __builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes);
    // Even with no byte overflow the element count must fit an int64 (it does: bytes >= count).
    if (overflow || bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(source_, "tensor " + name + " has shape " + shape_string(entry_.shape) + " of " + entry_.dtype +
                        " whose byte count overflows 64 bits");
    if (entry_.end - entry_.begin != bytes)
      fail(source_, "tensor " + name + " has data_offsets [" + std::to_string(entry_.begin) + ", " +
                        std::to_string(entry_.end) + "] but shape " + shape_string(entry_.shape) + " of " +
                        entry_.dtype + " needs " + std::to_string(bytes) + " bytes");
    header.entries.push_back(std::move(entry_));
  }

  const std::string& source_;
  State state_ = State::start;
  Field field_ = Field::other;
  size_t skip_depth_ = 0;
  SafetensorsEntry entry_;
  std::vector<uint64_t> offsets_;
  bool seen_dtype_ = false, seen_shape_ = false, seen_offsets_ = false;
  std::set<std::string> names_, entry_fields_, meta_keys_;
  std::string meta_key_;
};

}  // namespace

size_t safetensors_dtype_size(const std::string& dtype) {
  static const std::pair<const char*, size_t> sizes[] = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},
      {"I16", 2}, {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  for (const auto& [name, size] : sizes)
    if (dtype == name) return size;
  return 0;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t available, uint64_t file_size,
                                           const std::string& source) {
  if (file_size < 8)
    fail(source, "file is " + std::to_string(file_size) + " bytes, too short for a safetensors file (the header length alone is 8)");
  if (bytes == nullptr || available < 8)
    fail(source, "only " + std::to_string(available) + " bytes given, the header length needs 8");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian
  if (n > kMaxHeaderBytes)
    fail(source, "header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) +
                     " bytes (not a safetensors file, or a corrupt one)");
  if (n > file_size - 8)
    fail(source, "header length " + std::to_string(n) + " is larger than the " + std::to_string(file_size - 8) +
                     " bytes that follow it in the file (truncated file?)");
  if (available - 8 < n)
    fail(source, "header length " + std::to_string(n) + " but only " + std::to_string(available - 8) +
                     " header bytes given");

  HeaderSax sax(source);
  const char* first = reinterpret_cast<const char*>(bytes + 8);
  bool ok = false;
  try {
    ok = Json::sax_parse(first, first + n, &sax, nlohmann::json::input_format_t::json, /*strict=*/true);
  } catch (const nlohmann::json::exception& e) {
    fail(source, std::string("invalid JSON in the header: ") + e.what());
  }
  if (!ok || !sax.complete()) fail(source, "invalid JSON in the header");

  SafetensorsHeader header = std::move(sax.header);
  header.data_start = 8 + n;
  const uint64_t data_size = file_size - header.data_start;
  auto range = [](const SafetensorsEntry& e) {
    return "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  };
  for (const SafetensorsEntry& e : header.entries)
    if (e.end > data_size)
      fail(source, "tensor " + squote(e.name) + " has data_offsets " + range(e) + " outside the data section of " +
                       std::to_string(data_size) + " bytes (truncated file?)");
  std::sort(header.entries.begin(), header.entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  // Contiguous cover of [0, data_size): each tensor starts where the previous one ended.
  uint64_t covered = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry& e : header.entries) {
    if (e.begin < covered)
      fail(source, "tensor " + squote(e.name) + " with data_offsets " + range(e) + " overlaps tensor " +
                       squote(previous->name) + " with data_offsets " + range(*previous));
    if (e.begin > covered)
      fail(source, "the data section has a hole: bytes [" + std::to_string(covered) + ", " + std::to_string(e.begin) +
                       ") before tensor " + squote(e.name) + " belong to no tensor");
    covered = e.end;
    previous = &e;
  }
  if (covered != data_size)
    fail(source, "the data section has " + std::to_string(data_size - covered) + " bytes after the last tensor's end (" +
                     std::to_string(covered) + " of " + std::to_string(data_size) + " bytes used)");
  return header;
}

}  // namespace drb::models
