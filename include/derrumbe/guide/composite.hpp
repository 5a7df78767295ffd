// Masked composition over a background plate: the model generates inside the destruction
// mask while the known plate is kept outside it. After each step the known region is put
// back, noised to the new sigma (VE form): x <- m x + (1 - m) (plate + sigma_next noise),
// with optional RePaint resampling (Lugmayr et al., CVPR 2022) and an unconstrained tail of
// steps so the edges blend.
#pragma once
#include <ATen/core/Tensor.h>

#include "derrumbe/sample/sampler.hpp"

namespace drb::guide {

struct CompositeOptions {
  int64_t resample = 0;          // RePaint: extra passes per composited step (0 to 7)
  int64_t free_tail_steps = 0;   // the last steps run without composition
  bool final_paste = true;       // blend the plate into the final result with the mask
};

class DRB_EXPORT Composite : public StepHook {
 public:
  // plate: the encoded plate, x's shape [B, C, F, H, W]. mask: 1 where the model generates,
  // 0 where the plate is kept, values in [0, 1], broadcastable to the plate (usually
  // [1, 1, F, H, W] from prepare_mask). noise: plate-shaped, the noise the run started
  // from (keeps the known region on the same trajectory); undefined: N(0, 1) noise from
  // `noise_seed`.
  Composite(at::Tensor plate, at::Tensor mask, at::Tensor noise = {}, CompositeOptions options = {},
            uint64_t noise_seed = 0);
  at::Tensor after_step(const StepInfo& info) override;
  int64_t resamples(int64_t step, int64_t num_steps) override;

 private:
  at::Tensor plate_, mask_, noise_;
  CompositeOptions opt_;
  uint64_t seed_;
};

// Per-frame masks from the renderer (alpha, dust, ... in [0, 1]), [F, H, W], to a latent
// mask [1, 1, F', h, w]: dilated by `dilate` pixels (max over a square), feathered by a box
// blur of radius `feather` pixels, area-averaged to (h, w), and the maximum over each
// latent frame's group of video frames (reduce_frames' grouping).
DRB_EXPORT at::Tensor prepare_mask(const at::Tensor& masks, int64_t latent_height, int64_t latent_width,
                                   int64_t temporal_factor = 1, int64_t dilate = 0, int64_t feather = 0);

}  // namespace drb::guide
