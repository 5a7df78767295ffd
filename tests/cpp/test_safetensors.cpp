#include "derrumbe/models/safetensors.hpp"

#include <ATen/ATen.h>
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "checks.hpp"

#ifndef DRB_PYTHON_EXECUTABLE
#define DRB_PYTHON_EXECUTABLE "python3"
#endif

namespace fs = std::filesystem;
using drb::ErrorCode;
using drb::test::expect_error;
using namespace drb::models;

namespace {

// A fresh directory, removed with its contents at the end of the scope.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("drb_safetensors_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A safetensors file from a header text (unpadded, as given) and data bytes.
std::string make_st(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

SafetensorsHeader parse(const std::string& bytes, const std::string& source = "test.safetensors") {
  return parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), bytes.size(), source);
}

std::string dtype_of(const at::Tensor& t) { return c10::toString(t.scalar_type()); }

// Same dtype, shape and bytes (works for every dtype, float8 included).
void check_same_tensor(const at::Tensor& a, const at::Tensor& b, const std::string& name) {
  INFO("tensor " << name);
  REQUIRE(a.defined());
  REQUIRE(b.defined());
  CHECK(dtype_of(a) == dtype_of(b));
  CHECK(a.sizes().vec() == b.sizes().vec());
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return;
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  CHECK(std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0);
}

// The tensors both the C++ tests and the Python scripts build, from formulas exact in every dtype.
std::vector<std::pair<std::string, at::Tensor>> reference_tensors() {
  const auto f = at::TensorOptions().dtype(at::kFloat);
  return {
      {"f32", at::arange(12, f).reshape({3, 4}) / 8 - 0.5},
      {"f16", (at::arange(6, f) / 4 - 1).to(at::kHalf)},
      {"bf16", (at::arange(6, f) / 4 - 1).reshape({2, 3}).to(at::kBFloat16)},
      {"f64", at::arange(5, at::TensorOptions().dtype(at::kDouble)) / 3},
      {"i64", at::arange(-3, 3, at::TensorOptions().dtype(at::kLong)) * (int64_t{1} << 40)},
      {"i32", at::arange(-5, 5, at::TensorOptions().dtype(at::kInt)) * 1000},
      {"i16", at::arange(-4, 4, at::TensorOptions().dtype(at::kShort)) * 300},
      {"i8", at::arange(-128, 128, 37, at::TensorOptions().dtype(at::kLong)).to(at::kChar)},
      {"u8", at::arange(0, 256, 17, at::TensorOptions().dtype(at::kLong)).to(at::kByte)},
      {"bool", at::arange(5, at::TensorOptions().dtype(at::kLong)).remainder(2) == 0},
      {"f8e4m3", (at::arange(4, f) / 2 - 1).to(at::kFloat8_e4m3fn)},
      {"f8e5m2", (at::arange(4, f) * 2 - 3).to(at::kFloat8_e5m2)},
      {"empty", at::empty({0, 3}, f)},
      {"scalar", at::scalar_tensor(2.5, f)},
  };
}

const char* kPythonReference = R"PY(
import sys, torch
def reference():
    f = torch.float32
    return {
        "f32": torch.arange(12, dtype=f).reshape(3, 4) / 8 - 0.5,
        "f16": (torch.arange(6, dtype=f) / 4 - 1).to(torch.float16),
        "bf16": (torch.arange(6, dtype=f) / 4 - 1).reshape(2, 3).to(torch.bfloat16),
        "f64": torch.arange(5, dtype=torch.float64) / 3,
        "i64": torch.arange(-3, 3, dtype=torch.int64) * (1 << 40),
        "i32": torch.arange(-5, 5, dtype=torch.int32) * 1000,
        "i16": torch.arange(-4, 4, dtype=torch.int16) * 300,
        "i8": torch.arange(-128, 128, 37).to(torch.int8),
        "u8": torch.arange(0, 256, 17).to(torch.uint8),
        "bool": torch.arange(5) % 2 == 0,
        "f8e4m3": (torch.arange(4, dtype=f) / 2 - 1).to(torch.float8_e4m3fn),
        "f8e5m2": (torch.arange(4, dtype=f) * 2 - 3).to(torch.float8_e5m2),
        "empty": torch.empty(0, 3),
        "scalar": torch.tensor(2.5),
    }
