#include "derrumbe/guide/composite.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <string>

#include "derrumbe/core/rng.hpp"

namespace drb::guide {

namespace {

// Stream of the composition's own noise when the caller gives none. The sampler's streams are
// step * 16 + draw + 1, so this one stays clear of them for any schedule shorter than ~790k steps.
constexpr uint32_t kCompositeNoiseStream = 0xC0FFEE;

bool all_finite(const at::Tensor& t) { return at::isfinite(t).all().item<bool>(); }

// The mask values must lie in [0, 1] (NaN fails both comparisons).
void check_unit_range(const at::Tensor& m, const std::string& who) {
  check_arg(m.numel() > 0, who + ": mask is empty (shape " + c10::str(m.sizes()) + ")");
  const at::Tensor mf = m.to(at::kFloat);
  const bool ok = at::logical_and(mf >= 0, mf <= 1).all().item<bool>();
  check_arg(ok, who + ": mask values must be finite and in [0, 1], got min " + std::to_string(mf.min().item<float>()) +
                    ", max " + std::to_string(mf.max().item<float>()) + " (shape " + c10::str(m.sizes()) + ")");
}

}  // namespace

Composite::Composite(at::Tensor plate, at::Tensor mask, at::Tensor noise, CompositeOptions options, uint64_t noise_seed)
    : opt_(options), seed_(noise_seed) {
  const std::string who = "Composite";
  check_arg(plate.defined(), who + ": plate is undefined");
  check_arg(plate.dim() == 5, who + ": plate must be 5-D [B, C, F, H, W], got shape " + c10::str(plate.sizes()));
  check_arg(at::isFloatingType(plate.scalar_type()),
            who + ": plate must be floating point, got " + std::string(c10::toString(plate.scalar_type())));
  check_arg(plate.numel() > 0, who + ": plate is empty (shape " + c10::str(plate.sizes()) + ")");
  check_arg(all_finite(plate), who + ": plate (shape " + c10::str(plate.sizes()) + ") contains NaN or inf");

  check_arg(mask.defined(), who + ": mask is undefined");
  check_arg(mask.dim() == 5 && (at::isFloatingType(mask.scalar_type()) || mask.scalar_type() == at::kBool),
            who + ": mask must be a 5-D floating point or bool tensor, got " +
                std::string(c10::toString(mask.scalar_type())) + " of shape " + c10::str(mask.sizes()));
  for (int64_t d = 0; d < 5; ++d)
    check_arg(mask.size(d) == plate.size(d) || mask.size(d) == 1,
              who + ": mask shape " + c10::str(mask.sizes()) + " does not broadcast to the plate shape " +
                  c10::str(plate.sizes()) + " (dimension " + std::to_string(d) + ")");
  check_unit_range(mask, who);

  if (noise.defined()) {
    check_arg(noise.sizes() == plate.sizes(), who + ": noise shape " + c10::str(noise.sizes()) +
                                                  " differs from the plate shape " + c10::str(plate.sizes()));
    check_arg(at::isFloatingType(noise.scalar_type()),
              who + ": noise must be floating point, got " + std::string(c10::toString(noise.scalar_type())));
    check_arg(all_finite(noise), who + ": noise contains NaN or inf");
  } else {
    noise = drb::randn(plate.sizes(), NoiseAddress{noise_seed, kCompositeNoiseStream}, plate.options());
  }
  check_arg(options.resample >= 0 && options.resample <= 7,
            who + ": resample must be in [0, 7], got " + std::to_string(options.resample));
  check_arg(options.free_tail_steps >= 0,
            who + ": free_tail_steps must be >= 0, got " + std::to_string(options.free_tail_steps));
  plate_ = std::move(plate);
  mask_ = std::move(mask);
  noise_ = std::move(noise);
}

at::Tensor Composite::after_step(const StepInfo& info) {
  const at::Tensor& x = info.x;
  check_arg(x.defined() && x.sizes() == plate_.sizes(), "Composite: x shape " +
                                                            (x.defined() ? c10::str(x.sizes()) : std::string("undefined")) +
                                                            " differs from the plate shape " + c10::str(plate_.sizes()));
  const int64_t n = info.num_steps, i = info.step;
  const bool free = i >= n - opt_.free_tail_steps;
  if (free && !(opt_.final_paste && i == n - 1)) return x;
  // Converted per call (no-ops when they already match): the hook does not know x's dtype
  // and device before the run.
  const at::Tensor m = mask_.to(x.options());
  const at::Tensor plate = plate_.to(x.options());
  // The known region noised to the level the step reached; at the last step sigma_next is 0
  // and `known` is the plate itself (the final paste).
  const at::Tensor known = free || info.sigma_next == 0 ? plate : plate + info.sigma_next * noise_.to(x.options());
  // lerp is exact at both ends (m = 0 gives `known`, m = 1 gives x, bit for bit).
  return at::lerp(known, x, m);
}

int64_t Composite::resamples(int64_t step, int64_t num_steps) {
  // Only composited steps are resampled, and never the last: it ends at sigma 0 with the plate
  // pasted exactly, so there is no noise level left to harmonize at.
  const bool composited = step < num_steps - opt_.free_tail_steps;
  return composited && step < num_steps - 1 ? opt_.resample : 0;
}

at::Tensor prepare_mask(const at::Tensor& masks, int64_t latent_height, int64_t latent_width, int64_t temporal_factor,
                        int64_t dilate, int64_t feather) {
  const std::string who = "prepare_mask";
  check_arg(masks.defined(), who + ": masks is undefined");
  check_arg(masks.dim() == 3 && (at::isFloatingType(masks.scalar_type()) || masks.scalar_type() == at::kBool),
            who + ": masks must be a 3-D [F, H, W] floating point or bool tensor, got " +
                std::string(c10::toString(masks.scalar_type())) + " of shape " + c10::str(masks.sizes()));
  check_unit_range(masks, who);
  check_arg(latent_height > 0 && latent_width > 0, who + ": latent size must be positive, got " +
                                                       std::to_string(latent_height) + "x" + std::to_string(latent_width));
  check_arg(temporal_factor >= 1, who + ": temporal_factor must be >= 1, got " + std::to_string(temporal_factor));
  check_arg(dilate >= 0 && dilate < 1000, who + ": dilate must be in [0, 1000), got " + std::to_string(dilate));
  check_arg(feather >= 0 && feather < 1000, who + ": feather must be in [0, 1000), got " + std::to_string(feather));
  const int64_t frames = masks.size(0), h_in = masks.size(1), w_in = masks.size(2);
  check_arg((frames - 1) % temporal_factor == 0,
            who + ": " + std::to_string(frames) + " frames do not fit a causal VAE with temporal factor " +
                std::to_string(temporal_factor) + " (need 1 + " + std::to_string(temporal_factor) + " k frames)");

  at::Tensor m = masks.to(at::kFloat).unsqueeze(1);  // [F, 1, H, W]: frames as the pooling batch
  // Square max and box filters are separable (the valid part of a clipped square window is a
  // rectangle), so they run as a row pass and a column pass: O(r) per pixel, not O(r^2).
  if (dilate > 0) {
    const int64_t k = 2 * dilate + 1;
    m = at::max_pool2d(m, {k, 1}, {1, 1}, {dilate, 0});
    m = at::max_pool2d(m, {1, k}, {1, 1}, {0, dilate});
  }
  if (feather > 0) {
    const int64_t k = 2 * feather + 1;
    // count_include_pad = false: the image border is not treated as mask 0.
    m = at::avg_pool2d(m, {k, 1}, {1, 1}, {feather, 0}, false, false);
    m = at::avg_pool2d(m, {1, k}, {1, 1}, {0, feather}, false, false);
  }
  // Area average where the latent grid is coarser; bilinear where it is finer.
  const int64_t h_area = std::min(latent_height, h_in), w_area = std::min(latent_width, w_in);
  if (h_area != h_in || w_area != w_in) m = at::adaptive_avg_pool2d(m, {h_area, w_area});
  if (h_area != latent_height || w_area != latent_width)
    m = at::upsample_bilinear2d(m, {latent_height, latent_width}, false);
  m = m.squeeze(1);  // [F, h, w]
  // Causal VAE grouping: latent frame 0 is video frame 0, latent frame k >= 1 the maximum over
  // video frames (k - 1) * tf + 1 ... k * tf (a pixel covered in any frame of the group is generated).
  const int64_t groups = (frames - 1) / temporal_factor;
  if (temporal_factor > 1 && groups > 0) {
    const at::Tensor rest = m.slice(0, 1).reshape({groups, temporal_factor, latent_height, latent_width}).amax(1);
    m = at::cat({m.slice(0, 0, 1), rest}, 0);
  }
  return m.clamp(0, 1).unsqueeze(0).unsqueeze(0).contiguous();
}

}  // namespace drb::guide
