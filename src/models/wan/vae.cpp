// Wan video VAE (Wan2.1 and, with is_residual / patch_size / decoder_base_dim, Wan2.2), following
// diffusers' AutoencoderKLWan (diffusers/models/autoencoders/autoencoder_kl_wan.py) module by
// module. Each function below is one diffusers module and reads its parameters by the diffusers
// name, so `params_` is exactly the diffusers state dict. The numbered "pitfall" comments refer
// to REFERENCES.md §3 (Wan in diffusers): 1 (the VAE's RMS norm), 5 (chunked causal cache, the
// first upsampling chunk, clamp, latent normalization), 6 (base_dim 3 degenerates: tested with
// base_dim 8 too) and 7 (module tree = key paths: WanResidualBlock's Dropout has no parameters,
// `resample.0` is the parameterless upsample / zero pad).
//
// Only the cached (chunked) forward of the reference exists here, because it is the only one
// diffusers' encode/decode use: a plain full-sequence causal pass does not match (pitfall 5).
#include "derrumbe/models/wan/vae.hpp"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "derrumbe/models/wan/single_file.hpp"
#include "weights.hpp"

namespace drb::models::wan {

namespace {

using Params = std::map<std::string, at::Tensor>;

constexpr int64_t CACHE_T = 2;  // frames of each causal convolution's input kept for the next chunk

std::string shape_str(at::IntArrayRef shape) { return c10::str(shape); }

const at::Tensor& param(const Params& p, const std::string& name) {
  const auto it = p.find(name);
  check(it != p.end(), ErrorCode::internal, "wan vae: parameter '" + name + "' was not loaded");
  return it->second;
}

bool has_param(const Params& p, const std::string& name) { return p.count(name) != 0; }

// diffusers' defaults for AutoencoderKLWan (the Wan2.1 VAE's statistics), used when config.json
// leaves latents_mean / latents_std out.
const std::vector<double> kDefaultLatentsMean{-0.7571, -0.7089, -0.9113, 0.1075,  -0.1745, 0.9653,  -0.1517, 1.5508,
                                              0.4134,  -0.0715, 0.5517,  -0.3632, -0.1922, -0.9497, 0.2503,  -0.2921};
const std::vector<double> kDefaultLatentsStd{2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                                             3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160};

// The network's spatial factor 2^(levels - 1): every level but the last halves H and W (of the
// patchified frames).
int64_t network_factor(const VaeConfig& c) { return int64_t{1} << (c.dim_mult.size() - 1); }
// Pixels per latent: the patchify's factor times the network's.
int64_t spatial_factor(const VaeConfig& c) { return c.patch_size * network_factor(c); }
int64_t temporal_factor(const VaeConfig& c) {
  return int64_t{1} << std::count(c.temperal_downsample.begin(), c.temperal_downsample.end(), true);
}

// Channel widths: the encoder's dims = base_dim * ([1] + dim_mult), the decoder's
// decoder_base_dim * ([dim_mult[-1]] + dim_mult reversed); level i goes from dims[i] to dims[i + 1].
std::vector<int64_t> encoder_dims(const VaeConfig& c) {
  std::vector<int64_t> dims{c.base_dim};
  for (int64_t m : c.dim_mult) dims.push_back(c.base_dim * m);
  return dims;
}
std::vector<int64_t> decoder_dims(const VaeConfig& c) {
  const int64_t d = c.decoder_base_dim > 0 ? c.decoder_base_dim : c.base_dim;
  std::vector<int64_t> dims{d * c.dim_mult.back()};
  for (auto it = c.dim_mult.rbegin(); it != c.dim_mult.rend(); ++it) dims.push_back(d * *it);
  return dims;
}
// Whether level i of the encoder halves time (only levels that downsample at all), and level i
// of the decoder doubles it (temperal_upsample = temperal_downsample reversed).
bool encoder_temporal(const VaeConfig& c, size_t i) { return i + 1 < c.dim_mult.size() && c.temperal_downsample[i]; }
bool decoder_temporal(const VaeConfig& c, size_t i) {
  return i + 1 < c.dim_mult.size() && c.temperal_downsample[c.dim_mult.size() - 2 - i];
}

// --- the reference's feat_cache / feat_idx ---------------------------------------------------

// One slot per cached layer, visited in the same order in every chunk (feat_idx). A slot holds
// the last CACHE_T frames of its convolution's input (`x`), or the "Rep" marker that the first
// upsample3d chunk leaves behind (pitfall 5).
struct Slot {
  at::Tensor x;      // undefined: None (the layer has not run yet)
  bool rep = false;  // feat_cache[idx] == "Rep"
};

class FeatCache {
 public:
  void next_chunk() { idx_ = 0; }  // self._conv_idx = [0] before every chunk
  Slot& slot() {                   // feat_cache[feat_idx[0]], then feat_idx[0] += 1
    if (idx_ == slots_.size()) slots_.emplace_back();
    return slots_[idx_++];
  }