META = {"format": "pt", "note": "derrumbe \u00e9"}
mode, path = sys.argv[1], sys.argv[2]
if mode == "write":
    from safetensors.torch import save_file
    save_file(reference(), path, metadata=META)
else:
    from safetensors import safe_open
    ref = reference()
    with safe_open(path, framework="pt") as f:
        assert sorted(f.keys()) == sorted(ref), (sorted(f.keys()), sorted(ref))
        assert f.metadata() == META, f.metadata()
        for k, want in ref.items():
            got = f.get_tensor(k)
            assert got.dtype == want.dtype, (k, got.dtype, want.dtype)
            assert got.shape == want.shape, (k, got.shape, want.shape)
            assert torch.equal(got.view(torch.uint8) if got.dim() else got.reshape(1).view(torch.uint8),
                               want.view(torch.uint8) if want.dim() else want.reshape(1).view(torch.uint8)), k
    print("python safetensors read derrumbe's file: OK")
)PY";

bool python_safetensors_available() {
  const std::string cmd = std::string("\"") + DRB_PYTHON_EXECUTABLE +
                          "\" -c \"import torch, safetensors.torch\" >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

int run_python(const TempDir& dir, const std::string& mode, const std::string& file) {
  const std::string script = dir / "reference.py";
  write_file(script, kPythonReference);
  const std::string cmd = std::string("\"") + DRB_PYTHON_EXECUTABLE + "\" \"" + script + "\" " + mode + " \"" + file + "\"";
  return std::system(cmd.c_str());
}

std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const drb::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("safetensors: every supported dtype round trips, with an empty tensor, a scalar and metadata") {
  TempDir dir;
  auto tensors = reference_tensors();
  tensors.emplace_back("transposed", at::arange(12, at::TensorOptions().dtype(at::kFloat)).reshape({3, 4}).t());
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"empty", ""}, {"unicode", "d\xc3\xa9" "bris"}};
  const std::string path = dir / "all.safetensors";
  save_safetensors(path, tensors, metadata);
  CHECK_FALSE(fs::exists(path + ".tmp"));

  const SafetensorsFile file = SafetensorsFile::open(path);
  CHECK(file.path() == path);
  CHECK(file.metadata() == metadata);
  REQUIRE(file.entries().size() == tensors.size());
  for (const auto& [name, t] : tensors) {
    REQUIRE(file.contains(name));
    const SafetensorsEntry& e = file.entry(name);
    CHECK(e.shape == t.sizes().vec());
    CHECK(e.begin % safetensors_dtype_size(e.dtype) == 0);  // the writer keeps every tensor aligned
    check_same_tensor(file.tensor(name), t, name);
  }
  CHECK(file.entry("bf16").dtype == "BF16");
  CHECK(file.entry("bool").dtype == "BOOL");
  CHECK(file.entry("f8e4m3").dtype == "F8_E4M3");
  CHECK(file.entry("scalar").shape.empty());
  CHECK(file.tensor("scalar").dim() == 0);
  CHECK(file.tensor("empty").numel() == 0);

  // The layout the reference writer uses: header padded with spaces to a multiple of 8.
  const std::string bytes = read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  CHECK((8 + n) % 8 == 0);
  CHECK(file.entries().front().begin == 0);
  CHECK(bytes.size() == 8 + n + file.entries().back().end);
}

TEST_CASE("safetensors: a tensor in the stored dtype is a view on the mapping that keeps it alive") {
  TempDir dir;
  const std::string path = dir / "w.safetensors";
  const at::Tensor w = at::randn({64, 32});
  save_safetensors(path, {{"w", w}, {"b", at::randn({32}).to(at::kHalf)}});
  at::Tensor view;
  {
    const SafetensorsFile file = SafetensorsFile::open(path);
    const at::Tensor a = file.tensor("w"), b = file.tensor("w"), c = file.tensor("w", at::kFloat);
    CHECK(a.data_ptr() == b.data_ptr());  // no copy
    CHECK(a.data_ptr() == c.data_ptr());  // asking for the stored dtype is no conversion
    CHECK(file.tensor("w", at::kDouble).data_ptr() != a.data_ptr());
    // The view points at the bytes at data_start + begin of the file.
    const std::string bytes = read_file(path);
    const SafetensorsEntry& e = file.entry("w");
    CHECK(std::memcmp(a.data_ptr(), bytes.data() + parse(bytes).data_start + e.begin, e.end - e.begin) == 0);
    view = a;
  }
  // The SafetensorsFile is gone; the view still reads the mapping.
  CHECK(at::equal(view, w));
  // Writing into a view is copy-on-write: the file does not change.
  view.fill_(7.0f);
  CHECK(at::equal(SafetensorsFile::open(path).tensor("w"), w));
  view.reset();

  // Overwriting the file (write + rename) leaves views on the old file valid.
  const SafetensorsFile old_file = SafetensorsFile::open(path);
  const at::Tensor old_view = old_file.tensor("w");
  const at::Tensor w2 = at::randn({3});
  save_safetensors(path, {{"w", w2}});
  CHECK(at::equal(old_view, w));
  CHECK(at::equal(SafetensorsFile::open(path).tensor("w"), w2));
}

