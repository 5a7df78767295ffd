#include "derrumbe/models/wan/denoiser.hpp"

#include <ATen/ATen.h>

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

}  // namespace

WanDenoiser::WanDenoiser(std::shared_ptr<const Transformer> transformer, at::Tensor prompt_embeds,
                         at::Tensor negative_embeds, bool integer_timesteps)
    : transformer_(std::move(transformer)), integer_timesteps_(integer_timesteps) {
  check_arg(transformer_ != nullptr, "WanDenoiser: transformer is null");
  check_arg(prompt_embeds.defined(), "WanDenoiser: prompt_embeds is undefined");
  cond_ = checked_embeds(prompt_embeds, *transformer_, "prompt_embeds");
  if (negative_embeds.defined()) uncond_ = checked_embeds(negative_embeds, *transformer_, "negative_embeds");
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
  // The flow-prediction adapter: the network sees x_t = (1 - t) x and the timestep t * 1000.
  ParameterizedDenoiser flow(
      [&](const at::Tensor& input, double t) {
        const double timestep = integer_timesteps_ ? std::floor(t * 1000.0) : t * 1000.0;
        return transformer_->forward(input, at::full({input.size(0)}, timestep, input.options().dtype(at::kFloat)),
                                     context);
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