 private:
  std::vector<Slot> slots_;
  size_t idx_ = 0;
};

at::Tensor last_frames(const at::Tensor& x, int64_t n) { return x.slice(2, std::max<int64_t>(0, x.size(2) - n)); }

// --- WanCausalConv3d ---------------------------------------------------------------------------

// Causal in time: 2 * pad_t zero frames on the left only (none on the right), pad_h / pad_w on
// both sides; the frames cached from the previous chunk stand in for as many of the left zero
// frames. The zero padding is explicit (F.pad) and the convolution itself unpadded, as in the
// reference.
at::Tensor causal_conv3d(const Params& p, const std::string& prefix, at::Tensor x, const at::Tensor& cache,
                         std::array<int64_t, 3> pad, std::array<int64_t, 3> stride = {1, 1, 1}) {
  int64_t left = 2 * pad[0];
  if (cache.defined() && left > 0) {
    x = at::cat({cache.to(x.device()), x}, 2);
    left -= cache.size(2);
  }
  x = at::constant_pad_nd(x, {pad[2], pad[2], pad[1], pad[1], left, 0});
  return at::conv3d(x, param(p, prefix + ".weight"), param(p, prefix + ".bias"), stride);
}

// The pattern every 3x3x3 causal convolution repeats in the cached forward: keep the last
// CACHE_T frames of its input for the next chunk (with one frame only, the last cached frame of
// the chunk before goes in front), and convolve with the previous chunk's frames in front.
at::Tensor cached_conv3d(const Params& p, const std::string& prefix, const at::Tensor& x, FeatCache& cache) {
  Slot& slot = cache.slot();
  at::Tensor cache_x = last_frames(x, CACHE_T).clone();
  if (cache_x.size(2) < CACHE_T && slot.x.defined()) cache_x = at::cat({last_frames(slot.x, 1), cache_x}, 2);
  at::Tensor out = causal_conv3d(p, prefix, x, slot.x, {1, 1, 1});
  slot.x = std::move(cache_x);
  return out;
}

// --- WanRMS_norm -------------------------------------------------------------------------------

// Pitfall 1 (its VAE half): not an RMS norm over the last dim but F.normalize over the channels
// (x / max(||x||_2, 1e-12)), times sqrt(C), times gamma; in float32 for half types. The bias is
// never a parameter in Wan2.1 (bias=False: a constant 0).
at::Tensor rms_norm(const Params& p, const std::string& prefix, const at::Tensor& x) {
  const bool fp32 = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  const at::Tensor xf = fp32 ? x.to(at::kFloat) : x;
  const at::Tensor normalized = (xf / xf.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12)).to(x.scalar_type());
  return normalized * std::sqrt(static_cast<double>(x.size(1))) * param(p, prefix + ".gamma");
}

// --- WanResidualBlock --------------------------------------------------------------------------

at::Tensor residual_block(const Params& p, const std::string& prefix, at::Tensor x, FeatCache& cache) {
  // conv_shortcut (a 1x1x1 causal conv: no temporal padding, no cache) exists when in != out.
  const at::Tensor h = has_param(p, prefix + ".conv_shortcut.weight")
                           ? causal_conv3d(p, prefix + ".conv_shortcut", x, {}, {0, 0, 0})
                           : x;
  x = at::silu(rms_norm(p, prefix + ".norm1", x));
  x = cached_conv3d(p, prefix + ".conv1", x, cache);
  x = at::silu(rms_norm(p, prefix + ".norm2", x));
  // dropout: identity at inference, no parameters (pitfall 7)
  x = cached_conv3d(p, prefix + ".conv2", x, cache);
  return x + h;
}

// --- WanAttentionBlock -------------------------------------------------------------------------

// Single-head self-attention within each frame (2D, over H x W); no cache.
at::Tensor attention_block(const Params& p, const std::string& prefix, const at::Tensor& x) {
  const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
  at::Tensor y = x.permute({0, 2, 1, 3, 4}).reshape({b * t, c, h, w});
  y = rms_norm(p, prefix + ".norm", y);  // images=True: gamma [C, 1, 1]
  at::Tensor qkv = at::conv2d(y, param(p, prefix + ".to_qkv.weight"), param(p, prefix + ".to_qkv.bias"));
  qkv = qkv.reshape({b * t, 1, c * 3, -1}).permute({0, 1, 3, 2}).contiguous();  // [bt, 1, hw, 3c]
  const auto qkv_chunks = qkv.chunk(3, -1);
  y = at::scaled_dot_product_attention(qkv_chunks[0], qkv_chunks[1], qkv_chunks[2]);
  y = y.squeeze(1).permute({0, 2, 1}).reshape({b * t, c, h, w});
  y = at::conv2d(y, param(p, prefix + ".proj.weight"), param(p, prefix + ".proj.bias"));
  return y.view({b, t, c, h, w}).permute({0, 2, 1, 3, 4}) + x;
}

// --- WanResample -------------------------------------------------------------------------------

enum class Resample { upsample2d, upsample3d, downsample2d, downsample3d };

// upsample3d's time_conv doubles the frames: its 2C output channels are frame 2i (the first C)
// and frame 2i + 1 (the second C). Pitfall 5: the first chunk skips it altogether (leaving the
// "Rep" marker: one frame stays one frame); the second chunk convolves with zero frames in front
// (and caches a zero frame before its own); later chunks with the cached frames.
at::Tensor upsample_time_conv(const Params& p, const std::string& prefix, at::Tensor x, FeatCache& cache) {
  Slot& slot = cache.slot();
  if (!slot.x.defined() && !slot.rep) {
    slot.rep = true;
    return x;
  }
  const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
  at::Tensor cache_x = last_frames(x, CACHE_T).clone();
  if (cache_x.size(2) < CACHE_T)
    cache_x = at::cat({slot.rep ? at::zeros_like(cache_x) : last_frames(slot.x, 1), cache_x}, 2);
  x = causal_conv3d(p, prefix + ".time_conv", x, slot.rep ? at::Tensor() : slot.x, {1, 0, 0});
  slot = Slot{std::move(cache_x), false};
  x = x.reshape({b, 2, c, t, h, w});
  return at::stack({x.select(1, 0), x.select(1, 1)}, 3).reshape({b, c, t * 2, h, w});
}

// downsample3d's time_conv (kernel 3, stride 2, no padding) over the last frame of the previous
// chunk followed by this chunk; the first chunk keeps its frame(s) as they are (no temporal conv).
at::Tensor downsample_time_conv(const Params& p, const std::string& prefix, at::Tensor x, FeatCache& cache) {
  Slot& slot = cache.slot();
  if (!slot.x.defined()) {
    slot.x = x.clone();
    return x;
  }
  at::Tensor cache_x = last_frames(x, 1).clone();
  x = causal_conv3d(p, prefix + ".time_conv", at::cat({last_frames(slot.x, 1), x}, 2), {}, {0, 0, 0}, {2, 1, 1});
  slot.x = std::move(cache_x);
  return x;
}

at::Tensor resample(const Params& p, const std::string& prefix, Resample mode, at::Tensor x, FeatCache& cache) {
  if (mode == Resample::upsample3d) x = upsample_time_conv(p, prefix, x, cache);
  // Per frame in 2D. resample.0 is the parameterless WanUpsample (nearest-exact x2, computed in
  // float32) or ZeroPad2d((0, 1, 0, 1)); resample.1 the Conv2d.
  const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
  x = x.permute({0, 2, 1, 3, 4}).reshape({b * t, c, h, w});
  const at::Tensor &weight = param(p, prefix + ".resample.1.weight"), &bias = param(p, prefix + ".resample.1.bias");
  if (mode == Resample::upsample2d || mode == Resample::upsample3d) {
    const at::Tensor up = at::_upsample_nearest_exact2d(x.to(at::kFloat), {2 * h, 2 * w}, 2.0, 2.0);
    x = at::conv2d(up.to(x.scalar_type()), weight, bias, /*stride=*/{1, 1}, /*padding=*/{1, 1});
  } else {
    x = at::conv2d(at::constant_pad_nd(x, {0, 1, 0, 1}), weight, bias, /*stride=*/{2, 2});
  }
  x = x.view({b, t, x.size(1), x.size(2), x.size(3)}).permute({0, 2, 1, 3, 4});
  if (mode == Resample::downsample3d) x = downsample_time_conv(p, prefix, x, cache);
  return x;
}

// --- WanMidBlock -------------------------------------------------------------------------------

at::Tensor mid_block(const Params& p, const std::string& prefix, at::Tensor x, FeatCache& cache) {
  x = residual_block(p, prefix + ".resnets.0", x, cache);
  x = attention_block(p, prefix + ".attentions.0", x);
  return residual_block(p, prefix + ".resnets.1", x, cache);
}

// --- AvgDown3D / DupUp3D (Wan2.2's parameterless shortcuts) ------------------------------------

// AvgDown3D: space/time to channels, then the mean of groups of consecutive channels. Each
// (ft x fs x fs) block of a channel c becomes channels c * f + (t, y, x) (f = ft fs fs), and
// output channel o averages channels o * g ... o * g + g - 1 of those (g = C f / out). A chunk
// whose frame count is not a multiple of ft gets zero frames in front first: the encoder's
// 1-frame first chunk averages its frame with a zero frame on a temporal level. No cache.
at::Tensor avg_down(at::Tensor x, int64_t out_channels, int64_t ft, int64_t fs) {
  const int64_t pad_t = (ft - x.size(2) % ft) % ft;
  if (pad_t > 0) x = at::constant_pad_nd(x, {0, 0, 0, 0, pad_t, 0});
  const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
  const int64_t group = c * ft * fs * fs / out_channels;
  x = x.reshape({b, c, t / ft, ft, h / fs, fs, w / fs, fs}).permute({0, 1, 3, 5, 7, 2, 4, 6}).contiguous();
  return x.view({b, out_channels, group, t / ft, h / fs, w / fs}).mean(2);
}

// DupUp3D, the converse: every input channel repeated r = out f / C times in place
// (repeat_interleave), the resulting out * f channels read as (out, t, y, x) and spread over
// (ft x fs x fs) blocks. On the first chunk the first ft - 1 frames are dropped, as the
// upsample3d it shortcuts keeps the first latent frame a single frame.
at::Tensor dup_up(const at::Tensor& x, int64_t out_channels, int64_t ft, int64_t fs, bool first_chunk) {
  const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
  at::Tensor y = x.repeat_interleave(out_channels * ft * fs * fs / c, 1);
  y = y.view({b, out_channels, ft, fs, fs, t, h, w}).permute({0, 1, 5, 2, 6, 3, 7, 4}).contiguous();
  y = y.view({b, out_channels, t * ft, h * fs, w * fs});
  return first_chunk ? y.slice(2, ft - 1) : y;
}

// --- WanResidualDownBlock / WanResidualUpBlock (Wan2.2: is_residual true) ----------------------

// Level i of the residual encoder: num_res_blocks residual blocks (resnets.*), the downsampler
// on every level but the last, plus the AvgDown3D of the block's input (it exists on the last
// level too, with factors 1: an identity when the widths match).
at::Tensor residual_down_block(const Params& p, const VaeConfig& c, size_t i, at::Tensor x, FeatCache& cache) {
  const std::string prefix = "encoder.down_blocks." + std::to_string(i);
  const bool down = i + 1 != c.dim_mult.size(), temporal = encoder_temporal(c, i);
  const at::Tensor input = x;  // x_copy
  for (int64_t r = 0; r < c.num_res_blocks; ++r)
    x = residual_block(p, prefix + ".resnets." + std::to_string(r), x, cache);
  if (down)
    x = resample(p, prefix + ".downsampler", temporal ? Resample::downsample3d : Resample::downsample2d, x, cache);
  return x + avg_down(input, encoder_dims(c)[i + 1], temporal ? 2 : 1, down ? 2 : 1);
}

// Level i of the residual decoder: num_res_blocks + 1 residual blocks, then on every level but
// the last the upsampler (its 2D convolution keeps the width: upsample_out_dim = out_dim) plus
// the DupUp3D of the block's input (always spatial x2; temporal x2 with upsample3d).
at::Tensor residual_up_block(const Params& p, const VaeConfig& c, size_t i, at::Tensor x, FeatCache& cache,
                             bool first_chunk) {
  const std::string prefix = "decoder.up_blocks." + std::to_string(i);
  const bool up = i + 1 != c.dim_mult.size(), temporal = decoder_temporal(c, i);
  const at::Tensor input = x;  // x_copy
  for (int64_t r = 0; r <= c.num_res_blocks; ++r)
    x = residual_block(p, prefix + ".resnets." + std::to_string(r), x, cache);
  if (!up) return x;
  x = resample(p, prefix + ".upsampler", temporal ? Resample::upsample3d : Resample::upsample2d, x, cache);
  return x + dup_up(input, decoder_dims(c)[i + 1], temporal ? 2 : 1, 2, first_chunk);
}

// --- patchify / unpatchify ---------------------------------------------------------------------

// [B, C, F, H, W] -> [B, C p p, F, H / p, W / p]: pixel (y p + dy, x p + dx) of channel c goes to
// channel c p^2 + dx p + dy (the column offset before the row offset, as diffusers orders it).
at::Tensor patchify(const at::Tensor& x, int64_t p) {
  if (p == 1) return x;
  const int64_t b = x.size(0), c = x.size(1), f = x.size(2), h = x.size(3), w = x.size(4);
  return x.reshape({b, c, f, h / p, p, w / p, p})
      .permute({0, 1, 6, 4, 2, 3, 5})
      .contiguous()
      .view({b, c * p * p, f, h / p, w / p});
}

at::Tensor unpatchify(const at::Tensor& x, int64_t p) {
  if (p == 1) return x;
  const int64_t b = x.size(0), c = x.size(1) / (p * p), f = x.size(2), h = x.size(3), w = x.size(4);
  return x.reshape({b, c, p, p, f, h, w})
      .permute({0, 1, 4, 5, 3, 6, 2})
      .contiguous()
      .view({b, c, f, h * p, w * p});
}

// --- WanEncoder3d / WanDecoder3d --------------------------------------------------------------------

// One chunk through the encoder: conv_in, the flat down_blocks list (num_res_blocks residual
// blocks per level, then a resample on every level but the last), mid block, head.
// Wan2.2 (is_residual): one WanResidualDownBlock per level instead (no encoder attention there:
// attn_scales is ignored).
at::Tensor encoder3d(const Params& p, const VaeConfig& c, at::Tensor x, FeatCache& cache) {
  x = cached_conv3d(p, "encoder.conv_in", x, cache);
  const size_t levels = c.dim_mult.size();
  int64_t n = 0;
  for (size_t i = 0; i < levels; ++i) {
    if (c.is_residual) {
      x = residual_down_block(p, c, i, x, cache);
      continue;
    }
    for (int64_t r = 0; r < c.num_res_blocks; ++r)
      x = residual_block(p, "encoder.down_blocks." + std::to_string(n++), x, cache);
    if (i + 1 != levels)
      x = resample(p, "encoder.down_blocks." + std::to_string(n++),
                   c.temperal_downsample[i] ? Resample::downsample3d : Resample::downsample2d, x, cache);
  }
  x = mid_block(p, "encoder.mid_block", x, cache);
  x = at::silu(rms_norm(p, "encoder.norm_out", x));
  return cached_conv3d(p, "encoder.conv_out", x, cache);
}

// One latent frame through the decoder: conv_in, mid block, up_blocks (num_res_blocks + 1
// residual blocks, then upsamplers.0 on every level but the last; temperal_upsample is
// temperal_downsample reversed), head. Wan2.2 (is_residual): WanResidualUpBlocks, whose DupUp3D
// shortcut needs to know the first chunk.
at::Tensor decoder3d(const Params& p, const VaeConfig& c, at::Tensor x, FeatCache& cache, bool first_chunk) {
  x = cached_conv3d(p, "decoder.conv_in", x, cache);
  x = mid_block(p, "decoder.mid_block", x, cache);
  const size_t levels = c.dim_mult.size();
  for (size_t i = 0; i < levels; ++i) {
    if (c.is_residual) {
      x = residual_up_block(p, c, i, x, cache, first_chunk);
      continue;
    }
    const std::string block = "decoder.up_blocks." + std::to_string(i);
    for (int64_t r = 0; r <= c.num_res_blocks; ++r)
      x = residual_block(p, block + ".resnets." + std::to_string(r), x, cache);
    if (i + 1 != levels)
      x = resample(p, block + ".upsamplers.0",
                   decoder_temporal(c, i) ? Resample::upsample3d : Resample::upsample2d, x, cache);
  }
  x = at::silu(rms_norm(p, "decoder.norm_out", x));
  return cached_conv3d(p, "decoder.conv_out", x, cache);
}

// --- AutoencoderKLWan._encode / _decode ----------------------------------------------------------

// Pitfall 5: the first frame alone, then chunks of 4 frames, through one cache; quant_conv on
// the concatenation. Returns the posterior's mean: the first z_dim channels (no sampling). The
// frames are patchified first (Wan2.2).
at::Tensor encode_mean(const Params& p, const VaeConfig& c, const at::Tensor& frames) {
  const at::Tensor x = patchify(frames, c.patch_size);
  FeatCache cache;
  const int64_t chunks = 1 + (x.size(2) - 1) / 4;
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < chunks; ++i) {
    cache.next_chunk();
    out.push_back(encoder3d(p, c, i == 0 ? x.slice(2, 0, 1) : x.slice(2, 1 + 4 * (i - 1), 1 + 4 * i), cache));
  }
  const at::Tensor enc = causal_conv3d(p, "quant_conv", at::cat(out, 2), {}, {0, 0, 0});
  return enc.slice(1, 0, c.z_dim);
}