TEST_CASE("safetensors: conversion on read") {
  TempDir dir;
  const std::string path = dir / "c.safetensors";
  const at::Tensor h = (at::randn({1000}) * 100).to(at::kHalf);
  const at::Tensor bf = at::randn({100}).to(at::kBFloat16);
  const at::Tensor i = at::arange(-50, 50, at::TensorOptions().dtype(at::kInt));
  const at::Tensor f8 = at::randn({16}).to(at::kFloat8_e4m3fn);
  const at::Tensor flags = at::randn({10}) > 0;
  save_safetensors(path, {{"h", h}, {"bf", bf}, {"i", i}, {"f8", f8}, {"flags", flags}, {"f", at::randn({4})}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  const at::Tensor h32 = file.tensor("h", at::kFloat);
  CHECK(dtype_of(h32) == "Float");
  CHECK(at::equal(h32, h.to(at::kFloat)));  // F16 -> F32 is exact
  CHECK(at::equal(file.tensor("bf", at::kDouble), bf.to(at::kDouble)));
  CHECK(at::equal(file.tensor("i", at::kFloat), i.to(at::kFloat)));
  CHECK(at::equal(file.tensor("i", at::kLong), i.to(at::kLong)));
  CHECK(at::equal(file.tensor("f8", at::kFloat), f8.to(at::kFloat)));
  CHECK(at::equal(file.tensor("flags", at::kFloat), flags.to(at::kFloat)));
  expect_error([&] { file.tensor("f", at::kLong); }, ErrorCode::invalid_argument, {"'f'", path, "F32"});
  expect_error([&] { file.tensor("h", at::kInt); }, ErrorCode::invalid_argument, {"'h'", "F16"});
  expect_error([&] { file.tensor("missing"); }, ErrorCode::not_found, {"'missing'", path});
  expect_error([&] { file.entry("missing"); }, ErrorCode::not_found, {"'missing'", path});
}

TEST_CASE("safetensors: misaligned data is copied, aligned data is a view; extra fields are ignored") {
  TempDir dir;
  // An unpadded header of odd length and a 1-byte tensor first: the F32 tensor is misaligned.
  float values[2] = {1.5f, -2.0f};
  std::string data(1, '\x05');
  data.append(reinterpret_cast<const char*>(values), sizeof(values));
  std::string header =
      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"note":{"x":[1,[2.5,null]]}},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  while ((8 + header.size() + 1) % 4 != 2) header += ' ';  // "b" starts 2 bytes past a multiple of 4
  const std::string path = dir / "odd.safetensors";
  write_file(path, make_st(header, data));
  const SafetensorsFile file = SafetensorsFile::open(path);
  const at::Tensor b = file.tensor("b");
  CHECK(reinterpret_cast<uintptr_t>(b.data_ptr()) % 4 == 0);
  CHECK(b[0].item<float>() == 1.5f);
  CHECK(b[1].item<float>() == -2.0f);
  CHECK(file.tensor("a").item<uint8_t>() == 5);
  CHECK(file.tensor("b").data_ptr() != b.data_ptr());  // copies
}

TEST_CASE("safetensors: files without tensors and with empty tensors") {
  TempDir dir;
  const std::string only_meta = dir / "meta.safetensors";
  save_safetensors(only_meta, {}, {{"k", "v"}});
  const SafetensorsFile m = SafetensorsFile::open(only_meta);
  CHECK(m.entries().empty());
  CHECK(m.metadata().at("k") == "v");
  // Empty tensors at the start, in the middle and at the end of the data section.
  const std::string header =
      R"({"e0":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"x":{"dtype":"I16","shape":[2],"data_offsets":[0,4]},)"
      R"("e1":{"dtype":"I64","shape":[3,0,2],"data_offsets":[4,4]},"__metadata__":null})";
  const std::string path = dir / "empties.safetensors";
  write_file(path, make_st(header, std::string("\x01\x00\x02\x00", 4)));
  const SafetensorsFile f = SafetensorsFile::open(path);
  CHECK(f.tensor("e1").sizes().vec() == std::vector<int64_t>{3, 0, 2});
  CHECK(dtype_of(f.tensor("e1")) == "Long");
  CHECK(f.tensor("e0", at::kDouble).numel() == 0);
  CHECK(f.tensor("x")[1].item<int16_t>() == 2);
}

TEST_CASE("safetensors: sharded checkpoints through an index JSON and through a directory") {
  TempDir dir;
  const at::Tensor a = at::randn({4, 4}), b = at::randn({3}).to(at::kBFloat16), c = at::arange(10);
  save_safetensors(dir / "model-00001-of-00002.safetensors", {{"blocks.0.a", a}, {"blocks.0.b", b}});
  save_safetensors(dir / "model-00002-of-00002.safetensors", {{"head.c", c}});
  write_file(dir / "model.safetensors.index.json",
             R"({"metadata": {"total_size": 150}, "weight_map": {"blocks.0.a": "model-00001-of-00002.safetensors",)"
             R"("blocks.0.b": "model-00001-of-00002.safetensors", "head.c": "model-00002-of-00002.safetensors"}})");
  for (const std::string& path : {dir / "model.safetensors.index.json", dir.path.string()}) {
    INFO("open " << path);
    const Checkpoint ck = Checkpoint::open(path);
    CHECK(ck.names() == std::vector<std::string>{"blocks.0.a", "blocks.0.b", "head.c"});
    CHECK(ck.contains("head.c"));
    CHECK_FALSE(ck.contains("nope"));
    CHECK(ck.entry("blocks.0.b").dtype == "BF16");
    CHECK(at::equal(ck.tensor("blocks.0.a"), a));
    CHECK(at::equal(ck.tensor("blocks.0.b"), b));
    CHECK(at::equal(ck.tensor("head.c"), c));
    CHECK(at::equal(ck.tensor("blocks.0.b", at::kFloat), b.to(at::kFloat)));
    expect_error([&] { ck.tensor("nope"); }, ErrorCode::not_found, {"'nope'"});
    expect_error([&] { ck.entry("nope"); }, ErrorCode::not_found, {"'nope'"});
  }
  // One .safetensors file, directly or as the only one in a directory.
  const Checkpoint single = Checkpoint::open(dir / "model-00002-of-00002.safetensors");
  CHECK(single.names() == std::vector<std::string>{"head.c"});
  TempDir one;
  save_safetensors(one / "diffusion_pytorch_model.safetensors", {{"x", a}});
  CHECK(Checkpoint::open(one.path.string()).names() == std::vector<std::string>{"x"});
}

TEST_CASE("safetensors: broken checkpoints are errors naming what is wrong") {
  TempDir dir;
  save_safetensors(dir / "s1.safetensors", {{"a", at::randn({2})}, {"b", at::randn({2})}});
  save_safetensors(dir / "s2.safetensors", {{"c", at::randn({2})}, {"a", at::randn({1})}});
  auto index = [&](const std::string& name, const std::string& text) {
    write_file(dir / name, text);
    return dir / name;
  };
  const std::string missing_shard = index("m.json", R"({"weight_map": {"a": "s1.safetensors", "z": "gone.safetensors"}})");
  expect_error([&] { Checkpoint::open(missing_shard); }, ErrorCode::file_not_found, {missing_shard, "gone.safetensors", "'z'"});
  const std::string missing_tensor = index("t.json", R"({"weight_map": {"a": "s1.safetensors", "q": "s1.safetensors"}})");
  expect_error([&] { Checkpoint::open(missing_tensor); }, ErrorCode::parse, {missing_tensor, "'q'", "s1.safetensors"});
  const std::string duplicate = index("d.json", R"({"weight_map": {"a": "s1.safetensors", "c": "s2.safetensors"}})");
  expect_error([&] { Checkpoint::open(duplicate); }, ErrorCode::parse, {"'a'", "s1.safetensors", "s2.safetensors"});
  const std::string no_map = index("n.json", R"({"metadata": {}})");
  expect_error([&] { Checkpoint::open(no_map); }, ErrorCode::parse, {no_map, "weight_map"});
  const std::string dup_key = index("k.json", R"({"weight_map": {"a": "s1.safetensors", "a": "s1.safetensors"}})");
  expect_error([&] { Checkpoint::open(dup_key); }, ErrorCode::parse, {dup_key, "duplicate", "'a'"});
  const std::string bad_json = index("b.json", R"({"weight_map": {"a": )");
  expect_error([&] { Checkpoint::open(bad_json); }, ErrorCode::parse, {bad_json});
  const std::string not_string = index("x.json", R"({"weight_map": {"a": 3}})");
  expect_error([&] { Checkpoint::open(not_string); }, ErrorCode::parse, {not_string, "'a'"});
  expect_error([&] { Checkpoint::open(dir / "nothing.safetensors"); }, ErrorCode::file_not_found, {"nothing.safetensors"});
  // A directory with two .safetensors files and no index: ambiguous, listing both.
  expect_error([&] { Checkpoint::open(dir.path.string()); }, ErrorCode::invalid_argument,
               {dir.path.string(), "s1.safetensors", "s2.safetensors"});
  TempDir empty;
  expect_error([&] { Checkpoint::open(empty.path.string()); }, ErrorCode::not_found, {empty.path.string()});
  TempDir two_indexes;
  write_file(two_indexes / "a.safetensors.index.json", "{}");
  write_file(two_indexes / "b.safetensors.index.json", "{}");
  expect_error([&] { Checkpoint::open(two_indexes.path.string()); }, ErrorCode::invalid_argument,
               {"a.safetensors.index.json", "b.safetensors.index.json"});
}

TEST_CASE("safetensors: truncated files are parse errors naming the file") {
  TempDir dir;
  const std::string full = dir / "full.safetensors";
  save_safetensors(full, {{"w", at::randn({8, 8})}, {"b", at::randn({8}).to(at::kHalf)}}, {{"format", "pt"}});
  const std::string bytes = read_file(full);
  const uint64_t data_start = parse(bytes).data_start;
  std::vector<size_t> cuts;
  for (size_t n = 0; n <= 40; ++n) cuts.push_back(n);
  cuts.push_back(data_start - 1);
  cuts.push_back(data_start + (bytes.size() - data_start) / 2);
  cuts.push_back(bytes.size() - 1);
  for (size_t n : cuts) {
    INFO("cut at " << n << " of " << bytes.size());
    const std::string cut = dir / "cut.safetensors";
    write_file(cut, bytes.substr(0, n));
    expect_error([&] { SafetensorsFile::open(cut); }, ErrorCode::parse, {cut});
  }
  // Bytes appended after the last tensor are not allowed either (the data section must be covered).
  write_file(dir / "long.safetensors", bytes + "xx");
  expect_error([&] { SafetensorsFile::open(dir / "long.safetensors"); }, ErrorCode::parse, {"2 bytes after"});
  expect_error([&] { SafetensorsFile::open(dir / "absent.safetensors"); }, ErrorCode::file_not_found, {"absent.safetensors"});
  expect_error([&] { SafetensorsFile::open(dir.path.string()); }, ErrorCode::io, {dir.path.string(), "directory"});
}

TEST_CASE("safetensors: malformed headers are parse errors naming the source, the tensor and the problem") {
  const std::string src = "model.safetensors";
  auto bad = [&](const std::string& header, const std::string& data, const std::vector<std::string>& parts) {
    INFO("header: " << header);
    std::vector<std::string> all = parts;
    all.push_back(src + ": ");
    expect_error([&] { parse(make_st(header, data), src); }, ErrorCode::parse, all);
  };
  const std::string f32x2 = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  CHECK(parse(make_st(f32x2, std::string(8, '\0'))).entries.size() == 1);

  // The message the brief asks for, exactly.
  CHECK(error_message([&] {
          parse(make_st(R"({"blocks.0.w":{"dtype":"F32","shape":[5,6],"data_offsets":[0,100]}})", std::string(100, '\0')),
                src);
        }) == "model.safetensors: tensor 'blocks.0.w' has data_offsets [0, 100] but shape [5, 6] of F32 needs 120 bytes");

  // The length field.
  std::string huge(8, '\0');
  huge[5] = 1;  // 2^40
  expect_error([&] { parse(huge + "{}", src); }, ErrorCode::parse, {src, "header length 1099511627776", "limit"});
  expect_error([&] { parse(make_st(f32x2, "").substr(0, 20), src); }, ErrorCode::parse, {src, "larger than"});
  std::string longer = make_st("{}", "");
  longer[0] = 50;
  expect_error([&] { parse(longer, src); }, ErrorCode::parse, {src, "header length 50"});
  // JSON syntax and structure.
  bad("{\"w\": ", "", {"invalid JSON"});
  bad("", "", {"invalid JSON"});
  bad("{} x", "", {"invalid JSON"});
  bad("[]", "", {"expected a JSON object"});
  bad("\"w\"", "", {"expected a JSON object"});
  bad(R"({"w": [1]})", "", {"'w'", "is an array"});
  bad(R"({"w": {"dtype": 3, "shape": [], "data_offsets": [0, 4]}})", "", {"'w'", "'dtype'", "expected a string"});
  bad(R"({"w": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})", "", {"'w'", "'shape'"});
  bad(R"({"w": {"dtype": "F32", "shape": [[2]], "data_offsets": [0, 8]}})", "", {"'w'", "shape element"});
  bad(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": {"a": 0}}})", "", {"'w'", "'data_offsets'"});
  // Missing keys are named.
  bad(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", std::string(8, '\0'), {"'w'", "'dtype'"});
  bad(R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", std::string(8, '\0'), {"'w'", "'shape'"});
  bad(R"({"w": {"dtype": "F32", "shape": [2]}})", std::string(8, '\0'), {"'w'", "'data_offsets'"});
  // Dtypes.
  bad(R"({"w": {"dtype": "F12", "shape": [2], "data_offsets": [0, 8]}})", std::string(8, '\0'), {"'w'", "'F12'"});
  bad(R"({"w": {"dtype": "f32", "shape": [2], "data_offsets": [0, 8]}})", std::string(8, '\0'), {"'w'", "'f32'"});
  // Numbers: negative, fractional, beyond 2^53, beyond 64 bits, exponent notation.
  bad(R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", std::string(8, '\0'), {"'w'", "negative"});
  bad(R"({"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}})", std::string(8, '\0'), {"'w'", "non-integer"});
  bad(R"({"w": {"dtype": "F32", "shape": [2e0], "data_offsets": [0, 8]}})", std::string(8, '\0'), {"'w'", "non-integer"});
  bad(R"({"w": {"dtype": "U8", "shape": [9007199254740993], "data_offsets": [0, 8]}})", "", {"'w'", "2^53"});
  bad(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 18446744073709551616]}})", "", {"'w'", "non-integer"});
  bad(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}})", "", {"'w'", "negative"});
  // Shapes whose byte count overflows, rank.
  bad(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 4], "data_offsets": [0, 0]}})", "",
      {"'w'", "[4294967296, 4294967296, 4]", "overflows"});
  bad(R"({"w": {"dtype": "F64", "shape": [9007199254740992, 9007199254740992], "data_offsets": [0, 0]}})", "",
      {"'w'", "overflows"});
  bad(R"({"w": {"dtype": "U8", "shape": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1], "data_offsets": [0, 1]}})", "x",
      {"'w'", "rank > 16"});
  // Offsets.
  bad(R"({"w": {"dtype": "F32", "shape": [25], "data_offsets": [0, 100]}})", std::string(8, '\0'),
      {"'w'", "[0, 100]", "outside the data section of 8 bytes"});
  bad(R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}})", std::string(4, '\0'), {"'w'", "begin after end"});
  bad(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0]}})", "x", {"'w'", "expected 2"});
  bad(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 1]}})", "x", {"'w'", "more than 2"});
  bad(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
      std::string(12, '\0'), {"overlaps", "'a'", "'b'"});
  bad(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
      std::string(12, '\0'), {"hole", "[4, 8)", "'b'"});
  bad(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", std::string(8, '\0'), {"hole", "[0, 4)"});
  bad(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", std::string(8, '\0'), {"4 bytes after"});
  bad(R"({"a": {"dtype": "U8", "shape": [0], "data_offsets": [1, 1]}, "b": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})",
      "xy", {"overlaps", "'a'", "'b'"});
  // Duplicates: names, fields, metadata keys.
  bad(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "w": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})",
      "xy", {"duplicate key 'w'"});
  bad(R"({"w": {"dtype": "U8", "dtype": "F32", "shape": [1], "data_offsets": [0, 1]}})", "x", {"'w'", "duplicate key 'dtype'"});
  bad(R"({"__metadata__": {"k": "a", "k": "b"}})", "", {"__metadata__", "duplicate key 'k'"});
  bad(R"({"__metadata__": {}, "__metadata__": {}})", "", {"duplicate key '__metadata__'"});
  // Metadata values must be strings.
  bad(R"({"__metadata__": {"total": 3}})", "", {"__metadata__", "'total'", "expected a string"});
  bad(R"({"__metadata__": ["a"]})", "", {"__metadata__", "expected an object"});
  // Invalid UTF-8 in a name.
  bad("{\"w\xff\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", "x", {"invalid JSON"});
  // Deeply nested ignored fields are bounded.
  bad(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "x": )" + std::string(100, '[') +
          std::string(100, ']') + "}}",
      "x", {"nested"});

  // A BOOL tensor whose bytes are not 0/1 is refused when read.
  TempDir dir;
  const std::string path = dir / "bool.safetensors";
  write_file(path, make_st(R"({"m": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}})", std::string("\x01\x00\x02", 3)));
  const SafetensorsFile file = SafetensorsFile::open(path);
  expect_error([&] { file.tensor("m"); }, ErrorCode::parse, {path, "'m'", "byte value 2"});
}

