// Wan2.1 / Wan2.2 video transformer (diffusers' WanTransformer3DModel), native in LibTorch:
// patch embedding, 3D RoPE, adaLN modulation with the scale-shift tables, self-attention with
// RMS qk-norm across heads, cross-attention to the text, gelu-tanh FFN, fp32 residual stream
// and modulation. Parameter names equal the diffusers safetensors keys; files in the
// original/ComfyUI layout are mapped on load. Text-to-video, with the two ways the public Wan
// control models take a control video: VACE (WanVACETransformer3DModel: a second stack of
// blocks over the control context whose outputs are added after chosen main blocks) and
// channel concatenation (Wan2.1-Fun-Control: in_channels > out_channels, the control latents
// appended to the noisy latents by the caller, see WanDenoiser). No image branch yet.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <array>
#include <map>
#include <string>
#include <vector>

#include "derrumbe/models/safetensors.hpp"

namespace drb::models::wan {

// The fields of diffusers' config.json for WanTransformer3DModel.
struct TransformerConfig {
  std::array<int64_t, 3> patch_size{1, 2, 2};
  int64_t num_attention_heads = 40;
  int64_t attention_head_dim = 128;
  int64_t in_channels = 16;
  int64_t out_channels = 16;
  int64_t text_dim = 4096;
  int64_t freq_dim = 256;
  int64_t ffn_dim = 13824;
  int64_t num_layers = 40;
  bool cross_attn_norm = true;
  std::string qk_norm = "rms_norm_across_heads";
  double eps = 1e-6;
  int64_t rope_max_seq_len = 1024;
  // VACE (WanVACETransformer3DModel): the main blocks after which a VACE block's hint is added,
  // strictly increasing and starting at 0; empty for a plain model. vace_in_channels: the
  // control context's channels (Wan2.1-VACE: 96 = inactive and reactive latents, 8x8 mask).
  std::vector<int64_t> vace_layers;
  int64_t vace_in_channels = 96;

  // From config.json text (unknown keys are ignored; image_dim / added_kv_proj_dim set to a
  // non-null value are ErrorCode::unsupported; a bad value is an error naming the key).
  DRB_EXPORT static TransformerConfig from_json(const std::string& json_text);
};

class DRB_EXPORT Transformer {
 public:
  // Loads every parameter from `weights` (diffusers keys, or the original/ComfyUI layout; stored
  // as F32/F16/BF16/F64 or fp8, ComfyUI's scaled fp8 dequantized), converted to `dtype` on `device`. A missing or mis-shaped key is an error naming it (and
  // the expected shape); unused keys in the checkpoint are errors too (a wrong config).
  Transformer(TransformerConfig config, const Checkpoint& weights, at::ScalarType dtype = at::kFloat,
              c10::Device device = c10::kCPU);
  // A directory saved by diffusers' save_pretrained (config.json + safetensors, sharded or not),
  // a Wan-repository directory (its WanModel config.json + original-layout weights), or a single
  // safetensors file as ComfyUI keeps it, any dtype including (scaled) fp8, its config inferred
  // from the shapes (load_transformer_file in single_file.hpp).
  static Transformer load(const std::string& directory, at::ScalarType dtype = at::kFloat,
                          c10::Device device = c10::kCPU);

  // hidden_states [B, in_channels, F, H, W] (H, W divisible by the patch size), timestep [B]
  // (or [B, tokens] per-token timesteps as Wan2.2-TI2V uses them), context [B, L, text_dim]
  // (zero-padded prompt embeddings, attended to in full as the reference does). Returns the
  // flow prediction [B, out_channels, F, H, W] in hidden_states' dtype. No autograd state.
  // VACE models take `control` [B, vace_in_channels, F, H, W] (vace_context in control.hpp),
  // each hint scaled by `control_scale`; without it they run as the plain text-to-video model
  // (no hints). A control given to a model without VACE blocks is an error.
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& timestep, const at::Tensor& context,
                     const at::Tensor& control = {}, double control_scale = 1.0) const;

  const TransformerConfig& config() const { return config_; }
  // Parameters by diffusers name (for tests and tools).
  const std::map<std::string, at::Tensor>& parameters() const { return params_; }

 private:
  TransformerConfig config_;
  std::map<std::string, at::Tensor> params_;
};

// Original/ComfyUI key -> diffusers key (as diffusers' scripts/convert_wan_to_diffusers.py
// maps them, including the norm2/norm3 swap); keys already in diffusers form are unchanged.
DRB_EXPORT std::string diffusers_key(const std::string& key);

}  // namespace drb::models::wan