// Pitfall 5: post_quant_conv, then one latent frame at a time through one cache (the first one
// with first_chunk). Neither unpatchified nor clamped here (tiled decoding blends the patchified
// tiles, then unpatchifies and clamps). _decode applies post_quant_conv to all frames
// at once, tiled_decode to each frame of a tile: the same 1x1x1 convolution, but the
// convolution's rounding depends on the input's size, so each is mirrored.
at::Tensor decode_unclamped(const Params& p, const VaeConfig& c, const at::Tensor& z, bool post_quant_per_frame) {
  const auto post_quant_conv = [&](const at::Tensor& x) {
    return causal_conv3d(p, "post_quant_conv", x, {}, {0, 0, 0});
  };
  const at::Tensor x = post_quant_per_frame ? z : post_quant_conv(z);
  FeatCache cache;
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < x.size(2); ++i) {
    cache.next_chunk();
    const at::Tensor frame = x.slice(2, i, i + 1);
    out.push_back(decoder3d(p, c, post_quant_per_frame ? post_quant_conv(frame) : frame, cache, i == 0));
  }
  return at::cat(out, 2);
}

// --- AutoencoderKLWan.tiled_decode -----------------------------------------------------------------

// blend_v / blend_h: the first `extent` rows (columns) of b fade linearly from a's last rows
// (columns) into b's own, in place; the weights are computed in double as Python does.
void blend(const at::Tensor& a, at::Tensor& b, int64_t extent, int64_t dim) {
  extent = std::min({a.size(dim), b.size(dim), extent});
  for (int64_t y = 0; y < extent; ++y) {
    const double wb = static_cast<double>(y) / static_cast<double>(extent);
    b.select(dim, y).copy_(a.select(dim, a.size(dim) - extent + y) * (1 - wb) + b.select(dim, y) * wb);
  }
}

