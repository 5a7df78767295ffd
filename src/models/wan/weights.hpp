// Internal to src/models/wan: reading parameters out of checkpoints in the layouts and dtypes
// users keep (implemented in single_file.cpp). The public side is single_file.hpp.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "derrumbe/models/safetensors.hpp"

namespace drb::models::wan::detail {

// ComfyUI's quantization side tensors, which are not parameters: the `scaled_fp8` marker (under
// any prefix), <layer>.scale_weight / <layer>.scale_input (the legacy scaled fp8 files), and
// <layer>.weight_scale / <layer>.input_scale / <layer>.comfy_quant (the current format).
bool is_quantization_key(const std::string& key);

// The stored dtypes a parameter may have: F64, F32, F16, BF16, F8_E4M3, F8_E5M2.
bool is_weight_dtype(const std::string& dtype);
// The sentence the loaders use for a tensor stored in another dtype.
inline const char* weight_dtypes() { return "F32, F16, BF16, F64, F8_E4M3, F8_E5M2"; }

// The tensor stored under `key` in `dtype` (CPU). A weight with a per-tensor scale beside it
// (<layer>.scale_weight or <layer>.weight_scale for <layer>.weight) is dequantized as
// weight.to(float32) * scale, then cast; without a scale the stored values are converted as they
// are (fp8 converts exactly to every wider float type). A <layer>.comfy_quant naming another
// format than float8_e4m3fn / float8_e5m2 is ErrorCode::unsupported.
at::Tensor read_weight(const Checkpoint& weights, const std::string& key, at::ScalarType dtype);

// The original/ComfyUI name of a diffusers transformer key (the inverse of diffusers_key, for
// messages about a missing tensor).
std::string original_transformer_key(const std::string& diffusers);
// The original Wan2.1 VAE name of a diffusers VAE key (the inverse of vae_diffusers_key).
std::string original_vae_key(const std::string& diffusers, int64_t num_res_blocks);

// How an umT5 checkpoint names its tensors, worked out from all its names: the prefix before
// the encoder (text_encoders.umt5xxl.transformer. in a ComfyUI checkpoint, "" usually), whether
// the "encoder." part is there, or the original Wan T5 names (token_embedding, blocks.N.attn.q).
struct Umt5Layout {
  std::string prefix;
  bool has_encoder = true;  // transformers names: encoder.block.N ...; false: block.N ...
  bool wan = false;         // the Wan repository's T5 names
  static Umt5Layout detect(const std::vector<std::string>& names);
  // Stored name -> transformers name; "" for a tensor that is not the encoder's (outside the
  // prefix, a decoder's, the tokenizer's spiece_model, quantization side tensors).
  std::string transformers_name(const std::string& stored) const;
  // Transformers name -> the name this layout stores it under (for messages).
  std::string stored_name(const std::string& transformers) const;
  bool is_plain() const { return prefix.empty() && has_encoder && !wan; }
};

}  // namespace drb::models::wan::detail
