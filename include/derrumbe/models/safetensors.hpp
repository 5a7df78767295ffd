// safetensors files (the format Hugging Face diffusers and transformers read): a little-endian
// u64 header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {string: string}}, then the tensor bytes, offsets relative to the end of
// the header. Files are memory-mapped; tensors in the stored dtype are views on the mapping
// (no copy); other dtypes are converted on request.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "derrumbe/core/error.hpp"
#include "derrumbe/models/safetensors_header.hpp"  // SafetensorsEntry, SafetensorsHeader, the parser

namespace drb::models {

class DRB_EXPORT SafetensorsFile {
 public:
  // Maps and validates the file (ErrorCode::file_not_found, io or parse, naming the path).
  static SafetensorsFile open(const std::string& path);
  const std::string& path() const;
  const std::vector<SafetensorsEntry>& entries() const;
  const std::map<std::string, std::string>& metadata() const;
  bool contains(const std::string& name) const;
  // The entry; a missing name is ErrorCode::not_found naming the key and the file.
  const SafetensorsEntry& entry(const std::string& name) const;
  // The tensor: a read-only view on the mapping when `dtype` is unset or the stored one (the
  // view keeps the mapping alive), else converted to `dtype` (F32/F16/BF16/F64 among
  // themselves; integer and bool tensors to any type). Unaligned data is copied.
  at::Tensor tensor(const std::string& name, std::optional<at::ScalarType> dtype = std::nullopt) const;

 private:
  struct Mapping;
  std::shared_ptr<const Mapping> map_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

// One file, or a sharded checkpoint: an index JSON ({"weight_map": {name: shard file}}, as
// model.safetensors.index.json / diffusion_pytorch_model.safetensors.index.json), or a
// directory holding one .safetensors file or one *.safetensors.index.json.
class DRB_EXPORT Checkpoint {
 public:
  static Checkpoint open(const std::string& path);
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  const SafetensorsEntry& entry(const std::string& name) const;
  at::Tensor tensor(const std::string& name, std::optional<at::ScalarType> dtype = std::nullopt) const;

 private:
  std::string path_;  // as given to open(), for messages
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> owner_;  // tensor name -> index into files_
};

// Writes tensors (any CPU/CUDA dense tensor of a supported dtype; made contiguous, written
// little-endian) with optional metadata, 8-byte aligned data as the reference writer does.
// Names must be unique and non-empty.
DRB_EXPORT void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                 const std::map<std::string, std::string>& metadata = {});

}  // namespace drb::models
