// The Python module: conversion and error translation only; the logic lives in the library.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include "derrumbe/derrumbe.hpp"
#include "derrumbe/models/exported.hpp"
#include "derrumbe/physics/io.hpp"
#include "derrumbe/physics/simulate.hpp"
#include "derrumbe/render/output.hpp"
#include "derrumbe/render/tensor.hpp"

namespace py = pybind11;

void bind_io(py::module_& m);        // io_bindings.cpp
void bind_pipeline(py::module_& m);  // pipeline_bindings.cpp
void bind_models(py::module_& m);    // models_bindings.cpp: single-file Wan checkpoints, bundles

// A device given as a string ("cpu", "cuda:1") or a torch.device.
c10::Device parse_device(const py::object& device) {
  if (py::isinstance<py::str>(device)) {
    const std::string name = device.cast<std::string>();
    try {
      return c10::Device(name);
    } catch (const c10::Error&) {
      throw drb::Error(drb::ErrorCode::invalid_argument, "unknown device '" + name + "' (cpu, cuda, cuda:N)");
    }
  }
  return device.cast<c10::Device>();
}

namespace {

PyObject* g_cancelled = nullptr;

PyObject* python_type(drb::ErrorCode code) {
  switch (code) {
    case drb::ErrorCode::invalid_argument:
    case drb::ErrorCode::not_found:
    case drb::ErrorCode::parse: return PyExc_ValueError;
    case drb::ErrorCode::file_not_found: return PyExc_FileNotFoundError;
    case drb::ErrorCode::io: return PyExc_OSError;
    case drb::ErrorCode::cancelled: return g_cancelled;
    case drb::ErrorCode::unsupported: return PyExc_NotImplementedError;
    default: return PyExc_RuntimeError;
  }
}

// Tensors handed to Python are fresh aliases (same storage, new TensorImpl): once Python drops
// them the sampler's own tensor is again uniquely owned and can be updated in place, while a
// reference Python keeps (a model's cache, a callback's list) still holds the storage and so
// blocks in-place reuse, as it must.
at::Tensor for_python(const at::Tensor& t) { return t.alias(); }

// sigma as k-diffusion passes it: a tensor of shape [B] on x's device and dtype.
at::Tensor sigma_tensor(const at::Tensor& x, double sigma) { return at::full({x.size(0)}, sigma, x.options()); }

double sigma_value(const py::object& sigma) {
  if (THPVariable_Check(sigma.ptr())) {
    const at::Tensor s = sigma.cast<at::Tensor>().to(at::kCPU, at::kDouble).flatten();
    drb::check_arg(s.numel() >= 1, "sigma tensor is empty");
    drb::check_arg(at::all(s == s[0]).item<bool>(), "derrumbe denoisers take one sigma for the whole batch");
    return s[0].item<double>();
  }
  return sigma.cast<double>();
}

at::Tensor call_tensor(const py::object& fn, const char* what, py::args args) {
  py::object r = fn(*args);
  if (!THPVariable_Check(r.ptr()))
    throw drb::Error(drb::ErrorCode::model, std::string(what) + " must return a torch.Tensor, got " +
                                                std::string(py::str(py::type::of(r).attr("__name__"))));
  return r.cast<at::Tensor>();
}

// StepInfo as the dict callbacks and hooks receive.
py::dict info_dict(const drb::StepInfo& info) {
  py::dict d;
  d["step"] = info.step;
  d["num_steps"] = info.num_steps;
  d["sigma"] = info.sigma;
  d["sigma_next"] = info.sigma_next;
  d["x"] = for_python(info.x);
  d["denoised"] = for_python(info.denoised);
  return d;
}

// A Python callable (x, sigma) -> x0 as a Denoiser.
class PyDenoiser : public drb::Denoiser {
 public:
  explicit PyDenoiser(py::object fn) : fn_(std::move(fn)) {}
  at::Tensor denoise(const at::Tensor& x, double sigma) override {
    py::gil_scoped_acquire gil;
    return call_tensor(fn_, "the model", py::make_tuple(for_python(x), sigma_tensor(x, sigma)));
  }

 private:
  py::object fn_;
};

// A Python callable (x, sigma, branches) -> x0 with branches a list of "cond"/"uncond".
class PyConditional : public drb::ConditionalDenoiser {
 public:
  explicit PyConditional(py::object fn) : fn_(std::move(fn)) {}
  at::Tensor denoise(const at::Tensor& x, double sigma, std::span<const drb::Branch> branches) override {
    py::gil_scoped_acquire gil;
    py::list names;
    for (auto b : branches) names.append(b == drb::Branch::cond ? "cond" : "uncond");
    return call_tensor(fn_, "the model", py::make_tuple(for_python(x), sigma_tensor(x, sigma), names));
  }

 private:
  py::object fn_;
};

// A conditional model: a derrumbe ConditionalDenoiser (WanDenoiser), or a Python callable.
std::shared_ptr<drb::ConditionalDenoiser> as_conditional(const py::object& model) {
  if (py::isinstance<drb::ConditionalDenoiser>(model)) return model.cast<std::shared_ptr<drb::ConditionalDenoiser>>();
  drb::check_arg(PyCallable_Check(model.ptr()), "model must be callable as model(x, sigma, branches)");
  return std::make_shared<PyConditional>(model);
}

// Anything usable as a model: a derrumbe Denoiser, or a Python callable.
std::shared_ptr<drb::Denoiser> as_denoiser(const py::object& model) {
  if (py::isinstance<drb::Denoiser>(model)) return model.cast<std::shared_ptr<drb::Denoiser>>();
  drb::check_arg(PyCallable_Check(model.ptr()), "model must be callable as model(x, sigma) -> x0");
  return std::make_shared<PyDenoiser>(model);
}

// A Python callable hook(info) -> x between steps (info as the callback's dict).
class PyStepHook : public drb::StepHook {
 public:
  explicit PyStepHook(py::object fn) : fn_(std::move(fn)) {}
  at::Tensor after_step(const drb::StepInfo& info) override {
    py::gil_scoped_acquire gil;
    return call_tensor(fn_, "a step hook", py::make_tuple(info_dict(info)));
  }

