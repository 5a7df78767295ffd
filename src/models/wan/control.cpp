#include "derrumbe/models/wan/control.hpp"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

namespace drb::models::wan {

at::Tensor vace_context(const Vae& vae, const at::Tensor& video, const at::Tensor& mask) {
  const int64_t s = vae.config().scale_factor_spatial;
  check_arg(video.defined() && video.dim() == 5 && video.size(1) == 3 && video.numel() > 0,
            "vace_context: video must be [B, 3, F, H, W], got " +
                (video.defined() ? c10::str(video.sizes()) : std::string("(none)")));
  check_arg(at::isFloatingType(video.scalar_type()) && at::isfinite(video).all().item<bool>(),
            "vace_context: video must be finite floating point");
  const int64_t B = video.size(0), F = video.size(2), H = video.size(3), W = video.size(4);
  check_arg(H % s == 0 && W % s == 0, "vace_context: video height and width (" + std::to_string(H) + ", " +
                                          std::to_string(W) + ") must be multiples of the VAE's factor " +
                                          std::to_string(s));
  at::Tensor m = mask.defined() ? mask : at::ones({B, F, H, W}, video.options());
  check_arg(m.sizes() == at::IntArrayRef({B, F, H, W}) && at::isFloatingType(m.scalar_type()),
            "vace_context: mask must be floating point [B, F, H, W] = " + c10::str(at::IntArrayRef({B, F, H, W})) +
                ", got " + c10::str(m.sizes()));
  check_arg(at::isfinite(m).all().item<bool>(), "vace_context: mask must be finite");
  c10::NoGradGuard no_grad;
  const at::ScalarType dtype = vae.parameters().begin()->second.scalar_type();
  // The video parts see the binarized mask, the mask channels its values (as in the pipeline).
  const at::Tensor m5 = (m > 0.5).to(video.scalar_type()).unsqueeze(1);
  const at::Tensor inactive = vae.encode((video * (1 - m5)).to(dtype));
  const at::Tensor reactive = vae.encode((video * m5).to(dtype));
  const int64_t latent_frames = inactive.size(2);
  // [B, F, H, W] -> [B, s*s, F, H/s, W/s], sub-pixel (row, column) major, then nearest-exact
  // over the frames (the size is unchanged in height and width).
  at::Tensor sub = m.view({B, F, H / s, s, W / s, s}).permute({0, 3, 5, 1, 2, 4}).reshape({B, s * s, F, H / s, W / s});
  sub = at::_upsample_nearest_exact3d(sub.to(at::kFloat), {latent_frames, H / s, W / s}, std::nullopt, std::nullopt,
                                     std::nullopt);
  return at::cat({inactive, reactive, sub.to(inactive.scalar_type())}, 1);
}

}  // namespace drb::models::wan
