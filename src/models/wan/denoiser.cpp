#include "derrumbe/models/wan/denoiser.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "derrumbe/sample/parameterization.hpp"

namespace drb::models::wan {

namespace {

at::Tensor checked_embeds(const at::Tensor& e, const Transformer& t, const char* name) {
  check_arg(e.dim() == 3 && e.size(2) == t.config().text_dim,
            std::string("WanDenoiser: ") + name + " must be [B, L, " + std::to_string(t.config().text_dim) + "], got " +
                c10::str(e.sizes()));
  check_arg(at::isFloatingType(e.scalar_type()) && at::isfinite(e).all().item<bool>(),
            std::string("WanDenoiser: ") + name + " must be finite floating point");
  return e;
}

// A control given for `channels` channels of the model (exactly, or at most), 0: the model
// takes none, which `what` explains.
void check_control(const at::Tensor& c, int64_t channels, bool exact, const char* name, const std::string& what) {
  if (!c.defined()) return;
  check_arg(channels > 0, std::string("WanDenoiser: a control.") + name + " was given, but " + what);
  check_arg(c.dim() == 5 && (exact ? c.size(1) == channels : c.size(1) <= channels) && c.numel() > 0,
            std::string("WanDenoiser: control.") + name + " must be [B, C " + (exact ? "= " : "<= ") +
                std::to_string(channels) + ", F, H, W], got " + c10::str(c.sizes()));
  check_arg(at::isFloatingType(c.scalar_type()) && at::isfinite(c).all().item<bool>(),
            std::string("WanDenoiser: control.") + name + " must be finite floating point");
}

// A control of batch 1 or B for a model batch of branches x B (the branches are concatenated
// along the batch, each with the B items in order).
at::Tensor batched(const at::Tensor& c, int64_t batch, const char* name) {
  check_arg(batch % c.size(0) == 0, std::string("WanDenoiser: control.") + name + " batch " +
                                        std::to_string(c.size(0)) + " does not match the batch " + std::to_string(batch));
  return c.size(0) == batch ? c : c.repeat({batch / c.size(0), 1, 1, 1, 1});
}

}  // namespace

WanDenoiser::WanDenoiser(std::shared_ptr<const Transformer> transformer, at::Tensor prompt_embeds,
                         at::Tensor negative_embeds, bool integer_timesteps, WanControl control)
    : transformer_(std::move(transformer)), integer_timesteps_(integer_timesteps), control_(std::move(control)) {
  check_arg(transformer_ != nullptr, "WanDenoiser: transformer is null");
  check_arg(prompt_embeds.defined(), "WanDenoiser: prompt_embeds is undefined");
  cond_ = checked_embeds(prompt_embeds, *transformer_, "prompt_embeds");
  if (negative_embeds.defined()) uncond_ = checked_embeds(negative_embeds, *transformer_, "negative_embeds");
  const TransformerConfig& c = transformer_->config();
  check_control(control_.concat, c.in_channels - c.out_channels, false, "concat",
                "the transformer takes no channels beyond the latents (in_channels = out_channels)");
  check_control(control_.vace, c.vace_layers.empty() ? 0 : c.vace_in_channels, true, "vace",
                "the transformer has no VACE blocks");
  check_arg(std::isfinite(control_.scale), "WanDenoiser: control.scale must be finite");
}

at::Tensor WanDenoiser::with_concat(const at::Tensor& x, bool with_control) const {
  const int64_t extra = transformer_->config().in_channels - x.size(1);
  if (extra <= 0) return x;
  std::vector<int64_t> shape = x.sizes().vec();
  shape[1] = extra;
  at::Tensor control = at::zeros(shape, x.options());
  if (with_control && control_.concat.defined()) {
    const at::Tensor& c = control_.concat;
    check_arg(c.sizes().slice(2) == x.sizes().slice(2), "WanDenoiser: control.concat is " + c10::str(c.sizes()) +
                                                            ", the latents are " + c10::str(x.sizes()) +
                                                            " (frames, height and width must agree)");
    control.narrow(1, 0, c.size(1)).copy_(batched(c, x.size(0), "concat"));
  }
  return at::cat({x, control}, 1);
}

at::Tensor WanDenoiser::denoise(const at::Tensor& x, double sigma, std::span<const Branch> branches) {
  const int64_t chunks = static_cast<int64_t>(branches.size());
  check_arg(chunks >= 1 && x.size(0) % chunks == 0, "WanDenoiser: batch " + std::to_string(x.size(0)) +
                                                          " does not split into " + std::to_string(chunks) + " branches");
  const int64_t per_chunk = x.size(0) / chunks;
  std::vector<at::Tensor> contexts;
  for (const Branch b : branches) {
    const at::Tensor& e = b == Branch::cond ? cond_ : uncond_;
    check_arg(e.defined(), "WanDenoiser: the uncond branch needs negative_embeds");
    check_arg(e.size(0) == 1 || e.size(0) == per_chunk, "WanDenoiser: embeddings batch " + std::to_string(e.size(0)) +
                                                            " does not match the batch " + std::to_string(per_chunk));
    contexts.push_back(e.expand({per_chunk, e.size(1), e.size(2)}));
  }
  const at::Tensor context = at::cat(contexts, 0);
  // One transformer call for a batch of branches that all see the control, or all do not.
  auto call = [&](const at::Tensor& input, const at::Tensor& ctx, double timestep, bool with_control) {
    const at::Tensor vace = with_control && control_.vace.defined() ? batched(control_.vace, input.size(0), "vace")
                                                                    : at::Tensor();
    return transformer_->forward(with_concat(input, with_control),
                                 at::full({input.size(0)}, timestep, input.options().dtype(at::kFloat)), ctx, vace,
                                 control_.scale);
  };
  const bool split = !control_.in_uncond && std::find(branches.begin(), branches.end(), Branch::uncond) != branches.end();
  // The flow-prediction adapter: the network sees x_t = (1 - t) x and the timestep t * 1000.
  ParameterizedDenoiser flow(
      [&](const at::Tensor& input, double t) {
        const double timestep = integer_timesteps_ ? std::floor(t * 1000.0) : t * 1000.0;
        if (!split) return call(input, context, timestep, true);
        std::vector<at::Tensor> out;
        for (int64_t i = 0; i < chunks; ++i)
          out.push_back(call(input.narrow(0, i * per_chunk, per_chunk), context.narrow(0, i * per_chunk, per_chunk),
                             timestep, branches[i] == Branch::cond));
        return at::cat(out, 0);
      },
      Prediction::flow);
  return flow.denoise(x, sigma);
}

ExpertSwitch::ExpertSwitch(std::shared_ptr<ConditionalDenoiser> high, std::shared_ptr<ConditionalDenoiser> low,
                           double boundary)
    : high_(std::move(high)), low_(std::move(low)), boundary_(boundary) {
  check_arg(high_ != nullptr && low_ != nullptr, "ExpertSwitch: an expert is null");
  check_arg(std::isfinite(boundary) && boundary > 0 && boundary < 1,
            "ExpertSwitch: boundary must be a flow time in (0, 1), got " + std::to_string(boundary));
}

at::Tensor ExpertSwitch::denoise(const at::Tensor& x, double sigma, std::span<const Branch> branches) {
  return (sigma_to_flow_t(sigma) >= boundary_ ? high_ : low_)->denoise(x, sigma, branches);
}

}  // namespace drb::models::wan