// Tiles of tile_h x tile_w every stride_h x stride_w, in units of the decoder's (patchified)
// output, i.e. pixels / patch_size as diffusers divides them (latent tiles and strides are these
// over the network's factor), each decoded with its own cache; each tile is blended with the
// tile above and the tile to its left (already blended: the reference blends in place, so this
// order matters), cropped to the stride, and the mosaic is cropped to the frame size.
at::Tensor tiled_decode(const Params& p, const VaeConfig& c, const at::Tensor& z, int64_t tile_h, int64_t tile_w,
                        int64_t stride_h, int64_t stride_w) {
  const int64_t s = network_factor(c), height = z.size(3), width = z.size(4);
  std::vector<std::vector<at::Tensor>> rows;
  for (int64_t i = 0; i < height; i += stride_h / s) {
    std::vector<at::Tensor> row;
    for (int64_t j = 0; j < width; j += stride_w / s)
      row.push_back(decode_unclamped(p, c, z.slice(3, i, i + tile_h / s).slice(4, j, j + tile_w / s), true));
    rows.push_back(std::move(row));
  }
  std::vector<at::Tensor> result_rows;
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<at::Tensor> result_row;
    for (size_t j = 0; j < rows[i].size(); ++j) {
      at::Tensor& tile = rows[i][j];
      if (i > 0) blend(rows[i - 1][j], tile, tile_h - stride_h, 3);
      if (j > 0) blend(rows[i][j - 1], tile, tile_w - stride_w, 4);
      result_row.push_back(tile.slice(3, 0, stride_h).slice(4, 0, stride_w));
    }
    result_rows.push_back(at::cat(result_row, -1));
  }
  return at::cat(result_rows, 3).slice(3, 0, height * s).slice(4, 0, width * s);
}

