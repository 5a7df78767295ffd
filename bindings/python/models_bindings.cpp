// Python bindings of Wan models as users keep them (single files, bundle.json, Bundle):
// conversion only, the logic lives in derrumbe/models/wan/single_file.hpp and bundle.hpp.
// module.cpp registers them with bind_models(m), after bind_wan / bind_wan_vae / bind_wan_text
// (the WanTransformer, WanVae, UMT5Encoder and Tokenizer classes these return).
#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>

#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>

#include "derrumbe/models/wan/bundle.hpp"
#include "derrumbe/models/wan/single_file.hpp"

namespace py = pybind11;

c10::Device parse_device(const py::object& device);  // module.cpp

namespace {

namespace wan = drb::models::wan;

// None -> "" (infer everything), a dict -> its JSON, a str -> as it is (JSON text).
std::string overrides_of(const py::object& config) {
  if (config.is_none()) return "";
  if (py::isinstance<py::str>(config)) return config.cast<std::string>();
  if (py::isinstance<py::dict>(config)) return py::module_::import("json").attr("dumps")(config).cast<std::string>();
  throw drb::Error(drb::ErrorCode::invalid_argument, "config must be a dict of config.json fields, JSON text or None");
}

template <typename T>
std::shared_ptr<T> mutable_ptr(const std::shared_ptr<const T>& p) {
  return std::const_pointer_cast<T>(p);
}

}  // namespace

void bind_models(py::module_& m) {
  m.def(
      "load_wan_transformer_file",
      [](const std::string& file, std::optional<at::ScalarType> dtype, const py::object& device,
         const py::object& config) {
        const c10::Device dev = parse_device(device);
        const std::string overrides = overrides_of(config);
        py::gil_scoped_release nogil;
        return std::make_shared<wan::Transformer>(
            wan::load_transformer_file(file, dtype.value_or(at::kFloat), dev, overrides));
      },
      py::arg("file"), py::arg("dtype") = py::none(), py::arg("device") = "cpu", py::arg("config") = py::none(),
      "A Wan transformer from one safetensors file (diffusers or original/ComfyUI keys; F32/F16/BF16/fp8, ComfyUI's "
      "scaled fp8), its config inferred from the shapes; `config`: config.json fields overriding the inferred ones "
      "(e.g. attention_head_dim for a model whose heads are not 128 wide).");
  m.def(
      "load_wan_vae_file",
      [](const std::string& file, std::optional<at::ScalarType> dtype, const py::object& device,
         const py::object& config) {
        const c10::Device dev = parse_device(device);
        const std::string overrides = overrides_of(config);
        py::gil_scoped_release nogil;
        return std::make_shared<wan::Vae>(wan::load_vae_file(file, dtype.value_or(at::kFloat), dev, overrides));
      },
      py::arg("file"), py::arg("dtype") = py::none(), py::arg("device") = "cpu", py::arg("config") = py::none(),
      "A Wan2.1 VAE from one safetensors file (diffusers or original keys, e.g. wan_2.1_vae.safetensors), its config "
      "inferred from the shapes; `config`: config.json fields overriding the inferred ones.");
  m.def(
      "load_umt5_file",
      [](const std::string& file, std::optional<at::ScalarType> dtype, const py::object& device,
         const py::object& config) {
        const c10::Device dev = parse_device(device);
        const std::string overrides = overrides_of(config);
        py::gil_scoped_release nogil;
        return std::make_shared<wan::UMT5Encoder>(
            wan::load_umt5_file(file, dtype.value_or(at::kFloat), dev, overrides));
      },
      py::arg("file"), py::arg("dtype") = py::none(), py::arg("device") = "cpu", py::arg("config") = py::none(),
      "The umT5 encoder from one safetensors file (ComfyUI's umt5_xxl_*.safetensors, transformers keys under any "
      "prefix, or the Wan repository's T5 names), its config inferred from the shapes.");
  m.def("wan_vae_diffusers_key", &wan::vae_diffusers_key, py::arg("key"), py::arg("num_res_blocks") = 2,
        "The diffusers name of an original (Wan repository / ComfyUI) Wan2.1 VAE key (diffusers keys are unchanged).");

  py::class_<wan::Bundle, std::shared_ptr<wan::Bundle>>(
      m, "WanBundle", "A Wan model's components: a diffusers directory, a bundle.json of single files, or single files.")
      .def_static(
          "load",
          [](const std::string& path, std::optional<at::ScalarType> dtype, const py::object& device) {
            const c10::Device dev = parse_device(device);
            py::gil_scoped_release nogil;
            return std::make_shared<wan::Bundle>(wan::Bundle::load(path, dtype.value_or(at::kFloat), dev));
          },
          py::arg("path"), py::arg("dtype") = py::none(), py::arg("device") = "cpu",
          "A diffusers Wan directory, or a bundle.json listing single files (paths relative to it).")
      .def_static(
          "load_files",
          [](const std::string& transformer, const std::string& vae, const std::string& text_encoder,
             const std::string& tokenizer, double flow_shift, std::optional<at::ScalarType> dtype,
             const py::object& device) {
            const c10::Device dev = parse_device(device);
            py::gil_scoped_release nogil;
            return std::make_shared<wan::Bundle>(wan::Bundle::load_files(transformer, vae, text_encoder, tokenizer,
                                                                         flow_shift, dtype.value_or(at::kFloat), dev));
          },
          py::arg("transformer"), py::arg("vae"), py::arg("text_encoder"), py::arg("tokenizer"),
          py::arg("flow_shift") = 3.0, py::arg("dtype") = py::none(), py::arg("device") = "cpu",
          "A bundle of single files (each may also be a component directory).")
      .def_readonly("path", &wan::Bundle::path)
      .def_readonly("scheduler", &wan::Bundle::scheduler)
      .def_readonly("flow_shift", &wan::Bundle::flow_shift)
      .def_readonly("files", &wan::Bundle::files, "(name, SHA-256) of every file, sorted by name.")
      .def_property_readonly("transformer", [](const wan::Bundle& b) { return mutable_ptr(b.transformer); })
      .def_property_readonly("vae", [](const wan::Bundle& b) { return mutable_ptr(b.vae); })
      .def_property_readonly("text_encoder", [](const wan::Bundle& b) { return mutable_ptr(b.text_encoder); })
      .def_property_readonly("tokenizer", [](const wan::Bundle& b) { return mutable_ptr(b.tokenizer); })
      .def_property_readonly("spatial_factor", &wan::Bundle::spatial_factor)
      .def_property_readonly("temporal_factor", &wan::Bundle::temporal_factor)
      .def_property_readonly("latent_channels", &wan::Bundle::latent_channels)
      .def_property_readonly("patch_height", &wan::Bundle::patch_height)
      .def_property_readonly("patch_width", &wan::Bundle::patch_width)
      .def("component_hash", &wan::Bundle::component_hash, py::arg("component"),
           "The SHA-256 over the hashes of one component's files (transformer, vae, text_encoder, tokenizer, ...).");
}
