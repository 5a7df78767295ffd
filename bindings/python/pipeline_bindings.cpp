// Python bindings of the pipeline (Shot) and the command line: conversion only. The Python
// package (python/derrumbe/shot.py) turns keyword arguments into the ShotParams JSON.
#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>

#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include "cli.hpp"
#include "derrumbe/models/wan/bundle.hpp"
#include "derrumbe/pipeline/shot.hpp"

namespace py = pybind11;
namespace pl = drb::pipeline;

namespace {

py::dict result_dict(const pl::ShotResult& r) {
  py::list stages;
  for (const pl::StageRecord& s : r.stages)
    stages.append(py::dict(py::arg("name") = s.name, py::arg("key") = s.key, py::arg("reused") = s.reused,
                           py::arg("seconds") = s.seconds));
  return py::dict(py::arg("frames") = r.frames, py::arg("files") = r.files, py::arg("output_dir") = r.output_dir,
                  py::arg("sidecar") = r.sidecar, py::arg("stages") = stages);
}

// Shots run without the GIL (autograd, used by energy guidance, refuses to run under it); the
// callback takes it back to call Python.
pl::ShotCallback shot_callback(const py::object& callback) {
  if (callback.is_none()) return {};
  return [callback](const pl::ShotProgress& p) {
    py::gil_scoped_acquire gil;
    py::dict info(py::arg("stage") = p.stage, py::arg("stage_index") = p.stage_index,
                  py::arg("num_stages") = p.num_stages, py::arg("step") = p.step, py::arg("num_steps") = p.num_steps,
                  py::arg("elapsed") = p.elapsed, py::arg("remaining") = p.remaining);
    return py::bool_(callback(info)).cast<bool>();
  };
}

pl::ShotResult without_gil(pl::Shot& shot, pl::ShotResult (pl::Shot::*method)(const pl::ShotCallback&),
                           const py::object& cb) {
  const pl::ShotCallback callback = shot_callback(cb);
  py::gil_scoped_release nogil;
  return (shot.*method)(callback);
}

}  // namespace

void bind_pipeline(py::module_& m) {
  py::class_<pl::Shot>(m, "_Shot", "A shot (use derrumbe.Shot).")
      .def(py::init([](const std::string& params_json) { return pl::Shot(pl::ShotParams::from_json(params_json)); }),
           py::arg("params_json"))
      .def_static("from_sidecar", &pl::Shot::from_sidecar, py::arg("path"))
      .def("params_json", [](const pl::Shot& s) { return s.params().to_json(); })
      .def("render", [](pl::Shot& s, py::object cb) { return result_dict(without_gil(s, &pl::Shot::render, cb)); },
           py::arg("callback") = py::none())
      .def("preview", [](pl::Shot& s, py::object cb) { return result_dict(without_gil(s, &pl::Shot::preview, cb)); },
           py::arg("callback") = py::none())
      .def(
          "variations",
          [](pl::Shot& s, std::vector<uint64_t> seeds, std::vector<double> intensities,
             std::vector<std::string> cameras_json, py::object cb) {
            pl::Variations v;
            v.seeds = std::move(seeds), v.intensities = std::move(intensities);
            for (const std::string& camera : cameras_json) {  // each {"camera": {...}} as ShotParams reads it
              pl::ShotParams p = pl::ShotParams::from_json(camera);
              v.cameras.push_back(p.camera);
            }
            const pl::ShotCallback callback = shot_callback(cb);
            std::vector<pl::ShotResult> results;
            {
              py::gil_scoped_release nogil;
              results = s.variations(v, callback);
            }
            py::list out;
            for (const pl::ShotResult& r : results) out.append(result_dict(r));
            return out;
          },
          py::arg("seeds"), py::arg("intensities"), py::arg("cameras_json"), py::arg("callback") = py::none());
  m.def("default_model_path", &drb::models::wan::default_model_path,
        "Where the default model is (DERRUMBE_DEFAULT_MODEL, the package, an installed prefix, the source tree).");
  m.def(
      "cli_main",
      [](std::vector<std::string> args) {
        std::vector<const char*> argv;
        for (const std::string& a : args) argv.push_back(a.c_str());
        py::gil_scoped_release nogil;
        return drb::cli::run(static_cast<int>(argv.size()), argv.data());
      },
      py::arg("argv"), "Runs the `derrumbe` command line with these arguments (argv[0] first); returns the exit code.");
}