 private:
  py::object fn_;
};

// Step hooks: derrumbe hooks (Composite) or Python callables.
std::vector<std::shared_ptr<drb::StepHook>> as_hooks(const py::object& hooks) {
  std::vector<std::shared_ptr<drb::StepHook>> out;
  if (hooks.is_none()) return out;
  for (const py::handle h : hooks) {
    if (py::isinstance<drb::StepHook>(h)) {
      out.push_back(h.cast<std::shared_ptr<drb::StepHook>>());
    } else {
      drb::check_arg(PyCallable_Check(h.ptr()), "a hook must be a derrumbe hook or callable as hook(info) -> x");
      out.push_back(std::make_shared<PyStepHook>(py::reinterpret_borrow<py::object>(h)));
    }
  }
  return out;
}

drb::SampleOptions make_options(std::optional<double> eta, double s_noise, double s_churn, double s_tmin, double s_tmax,
                                int order, bool uni_pc_corrector, double dpmpp_sde_r, uint64_t seed, int64_t batch_offset,
                                py::object noise, py::object hooks, py::object callback) {
  drb::SampleOptions o;
  o.hooks = as_hooks(hooks);
  o.eta = eta;
  o.s_noise = s_noise;
  o.s_churn = s_churn;
  o.s_tmin = s_tmin;
  o.s_tmax = s_tmax;
  o.order = order;
  o.uni_pc_corrector = uni_pc_corrector;
  o.dpmpp_sde_r = dpmpp_sde_r;
  o.noise_address.seed = seed;
  o.noise_address.batch_offset = batch_offset;
  if (!noise.is_none()) {
    o.noise = [noise](const at::Tensor& like, int64_t step, int64_t draw, double s, double sn) {
      py::gil_scoped_acquire gil;
      return call_tensor(noise, "noise", py::make_tuple(for_python(like), step, draw, s, sn));
    };
  }
  if (!callback.is_none()) {
    o.callback = [callback](const drb::StepInfo& info) {
      py::gil_scoped_acquire gil;
      return py::bool_(callback(info_dict(info))).cast<bool>();
    };
  }
  return o;
}

namespace ph = drb::physics;

// Copies a contiguous host array into a new tensor of `shape`.
template <typename T>
at::Tensor tensor_from(const T* data, std::vector<int64_t> shape, at::ScalarType dtype) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  if (t.numel() > 0) std::memcpy(t.data_ptr(), data, static_cast<size_t>(t.numel()) * sizeof(T));
  return t;
}

void bind_render(py::module_& m) {
  py::class_<drb::render::AOVs>(m, "AOVs", "The conditioning images of one rendered frame.")
      .def_readonly("width", &drb::render::AOVs::width)
      .def_readonly("height", &drb::render::AOVs::height)
      .def("write_exr", [](const drb::render::AOVs& a, const std::string& path) { drb::render::write_exr(a, path); },
           py::arg("path"))
      .def("write_png", [](const drb::render::AOVs& a, const std::string& what, const std::string& path) {
             drb::render::write_png(a, what, path);
           }, py::arg("what"), py::arg("path"));
  m.def("aov_channel_names", &drb::render::aov_channel_names);
  m.def("aovs_to_tensor", &drb::render::aovs_to_tensor, py::arg("frames"), py::arg("channels"), py::arg("height") = 0,
        py::arg("width") = 0, "float32 [F, C, H, W] of the named channels, resized when height/width are given");
}

void bind_physics(py::module_& m) {
  py::class_<ph::Scene>(m, "Scene", "A destruction scene (docs/scene.md): buildings, triggers, cameras.")
      .def_static("from_json", &ph::parse_scene, py::arg("text"))
      .def_static("load", &ph::load_scene, py::arg("path"))
      .def("to_json", [](const ph::Scene& s) { return ph::to_json(s); })
      .def_readwrite("intensity", &ph::Scene::intensity)
      .def_readwrite("seed", &ph::Scene::seed)
      .def_readwrite("fps", &ph::Scene::fps)
      .def_readwrite("duration", &ph::Scene::duration)
      .def_property_readonly("num_frames", &ph::Scene::num_frames)
      .def(
          "_simulate",
          [](const ph::Scene& scene, py::object callback) {
            ph::SimProgress progress;
            if (!callback.is_none())
              progress = [callback](int64_t f, int64_t n) {
                py::gil_scoped_acquire gil;
                return py::bool_(callback(f, n)).cast<bool>();
              };
            py::gil_scoped_release nogil;
            return ph::simulate(scene, progress);
          },
          py::arg("callback") = py::none());

  py::class_<ph::SimTrack>(m, "SimTrack", "Per-piece meshes and rigid poses per frame, breaks, dust, cameras.")
      .def_static("from_gltf", &ph::import_glb, py::arg("path"), py::arg("fps") = 24.0)
      .def_static("load", &ph::load_track, py::arg("path"))
      .def("to_gltf", [](const ph::SimTrack& t, const std::string& path) { ph::export_glb(t, path); }, py::arg("path"))
      .def("save", [](const ph::SimTrack& t, const std::string& path) { ph::save_track(t, path); }, py::arg("path"))
      .def_readonly("fps", &ph::SimTrack::fps)
      .def_property_readonly("num_frames", &ph::SimTrack::num_frames)
      .def_property_readonly("num_pieces", &ph::SimTrack::num_pieces)
      .def_property_readonly(
          "poses",
          [](const ph::SimTrack& t) {
            return tensor_from(t.poses.data(), {t.num_frames(), t.num_pieces(), 7}, at::kFloat);
          },
          "float32 [frames, pieces, 7]: qx, qy, qz, qw, tx, ty, tz")
      .def(
          "transforms",
          [](const ph::SimTrack& t) {
            at::Tensor out = at::empty({t.num_frames(), t.num_pieces(), 4, 4}, at::TensorOptions().dtype(at::kFloat));
            auto a = out.accessor<float, 4>();
            for (int64_t f = 0; f < t.num_frames(); ++f)
              for (int64_t p = 0; p < t.num_pieces(); ++p) {
                const Eigen::Matrix4d mat = t.pose(f, p).matrix();
                for (int r = 0; r < 4; ++r)
                  for (int c = 0; c < 4; ++c) a[f][p][r][c] = static_cast<float>(mat(r, c));
              }
            return out;
          },
          "float32 [frames, pieces, 4, 4] piece-to-world matrices")
      .def_property_readonly("breaks",
                             [](const ph::SimTrack& t) {
                               const int64_t n = static_cast<int64_t>(t.breaks.size());
                               at::Tensor frame = at::empty({n}, at::kLong), pieces = at::empty({n, 2}, at::kLong);
                               at::Tensor pos = at::empty({n, 3}, at::kFloat), energy = at::empty({n}, at::kFloat);
                               for (int64_t i = 0; i < n; ++i) {
                                 const auto& b = t.breaks[static_cast<size_t>(i)];
                                 frame[i] = b.frame;
                                 pieces[i][0] = static_cast<int64_t>(b.piece_a);
                                 pieces[i][1] = static_cast<int64_t>(b.piece_b);
                                 for (int k = 0; k < 3; ++k) pos[i][k] = b.position[k];
                                 energy[i] = b.energy;
                               }
                               py::dict d;
                               d["frame"] = frame;
                               d["pieces"] = pieces;
                               d["position"] = pos;
                               d["energy"] = energy;
                               return d;
                             })
      .def(
          "dust",
          [](const ph::SimTrack& t, int64_t frame) {
            drb::check_arg(frame >= 0 && frame < static_cast<int64_t>(t.dust.size()),
                           "dust: frame " + std::to_string(frame) + " outside [0, " + std::to_string(t.dust.size()) + ")");
            const auto& d = t.dust[static_cast<size_t>(frame)];
            return tensor_from(d.data(), {static_cast<int64_t>(d.shape(0)), 5}, at::kFloat);
          },
          py::arg("frame"), "float32 [N, 5]: x, y, z, radius, opacity of the dust particles at a frame")
      .def(
          "piece_mesh",
          [](const ph::SimTrack& t, int64_t piece) {
            drb::check_arg(piece >= 0 && piece < t.num_pieces(), "piece " + std::to_string(piece) + " outside [0, " +
                                                                    std::to_string(t.num_pieces()) + ")");
            const auto& mesh = t.pieces[static_cast<size_t>(piece)].mesh;
            at::Tensor v = at::empty({static_cast<int64_t>(mesh.vertices.size()), 3}, at::kFloat);
            at::Tensor tri = at::empty({static_cast<int64_t>(mesh.triangles.size()), 3}, at::kLong);
            for (size_t i = 0; i < mesh.vertices.size(); ++i)
              for (int k = 0; k < 3; ++k) v[static_cast<int64_t>(i)][k] = mesh.vertices[i][k];
            for (size_t i = 0; i < mesh.triangles.size(); ++i)
              for (size_t k = 0; k < 3; ++k) tri[static_cast<int64_t>(i)][static_cast<int64_t>(k)] = static_cast<int64_t>(mesh.triangles[i][k]);
            return py::make_tuple(v, tri);
          },
          py::arg("piece"), "(vertices float32 [V, 3] in the piece's local frame, triangles int64 [T, 3])")
      .def(
          "_render",
          [](const ph::SimTrack& t, int camera, int64_t first, int64_t last, int width, int height, int supersample,
             int threads, bool dust) {
            drb::check_arg(camera >= 0 && camera < static_cast<int>(t.cameras.size()),
                           "camera " + std::to_string(camera) + " outside the track's " +
                               std::to_string(t.cameras.size()) + " cameras");
            drb::render::RenderOptions o;
            o.width = width;
            o.height = height;
            o.supersample = supersample;
            o.threads = threads;
            o.dust = dust;
            py::gil_scoped_release nogil;
            return drb::render::render_sequence(t, t.cameras[static_cast<size_t>(camera)], first, last, o);
          },
          py::arg("camera"), py::arg("first"), py::arg("last"), py::arg("width"), py::arg("height"),
          py::arg("supersample"), py::arg("threads"), py::arg("dust"))
      .def_property_readonly("pieces", [](const ph::SimTrack& t) {
        py::list out;
        for (const auto& p : t.pieces) {
          py::dict d;
          d["id"] = p.id;
          d["kind"] = ph::piece_kind_name(p.kind);
          d["building"] = p.building;
          d["material"] = t.materials.empty() ? std::string() : t.materials[p.material].name;
          d["mass"] = p.mass;
          out.append(d);
        }
        return out;
      });
}