// --- parameters ------------------------------------------------------------------------------------

using Expected = std::vector<std::pair<std::string, std::vector<int64_t>>>;

void add_conv(Expected& out, const std::string& name, int64_t in, int64_t o, std::vector<int64_t> kernel) {
  std::vector<int64_t> shape{o, in};
  shape.insert(shape.end(), kernel.begin(), kernel.end());
  out.push_back({name + ".weight", shape});
  out.push_back({name + ".bias", {o}});
}

void add_residual_block(Expected& out, const std::string& b, int64_t in, int64_t o) {
  out.push_back({b + ".norm1.gamma", {in, 1, 1, 1}});
  add_conv(out, b + ".conv1", in, o, {3, 3, 3});
  out.push_back({b + ".norm2.gamma", {o, 1, 1, 1}});
  add_conv(out, b + ".conv2", o, o, {3, 3, 3});
  if (in != o) add_conv(out, b + ".conv_shortcut", in, o, {1, 1, 1});
}

void add_mid_block(Expected& out, const std::string& b, int64_t dim) {
  add_residual_block(out, b + ".resnets.0", dim, dim);
  out.push_back({b + ".attentions.0.norm.gamma", {dim, 1, 1}});
  add_conv(out, b + ".attentions.0.to_qkv", dim, 3 * dim, {1, 1});
  add_conv(out, b + ".attentions.0.proj", dim, dim, {1, 1});
  add_residual_block(out, b + ".resnets.1", dim, dim);
}

// Every parameter of AutoencoderKLWan with its shape, by diffusers name.
Expected expected_parameters(const VaeConfig& c) {
  Expected out;
  const size_t levels = c.dim_mult.size();
  const std::vector<int64_t> dims = encoder_dims(c);
  add_conv(out, "encoder.conv_in", c.in_channels, dims[0], {3, 3, 3});
  int64_t n = 0;
  for (size_t i = 0; i < levels; ++i) {
    int64_t in = dims[i];
    const int64_t o = dims[i + 1];
    if (c.is_residual) {  // WanResidualDownBlock: resnets.*, downsampler (avg_shortcut has no parameters)
      const std::string b = "encoder.down_blocks." + std::to_string(i);
      for (int64_t r = 0; r < c.num_res_blocks; ++r, in = o)
        add_residual_block(out, b + ".resnets." + std::to_string(r), in, o);
      if (i + 1 != levels) {
        add_conv(out, b + ".downsampler.resample.1", o, o, {3, 3});
        if (encoder_temporal(c, i)) add_conv(out, b + ".downsampler.time_conv", o, o, {3, 1, 1});
      }
      continue;
    }
    for (int64_t r = 0; r < c.num_res_blocks; ++r, in = o)
      add_residual_block(out, "encoder.down_blocks." + std::to_string(n++), in, o);
    if (i + 1 != levels) {
      const std::string b = "encoder.down_blocks." + std::to_string(n++);
      add_conv(out, b + ".resample.1", o, o, {3, 3});
      if (c.temperal_downsample[i]) add_conv(out, b + ".time_conv", o, o, {3, 1, 1});
    }
  }
  add_mid_block(out, "encoder.mid_block", dims.back());
  out.push_back({"encoder.norm_out.gamma", {dims.back(), 1, 1, 1}});
  add_conv(out, "encoder.conv_out", dims.back(), 2 * c.z_dim, {3, 3, 3});
  add_conv(out, "quant_conv", 2 * c.z_dim, 2 * c.z_dim, {1, 1, 1});
  add_conv(out, "post_quant_conv", c.z_dim, c.z_dim, {1, 1, 1});

  // decoder: in Wan2.1 every upsampler halves the channels, so the blocks after the first take
  // in_dim / 2; Wan2.2's residual up blocks keep them (upsampler, singular: resample.1 out -> out).
  const std::vector<int64_t> ddims = decoder_dims(c);
  add_conv(out, "decoder.conv_in", c.z_dim, ddims[0], {3, 3, 3});
  add_mid_block(out, "decoder.mid_block", ddims[0]);
  for (size_t i = 0; i < levels; ++i) {
    const std::string b = "decoder.up_blocks." + std::to_string(i);
    int64_t in = i > 0 && !c.is_residual ? ddims[i] / 2 : ddims[i];
    const int64_t o = ddims[i + 1];
    if (c.is_residual) {
      for (int64_t r = 0; r <= c.num_res_blocks; ++r, in = o)
        add_residual_block(out, b + ".resnets." + std::to_string(r), in, o);
      if (i + 1 != levels) {
        add_conv(out, b + ".upsampler.resample.1", o, o, {3, 3});
        if (decoder_temporal(c, i)) add_conv(out, b + ".upsampler.time_conv", o, 2 * o, {3, 1, 1});
      }
      continue;
    }
    for (int64_t r = 0; r <= c.num_res_blocks; ++r, in = o)
      add_residual_block(out, b + ".resnets." + std::to_string(r), in, o);
    if (i + 1 != levels) {
      add_conv(out, b + ".upsamplers.0.resample.1", o, o / 2, {3, 3});
      if (c.temperal_downsample[levels - 2 - i]) add_conv(out, b + ".upsamplers.0.time_conv", o, 2 * o, {3, 1, 1});
    }
  }
  out.push_back({"decoder.norm_out.gamma", {ddims.back(), 1, 1, 1}});
  add_conv(out, "decoder.conv_out", ddims.back(), c.out_channels, {3, 3, 3});
  return out;
}

// Fills diffusers' default latent statistics for a 16-channel config that has none.
void fill_default_statistics(VaeConfig& c) {
  if (c.z_dim == 16 && c.latents_mean.empty()) c.latents_mean = kDefaultLatentsMean;
  if (c.z_dim == 16 && c.latents_std.empty()) c.latents_std = kDefaultLatentsStd;
}

// Everything left 0 for "derive it": decoder_base_dim (base_dim) and the scale factors (the
// network's). Run after the structural fields are valid.
void fill_derived(VaeConfig& c) {
  if (c.decoder_base_dim == 0) c.decoder_base_dim = c.base_dim;
  if (c.scale_factor_spatial == 0) c.scale_factor_spatial = spatial_factor(c);
  if (c.scale_factor_temporal == 0) c.scale_factor_temporal = temporal_factor(c);
}

