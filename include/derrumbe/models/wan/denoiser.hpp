// The Wan transformer as the sampler's model: a ConditionalDenoiser over prompt embeddings
// (cond: the prompt, uncond: the negative prompt) whose flow prediction is mapped to x0 in VE
// form (parameterization.hpp: t = sigma / (1 + sigma), input (1 - t) x, D = x_t - t v), with
// the timestep t * 1000 as the Wan pipelines pass it: unrounded with FlowMatchEuler, truncated
// to an integer with the UniPC scheduler Wan ships (integer_timesteps; the time embedding
// changes visibly between neighbouring integers). Wrap it in GuidedDenoiser for CFG.
#pragma once
#include <memory>

#include "derrumbe/models/wan/transformer.hpp"
#include "derrumbe/sample/guidance.hpp"

namespace drb::models::wan {

// A control video in the form the transformer takes it (control.hpp builds both), the same for
// every branch, as the Fun-Control and VACE pipelines pass it.
struct WanControl {
  // Channel concatenation (in_channels > out_channels, Wan2.1-Fun-Control): latents
  // [1 or B, C, F, H, W] appended to the noisy latents, zeros after them up to in_channels (the
  // reference-image slot, left empty as ComfyUI's WanFunControlToVideo leaves it). Undefined:
  // all zeros, the "no control" such models are trained with.
  at::Tensor concat;
  // VACE: the context [1 or B, vace_in_channels, F, H, W] and the hints' scale (undefined: the
  // model runs without its VACE blocks).
  at::Tensor vace;
  double scale = 1.0;
  // The negative (uncond) branch sees the control too, as the Fun-Control and VACE pipelines
  // run it; false: it runs without (zeros / no hints), so that CFG's scale also pushes toward
  // the control (control guidance; the default model is trained with dropped controls for it).
  bool in_uncond = true;
};

class DRB_EXPORT WanDenoiser : public ConditionalDenoiser {
 public:
  // prompt_embeds, negative_embeds: [1, L, text_dim] (shared by the batch) or [B, L, text_dim];
  // negative_embeds may be undefined when only the cond branch is used (scale 1). A control the
  // transformer cannot take (concat latents for a model without extra in_channels, or more
  // than it has; a VACE context for a model without VACE blocks) is an error here.
  WanDenoiser(std::shared_ptr<const Transformer> transformer, at::Tensor prompt_embeds, at::Tensor negative_embeds = {},
              bool integer_timesteps = false, WanControl control = {});
  at::Tensor denoise(const at::Tensor& x, double sigma, std::span<const Branch> branches) override;

 private:
  // x's channels followed by the concatenated control's (zeros without it), zero-padded to the
  // transformer's in_channels (x itself for a model without extra channels).
  at::Tensor with_concat(const at::Tensor& x, bool with_control) const;

  std::shared_ptr<const Transformer> transformer_;
  at::Tensor cond_, uncond_;
  bool integer_timesteps_;
  WanControl control_;
};

// Wan2.2-A14B: two experts, `high` while the flow time t >= boundary (boundary_ratio, 0.875
// in the released config), `low` after it.
class DRB_EXPORT ExpertSwitch : public ConditionalDenoiser {
 public:
  ExpertSwitch(std::shared_ptr<ConditionalDenoiser> high, std::shared_ptr<ConditionalDenoiser> low, double boundary);
  at::Tensor denoise(const at::Tensor& x, double sigma, std::span<const Branch> branches) override;

 private:
  std::shared_ptr<ConditionalDenoiser> high_, low_;
  double boundary_;
};

}  // namespace drb::models::wan
