// Plain structs <-> JSON through one key list per struct (internal to the library).
//
// A struct lists its JSON keys once, in `fields(record, visitor)`: `v("key", member)` per key, in
// order. Reading (JSON -> struct, unknown keys are errors), writing (struct -> JSON) and any other
// walk use that one list, so a key cannot be written and forgotten when read. Every error names
// the value's JSON path ("buildings[0].floors: must be an integer, got string").
//
// A file adds its own types by declaring, in this namespace, overloads of `fields(S&, V&&)`,
// `read(const Node&, T&)` and `write(Writer, const T&)`: the templates below find them by
// argument-dependent lookup, through the visitors, Node and Writer, which live here. Everything
// is in an unnamed namespace so that two files' overloads for the same type cannot meet at link
// time (each translation unit gets its own copy of these templates).
#pragma once

#include <nlohmann/json.hpp>

#include <climits>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "derrumbe/core/error.hpp"

namespace drb::json_fields {
namespace {

using json = nlohmann::ordered_json;  // keeps keys in document (and writing) order

[[noreturn]] inline void fail(const std::string& path, const std::string& what) {
  throw Error(ErrorCode::invalid_argument, path + ": " + what);
}
inline void require(bool ok, const std::string& path, const std::string& what) {
  if (!ok) fail(path, what);
}
inline std::string member(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}
inline std::string element(const std::string& path, size_t i) { return path + "[" + std::to_string(i) + "]"; }
inline std::string in_quotes(const std::string& s) { return json(s).dump(); }
template <class Range>
std::string join(const Range& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + std::string(item);
  return out;
}

// `fields` accepts the struct const (writing) and not (reading): `template <Is<Foo> S, class V>`.
template <class S, class T>
concept Is = std::same_as<std::remove_const_t<S>, T>;

template <class T>
concept Record = requires(T& t) { fields(t, [](const char*, auto&) {}); };

// ---- reading: JSON -> struct -----------------------------------------------------------------

// A JSON value and its path in the document.
struct Node {
  const json& value;
  std::string path;

  // "must be a number, got string"; a number is shown with its value ("got number 2.5").
  void expect(bool ok, const std::string& kind) const {
    if (ok) return;
    // Appended piece by piece: GCC 12 warns (falsely, -Wstringop-overflow) on the one-line form.
    std::string what = "must be ";
    what.append(kind).append(", got ").append(value.type_name());
    if (value.is_number()) what.append(" ").append(value.dump());
    fail(path, what);
  }
};

// Infinities are not JSON numbers: they are read from (and written as) the strings "inf", "-inf".
inline void read(const Node& n, double& out) {
  if (n.value.is_string() && (n.value == "inf" || n.value == "-inf")) {
    out = n.value == "inf" ? INFINITY : -INFINITY;
    return;
  }
  n.expect(n.value.is_number(), "a number");
  out = n.value.get<double>();
}

inline void read(const Node& n, bool& out) {
  n.expect(n.value.is_boolean(), "a boolean");
  out = n.value.get<bool>();
}

inline void read(const Node& n, std::string& out) {
  n.expect(n.value.is_string(), "a string");
  out = n.value.get<std::string>();
}

// An integer in [lo, hi]; 3.0 reads as 3, 2.5 is an error.
inline int64_t read_integer(const Node& n, int64_t lo, int64_t hi) {
  const json& v = n.value;
  n.expect(v.is_number(), "an integer");
  const auto out_of_range = [&] { fail(n.path, "integer out of range, got " + v.dump()); };
  if (v.is_number_float()) {
    const double d = v.get<double>();
    n.expect(d == std::trunc(d), "an integer");
    if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi))) out_of_range();
    return static_cast<int64_t>(d);
  }
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) out_of_range();
  const int64_t i = v.get<int64_t>();
  if (i < lo || i > hi) out_of_range();
  return i;
}
inline void read(const Node& n, int& out) { out = static_cast<int>(read_integer(n, INT_MIN, INT_MAX)); }
inline void read(const Node& n, int64_t& out) { out = read_integer(n, INT64_MIN, INT64_MAX); }

