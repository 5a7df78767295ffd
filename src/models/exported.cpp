#include "derrumbe/models/exported.hpp"

#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/serialization/import.h>

#include <filesystem>
#include <fstream>

namespace drb::models {

namespace {

void check_file(const std::string& path, const char* what) {
  check(std::filesystem::is_regular_file(path), ErrorCode::file_not_found,
        std::string("cannot open ") + what + " '" + path + "'");
}

// The network's output must be a prediction of the input's shape.
at::Tensor checked_output(const at::Tensor& out, const at::Tensor& input, const std::string& path) {
  check(out.defined() && out.sizes() == input.sizes(), ErrorCode::model,
        "model '" + path + "' returned shape " + (out.defined() ? c10::str(out.sizes()) : std::string("(none)")) +
            " for an input of shape " + c10::str(input.sizes()));
  return out.to(input.options());
}

at::Tensor time_tensor(const at::Tensor& input, double time) { return at::full({input.size(0)}, time, input.options()); }

}  // namespace

std::shared_ptr<Denoiser> load_torchscript(const std::string& path, Prediction prediction, const std::string& device) {
  check_file(path, "TorchScript file");
  c10::Device dev(c10::kCPU);
  try {
    dev = c10::Device(device);
  } catch (const c10::Error&) {
    throw Error(ErrorCode::invalid_argument, "unknown device '" + device + "' (cpu, cuda, cuda:N)");
  }
  auto module = std::make_shared<torch::jit::Module>();
  try {
    *module = torch::jit::load(path, dev);
  } catch (const c10::Error& e) {
    throw Error(ErrorCode::parse, "'" + path + "' is not a TorchScript file: " + e.what_without_backtrace());
  }
  module->eval();
  NetworkFn net = [module, path, dev](const at::Tensor& input, double time) {
    const at::Tensor x = input.to(dev);
    c10::IValue out;
    try {
      out = module->forward({x, time_tensor(x, time)});
    } catch (const c10::Error& e) {
      throw Error(ErrorCode::model, "TorchScript model '" + path + "' failed: " + e.what_without_backtrace());
    }
    check(out.isTensor(), ErrorCode::model, "TorchScript model '" + path + "' did not return a tensor");
    return checked_output(out.toTensor(), input, path);
  };
  return std::make_shared<ParameterizedDenoiser>(std::move(net), prediction);
}

std::shared_ptr<Denoiser> load_aoti(const std::string& path, Prediction prediction) {
  check_file(path, "AOTInductor package");
  std::shared_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  try {
    loader = std::make_shared<torch::inductor::AOTIModelPackageLoader>(path);
  } catch (const std::exception& e) {
    throw Error(ErrorCode::parse, "'" + path + "' is not an AOTInductor package: " + e.what());
  }
  NetworkFn net = [loader, path](const at::Tensor& input, double time) {
    std::vector<at::Tensor> out;
    try {
      out = loader->run({input.contiguous(), time_tensor(input, time)});
    } catch (const std::exception& e) {
      throw Error(ErrorCode::model, "AOTInductor model '" + path + "' failed: " + e.what());
    }
    check(out.size() == 1, ErrorCode::model,
          "AOTInductor model '" + path + "' returned " + std::to_string(out.size()) + " outputs, expected 1");
    return checked_output(out[0], input, path);
  };
  return std::make_shared<ParameterizedDenoiser>(std::move(net), prediction);
}

}  // namespace drb::models