void validate(const VaeConfig& c) {
  auto positive = [](int64_t v, const char* key) {
    check_arg(v > 0, std::string("wan vae config: '") + key + "' must be positive, got " + std::to_string(v));
  };
  positive(c.base_dim, "base_dim");
  check_arg(c.decoder_base_dim >= 0, "wan vae config: 'decoder_base_dim' must be positive (0: base_dim), got " +
                                         std::to_string(c.decoder_base_dim));
  positive(c.z_dim, "z_dim");
  positive(c.patch_size, "patch_size");
  check_arg(c.scale_factor_spatial >= 0 && c.scale_factor_temporal >= 0,
            "wan vae config: the scale factors must be positive");
  positive(c.num_res_blocks, "num_res_blocks");
  positive(c.in_channels, "in_channels");
  positive(c.out_channels, "out_channels");
  check_arg(!c.dim_mult.empty() && c.dim_mult.size() <= 8, "wan vae config: 'dim_mult' must have 1 to 8 levels");
  for (int64_t m : c.dim_mult) positive(m, "dim_mult");
  check_arg(c.temperal_downsample.size() == c.dim_mult.size() - 1,
            "wan vae config: 'temperal_downsample' must have len(dim_mult) - 1 = " +
                std::to_string(c.dim_mult.size() - 1) + " entries, got " +
                std::to_string(c.temperal_downsample.size()));
  check_arg(c.latents_mean.size() == static_cast<size_t>(c.z_dim) &&
                c.latents_std.size() == static_cast<size_t>(c.z_dim),
            "wan vae config: 'latents_mean' and 'latents_std' must have z_dim = " + std::to_string(c.z_dim) +
                " values each, got " + std::to_string(c.latents_mean.size()) + " and " +
                std::to_string(c.latents_std.size()));
  for (size_t i = 0; i < c.latents_std.size(); ++i)
    check_arg(std::isfinite(c.latents_std[i]) && c.latents_std[i] != 0 && std::isfinite(c.latents_mean[i]),
              "wan vae config: latents_mean / latents_std must be finite and latents_std non-zero (channel " +
                  std::to_string(i) + ")");
  // patchify reads in_channels / p^2 channels per pixel, unpatchify writes out_channels / p^2.
  const int64_t p2 = c.patch_size * c.patch_size;
  check_arg(c.in_channels % p2 == 0 && c.out_channels % p2 == 0,
            "wan vae config: in_channels = " + std::to_string(c.in_channels) + " and out_channels = " +
                std::to_string(c.out_channels) + " must be multiples of patch_size^2 = " + std::to_string(p2) +
                " (they count the patchified channels: 3 x " + std::to_string(p2) + " for RGB)");
  if (c.is_residual) {
    // AvgDown3D and DupUp3D regroup channels: diffusers refuses to build a level whose widths
    // do not divide (AvgDown3D on the last level too, with factor 1).
    const std::vector<int64_t> dims = encoder_dims(c), ddims = decoder_dims(c);
    for (size_t i = 0; i < c.dim_mult.size(); ++i) {
      const bool resampled = i + 1 != c.dim_mult.size();
      const int64_t down = (encoder_temporal(c, i) ? 2 : 1) * (resampled ? 4 : 1);
      check_arg(dims[i] * down % dims[i + 1] == 0,
                "wan vae config: encoder level " + std::to_string(i) + " (AvgDown3D " + std::to_string(dims[i]) +
                    " -> " + std::to_string(dims[i + 1]) + " channels, factor " + std::to_string(down) +
                    "): in_channels x factor must be divisible by out_channels");
      const int64_t up = (decoder_temporal(c, i) ? 2 : 1) * 4;
      check_arg(!resampled || ddims[i + 1] * up % ddims[i] == 0,
                "wan vae config: decoder level " + std::to_string(i) + " (DupUp3D " + std::to_string(ddims[i]) +
                    " -> " + std::to_string(ddims[i + 1]) + " channels, factor " + std::to_string(up) +
                    "): out_channels x factor must be divisible by in_channels");
    }
  } else {
    // The Wan2.1 encoder adds a WanAttentionBlock after each residual block of a level whose
    // scale (1, 1/2, 1/4, ...) is listed; diffusers' own encoder cannot run that (it passes the
    // cache to a block that takes none), so such a config is not supported. (The residual
    // layout ignores attn_scales.)
    double scale = 1.0;
    for (size_t i = 0; i < c.dim_mult.size(); ++i, scale /= 2)
      check(std::find(c.attn_scales.begin(), c.attn_scales.end(), scale) == c.attn_scales.end(),
            ErrorCode::unsupported,
            "wan vae config: attn_scales containing " + std::to_string(scale) +
                " (encoder attention blocks) is not supported");
  }
  // Tiled decoding uses the spatial factor of the network itself; diffusers reads it from the
  // config, so a different one would tile differently.
  check(c.scale_factor_spatial == 0 || c.scale_factor_spatial == spatial_factor(c), ErrorCode::unsupported,
        "wan vae config: scale_factor_spatial = " + std::to_string(c.scale_factor_spatial) +
            " differs from the network's patch_size x 2^(levels - 1) = " + std::to_string(spatial_factor(c)));
}

// latents_mean and 1 / latents_std as [1, z_dim, 1, 1, 1] tensors, the way diffusers' pipelines
// build them: float32 from the config's list, cast to the latents' dtype, the reciprocal taken
// in that dtype.
std::pair<at::Tensor, at::Tensor> latent_statistics(const VaeConfig& c, const at::TensorOptions& options) {
  const std::vector<int64_t> shape{1, c.z_dim, 1, 1, 1};
  const at::Tensor mean = at::tensor(c.latents_mean, at::kFloat).view(shape).to(options);
  const at::Tensor inv_std = at::reciprocal(at::tensor(c.latents_std, at::kFloat).view(shape).to(options));
  return {mean, inv_std};
}

}  // namespace

// --- config.json ---------------------------------------------------------------------------------