// A Python callable energy(x0) -> scalar tensor, differentiable with torch autograd.
class PyEnergy : public drb::guide::Energy {
 public:
  explicit PyEnergy(py::object fn) : fn_(std::move(fn)) {}
  at::Tensor energy(const at::Tensor& x0) override {
    py::gil_scoped_acquire gil;
    return call_tensor(fn_, "an energy", py::make_tuple(x0));
  }

 private:
  py::object fn_;
};

std::shared_ptr<drb::guide::Energy> as_energy(const py::handle& e) {
  if (py::isinstance<drb::guide::Energy>(e)) return e.cast<std::shared_ptr<drb::guide::Energy>>();
  drb::check_arg(PyCallable_Check(e.ptr()), "an energy must be a derrumbe energy or callable as energy(x0) -> scalar");
  return std::make_shared<PyEnergy>(py::reinterpret_borrow<py::object>(e));
}

void bind_guide(py::module_& m) {
  namespace g = drb::guide;
  py::class_<g::NoiseWarper>(m, "NoiseWarper",
                             "Frame-by-frame noise warping along optical flow (Go-with-the-Flow) on the CPU.")
      .def(py::init([](int64_t latent_height, int64_t latent_width, int64_t channels, int64_t factor, uint64_t seed,
                       double degradation, double consistency_tolerance, const std::string& device) {
             return g::NoiseWarper(latent_height, latent_width,
                                   g::NoiseWarpOptions{channels, factor, seed, degradation, consistency_tolerance, device});
           }),
           py::arg("latent_height"), py::arg("latent_width"), py::kw_only(), py::arg("channels") = 16,
           py::arg("factor") = 8, py::arg("seed") = 0, py::arg("degradation") = 0.0,
           py::arg("consistency_tolerance") = 1.0, py::arg("device") = "cpu")
      .def(
          "step",
          [](g::NoiseWarper& w, const at::Tensor& forward, std::optional<at::Tensor> backward) {
            py::gil_scoped_release nogil;
            w.step(forward, backward.value_or(at::Tensor()));
          },
          py::arg("forward"), py::arg("backward") = py::none())
      .def("latent", &g::NoiseWarper::latent, py::call_guard<py::gil_scoped_release>())
      .def("grid_noise", &g::NoiseWarper::grid_noise)
      .def_property_readonly("frame", &g::NoiseWarper::frame)
      .def_property_readonly("grid_height", &g::NoiseWarper::grid_height)
      .def_property_readonly("grid_width", &g::NoiseWarper::grid_width);
  m.def(
      "warp_noise",
      [](const at::Tensor& forward, std::optional<at::Tensor> backward, int64_t channels, int64_t factor, uint64_t seed,
         double degradation, double consistency_tolerance, int64_t latent_height, int64_t latent_width,
         int64_t temporal_factor, const std::string& reduction, const std::string& device) {
        const auto r = g::temporal_reduction_from_name(reduction);
        py::gil_scoped_release nogil;
        return g::warp_noise(forward, backward.value_or(at::Tensor()),
                             g::NoiseWarpOptions{channels, factor, seed, degradation, consistency_tolerance, device},
                             latent_height, latent_width, temporal_factor, r);
      },
      py::arg("forward"), py::arg("backward") = py::none(), py::kw_only(), py::arg("channels") = 16,
      py::arg("factor") = 8, py::arg("seed") = 0, py::arg("degradation") = 0.0, py::arg("consistency_tolerance") = 1.0,
      py::arg("latent_height") = 0, py::arg("latent_width") = 0, py::arg("temporal_factor") = 1,
      py::arg("reduction") = "blend_normalized", py::arg("device") = "cpu");
  m.def(
      "reduce_frames",
      [](const at::Tensor& noise, int64_t temporal_factor, const std::string& reduction) {
        return g::reduce_frames(noise, temporal_factor, g::temporal_reduction_from_name(reduction));
      },
      py::arg("noise"), py::arg("temporal_factor"), py::arg("reduction") = "blend_normalized");

  m.def(
      "sdedit_start",
      [](const at::Tensor& encoded, const at::Tensor& noise, const at::Tensor& sigmas, double strength) {
        const g::SDEditStart st = g::sdedit_start(encoded, noise, sigmas, strength);
        return py::make_tuple(st.x, st.sigmas);
      },
      py::arg("encoded"), py::arg("noise"), py::arg("sigmas"), py::arg("strength"));

  py::class_<drb::StepHook, std::shared_ptr<drb::StepHook>>(m, "StepHook");
  py::class_<g::Composite, drb::StepHook, std::shared_ptr<g::Composite>>(
      m, "Composite", "Masked composition over a plate, as a step hook for sample(..., hooks=[...]).")
      .def(py::init([](const at::Tensor& plate, const at::Tensor& mask, std::optional<at::Tensor> noise,
                       int64_t resample, int64_t free_tail_steps, bool final_paste, uint64_t seed) {
             return std::make_shared<g::Composite>(plate, mask, noise.value_or(at::Tensor()),
                                                   g::CompositeOptions{resample, free_tail_steps, final_paste}, seed);
           }),
           py::arg("plate"), py::arg("mask"), py::arg("noise") = py::none(), py::kw_only(), py::arg("resample") = 0,
           py::arg("free_tail_steps") = 0, py::arg("final_paste") = true, py::arg("seed") = 0);
  m.def("prepare_mask", &g::prepare_mask, py::arg("masks"), py::arg("latent_height"), py::arg("latent_width"),
        py::arg("temporal_factor") = 1, py::arg("dilate") = 0, py::arg("feather") = 0);

  py::class_<g::Energy, std::shared_ptr<g::Energy>>(m, "Energy")
      .def("__call__", [](g::Energy& e, const at::Tensor& x0) { return e.energy(x0); }, py::arg("x0"));
  py::class_<g::FlowWarpEnergy, g::Energy, std::shared_ptr<g::FlowWarpEnergy>>(m, "FlowWarpEnergy")
      .def(py::init([](const at::Tensor& backward, std::optional<at::Tensor> valid) {
             return std::make_shared<g::FlowWarpEnergy>(backward, valid.value_or(at::Tensor()));
           }),
           py::arg("backward"), py::arg("valid") = py::none());
  py::class_<g::MaskEnergy, g::Energy, std::shared_ptr<g::MaskEnergy>>(m, "MaskEnergy")
      .def(py::init<at::Tensor>(), py::arg("mask"));
  m.def(
      "latent_flow",
      [](const at::Tensor& backward, std::optional<at::Tensor> valid, int64_t h, int64_t w, int64_t tf) {
        const g::LatentFlow f = g::latent_flow(backward, valid.value_or(at::Tensor()), h, w, tf);
        return py::make_tuple(f.backward, f.valid);
      },
      py::arg("backward"), py::arg("valid") = py::none(), py::arg("latent_height"), py::arg("latent_width"),
      py::arg("temporal_factor") = 1);
  py::class_<g::EnergyGuidedDenoiser, drb::Denoiser, std::shared_ptr<g::EnergyGuidedDenoiser>>(
      m, "EnergyGuided", "A denoiser whose x0 estimate is pushed down the given energies.")
      .def(py::init([](py::object model, py::list energies, const std::string& mode, double strength,
                       std::vector<double> strength_schedule, double sigma_start, double sigma_end, int64_t steps) {
             std::vector<g::EnergyTerm> terms;
             for (const py::handle item : energies) {
               if (py::isinstance<py::tuple>(item)) {
                 const auto t = item.cast<py::tuple>();
                 drb::check_arg(t.size() == 2, "an energy term must be energy or (energy, weight)");
                 terms.push_back({as_energy(t[0]), t[1].cast<double>()});
               } else {
                 terms.push_back({as_energy(item), 1.0});
               }
             }
             g::EnergyGuidanceOptions o;
             o.mode = g::energy_mode_from_name(mode);
             o.strength = strength;
             o.strength_schedule = std::move(strength_schedule);
             o.sigma_start = sigma_start;
             o.sigma_end = sigma_end;
             o.steps = steps;
             return std::make_shared<g::EnergyGuidedDenoiser>(as_denoiser(model), std::move(terms), o);
           }),
           py::arg("model"), py::arg("energies"), py::kw_only(), py::arg("mode") = "x0", py::arg("strength") = 1.0,
           py::arg("strength_schedule") = std::vector<double>{},
           py::arg("sigma_start") = std::numeric_limits<double>::infinity(), py::arg("sigma_end") = 0.0,
           py::arg("steps") = 1)
      .def(
          "total_energy",
          [](g::EnergyGuidedDenoiser& d, const at::Tensor& x0) {
            py::gil_scoped_release nogil;
            return d.total_energy(x0);
          },
          py::arg("x0"));
}

