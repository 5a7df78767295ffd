// Control videos in the two forms the public Wan control models take them (WanControl in
// denoiser.hpp carries the result to the sampler):
//   - channel concatenation (Wan2.1-Fun-Control): the control video's normalized VAE latents,
//     vae.encode(video), appended to the noisy latents;
//   - VACE (Wan2.1-VACE): vace_context below.
#pragma once
#include <ATen/core/Tensor.h>

#include "derrumbe/models/wan/vae.hpp"

namespace drb::models::wan {

// VACE's context for a control video without reference images, as WanVACEPipeline builds it
// (prepare_video_latents + prepare_masks): the latents (normalized) of the inactive part
// video * (1 - m) and of the reactive part video * m, m the mask binarized at 0.5, then the
// mask's own values at the s x s sub-pixels of every latent pixel as s^2 channels (s: the VAE's spatial
// factor), resampled to the latent frames by nearest-exact. video [B, 3, F, H, W] in [-1, 1]
// (F = 1 + 4k; H, W multiples of s), mask [B, F, H, W] in [0, 1] or undefined (all ones:
// regenerate everything, as for depth, pose or proxy-render controls).
// Returns [B, 2 z_dim + s^2, 1 + k, H / s, W / s] in the VAE's dtype (96 channels for Wan2.1).
DRB_EXPORT at::Tensor vace_context(const Vae& vae, const at::Tensor& video, const at::Tensor& mask = {});

}  // namespace drb::models::wan
