// One sampling run under the simulation's guidance, as the shot and the C API's drb_sample run it:
// masked composition as a step hook (composite.hpp), energy terms wrapping the model (energy.hpp).
#pragma once
#include <memory>
#include <vector>

#include "derrumbe/guide/composite.hpp"
#include "derrumbe/guide/energy.hpp"

namespace drb::guide {

struct Guided {
  std::shared_ptr<Composite> composite;  // null: no composition
  std::vector<EnergyTerm> energies;      // empty: no energy guidance
  EnergyGuidanceOptions energy;
};

// The model to sample with (`model` itself without energies), and `options` with the
// composition hook added.
DRB_EXPORT std::shared_ptr<Denoiser> guided(std::shared_ptr<Denoiser> model, const Guided& guidance,
                                            SampleOptions& options);

}  // namespace drb::guide