// ---- Wan transformer (bind_wan) --------------------------------------------------------------
void bind_wan(py::module_& m) {
  namespace wan = drb::models::wan;
  py::class_<wan::Transformer, std::shared_ptr<wan::Transformer>>(
      m, "WanTransformer",
      "Wan2.1/2.2 text-to-video transformer (diffusers' WanTransformer3DModel), native in LibTorch.")
      .def_static(
          "load",
          [](const std::string& directory, std::optional<at::ScalarType> dtype, const py::object& device) {
            const c10::Device dev = parse_device(device);
            py::gil_scoped_release nogil;
            return std::make_shared<wan::Transformer>(
                wan::Transformer::load(directory, dtype.value_or(at::kFloat), dev));
          },
          py::arg("directory"), py::arg("dtype") = py::none(), py::arg("device") = "cpu",
          "Loads a directory saved by diffusers' save_pretrained (config.json + safetensors; diffusers or "
          "original/ComfyUI key layout).")
      .def(
          "__call__",
          [](const wan::Transformer& t, const at::Tensor& hidden_states, const at::Tensor& timestep,
             const at::Tensor& context, std::optional<at::Tensor> control, double control_scale) {
            py::gil_scoped_release nogil;
            return t.forward(hidden_states, timestep, context, control.value_or(at::Tensor()), control_scale);
          },
          py::arg("hidden_states"), py::arg("timestep"), py::arg("context"), py::arg("control") = py::none(),
          py::arg("control_scale") = 1.0,
          "hidden_states [B, C, F, H, W], timestep [B] or [B, tokens], context [B, L, text_dim] -> flow "
          "prediction [B, C_out, F, H, W]. VACE models take control [B, vace_in_channels, F, H, W] "
          "(vace_context), each hint scaled by control_scale.")
      .def_property_readonly("config",
                             [](const wan::Transformer& t) {
                               const wan::TransformerConfig& c = t.config();
                               py::dict d;
                               d["patch_size"] = py::make_tuple(c.patch_size[0], c.patch_size[1], c.patch_size[2]);
                               d["num_attention_heads"] = c.num_attention_heads;
                               d["attention_head_dim"] = c.attention_head_dim;
                               d["in_channels"] = c.in_channels;
                               d["out_channels"] = c.out_channels;
                               d["text_dim"] = c.text_dim;
                               d["freq_dim"] = c.freq_dim;
                               d["ffn_dim"] = c.ffn_dim;
                               d["num_layers"] = c.num_layers;
                               d["cross_attn_norm"] = c.cross_attn_norm;
                               d["qk_norm"] = c.qk_norm;
                               d["eps"] = c.eps;
                               d["rope_max_seq_len"] = c.rope_max_seq_len;
                               d["vace_layers"] = c.vace_layers;
                               d["vace_in_channels"] = c.vace_in_channels;
                               return d;
                             })
      .def("parameters", [](const wan::Transformer& t) { return t.parameters(); },
           "Parameters by diffusers name (the tensors themselves, not copies).")
      .def_static("diffusers_key", &wan::diffusers_key, py::arg("key"),
                  "The diffusers name of an original/ComfyUI checkpoint key (diffusers keys are unchanged).");
}
// ---- end Wan transformer ----------------------------------------------------------------------

