// Noise warping: starting noise that moves with the simulation's optical flow, so the
// generated motion follows the physics (Burgert et al., CVPR 2025, "Go-with-the-Flow";
// Chang et al., ICLR 2024, "How I Warped Your Noise"). Implemented from the papers.
//
// State per pixel of a grid `factor` times finer than the latent grid: noise z (C channels,
// N(0, 1)), a density weight w and a sub-pixel offset d (where the value really sits, so slow
// motion is not lost to rounding). Each frame, with forward flow F (this frame -> next) and,
// when given, backward flow B (next frame -> this one):
//   push     every pixel p sends its state to round(p + d + F(p)) (contraction);
//   pull     a target q that received no push takes the state of round(q + B(q)) (expansion;
//            q - F(q) without B);
//   occlusion with both flows, a push or pull between p and q counts only when the flows
//            agree, |F(p) + B(q)| <= consistency_tolerance; other targets get fresh noise
//            (disocclusion), as do pulls from outside the frame;
//   copies   a source used n times gives n independent N(0, 1) values
//            z / sqrt(n) + (e_i - mean(e)) and weight w / n each (re-Gaussianization);
//   merge    pushes into one target combine as w = sum w_i, z = sum w_i z_i / sqrt(sum w_i^2).
// Read-out on the latent grid: the sum of w z over each factor x factor block divided by
// sqrt(sum w^2) (exactly N(0, 1) again), then degradation
// z' = ((1 - g) z + g e) / sqrt((1 - g)^2 + g^2).
// Every random value is Philox addressed by (seed, purpose, frame, pixel, channel), so the
// result does not depend on the thread count.
//
// Licence note: a patent application (US20260134518A1) claims this warp; check the patent
// situation before commercial use.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "derrumbe/core/error.hpp"

namespace drb::guide {

namespace detail {
class TensorWarper;
}

struct NoiseWarpOptions {
  int64_t channels = 16;
  int64_t factor = 8;                   // warp grid = latent grid * factor per axis (1 to 32)
  uint64_t seed = 0;
  double degradation = 0.0;             // g in [0, 1]: 0 warped noise, 1 fresh noise every frame
  double consistency_tolerance = 1.0;   // grid pixels
  // "cpu" (the optimized CPU warper) or "cuda[:N]" (the per-pixel passes as CUDA kernels; the
  // same values up to float rounding of the multiply-adds the GPU fuses).
  std::string device = "cpu";
};

// Frame-by-frame warper: on the CPU (all cores, the optimized path) or on a CUDA device (the
// per-pixel passes of src/guide/noise_warp_steps.hpp as kernels, grouped by stable sorts; on
// the CPU those passes reproduce the optimized warper bit for bit, which the tests check).
class DRB_EXPORT NoiseWarper {
 public:
  // Grid of latent_height * factor x latent_width * factor pixels; frame 0 is fresh noise.
  NoiseWarper(int64_t latent_height, int64_t latent_width, NoiseWarpOptions options);
  // Moves the noise to the next frame. forward [2, H, W] (u, v pixels, this frame -> next)
  // and backward [2, H, W] (next frame -> this one, may be undefined), at grid resolution.
  void step(const at::Tensor& forward, const at::Tensor& backward = {});
  // The current frame's noise on the latent grid, float32 [C, h, w].
  at::Tensor latent() const;
  // The current frame's noise on the grid, float32 [C, H, W] (for inspection and tests).
  at::Tensor grid_noise() const;
  int64_t frame() const { return frame_; }
  int64_t grid_height() const { return height_; }
  int64_t grid_width() const { return width_; }

 private:
  NoiseWarpOptions opt_;
  int64_t latent_h_, latent_w_, height_, width_;
  int64_t frame_ = 0;
  std::vector<float> z_, w_, d_;  // the state: noise [P, C], weight [P], offset [P, 2]
  std::vector<float> latent_;     // its read-out [C, h, w] before degradation, made with the state
  // Per-frame scratch, allocated in the constructor (no page faults on fresh buffers per frame).
  std::vector<float> z_next_, w_next_, d_next_;
  std::vector<float> land_;                      // [P, 2] each push's landing point minus its target
  std::vector<int32_t> target_, source_;         // [P] push target, pull source (-1: none)
  std::vector<int32_t> push_start_, push_list_;  // pushes grouped by target
  std::vector<uint8_t> pushed_;                  // [P] 1 where a push lands
  std::vector<uint64_t> pulls_, pulls_tmp_;      // source << 32 | target of each pull, sorted
  std::vector<int64_t> chunk_pulls_;             // pulls found per row chunk
  std::shared_ptr<detail::TensorWarper> device_;  // set for a CUDA device: the warp runs there
};

enum class TemporalReduction {
  pick,              // latent frame k takes its group's last video frame (k * factor)
  blend,             // the mean of the group's frames
  blend_normalized,  // the mean, divided by its root mean square (unit variance again)
};
DRB_EXPORT TemporalReduction temporal_reduction_from_name(const std::string& name);  // pick, blend, blend_normalized

// Video frames -> latent frames of a causal video VAE: latent frame 0 is video frame 0 and
// latent frame k >= 1 covers video frames (k - 1) * factor + 1 ... k * factor (Wan: factor 4,
// F = 1 + 4 k frames). noise [C, F, h, w] -> [C, 1 + (F - 1) / factor, h, w].
DRB_EXPORT at::Tensor reduce_frames(const at::Tensor& noise, int64_t temporal_factor, TemporalReduction reduction);

// Warped noise for a whole shot, ready to start the sampler: [1, C, F', h, w] float32.
// forward, backward: [F, 2, H', W'] as rendered (frame f -> f + 1 and frame f -> f - 1; the
// last forward and first backward are unused; backward may be undefined). Flows are resized
// bilinearly to the grid (latent size * factor) with their vectors scaled. latent_height and
// latent_width 0 mean H' / factor and W' / factor.
DRB_EXPORT at::Tensor warp_noise(const at::Tensor& forward, const at::Tensor& backward, const NoiseWarpOptions& options,
                                 int64_t latent_height = 0, int64_t latent_width = 0, int64_t temporal_factor = 1,
                                 TemporalReduction reduction = TemporalReduction::blend_normalized);

}  // namespace drb::guide
