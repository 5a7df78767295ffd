// Networks exported from PyTorch, wrapped as Denoisers with their parameterization declared
// (parameterization.hpp): a TorchScript module (torch.jit.script / trace + save) or an
// AOTInductor package (.pt2 from torch._inductor.aoti_compile_and_package). Either is called
// as net(input, time) -> prediction with time a [B] tensor of the input's dtype and device
// (sigma-derived as the parameterization defines: sigma for eps/v/x0, t for flow).
#pragma once
#include <memory>
#include <string>

#include "derrumbe/sample/parameterization.hpp"

namespace drb::models {

// Loads a TorchScript file onto `device` ("cpu", "cuda", "cuda:1"). A missing file is
// ErrorCode::file_not_found; a file that is not TorchScript is ErrorCode::parse.
DRB_EXPORT std::shared_ptr<Denoiser> load_torchscript(const std::string& path, Prediction prediction,
                                                      const std::string& device = "cpu");

// Loads an AOTInductor package (.pt2). The package was compiled for one device; inputs are
// moved there. Same errors as load_torchscript.
DRB_EXPORT std::shared_ptr<Denoiser> load_aoti(const std::string& path, Prediction prediction);

}  // namespace drb::models