// ---- Wan VAE (bind_wan_vae) -------------------------------------------------------------------
void bind_wan_vae(py::module_& m) {
  namespace wan = drb::models::wan;
  py::class_<wan::Vae, std::shared_ptr<wan::Vae>>(
      m, "WanVae", "Wan2.1 and Wan2.2 video VAE (diffusers' AutoencoderKLWan), native in LibTorch.")
      .def_static(
          "load",
          [](const std::string& directory, std::optional<at::ScalarType> dtype, const py::object& device) {
            const c10::Device dev = parse_device(device);
            py::gil_scoped_release nogil;
            return std::make_shared<wan::Vae>(wan::Vae::load(directory, dtype.value_or(at::kFloat), dev));
          },
          py::arg("directory"), py::arg("dtype") = py::none(), py::arg("device") = "cpu",
          "Loads a directory saved by diffusers' save_pretrained (config.json + safetensors, diffusers keys).")
      .def(
          "encode",
          [](const wan::Vae& v, const at::Tensor& frames, bool normalize) {
            py::gil_scoped_release nogil;
            return v.encode(frames, normalize);
          },
          py::arg("frames"), py::arg("normalize") = true,
          "frames [B, 3, 1 + 4k, H, W] in [-1, 1] -> posterior mean latents [B, z_dim, 1 + k, H / 8, W / 8], "
          "normalized ((mu - latents_mean) / latents_std) when `normalize`.")
      .def(
          "decode",
          [](const wan::Vae& v, const at::Tensor& latents, bool normalized, int64_t tile_height, int64_t tile_width,
             int64_t overlap) {
            py::gil_scoped_release nogil;
            return v.decode(latents, normalized, wan::TileOptions{tile_height, tile_width, overlap});
          },
          py::arg("latents"), py::arg("normalized") = true, py::arg("tile_height") = 0, py::arg("tile_width") = 0,
          py::arg("overlap") = 32,
          "latents [B, z_dim, F, H, W] (normalized when `normalized`) -> frames [B, 3, 1 + 4 (F - 1), s H, s W] (s: the spatial factor, 8 or 16) in "
          "[-1, 1]; tiled spatially (tile sizes and overlap in pixels, multiples of 8) when a tile size is given.")
      .def_property_readonly("config",
                             [](const wan::Vae& v) {
                               const wan::VaeConfig& c = v.config();
                               py::dict d;
                               d["base_dim"] = c.base_dim;
                               d["z_dim"] = c.z_dim;
                               d["dim_mult"] = c.dim_mult;
                               d["num_res_blocks"] = c.num_res_blocks;
                               d["attn_scales"] = c.attn_scales;
                               d["temperal_downsample"] = c.temperal_downsample;
                               d["latents_mean"] = c.latents_mean;
                               d["latents_std"] = c.latents_std;
                               d["in_channels"] = c.in_channels;
                               d["out_channels"] = c.out_channels;
                               return d;
                             })
      .def("parameters", [](const wan::Vae& v) { return v.parameters(); },
           "Parameters by diffusers name (the tensors themselves, not copies).");
  m.def(
      "vace_context",
      [](const wan::Vae& vae, const at::Tensor& video, std::optional<at::Tensor> mask) {
        py::gil_scoped_release nogil;
        return wan::vace_context(vae, video, mask.value_or(at::Tensor()));
      },
      py::arg("vae"), py::arg("video"), py::arg("mask") = py::none(),
      "VACE's control context as WanVACEPipeline builds it (no reference images): video [B, 3, F, H, W] in "
      "[-1, 1], mask [B, F, H, W] in [0, 1] (None: all ones) -> [B, 2 z_dim + s^2, latent F, H / s, W / s].");
}
// ---- end Wan VAE --------------------------------------------------------------------------------

