// Wan video VAE (diffusers' AutoencoderKLWan), native in LibTorch, in both of diffusers' layouts:
// Wan2.1 (is_residual false) and Wan2.2 / Wan2.2-TI2V-5B (is_residual true: residual down and up
// blocks whose shortcuts are parameterless space/time-to-channel averages (AvgDown3D) and
// channel-to-space/time duplications (DupUp3D), a decoder with its own width decoder_base_dim,
// and a 2x2 patchified input/output, patch_size). Causal 3D convolutions run chunk by chunk with
// the reference's feature cache (encoder: the first frame, then chunks of 4; decoder: one latent
// frame at a time with a 2-frame cache; the first upsampling chunk skips the temporal convolution
// and the DupUp3D shortcut drops its leading frame), RMS norms over channels, mid-block
// attention, latent normalization with latents_mean/std, and spatially tiled decoding to bound
// memory. Parameter names equal the diffusers safetensors keys.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <map>
#include <string>
#include <vector>

#include "derrumbe/models/safetensors.hpp"

namespace drb::models::wan {

// The fields of diffusers' config.json for AutoencoderKLWan (defaults: the Wan2.1 VAE).
struct VaeConfig {
  int64_t base_dim = 96;          // encoder width
  int64_t decoder_base_dim = 0;   // decoder width; 0 (config null): base_dim
  int64_t z_dim = 16;
  std::vector<int64_t> dim_mult{1, 2, 4, 4};
  int64_t num_res_blocks = 2;
  std::vector<double> attn_scales;  // Wan2.1 encoder only (unsupported there); ignored when is_residual
  std::vector<bool> temperal_downsample{false, true, true};  // diffusers' spelling
  std::vector<double> latents_mean, latents_std;              // z_dim values each
  // in_channels / out_channels are those of the encoder's conv_in / the decoder's conv_out, so
  // of the patchified frames: the frames themselves have in_channels / patch_size^2 channels
  // (Wan2.2-TI2V-5B: 12 = 3 x 2 x 2).
  int64_t in_channels = 3, out_channels = 3;
  bool is_residual = false;  // true: Wan2.2's residual down/up blocks
  int64_t patch_size = 1;    // config null: 1 (no patchify)
  // Pixels per latent: patch_size * 2^(len(dim_mult) - 1) (Wan2.1: 8, Wan2.2: 16); 0: derived
  // from the network, and a config.json value must equal it (diffusers' tiling reads it).
  int64_t scale_factor_spatial = 0;
  // Frames per latent frame after the first, 2^(true entries of temperal_downsample) unless
  // config.json says otherwise (0: derived); informative only, the VAE itself does not use it.
  int64_t scale_factor_temporal = 0;

  // From config.json text. Unsupported: attn_scales listing an encoder level in the Wan2.1
  // layout, scale_factor_spatial differing from the network's (ErrorCode::unsupported); configs
  // diffusers itself cannot build or run (a residual shortcut whose channels do not divide,
  // channels not divisible by patch_size^2) are parse errors.
  DRB_EXPORT static VaeConfig from_json(const std::string& json_text);
};

struct TileOptions {
  int64_t tile_height = 0, tile_width = 0;  // pixels; 0 disables tiling
  int64_t overlap = 32;                     // pixels blended linearly between tiles (Wan2.2: use a multiple of 16)
};

class DRB_EXPORT Vae {
 public:
  // `weights` in diffusers keys or the original Wan2.1 VAE keys (vae_diffusers_key in
  // single_file.hpp), stored as F32/F16/BF16/F64 or fp8 (ComfyUI's scaled fp8 dequantized).
  Vae(VaeConfig config, const Checkpoint& weights, at::ScalarType dtype = at::kFloat, c10::Device device = c10::kCPU);
  // A diffusers directory (config.json + safetensors), or a single safetensors file
  // (wan_2.1_vae.safetensors) whose config is inferred from its shapes (load_vae_file).
  static Vae load(const std::string& directory, at::ScalarType dtype = at::kFloat, c10::Device device = c10::kCPU);

  // frames [B, C, F, H, W] in [-1, 1] (C = in_channels / patch_size^2), F = 1 + 4k, H and W
  // divisible by s = scale_factor_spatial (8; Wan2.2: 16) -> the posterior mean latents
  // [B, z_dim, 1 + k, H / s, W / s], normalized ((mu - mean) / std) when `normalize` is true
  // (what the transformer sees), raw otherwise.
  at::Tensor encode(const at::Tensor& frames, bool normalize = true) const;
  // latents (normalized when `normalized`) -> frames [B, out_channels / patch_size^2,
  // 1 + 4 (F' - 1), s H', s W'] clamped to [-1, 1], decoded one latent frame at a time; tiled
  // spatially when tiles are given (tile sizes and overlap multiples of s; with patch_size p the
  // tiles are blended on the patchified output, as diffusers does, then unpatchified).
  at::Tensor decode(const at::Tensor& latents, bool normalized = true, const TileOptions& tiles = {}) const;

  const VaeConfig& config() const { return config_; }
  const std::map<std::string, at::Tensor>& parameters() const { return params_; }

 private:
  VaeConfig config_;
  std::map<std::string, at::Tensor> params_;
};

}  // namespace drb::models::wan
