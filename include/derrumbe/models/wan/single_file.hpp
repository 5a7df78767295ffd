// Wan models as users keep them: single safetensors files in the original (Wan repository) and
// ComfyUI layouts, stored in fp32, bf16, fp16 or fp8 e4m3fn / e5m2, including ComfyUI's
// "scaled" fp8 files (a per-tensor scale beside each weight: <layer>.scale_weight with a
// `scaled_fp8` marker, or <layer>.weight_scale with a <layer>.comfy_quant descriptor), upcast
// on load to the compute dtype as weight.to(float32) * scale. Their configs are inferred from
// the tensor shapes, and a bundle can be assembled from such files.
//
// What loads:
//  - transformer: diffusers keys, or the original/ComfyUI keys (blocks.N.self_attn.q, ...,
//    optionally under model.diffusion_model.), one file or a sharded *.safetensors.index.json;
//  - VAE: diffusers AutoencoderKLWan keys, or the original Wan2.1 VAE keys (wan_2.1_vae.safetensors:
//    encoder.downsamples.N.residual.K, decoder.upsamples.N, middle, head, conv1/conv2), optionally
//    under first_stage_model.; the Wan2.2 (residual) VAE only as a diffusers directory;
//  - umT5 encoder: transformers keys (encoder.block.N..., shared.weight), with or without the
//    encoder. part and under any prefix (text_encoders.umt5xxl.transformer. in a ComfyUI
//    checkpoint), or the original Wan T5 keys (token_embedding, blocks.N.attn.q, ..., norm).
#pragma once
#include <string>

#include "derrumbe/models/wan/bundle.hpp"

namespace drb::models::wan {

// --- configs from shapes ---------------------------------------------------------------------
// `overrides_json`: "" or a JSON object of config.json fields (as diffusers / transformers name
// them) that replace the inferred values; for the transformer, attention_head_dim or
// num_attention_heads alone determines the other from the inner dim (real Wan files: 128 per
// head, the default). Errors name the key whose shape contradicts the config (ErrorCode::parse),
// or say what is not supported (image-to-video, VACE, the Wan2.2 VAE, T5 instead of umT5:
// ErrorCode::unsupported).

// patch_size, in/out channels and inner dim (patch_embedding, proj_out), num_layers (block
// count), ffn_dim, text_dim, freq_dim, cross_attn_norm (norm2 present); eps 1e-6, RoPE 1024.
DRB_EXPORT TransformerConfig infer_transformer_config(const Checkpoint& weights, const std::string& overrides_json = "");
// z_dim, base_dim, in/out channels, dim_mult, num_res_blocks, temperal_downsample (which
// downsamplers have a time_conv); latents_mean/std: diffusers' Wan2.1 values (z_dim 16),
// otherwise they must be given in the overrides.
DRB_EXPORT VaeConfig infer_vae_config(const Checkpoint& weights, const std::string& overrides_json = "");
// vocab_size and d_model (the embedding), num_layers, num_heads and the bucket count (each
// layer's relative_attention_bias), d_kv, d_ff; max distance 128, eps 1e-6.
DRB_EXPORT UMT5Config infer_umt5_config(const Checkpoint& weights, const std::string& overrides_json = "");

// --- key layouts -----------------------------------------------------------------------------
// Original (Wan repository / ComfyUI) Wan2.1 VAE key -> diffusers AutoencoderKLWan key, for a
// VAE with `num_res_blocks` residual blocks per level (the decoder's flat upsamples list is
// regrouped into up_blocks of num_res_blocks + 1 resnets and one upsampler); diffusers keys are
// unchanged.
DRB_EXPORT std::string vae_diffusers_key(const std::string& key, int64_t num_res_blocks = 2);

// --- single files ----------------------------------------------------------------------------
// A safetensors file (or a *.safetensors.index.json) with the config inferred from its shapes
// (and `overrides_json` applied). Errors name the file. Transformer::load, Vae::load and
// UMT5Encoder::load call these when given a file instead of a directory.
DRB_EXPORT Transformer load_transformer_file(const std::string& file, at::ScalarType dtype = at::kFloat,
                                             c10::Device device = c10::kCPU, const std::string& overrides_json = "");
DRB_EXPORT Vae load_vae_file(const std::string& file, at::ScalarType dtype = at::kFloat,
                             c10::Device device = c10::kCPU, const std::string& overrides_json = "");
DRB_EXPORT UMT5Encoder load_umt5_file(const std::string& file, at::ScalarType dtype = at::kFloat,
                                      c10::Device device = c10::kCPU, const std::string& overrides_json = "");

// --- bundles -----------------------------------------------------------------------------------
// Bundle::load_files and load_bundle_json (a "bundle.json" listing single files) are declared in
// bundle.hpp and implemented in single_file.cpp.

}  // namespace drb::models::wan
