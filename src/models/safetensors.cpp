// safetensors: memory-mapped reading (tensors are views on the mapping), sharded checkpoints,
// and an atomic writer. The header parser lives in safetensors_header.cpp (torch-free).
#include "derrumbe/models/safetensors.hpp"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace drb::models {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts would need byte swapping");

namespace fs = std::filesystem;

// The whole file, mapped MAP_PRIVATE. Normally PROT_READ|PROT_WRITE: a write into a view is
// copy-on-write into private pages and never reaches the file (the API still calls views
// read-only; writing into one is a caller bug that at least cannot corrupt the checkpoint).
// Where the kernel refuses a writable private mapping (strict overcommit accounting on a huge
// file), the mapping is PROT_READ and writing into a view faults.
// If another process truncates the file while it is mapped, reading the lost pages raises
// SIGBUS: that cannot be guarded against by a reader.
struct SafetensorsFile::Mapping {
  std::string path;
  uint8_t* data = nullptr;
  size_t size = 0;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (data != nullptr) ::munmap(data, size);
  }
};

namespace {

std::string squote(const std::string& s) { return "'" + s + "'"; }

at::ScalarType scalar_type_of(const std::string& dtype) {
  static const std::pair<const char*, at::ScalarType> types[] = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool}, {"F8_E4M3", at::kFloat8_e4m3fn}, {"F8_E5M2", at::kFloat8_e5m2}};
  for (const auto& [name, type] : types)
    if (dtype == name) return type;
  throw Error(ErrorCode::internal, "safetensors: no ATen type for dtype '" + dtype + "'");  // the parser rejects these
}

// The file's dtype name for an ATen type, or nullptr.
const char* dtype_name_of(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return "F64";
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    case at::kFloat8_e4m3fn: return "F8_E4M3";
    case at::kFloat8_e5m2: return "F8_E5M2";
    default: return nullptr;
  }
}

bool is_float_file_type(at::ScalarType t) {
  return t == at::kDouble || t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kFloat8_e4m3fn ||
         t == at::kFloat8_e5m2;
}

// JSON parsed into a DOM, rejecting duplicate keys at any depth (nlohmann keeps the last one).
nlohmann::json parse_json_unique(const std::string& text, const std::string& source) {
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      keys.emplace_back();
    } else if (event == E::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (event == E::key && !keys.empty()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text, callback);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::parse, source + ": invalid JSON: " + e.what());
  }
  if (!duplicate.empty()) throw Error(ErrorCode::parse, source + ": duplicate key " + squote(duplicate));
  return j;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) throw Error(ErrorCode::file_not_found, "safetensors file not found: " + path);
    throw Error(ErrorCode::io, "cannot open safetensors file " + path + ": " + std::strerror(err));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw Error(ErrorCode::io, "cannot stat safetensors file " + path + ": " + std::strerror(errno));
  if (S_ISDIR(st.st_mode))
    throw Error(ErrorCode::io, path + " is a directory, not a safetensors file (open it with Checkpoint::open)");
  if (!S_ISREG(st.st_mode)) throw Error(ErrorCode::io, path + " is not a regular file");

  auto mapping = std::make_shared<Mapping>();
  mapping->path = path;
  const auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size > 0) {
    mapping->size = static_cast<size_t>(file_size);
    void* p = ::mmap(nullptr, mapping->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) p = ::mmap(nullptr, mapping->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
      throw Error(ErrorCode::io, "cannot memory-map safetensors file " + path + ": " + std::strerror(errno));
    mapping->data = static_cast<uint8_t*>(p);
  }

  SafetensorsFile file;
  file.header_ = parse_safetensors_header(mapping->data, mapping->size, file_size, path);
  for (size_t i = 0; i < file.header_.entries.size(); ++i) file.index_.emplace(file.header_.entries[i].name, i);
  file.map_ = std::move(mapping);
  return file;
}

const std::string& SafetensorsFile::path() const {
  static const std::string none;
  return map_ ? map_->path : none;
}

