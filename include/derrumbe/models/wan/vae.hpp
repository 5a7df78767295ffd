// Wan2.1 video VAE (diffusers' AutoencoderKLWan), native in LibTorch: causal 3D convolutions
// run chunk by chunk with the reference's feature cache (encoder: the first frame, then chunks
// of 4; decoder: one latent frame at a time with a 2-frame cache; the first upsampling chunk
// skips the temporal convolution), RMS norms over channels, mid-block attention, latent
// normalization with latents_mean/std, and spatially tiled decoding to bound memory.
// Parameter names equal the diffusers safetensors keys.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <map>
#include <string>
#include <vector>

#include "derrumbe/models/safetensors.hpp"

namespace drb::models::wan {

// The fields of diffusers' config.json for AutoencoderKLWan (Wan2.1 layout: is_residual false).
struct VaeConfig {
  int64_t base_dim = 96;
  int64_t z_dim = 16;
  std::vector<int64_t> dim_mult{1, 2, 4, 4};
  int64_t num_res_blocks = 2;
  std::vector<double> attn_scales;
  std::vector<bool> temperal_downsample{false, true, true};  // diffusers' spelling
  std::vector<double> latents_mean, latents_std;              // z_dim values each
  int64_t in_channels = 3, out_channels = 3;

  // From config.json text; unsupported variants (is_residual true: Wan2.2's VAE, patch_size,
  // decoder_base_dim different from base_dim) are ErrorCode::unsupported.
  DRB_EXPORT static VaeConfig from_json(const std::string& json_text);
};

struct TileOptions {
  int64_t tile_height = 0, tile_width = 0;  // pixels; 0 disables tiling
  int64_t overlap = 32;                     // pixels blended linearly between tiles
};

class DRB_EXPORT Vae {
 public:
  Vae(VaeConfig config, const Checkpoint& weights, at::ScalarType dtype = at::kFloat, c10::Device device = c10::kCPU);
  static Vae load(const std::string& directory, at::ScalarType dtype = at::kFloat, c10::Device device = c10::kCPU);

  // frames [B, 3, F, H, W] in [-1, 1], F = 1 + 4k, H and W divisible by 8 -> the posterior
  // mean latents [B, z_dim, 1 + k, H / 8, W / 8], normalized ((mu - mean) / std) when
  // `normalize` is true (what the transformer sees), raw otherwise.
  at::Tensor encode(const at::Tensor& frames, bool normalize = true) const;
  // latents (normalized when `normalized`) -> frames [B, 3, 1 + 4 (F' - 1), 8 H', 8 W'] clamped
  // to [-1, 1], decoded one latent frame at a time; tiled spatially when tiles are given.
  at::Tensor decode(const at::Tensor& latents, bool normalized = true, const TileOptions& tiles = {}) const;

  const VaeConfig& config() const { return config_; }
  const std::map<std::string, at::Tensor>& parameters() const { return params_; }

 private:
  VaeConfig config_;
  std::map<std::string, at::Tensor> params_;
};

}  // namespace drb::models::wan