TEST_CASE("safetensors: save_safetensors rejects bad input") {
  TempDir dir;
  const std::string path = dir / "x.safetensors";
  expect_error([&] { save_safetensors(path, {{"a", at::Tensor()}}); }, ErrorCode::invalid_argument, {"'a'", "undefined"});
  expect_error([&] { save_safetensors(path, {{"c", at::randn({2}, at::TensorOptions().dtype(at::kComplexFloat))}}); },
               ErrorCode::invalid_argument, {"'c'", "ComplexFloat"});
  expect_error([&] { save_safetensors(path, {{"a", at::randn({2})}, {"a", at::randn({2})}}); }, ErrorCode::invalid_argument,
               {"duplicate", "'a'"});
  expect_error([&] { save_safetensors(path, {{"", at::randn({2})}}); }, ErrorCode::invalid_argument, {"empty name"});
  expect_error([&] { save_safetensors(path, {{"__metadata__", at::randn({2})}}); }, ErrorCode::invalid_argument,
               {"__metadata__"});
  expect_error([&] { save_safetensors(path, {{"a\xff", at::randn({2})}}); }, ErrorCode::invalid_argument, {"UTF-8"});
  CHECK_FALSE(fs::exists(path));
  CHECK_FALSE(fs::exists(path + ".tmp"));
  const std::string unwritable = dir / "no/such/dir/x.safetensors";
  expect_error([&] { save_safetensors(unwritable, {{"a", at::randn({2})}}); }, ErrorCode::io, {unwritable});
}

TEST_CASE("safetensors: files written by the Python safetensors package read here, and ours read there") {
  // .ci/setup installs both: a missing package fails here rather than passing untested.
  REQUIRE_MESSAGE(python_safetensors_available(), DRB_PYTHON_EXECUTABLE " cannot import torch and safetensors");
  TempDir dir;
  const auto ref = reference_tensors();
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "derrumbe \xc3\xa9"}};

  const std::string theirs = dir / "theirs.safetensors";
  REQUIRE(run_python(dir, "write", theirs) == 0);
  const SafetensorsFile file = SafetensorsFile::open(theirs);
  CHECK(file.metadata() == metadata);
  REQUIRE(file.entries().size() == ref.size());
  for (const auto& [name, t] : ref) check_same_tensor(file.tensor(name), t, name);
  CHECK(at::equal(file.tensor("bf16", at::kFloat), ref[2].second.to(at::kFloat)));

  const std::string ours = dir / "ours.safetensors";
  save_safetensors(ours, ref, metadata);
  CHECK(run_python(dir, "read", ours) == 0);
}