const std::vector<SafetensorsEntry>& SafetensorsFile::entries() const { return header_.entries; }

const std::map<std::string, std::string>& SafetensorsFile::metadata() const { return header_.metadata; }

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) != 0; }

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(ErrorCode::not_found, "tensor " + squote(name) + " not found in " + path());
  return header_.entries[it->second];
}

at::Tensor SafetensorsFile::tensor(const std::string& name, std::optional<at::ScalarType> dtype) const {
  const SafetensorsEntry& e = entry(name);
  const at::ScalarType stored = scalar_type_of(e.dtype);
  if (dtype && *dtype != stored && is_float_file_type(stored) && !is_float_file_type(*dtype))
    throw Error(ErrorCode::invalid_argument, "cannot convert tensor " + squote(name) + " in " + path() + " from " +
                                                 e.dtype + " to " + c10::toString(*dtype) +
                                                 " (floating-point tensors convert only to F64, F32, F16, BF16, F8)");
  const auto options = at::TensorOptions().dtype(stored).device(at::kCPU);
  const size_t nbytes = e.end - e.begin;
  at::Tensor t;
  if (nbytes == 0) {
    t = at::empty(e.shape, options);
  } else {
    uint8_t* ptr = map_->data + header_.data_start + e.begin;
    if (stored == at::kBool) {
      // Any byte other than 0 or 1 is not a bool torch can hold: reject rather than misread.
      const void* bad = nullptr;
      for (size_t i = 0; i < nbytes && !bad; ++i)
        if (ptr[i] > 1) bad = ptr + i;
      if (bad)
        throw Error(ErrorCode::parse, path() + ": BOOL tensor " + squote(name) + " holds byte value " +
                                          std::to_string(*static_cast<const uint8_t*>(bad)) + " at element " +
                                          std::to_string(static_cast<const uint8_t*>(bad) - ptr) + " (expected 0 or 1)");
    }
    // The mapping is page-aligned, so alignment in memory is alignment within the file.
    if (reinterpret_cast<uintptr_t>(ptr) % safetensors_dtype_size(e.dtype) == 0) {
      std::shared_ptr<const Mapping> keep = map_;
      t = at::from_blob(ptr, e.shape, [keep](void*) {}, options);
    } else {
      t = at::empty(e.shape, options);
      std::memcpy(t.data_ptr(), ptr, nbytes);
    }
  }
  if (dtype && *dtype != stored) {
    try {
      t = t.to(*dtype);
    } catch (const c10::Error& err) {
      throw Error(ErrorCode::invalid_argument, "cannot convert tensor " + squote(name) + " in " + path() + " from " +
                                                   e.dtype + " to " + c10::toString(*dtype) + ": " +
                                                   err.what_without_backtrace());
    }
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

namespace {

std::string read_text_file(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(ErrorCode::file_not_found, "file not found: " + path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::io, "cannot open " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(ErrorCode::io, "cannot read " + path);
  return ss.str();
}

std::string join(const std::vector<std::string>& items) {
  std::string s;
  for (size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + items[i];
  return s;
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) throw Error(ErrorCode::file_not_found, "checkpoint not found: " + path);

  if (fs::is_directory(status)) {
    std::vector<std::string> indexes, files, others;
    for (const fs::directory_entry& d : fs::directory_iterator(path, ec)) {
      const std::string name = d.path().filename().string();
      if (ends_with(name, ".safetensors.index.json"))
        indexes.push_back(name);
      else if (ends_with(name, ".safetensors"))
        files.push_back(name);
    }
    if (ec) throw Error(ErrorCode::io, "cannot list directory " + path + ": " + ec.message());
    std::sort(indexes.begin(), indexes.end());
    std::sort(files.begin(), files.end());
    if (indexes.size() == 1) {
      Checkpoint c = open((fs::path(path) / indexes[0]).string());
      return c;
    }
    if (indexes.size() > 1)
      throw Error(ErrorCode::invalid_argument, "checkpoint directory " + path +
                                                   " holds several index files, open one of them: " + join(indexes));
    if (files.size() == 1) return open((fs::path(path) / files[0]).string());
    if (files.empty())
      throw Error(ErrorCode::not_found, "checkpoint directory " + path +
                                            " holds no *.safetensors.index.json and no *.safetensors file");
    throw Error(ErrorCode::invalid_argument, "checkpoint directory " + path +
                                                 " holds several .safetensors files and no *.safetensors.index.json, "
                                                 "open one of them or add an index: " + join(files));
  }

  Checkpoint c;
  c.path_ = path;
  if (!ends_with(path, ".json")) {
    c.files_.push_back(SafetensorsFile::open(path));
    for (const SafetensorsEntry& e : c.files_[0].entries()) c.owner_.emplace(e.name, 0);
    return c;
  }

  // An index: {"metadata": {...}, "weight_map": {tensor name: shard file name}}.
  const nlohmann::json j = parse_json_unique(read_text_file(path), path);
  if (!j.is_object()) throw Error(ErrorCode::parse, path + ": the index is not a JSON object");
  auto wm = j.find("weight_map");
  if (wm == j.end()) throw Error(ErrorCode::parse, path + ": the index has no 'weight_map'");
  if (!wm->is_object()) throw Error(ErrorCode::parse, path + ": 'weight_map' is not an object");
  const fs::path dir = fs::path(path).parent_path();
  std::map<std::string, size_t> shard_index;  // shard as written in the index -> files_
  std::vector<std::pair<std::string, size_t>> listed;  // tensor name -> files_
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string() || it.value().get_ref<const std::string&>().empty())
      throw Error(ErrorCode::parse, path + ": weight_map entry for tensor " + squote(it.key()) +
                                        " is not a shard file name");
    const std::string& shard = it.value().get_ref<const std::string&>();
    auto found = shard_index.find(shard);
    if (found == shard_index.end()) {
      const std::string shard_path = (dir / shard).string();
      try {
        c.files_.push_back(SafetensorsFile::open(shard_path));
      } catch (const Error& err) {
        if (err.code() != ErrorCode::file_not_found) throw;
        throw Error(ErrorCode::file_not_found, path + ": shard " + squote(shard) + " (listed for tensor " +
                                                   squote(it.key()) + ") not found: " + shard_path);
      }
      found = shard_index.emplace(shard, c.files_.size() - 1).first;
    }
    listed.emplace_back(it.key(), found->second);
  }
  // Every tensor of every shard belongs to the checkpoint; a name in two shards is an error.
  for (size_t i = 0; i < c.files_.size(); ++i)
    for (const SafetensorsEntry& e : c.files_[i].entries()) {
      auto [it, inserted] = c.owner_.emplace(e.name, i);
      if (!inserted)
        throw Error(ErrorCode::parse, path + ": tensor " + squote(e.name) + " is in two shards, " +
                                          c.files_[it->second].path() + " and " + c.files_[i].path());
    }
  for (const auto& [name, file] : listed) {
    auto it = c.owner_.find(name);
    if (it == c.owner_.end())
      throw Error(ErrorCode::parse, path + " lists tensor " + squote(name) + " in shard " + c.files_[file].path() +
                                        ", which does not contain it");
    if (it->second != file)
      throw Error(ErrorCode::parse, path + " lists tensor " + squote(name) + " in shard " + c.files_[file].path() +
                                        " but it is in " + c.files_[it->second].path());
  }
  return c;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(owner_.size());
  for (const auto& [name, file] : owner_) out.push_back(name);
  return out;
}

bool Checkpoint::contains(const std::string& name) const { return owner_.count(name) != 0; }

const SafetensorsEntry& Checkpoint::entry(const std::string& name) const {
  auto it = owner_.find(name);
  if (it == owner_.end()) throw Error(ErrorCode::not_found, "tensor " + squote(name) + " not found in checkpoint " + path_);
  return files_[it->second].entry(name);
}

at::Tensor Checkpoint::tensor(const std::string& name, std::optional<at::ScalarType> dtype) const {
  auto it = owner_.find(name);
  if (it == owner_.end()) throw Error(ErrorCode::not_found, "tensor " + squote(name) + " not found in checkpoint " + path_);
  return files_[it->second].tensor(name, dtype);
}

// ---------------------------------------------------------------------------------------------
// Writing

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  struct Item {
    const std::string* name;
    const at::Tensor* tensor;
    const char* dtype;
    size_t esize;
    uint64_t nbytes;
  };
  std::vector<Item> items;
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    check_arg(!name.empty(), "save_safetensors(" + path + "): a tensor has an empty name");
    check_arg(name != "__metadata__", "save_safetensors(" + path + "): '__metadata__' is reserved, not a tensor name");
    check_arg(names.insert(name).second, "save_safetensors(" + path + "): duplicate tensor name " + squote(name));
    check_arg(t.defined(), "save_safetensors(" + path + "): tensor " + squote(name) + " is undefined");
    check_arg(t.layout() == at::kStrided && !t.is_meta(),
              "save_safetensors(" + path + "): tensor " + squote(name) + " is not a dense tensor with data");
    const char* dtype = dtype_name_of(t.scalar_type());
    check_arg(dtype != nullptr, "save_safetensors(" + path + "): tensor " + squote(name) + " has dtype " +
                                    c10::toString(t.scalar_type()) +
                                    ", which safetensors cannot store here (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL "
                                    "F8_E4M3 F8_E5M2)");
    const auto esize = static_cast<size_t>(t.element_size());
    items.push_back({&name, &t, dtype, esize, static_cast<uint64_t>(t.numel()) * esize});
  }
  // Data order as the reference writer: larger elements first, then by name, so every tensor
  // starts at a multiple of its element size and reads back as a view without a copy.
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    if (a.esize != b.esize) return a.esize > b.esize;
    return *a.name < *b.name;
  });

  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) {
    nlohmann::json m = nlohmann::json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const Item& item : items) {
    nlohmann::json e = nlohmann::json::object();
    e["dtype"] = item.dtype;
    e["shape"] = item.tensor->sizes().vec();
    e["data_offsets"] = {offset, offset + item.nbytes};
    header[*item.name] = std::move(e);
    offset += item.nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::invalid_argument,
                "save_safetensors(" + path + "): a tensor name or metadata string is not valid UTF-8: " + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr)
    throw Error(ErrorCode::io, "save_safetensors: cannot write " + path + " (creating " + tmp + "): " +
                                   std::strerror(errno));
  auto fail = [&](const std::string& what) {
    const int err = errno;
    if (f != nullptr) std::fclose(f);
    std::remove(tmp.c_str());
    throw Error(ErrorCode::io, "save_safetensors: cannot write " + path + ": " + what +
                                   (err ? std::string(": ") + std::strerror(err) : std::string()));
  };
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  errno = 0;
  if (std::fwrite(length, 1, 8, f) != 8 || std::fwrite(text.data(), 1, text.size(), f) != text.size())
    fail("writing the header");
  for (const Item& item : items) {
    if (item.nbytes == 0) continue;
    at::Tensor t;
    try {
      t = item.tensor->detach().to(at::kCPU).contiguous();
    } catch (const c10::Error& err) {
      std::fclose(f);
      f = nullptr;
      std::remove(tmp.c_str());
      throw Error(ErrorCode::invalid_argument, "save_safetensors(" + path + "): tensor " + squote(*item.name) +
                                                   " cannot be copied to the CPU: " + err.what_without_backtrace());
    }
    if (std::fwrite(t.data_ptr(), 1, item.nbytes, f) != item.nbytes) fail("writing tensor " + squote(*item.name));
  }
  if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0) fail("flushing");
  const int closed = std::fclose(f);
  f = nullptr;
  if (closed != 0) fail("closing");
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("renaming " + tmp + " to it");
}

}  // namespace drb::models