VaeConfig VaeConfig::from_json(const std::string& json_text) {
  using nlohmann::json;
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::parse, std::string("wan vae config: invalid JSON: ") + e.what());
  }
  check(j.is_object(), ErrorCode::parse, "wan vae config: expected a JSON object");
  auto bad = [](const std::string& key, const json& v, const char* what) {
    return Error(ErrorCode::parse, "wan vae config: '" + key + "' must be " + what + ", got " + v.dump());
  };
  auto present = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  auto get_int = [&](const char* key, int64_t& out) {
    if (!present(key)) return;
    if (!j[key].is_number_integer()) throw bad(key, j[key], "an integer");
    out = j[key].get<int64_t>();
  };
  auto get_list = [&](const char* key, auto& out, auto is_item, const char* what) {
    if (!present(key)) return;
    const json& v = j[key];
    if (!v.is_array()) throw bad(key, v, what);
    out.clear();
    for (const json& item : v) {
      if (!is_item(item)) throw bad(key, v, what);
      out.push_back(item.get<typename std::decay_t<decltype(out)>::value_type>());
    }
  };
  const auto is_int = [](const json& v) { return v.is_number_integer(); };
  const auto is_number = [](const json& v) { return v.is_number(); };
  const auto is_bool = [](const json& v) { return v.is_boolean(); };

  VaeConfig c;
  // Wan2.2's VAE: residual down/up blocks, patchified input (null: none), its own decoder width
  // (null: base_dim).
  if (present("is_residual")) {
    if (!j["is_residual"].is_boolean()) throw bad("is_residual", j["is_residual"], "a boolean");
    c.is_residual = j["is_residual"].get<bool>();
  }
  get_int("patch_size", c.patch_size);
  get_int("decoder_base_dim", c.decoder_base_dim);
  check(!present("decoder_base_dim") || c.decoder_base_dim > 0, ErrorCode::parse,
        "wan vae config: 'decoder_base_dim' must be positive or null, got " + std::to_string(c.decoder_base_dim));
  get_int("scale_factor_spatial", c.scale_factor_spatial);
  get_int("scale_factor_temporal", c.scale_factor_temporal);
  for (const char* key : {"scale_factor_spatial", "scale_factor_temporal"})
    check(!present(key) || j[key].get<int64_t>() > 0, ErrorCode::parse,
          std::string("wan vae config: '") + key + "' must be positive or null, got " + j[key].dump());
  get_int("base_dim", c.base_dim);
  get_int("z_dim", c.z_dim);
  get_list("dim_mult", c.dim_mult, is_int, "a list of integers");
  get_int("num_res_blocks", c.num_res_blocks);
  get_list("attn_scales", c.attn_scales, is_number, "a list of numbers");
  get_list("latents_mean", c.latents_mean, is_number, "a list of numbers");
  get_list("latents_std", c.latents_std, is_number, "a list of numbers");
  get_int("in_channels", c.in_channels);
  get_int("out_channels", c.out_channels);
  if (present("temperal_downsample")) {
    std::vector<bool> flags;
    get_list("temperal_downsample", flags, is_bool, "a list of booleans");
    c.temperal_downsample = flags;
  }
  fill_default_statistics(c);
  try {
    validate(c);
  } catch (const Error& e) {
    throw Error(e.code() == ErrorCode::unsupported ? e.code() : ErrorCode::parse, e.what());
  }
  fill_derived(c);
  return c;
}

// --- loading ---------------------------------------------------------------------------------------

Vae::Vae(VaeConfig config, const Checkpoint& weights, at::ScalarType dtype, c10::Device device)
    : config_(std::move(config)) {
  fill_default_statistics(config_);
  validate(config_);
  fill_derived(config_);
  check_arg(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf || dtype == at::kDouble,
            std::string("wan vae: dtype must be a floating type (float32, bfloat16, float16, float64), got ") +
                c10::toString(dtype));

  const auto expected = expected_parameters(config_);
  // Checkpoint name -> diffusers name: the original Wan2.1 layout (wan_2.1_vae.safetensors) is
  // renamed on the fly; ComfyUI's fp8 scales are read with their weights.
  std::map<std::string, std::string> source;  // diffusers name -> checkpoint name
  bool original = false;
  std::string prefix;
  for (const std::string& name : weights.names()) {
    if (detail::is_quantization_key(name)) continue;
    const std::string d = vae_diffusers_key(name, config_.num_res_blocks);
    original = original || d != name;
    if (name.rfind("first_stage_model.", 0) == 0) prefix = "first_stage_model.";
    const auto [it, inserted] = source.emplace(d, name);
    check_arg(inserted, "wan vae checkpoint: '" + name + "' and '" + it->second + "' both map to '" + d + "'");
  }
  // Missing keys first (a different layout, e.g. is_residual not matching the weights), then
  // misshaped ones (a different width).
  size_t missing = 0;
  std::string first_missing, first_misshaped;
  for (const auto& [name, shape] : expected) {
    const auto it = source.find(name);
    if (it == source.end()) {
      if (missing++ == 0)
        first_missing = "'" + name + "'" +
                        (original ? " ('" + prefix + detail::original_vae_key(name, config_.num_res_blocks) +
                                        "' in the original layout)"
                                  : std::string()) +
                        " (expected shape " + shape_str(shape) + ")";
      continue;
    }
    const SafetensorsEntry& e = weights.entry(it->second);
    check_arg(detail::is_weight_dtype(e.dtype), "wan vae checkpoint: '" + it->second + "' is stored as " + e.dtype +
                                                    ", expected a floating point type (" + detail::weight_dtypes() +
                                                    ")");
    if (e.shape != shape && first_misshaped.empty())
      first_misshaped = "wan vae checkpoint: '" + it->second + "' has shape " + shape_str(e.shape) + ", expected " +
                        shape_str(shape) + " for this config";
  }
  check_arg(missing > 0 || first_misshaped.empty(), first_misshaped);
  if (missing > 0)
    throw Error(ErrorCode::not_found, "wan vae checkpoint: missing " + first_missing +
                                          (missing > 1 ? " and " + std::to_string(missing - 1) + " more" : "") +
                                          "; does the config (base_dim, decoder_base_dim, dim_mult, num_res_blocks, is_residual) match the "
                                          "weights?");
  if (source.size() != expected.size()) {
    std::set<std::string> wanted;
    for (const auto& e : expected) wanted.insert(e.first);
    std::string extra;
    size_t count = 0;
    for (const auto& [d, name] : source) {
      if (wanted.count(d)) continue;
      if (count++ < 5) extra += (extra.empty() ? "'" : ", '") + name + "'";
    }
    throw Error(ErrorCode::invalid_argument, "wan vae checkpoint: " + std::to_string(count) +
                                                 " unexpected key(s) for this config: " + extra +
                                                 (count > 5 ? ", ..." : "") +
                                                 " (does is_residual / num_res_blocks match the weights?)");
  }
  for (const auto& [name, shape] : expected)
    params_.emplace(name, detail::read_weight(weights, source.at(name), dtype).to(device));
}

