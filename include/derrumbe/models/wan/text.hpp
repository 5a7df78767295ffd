// Wan's text side: the umT5 encoder (transformers' UMT5EncoderModel: per-layer relative
// position bias, gated-gelu FFN, T5 RMS layer norm) and its SentencePiece tokenizer
// (libsentencepiece), composed as the Wan pipeline encodes prompts. Prompt embeddings can
// also be precomputed elsewhere and passed to the transformer directly.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "derrumbe/models/safetensors.hpp"

namespace drb::models::wan {

// The fields of transformers' config.json for UMT5EncoderModel.
struct UMT5Config {
  int64_t vocab_size = 256384;
  int64_t d_model = 4096;
  int64_t d_kv = 64;
  int64_t d_ff = 10240;
  int64_t num_layers = 24;
  int64_t num_heads = 64;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  double layer_norm_epsilon = 1e-6;
  std::string feed_forward_proj = "gated-gelu";  // the only one supported

  DRB_EXPORT static UMT5Config from_json(const std::string& json_text);
};

class DRB_EXPORT UMT5Encoder {
 public:
  UMT5Encoder(UMT5Config config, const Checkpoint& weights, at::ScalarType dtype = at::kFloat,
              c10::Device device = c10::kCPU);
  // A directory saved by transformers' save_pretrained (config.json + safetensors), or a single
  // safetensors file as ComfyUI keeps it (umt5_xxl_fp16.safetensors, ..._fp8_e4m3fn_scaled) or in
  // the Wan repository's T5 names, its config inferred from the shapes (load_umt5_file).
  static UMT5Encoder load(const std::string& directory, at::ScalarType dtype = at::kFloat,
                          c10::Device device = c10::kCPU);
  // input_ids [B, L] int64 in [0, vocab_size), attention_mask [B, L] (0/1; undefined: all
  // ones) -> last_hidden_state [B, L, d_model] (float32 unless the encoder runs in another dtype).
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}) const;

  const UMT5Config& config() const { return config_; }
  const std::map<std::string, at::Tensor>& parameters() const { return params_; }

 private:
  UMT5Config config_;
  std::map<std::string, at::Tensor> params_;
};

class DRB_EXPORT Tokenizer {
 public:
  // A SentencePiece model file (spiece.model / tokenizer.model) or a directory holding one.
  static Tokenizer load(const std::string& path);
  // Token ids of `text` followed by EOS (id 1), as transformers' T5 tokenizer with
  // add_special_tokens; truncated to max_length (keeping EOS last) when max_length > 0.
  std::vector<int64_t> encode(const std::string& text, int64_t max_length = 0) const;
  // Padded batch: {input_ids [B, max_length] int64 padded with 0, attention_mask [B, max_length]}.
  std::pair<at::Tensor, at::Tensor> batch(const std::vector<std::string>& texts, int64_t max_length) const;
  int64_t vocab_size() const;

 private:
  std::shared_ptr<void> processor_;  // sentencepiece::SentencePieceProcessor, kept out of this header
};

// The Wan pipeline's prompt embeddings: whitespace-cleaned prompts, tokenized to max_length
// (512 in Wan), encoded, each prompt's embeddings beyond its own token count zeroed:
// [B, max_length, d_model] in float32.
DRB_EXPORT at::Tensor encode_prompts(const Tokenizer& tokenizer, const UMT5Encoder& encoder,
                                     const std::vector<std::string>& prompts, int64_t max_length = 512);

}  // namespace drb::models::wan