// ---- Wan text encoder and tokenizer (bind_wan_text) -------------------------------------------
void bind_wan_text(py::module_& m) {
  namespace wan = drb::models::wan;
  py::class_<wan::UMT5Encoder, std::shared_ptr<wan::UMT5Encoder>>(
      m, "UMT5Encoder", "Wan's text encoder (transformers' UMT5EncoderModel), native in LibTorch.")
      .def_static(
          "load",
          [](const std::string& directory, std::optional<at::ScalarType> dtype, const py::object& device) {
            const c10::Device dev = parse_device(device);
            py::gil_scoped_release nogil;
            return std::make_shared<wan::UMT5Encoder>(
                wan::UMT5Encoder::load(directory, dtype.value_or(at::kFloat), dev));
          },
          py::arg("directory"), py::arg("dtype") = py::none(), py::arg("device") = "cpu",
          "Loads a directory saved by transformers' save_pretrained (config.json + safetensors).")
      .def(
          "__call__",
          [](const wan::UMT5Encoder& e, const at::Tensor& input_ids, const std::optional<at::Tensor>& attention_mask) {
            py::gil_scoped_release nogil;
            return e.forward(input_ids, attention_mask.value_or(at::Tensor()));
          },
          py::arg("input_ids"), py::arg("attention_mask") = py::none(),
          "input_ids [B, L] int64, attention_mask [B, L] (0/1; None: all ones) -> last_hidden_state [B, L, d_model].")
      .def_property_readonly("config",
                             [](const wan::UMT5Encoder& e) {
                               const wan::UMT5Config& c = e.config();
                               py::dict d;
                               d["vocab_size"] = c.vocab_size;
                               d["d_model"] = c.d_model;
                               d["d_kv"] = c.d_kv;
                               d["d_ff"] = c.d_ff;
                               d["num_layers"] = c.num_layers;
                               d["num_heads"] = c.num_heads;
                               d["relative_attention_num_buckets"] = c.relative_attention_num_buckets;
                               d["relative_attention_max_distance"] = c.relative_attention_max_distance;
                               d["layer_norm_epsilon"] = c.layer_norm_epsilon;
                               d["feed_forward_proj"] = c.feed_forward_proj;
                               return d;
                             })
      .def("parameters", [](const wan::UMT5Encoder& e) { return e.parameters(); },
           "Parameters by transformers name (the tensors themselves, not copies).");
  py::class_<wan::Tokenizer, std::shared_ptr<wan::Tokenizer>>(
      m, "Tokenizer", "The T5/umT5 SentencePiece tokenizer, as transformers' T5Tokenizer encodes.")
      .def_static(
          "load", [](const std::string& path) { return std::make_shared<wan::Tokenizer>(wan::Tokenizer::load(path)); },
          py::arg("path"), "A SentencePiece model (spiece.model / tokenizer.model) or a directory holding one.")
      .def(
          "encode",
          [](const wan::Tokenizer& t, const std::string& text, int64_t max_length) {
            py::gil_scoped_release nogil;
            return t.encode(text, max_length);
          },
          py::arg("text"), py::arg("max_length") = 0,
          "Token ids followed by EOS; truncated to max_length (EOS kept) when max_length > 0.")
      .def(
          "batch",
          [](const wan::Tokenizer& t, const std::vector<std::string>& texts, int64_t max_length) {
            py::gil_scoped_release nogil;
            return t.batch(texts, max_length);
          },
          py::arg("texts"), py::arg("max_length"),
          "(input_ids, attention_mask), both [B, max_length] int64, padded with the pad id (0).")
      .def_property_readonly("vocab_size", &wan::Tokenizer::vocab_size);
  m.def(
      "encode_prompts",
      [](const wan::Tokenizer& tokenizer, const wan::UMT5Encoder& encoder, const std::vector<std::string>& prompts,
         int64_t max_length) {
        py::gil_scoped_release nogil;
        return wan::encode_prompts(tokenizer, encoder, prompts, max_length);
      },
      py::arg("tokenizer"), py::arg("encoder"), py::arg("prompts"), py::arg("max_length") = 512,
      "The Wan pipeline's prompt embeddings [B, max_length, d_model] float32, zero beyond each prompt's tokens "
      "(whitespace-cleaned; no ftfy/HTML unescaping).");
}
// ---- end Wan text -----------------------------------------------------------------------------

#define DRB_SAMPLE_KWARGS                                                                                          \
  py::kw_only(), py::arg("eta") = py::none(), py::arg("s_noise") = 1.0, py::arg("s_churn") = 0.0,                 \
      py::arg("s_tmin") = 0.0, py::arg("s_tmax") = std::numeric_limits<double>::infinity(), py::arg("order") = 0, \
      py::arg("uni_pc_corrector") = true, py::arg("dpmpp_sde_r") = 0.5, py::arg("seed") = 0,                      \
      py::arg("batch_offset") = 0, py::arg("noise") = py::none(), py::arg("hooks") = py::none(),                 \
      py::arg("callback") = py::none()

}  // namespace