inline void read(const Node& n, uint64_t& out) {
  const json& v = n.value;
  n.expect(v.is_number_unsigned() || (v.is_number_float() && v.get<double>() >= 0 &&
                                      v.get<double>() == std::trunc(v.get<double>()) && v.get<double>() < 0x1p64),
           "a non-negative integer");
  out = v.is_number_unsigned() ? v.get<uint64_t>() : static_cast<uint64_t>(v.get<double>());
}

template <class T>
void read(const Node& n, std::vector<T>& out) {
  n.expect(n.value.is_array(), "an array");
  out.assign(n.value.size(), T{});
  for (size_t i = 0; i < out.size(); ++i) read(Node{n.value[i], element(n.path, i)}, out[i]);
}

// null is "not set".
template <class T>
void read(const Node& n, std::optional<T>& out) {
  if (n.value.is_null()) {
    out.reset();
    return;
  }
  T value{};
  read(n, value);
  out = std::move(value);
}

// A JSON array of exactly `size` elements of one kind (vectors, bays).
template <class T>
void read_fixed(const Node& n, T* out, size_t size, const std::string& kind) {
  n.expect(n.value.is_array() && n.value.size() == size, "an array of " + std::to_string(size) + " " + kind);
  for (size_t i = 0; i < size; ++i) read(Node{n.value[i], element(n.path, i)}, out[i]);
}

// An object being read: records which keys were asked for, so that finish() can report the rest
// as unknown.
class ObjectReader {
 public:
  explicit ObjectReader(const Node& node) : node_(node) { node.expect(node.value.is_object(), "an object"); }

  template <class T>
  void field(const std::string& key, T& out) {
    known_.insert(key);
    const auto it = node_.value.find(key);
    if (it != node_.value.end()) read(Node{*it, member(node_.path, key)}, out);
  }

  // `explain(key)` may return a message for a key that is not known here ("" = unknown key).
  void finish(const std::function<std::string(const std::string&)>& explain = {}) const {
    for (const auto& item : node_.value.items()) {
      if (known_.count(item.key())) continue;
      const std::string why = explain ? explain(item.key()) : "";
      fail(member(node_.path, item.key()), why.empty() ? "unknown key" : why);
    }
  }

 private:
  const Node& node_;
  std::set<std::string> known_;
};

// Reads every key of `out`'s list that the object has; returns the reader for finish().
template <Record T>
ObjectReader read_fields(const Node& n, T& out) {
  ObjectReader object(n);
  fields(out, [&](const char* key, auto& value) { object.field(key, value); });
  return object;
}

template <Record T>
void read(const Node& n, T& out) {
  read_fields(n, out).finish();
}

// ---- writing: struct -> JSON -----------------------------------------------------------------

// Selects the overloads of this file (and of the files that add to it) by argument-dependent lookup.
struct Writer {};

inline json write(Writer, double v) { return std::isinf(v) ? json(v > 0 ? "inf" : "-inf") : json(v); }
inline json write(Writer, bool v) { return v; }
inline json write(Writer, int v) { return v; }
inline json write(Writer, int64_t v) { return v; }
inline json write(Writer, uint64_t v) { return v; }
inline json write(Writer, const std::string& v) { return v; }

template <class T>
json write(Writer w, const std::vector<T>& items) {
  json out = json::array();
  for (const T& item : items) out.push_back(write(w, item));
  return out;
}

template <class T>
json write(Writer w, const std::optional<T>& v) {
  return v ? write(w, *v) : json(nullptr);
}

template <Record T>
json write(Writer w, const T& record) {
  json out = json::object();
  fields(record, [&](const char* key, const auto& value) { out[key] = write(w, value); });
  return out;
}

}  // namespace
}  // namespace drb::json_fields
