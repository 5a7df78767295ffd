#include "derrumbe/guide/guided.hpp"

namespace drb::guide {

std::shared_ptr<Denoiser> guided(std::shared_ptr<Denoiser> model, const Guided& guidance, SampleOptions& options) {
  if (guidance.composite) options.hooks.push_back(guidance.composite);
  if (guidance.energies.empty()) return model;
  return std::make_shared<EnergyGuidedDenoiser>(std::move(model), guidance.energies, guidance.energy);
}

}  // namespace drb::guide