PYBIND11_MODULE(_derrumbe, m) {
  m.doc() = "derrumbe native module (use the `derrumbe` package)";
  g_cancelled = PyErr_NewException("derrumbe.Cancelled", PyExc_RuntimeError, nullptr);
  m.attr("Cancelled") = py::handle(g_cancelled);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const drb::Error& e) {
      try {
        std::rethrow_if_nested(e);
      } catch (py::error_already_set& inner) {  // a Python exception raised inside a callback
        py::raise_from(inner, python_type(e.code()), e.what());
        return;
      } catch (...) {
      }
      PyErr_SetString(python_type(e.code()), e.what());
    }
  });

  m.def("version", [] { return std::string(drb::version()); });
  bind_io(m);
  bind_pipeline(m);
  m.def("samplers", &drb::sampler_names, "Names of the samplers, as ComfyUI/k-diffusion name them.");
  m.def(
      "randn",
      [](std::vector<int64_t> shape, uint64_t seed, uint32_t stream, int64_t batch_offset, int64_t frame_offset,
         std::optional<at::ScalarType> dtype, std::optional<at::Device> device) {
        auto opts = at::TensorOptions().dtype(dtype.value_or(at::kFloat));
        if (device) opts = opts.device(*device);
        return drb::randn(shape, drb::NoiseAddress{seed, stream, batch_offset, frame_offset}, opts);
      },
      py::arg("shape"), py::arg("seed") = 0, py::arg("stream") = 0, py::arg("batch_offset") = 0,
      py::arg("frame_offset") = 0, py::arg("dtype") = py::none(), py::arg("device") = py::none());

  py::class_<drb::Denoiser, std::shared_ptr<drb::Denoiser>>(m, "Denoiser")
      .def(
          "__call__",
          [](drb::Denoiser& d, const at::Tensor& x, const py::object& sigma) {
            const double s = sigma_value(sigma);
            py::gil_scoped_release nogil;
            return d.denoise(x, s);
          },
          py::arg("x"), py::arg("sigma"));

  py::class_<drb::GaussianMixtureDenoiser, drb::Denoiser, std::shared_ptr<drb::GaussianMixtureDenoiser>>(
      m, "GaussianMixture")
      .def(py::init<at::Tensor, at::Tensor, at::Tensor>(), py::arg("means"), py::arg("stds"), py::arg("weights"))
      .def_static(
          "random",
          [](std::vector<int64_t> item_shape, int64_t components, uint64_t seed, double spread,
             std::optional<at::ScalarType> dtype) {
            const auto st = dtype.value_or(at::kDouble);
            return std::make_shared<drb::GaussianMixtureDenoiser>(
                drb::GaussianMixtureDenoiser::random(item_shape, components, seed, spread, st));
          },
          py::arg("item_shape"), py::arg("components"), py::arg("seed") = 0, py::arg("spread") = 1.0,
          py::arg("dtype") = py::none())
      .def_property_readonly("means", &drb::GaussianMixtureDenoiser::means)
      .def_property_readonly("stds", &drb::GaussianMixtureDenoiser::stds)
      .def_property_readonly("weights", &drb::GaussianMixtureDenoiser::weights);

  py::class_<drb::ParameterizedDenoiser, drb::Denoiser, std::shared_ptr<drb::ParameterizedDenoiser>>(m, "Parameterized")
      .def(py::init([](py::object net, const std::string& prediction) {
             drb::check_arg(PyCallable_Check(net.ptr()), "net must be callable as net(input, time)");
             drb::NetworkFn fn = [net](const at::Tensor& input, double time) {
               py::gil_scoped_acquire gil;
               return call_tensor(net, "the network", py::make_tuple(for_python(input), sigma_tensor(input, time)));
             };
             return std::make_shared<drb::ParameterizedDenoiser>(fn, drb::prediction_from_name(prediction));
           }),
           py::arg("net"), py::arg("prediction"));

  m.def(
      "load_torchscript",
      [](const std::string& path, const std::string& prediction, const std::string& device) {
        return drb::models::load_torchscript(path, drb::prediction_from_name(prediction), device);
      },
      py::arg("path"), py::arg("prediction"), py::arg("device") = "cpu",
      "A TorchScript network net(input, time) -> prediction as a Denoiser.");
  m.def(
      "load_aoti",
      [](const std::string& path, const std::string& prediction) {
        return drb::models::load_aoti(path, drb::prediction_from_name(prediction));
      },
      py::arg("path"), py::arg("prediction"), "An AOTInductor package (.pt2) net(input, time) -> prediction as a Denoiser.");

  py::class_<drb::ConditionalDenoiser, std::shared_ptr<drb::ConditionalDenoiser>>(m, "ConditionalDenoiser")
      .def(
          "__call__",
          [](drb::ConditionalDenoiser& d, const at::Tensor& x, const py::object& sigma, std::vector<std::string> names) {
            std::vector<drb::Branch> branches;
            for (const auto& n : names) {
              drb::check_arg(n == "cond" || n == "uncond", "branches are 'cond' or 'uncond', got '" + n + "'");
              branches.push_back(n == "cond" ? drb::Branch::cond : drb::Branch::uncond);
            }
            const double s = sigma_value(sigma);
            py::gil_scoped_release nogil;
            return d.denoise(x, s, branches);
          },
          py::arg("x"), py::arg("sigma"), py::arg("branches") = std::vector<std::string>{"cond"});
  py::class_<drb::models::wan::WanDenoiser, drb::ConditionalDenoiser, std::shared_ptr<drb::models::wan::WanDenoiser>>(
      m, "WanDenoiser", "The Wan transformer over prompt embeddings (flow prediction) as a conditional model for Guided.")
      .def(py::init([](std::shared_ptr<drb::models::wan::Transformer> t, const at::Tensor& prompt_embeds,
                       std::optional<at::Tensor> negative_embeds, bool integer_timesteps,
                       std::optional<at::Tensor> control_latents, std::optional<at::Tensor> vace_context,
                       double control_scale, bool control_in_uncond) {
             drb::models::wan::WanControl control{control_latents.value_or(at::Tensor()),
                                                  vace_context.value_or(at::Tensor()), control_scale,
                                                  control_in_uncond};
             return std::make_shared<drb::models::wan::WanDenoiser>(
                 std::move(t), prompt_embeds, negative_embeds.value_or(at::Tensor()), integer_timesteps,
                 std::move(control));
           }),
           py::arg("transformer"), py::arg("prompt_embeds"), py::arg("negative_embeds") = py::none(), py::kw_only(),
           py::arg("integer_timesteps") = false, py::arg("control_latents") = py::none(),
           py::arg("vace_context") = py::none(), py::arg("control_scale") = 1.0, py::arg("control_in_uncond") = true,
           "control_latents: a control video's latents appended to the noisy latents (channel-concatenation "
           "models such as Wan2.1-Fun-Control; zeros fill the rest, and stand for 'no control' when None). "
           "vace_context: VACE's control context (vace_context()), its hints scaled by control_scale. "
           "control_in_uncond=False: the uncond branch runs without the control (control guidance).");
  py::class_<drb::models::wan::ExpertSwitch, drb::ConditionalDenoiser, std::shared_ptr<drb::models::wan::ExpertSwitch>>(
      m, "ExpertSwitch", "Wan2.2-A14B: the high-noise expert while the flow time t >= boundary, then the low-noise one.")
      .def(py::init([](const py::object& high, const py::object& low, double boundary) {
             return std::make_shared<drb::models::wan::ExpertSwitch>(as_conditional(high), as_conditional(low), boundary);
           }),
           py::arg("high"), py::arg("low"), py::arg("boundary"));

  py::class_<drb::GuidedDenoiser, drb::Denoiser, std::shared_ptr<drb::GuidedDenoiser>>(m, "Guided")
      .def(py::init([](py::object model, const std::string& method, double scale, std::vector<double> scale_schedule,
                       double sigma_start, double sigma_end, bool batched, int64_t zero_init_steps, double apg_eta,
                       double apg_norm_threshold, double apg_momentum) {
             drb::GuidanceOptions o{method,  scale,           std::move(scale_schedule), sigma_start,       sigma_end,
                                    batched, zero_init_steps, apg_eta,                   apg_norm_threshold, apg_momentum};
             return std::make_shared<drb::GuidedDenoiser>(as_conditional(model), o);
           }),
           py::arg("model"), py::kw_only(), py::arg("method") = "cfg", py::arg("scale") = 5.0,
           py::arg("scale_schedule") = std::vector<double>{}, py::arg("sigma_start") = std::numeric_limits<double>::infinity(),
           py::arg("sigma_end") = 0.0, py::arg("batched") = true, py::arg("zero_init_steps") = 0, py::arg("apg_eta") = 0.0,
           py::arg("apg_norm_threshold") = 0.0, py::arg("apg_momentum") = 0.0)
      .def("begin_step", &drb::GuidedDenoiser::begin_step)
      .def("current_scale", &drb::GuidedDenoiser::current_scale);
  m.def("cfg_combine", &drb::cfg_combine);
  m.def("cfg_zero_combine", &drb::cfg_zero_combine);

  py::class_<drb::SamplerState>(m, "SamplerState")
      .def_readwrite("sampler", &drb::SamplerState::sampler)
      .def_readwrite("step", &drb::SamplerState::step)
      .def_readwrite("x", &drb::SamplerState::x)
      .def_readwrite("tensors", &drb::SamplerState::tensors)
      .def_readwrite("scalars", &drb::SamplerState::scalars)
      .def_readwrite("cancelled", &drb::SamplerState::cancelled)
      .def("save", &drb::SamplerState::save, py::arg("path"))
      .def_static("load", &drb::SamplerState::load, py::arg("path"));
  m.def("start_state", &drb::start_state, py::arg("sampler"), py::arg("x"));

  m.def(
      "run",
      [](py::object model, drb::SamplerState state, const at::Tensor& sigmas, std::optional<double> eta, double s_noise,
         double s_churn, double s_tmin, double s_tmax, int order, bool uni_pc_corrector, double dpmpp_sde_r,
         uint64_t seed, int64_t batch_offset, py::object noise, py::object hooks, py::object callback) {
        auto d = as_denoiser(model);
        const auto o = make_options(eta, s_noise, s_churn, s_tmin, s_tmax, order, uni_pc_corrector, dpmpp_sde_r, seed,
                                    batch_offset, noise, hooks, callback);
        py::gil_scoped_release nogil;
        return drb::run(*d, std::move(state), sigmas, o);
      },
      py::arg("model"), py::arg("state"), py::arg("sigmas"), DRB_SAMPLE_KWARGS);

  m.def(
      "sample",
      [](py::object model, const at::Tensor& x, const at::Tensor& sigmas, const std::string& sampler,
         std::optional<double> eta, double s_noise, double s_churn, double s_tmin, double s_tmax, int order,
         bool uni_pc_corrector, double dpmpp_sde_r, uint64_t seed, int64_t batch_offset, py::object noise,
         py::object hooks, py::object callback) {
        auto d = as_denoiser(model);
        const auto o = make_options(eta, s_noise, s_churn, s_tmin, s_tmax, order, uni_pc_corrector, dpmpp_sde_r, seed,
                                    batch_offset, noise, hooks, callback);
        py::gil_scoped_release nogil;
        return drb::sample(*d, x, sigmas, sampler, o);
      },
      py::arg("model"), py::arg("x"), py::arg("sigmas"), py::arg("sampler") = "dpmpp_2m", DRB_SAMPLE_KWARGS);

  bind_physics(m);
  bind_render(m);
  bind_guide(m);
  bind_wan(m);
  bind_wan_text(m);
  bind_wan_vae(m);
  bind_models(m);  // after the Wan classes it returns

  namespace sch = drb::schedules;
  auto s = m.def_submodule("schedules", "Noise schedules: float64 VE sigmas ending in 0");
  s.def("karras", &sch::karras, py::arg("n"), py::arg("sigma_min"), py::arg("sigma_max"), py::arg("rho") = 7.0);
  s.def("exponential", &sch::exponential, py::arg("n"), py::arg("sigma_min"), py::arg("sigma_max"));
  s.def("polyexponential", &sch::polyexponential, py::arg("n"), py::arg("sigma_min"), py::arg("sigma_max"),
        py::arg("rho") = 1.0);
  s.def("vp", &sch::vp, py::arg("n"), py::arg("beta_d") = 19.9, py::arg("beta_min") = 0.1, py::arg("eps_s") = 1e-3);
  s.def("kl_optimal", &sch::kl_optimal, py::arg("n"), py::arg("sigma_min"), py::arg("sigma_max"));
  s.def("discrete_vp_sigmas", &sch::discrete_vp_sigmas, py::arg("num_train_steps") = 1000,
        py::arg("beta_start") = 0.00085, py::arg("beta_end") = 0.012, py::arg("beta_schedule") = "scaled_linear");
  s.def("simple", &sch::simple, py::arg("n"), py::arg("model_sigmas"));
  s.def("sgm_uniform", &sch::sgm_uniform, py::arg("n"), py::arg("model_sigmas"));
  s.def("ddim_uniform", &sch::ddim_uniform, py::arg("n"), py::arg("model_sigmas"));
  s.def("beta", &sch::beta, py::arg("n"), py::arg("model_sigmas"), py::arg("alpha") = 0.6, py::arg("beta") = 0.6);
  s.def("linear_quadratic", &sch::linear_quadratic, py::arg("n"), py::arg("threshold_noise") = 0.025,
        py::arg("linear_steps") = py::none());
  s.def(
      "flow_shift",
      [](int64_t n, double shift, std::optional<double> mu, std::optional<double> shift_terminal,
         int64_t num_train_timesteps, const std::string& spacing) {
        drb::check_arg(spacing == "euler" || spacing == "unipc", "flow_shift: spacing must be 'euler' or 'unipc'");
        return sch::flow_shift(n, sch::FlowShift{shift, mu, shift_terminal, num_train_timesteps,
                                                 spacing == "unipc" ? sch::FlowSpacing::unipc : sch::FlowSpacing::euler});
      },
      py::arg("n"), py::arg("shift") = 1.0, py::arg("mu") = py::none(), py::arg("shift_terminal") = py::none(),
      py::arg("num_train_timesteps") = 1000, py::arg("spacing") = "euler");
  s.def("flow_mu", &sch::flow_mu, py::arg("seq_len"), py::arg("base_seq_len") = 256, py::arg("max_seq_len") = 4096,
        py::arg("base_shift") = 0.5, py::arg("max_shift") = 1.15);
  s.def("custom", &sch::custom, py::arg("sigmas"));
  s.def("validate", &sch::validate, py::arg("sigmas"));
  s.def("split_for_strength", &sch::split_for_strength, py::arg("sigmas"), py::arg("strength"));
  s.def("names", &sch::names);
  s.def("flow_t_to_sigma", &drb::flow_t_to_sigma, py::arg("t"));
  s.def("sigma_to_flow_t", &drb::sigma_to_flow_t, py::arg("sigma"));
}