Vae Vae::load(const std::string& directory, at::ScalarType dtype, c10::Device device) {
  namespace fs = std::filesystem;
  // A single file (wan_2.1_vae.safetensors): the config comes from the shapes.
  if (fs::is_regular_file(directory)) return load_vae_file(directory, dtype, device);
  const fs::path config_path = fs::path(directory) / "config.json";
  check(fs::is_regular_file(config_path), ErrorCode::file_not_found, "wan vae: no config.json in '" + directory + "'");
  std::ifstream in(config_path);
  check(in.good(), ErrorCode::io, "wan vae: cannot read '" + config_path.string() + "'");
  std::stringstream text;
  text << in.rdbuf();
  VaeConfig config;
  try {
    config = VaeConfig::from_json(text.str());
  } catch (const Error& e) {
    throw Error(e.code(), config_path.string() + ": " + e.what());
  }
  const Checkpoint weights = Checkpoint::open(directory);
  try {
    return Vae(std::move(config), weights, dtype, device);
  } catch (const Error& e) {
    throw Error(e.code(), std::string(e.what()) + " (in '" + directory + "')");
  }
}

// --- encode / decode ---------------------------------------------------------------------------------


at::Tensor Vae::encode(const at::Tensor& frames, bool normalize) const {
  const VaeConfig& c = config_;
  check_arg(frames.defined() && frames.dim() == 5,
            "wan vae: frames must be [B, C, F, H, W], got " +
                (frames.defined() ? shape_str(frames.sizes()) : std::string("(none)")));
  check_arg(at::isFloatingType(frames.scalar_type()), "wan vae: frames must be floating point (in [-1, 1])");
  check_arg(frames.size(0) > 0, "wan vae: frames has an empty batch");
  const int64_t p2 = c.patch_size * c.patch_size;
  check_arg(frames.size(1) * p2 == c.in_channels,
            "wan vae: frames has " + std::to_string(frames.size(1)) + " channels, the VAE takes " +
                (p2 == 1 ? "in_channels = " + std::to_string(c.in_channels)
                         : "in_channels / patch_size^2 = " + std::to_string(c.in_channels / p2)));
  const int64_t F = frames.size(2), s = spatial_factor(c);
  check_arg(F >= 1 && (F - 1) % 4 == 0,
            "wan vae: the number of frames must be 1 + 4k (1, 5, 9, ...), got " + std::to_string(F));
  for (int d : {3, 4})
    check_arg(frames.size(d) > 0 && frames.size(d) % s == 0,
              std::string("wan vae: frames ") + (d == 3 ? "height" : "width") + " = " + std::to_string(frames.size(d)) +
                  " is not a positive multiple of " + std::to_string(s));

  c10::NoGradGuard no_grad;
  const at::Tensor& w = param(params_, "encoder.conv_in.weight");
  at::Tensor mu = encode_mean(params_, c, frames.to(w.device(), w.scalar_type()));
  if (normalize) {
    // As diffusers' pipelines do before the transformer: (mu - mean) * (1 / std).
    const auto [mean, inv_std] = latent_statistics(c, mu.options());
    mu = (mu - mean) * inv_std;
  }
  return mu.to(frames.options());
}

at::Tensor Vae::decode(const at::Tensor& latents, bool normalized, const TileOptions& tiles) const {
  const VaeConfig& c = config_;
  check_arg(latents.defined() && latents.dim() == 5,
            "wan vae: latents must be [B, C, F, H, W], got " +
                (latents.defined() ? shape_str(latents.sizes()) : std::string("(none)")));
  check_arg(at::isFloatingType(latents.scalar_type()), "wan vae: latents must be floating point");
  check_arg(latents.size(1) == c.z_dim, "wan vae: latents has " + std::to_string(latents.size(1)) +
                                            " channels, the VAE takes z_dim = " + std::to_string(c.z_dim));
  check_arg(latents.size(0) > 0 && latents.size(2) > 0 && latents.size(3) > 0 && latents.size(4) > 0,
            "wan vae: latents has an empty dimension: " + shape_str(latents.sizes()));
  const int64_t s = spatial_factor(c);
  check_arg(tiles.tile_height >= 0 && tiles.tile_width >= 0 && tiles.overlap >= 0,
            "wan vae: tile sizes and overlap must be >= 0");
  const bool tiled = tiles.tile_height > 0 || tiles.tile_width > 0;
  // A tiled dimension: tile and overlap multiples of the spatial factor, overlap < tile; an
  // untiled one (0): one tile spanning the frame, no blending.
  const int64_t height = latents.size(3) * s, width = latents.size(4) * s;
  auto tile_of = [&](int64_t tile, int64_t full, const char* what) -> std::pair<int64_t, int64_t> {
    if (tile == 0) return {full, full};
    check_arg(tile % s == 0 && tiles.overlap % s == 0 && tiles.overlap < tile,
              std::string("wan vae: tile ") + what + " = " + std::to_string(tile) + " and overlap = " +
                  std::to_string(tiles.overlap) + " must be multiples of " + std::to_string(s) +
                  " with overlap < tile");
    return {tile, tile - tiles.overlap};
  };
  const auto [tile_h, stride_h] = tile_of(tiles.tile_height, height, "height");
  const auto [tile_w, stride_w] = tile_of(tiles.tile_width, width, "width");

  c10::NoGradGuard no_grad;
  const at::Tensor& w = param(params_, "decoder.conv_in.weight");
  at::Tensor z = latents.to(w.device(), w.scalar_type());
  if (normalized) {
    // Pitfall 5: un-normalize as diffusers' pipelines do before decoding: z / (1 / std) + mean.
    const auto [mean, inv_std] = latent_statistics(c, z.options());
    z = z / inv_std + mean;
  }
  // As diffusers: tiles only when the frame is larger than one tile. The tiles are blended on
  // the decoder's patchified output (tile sizes over patch_size), unpatchified afterwards.
  const int64_t ps = c.patch_size;
  const at::Tensor out = tiled && (height > tile_h || width > tile_w)
                             ? tiled_decode(params_, c, z, tile_h / ps, tile_w / ps, stride_h / ps, stride_w / ps)
                             : decode_unclamped(params_, c, z, false);
  // pitfall 5: clamped to [-1, 1] (after the unpatchify, as diffusers; elementwise either way)
  return at::clamp(unpatchify(out, ps), -1.0, 1.0).to(latents.options());
}

}  // namespace drb::models::wan
