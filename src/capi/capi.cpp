// The C firewall: every entry point catches everything, maps it to a drb_status and keeps
// the message for drb_last_error(). No logic beyond conversion lives here.
#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>

#include "derrumbe/derrumbe.h"
#include "derrumbe/guide/guided.hpp"
#include "derrumbe/guide/noise_warp.hpp"
#include "derrumbe/guide/sdedit.hpp"
#include "derrumbe/models/wan/bundle.hpp"
#include "derrumbe/physics/io.hpp"
#include "derrumbe/physics/simulate.hpp"
#include "derrumbe/pipeline/shot.hpp"
#include "derrumbe/sample/sampler.hpp"
#include "derrumbe/sample/schedules.hpp"
#include "derrumbe/core/version.hpp"

namespace {

thread_local std::string g_last_error;

drb_status fail(drb_status s, const char* msg) {
  g_last_error = msg;
  return s;
}

template <typename F>
drb_status guard(F&& f) {
  try {
    g_last_error.clear();
    f();
    return DRB_OK;
  } catch (const drb::Error& e) {
    const auto code = e.code() == drb::ErrorCode::file_not_found ? drb::ErrorCode::not_found : e.code();
    return fail(static_cast<drb_status>(static_cast<int>(code)), e.what());
  } catch (const std::bad_alloc&) {
    return fail(DRB_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(DRB_ERR_INTERNAL, e.what());
  } catch (...) {
    return fail(DRB_ERR_INTERNAL, "unknown exception");
  }
}

template <typename P>
P read_params(const P* given, void (*init)(P*)) {
  P p;
  init(&p);
  if (given != nullptr) {
    drb::check_arg(given->struct_size >= sizeof(size_t), "params.struct_size is not set (call the *_params_init function)");
    // Smaller: an older caller, whose fields keep their meaning (defaults fill the rest).
    // Larger: a caller built against a newer header, whose extra fields this build would ignore.
    drb::check_arg(given->struct_size <= sizeof(P),
                   "params.struct_size is " + std::to_string(given->struct_size) + " bytes, larger than the " +
                       std::to_string(sizeof(P)) + " this build of derrumbe knows (a newer derrumbe.h?)");
    std::memcpy(&p, given, given->struct_size);
    p.struct_size = sizeof(P);
  }
  return p;
}

std::vector<int64_t> read_shape(const int64_t* shape, size_t ndim) {
  drb::check_arg(shape != nullptr && ndim >= 1 && ndim <= 8, "shape must have 1 to 8 dimensions");
  std::vector<int64_t> v(shape, shape + ndim);
  int64_t numel = 1;
  for (size_t i = 0; i < ndim; ++i) {
    drb::check_arg(v[i] >= 1, "shape[" + std::to_string(i) + "] must be >= 1, got " + std::to_string(v[i]));
    drb::check_arg(v[i] <= (int64_t{1} << 40) / numel, "shape is absurdly large");
    numel *= v[i];
  }
  return v;
}

at::ScalarType read_dtype(drb_dtype d) {
  drb::check_arg(d == DRB_FLOAT32 || d == DRB_FLOAT64, "dtype must be DRB_FLOAT32 or DRB_FLOAT64");
  return d == DRB_FLOAT64 ? at::kDouble : at::kFloat;
}

// A C callback as a Denoiser.
class CallbackDenoiser : public drb::Denoiser {
 public:
  CallbackDenoiser(drb_denoise_fn fn, void* user) : fn_(fn), user_(user) {}
  at::Tensor denoise(const at::Tensor& x, double sigma) override {
    const at::Tensor xc = x.contiguous();
    at::Tensor out = at::empty_like(xc);
    const int rc = fn_(user_, xc.data_ptr(), out.data_ptr(), static_cast<size_t>(xc.numel()), sigma);
    drb::check(rc == 0, drb::ErrorCode::model, "denoiser callback returned " + std::to_string(rc) + " at sigma " + std::to_string(sigma));
    return out;
  }

 private:
  drb_denoise_fn fn_;
  void* user_;
};

// A C energy with its gradient as an autograd-aware Energy: the surrogate
// E + sum((x0 - stop_gradient(x0)) * grad) has E's value and gradient `grad`.
class CallbackEnergy : public drb::guide::Energy {
 public:
  CallbackEnergy(drb_energy_fn fn, void* user) : fn_(fn), user_(user) {}
  at::Tensor energy(const at::Tensor& x0) override {
    const at::Tensor xc = x0.detach().contiguous();
    at::Tensor grad = at::empty_like(xc);
    double e = 0;
    const int rc = fn_(user_, xc.data_ptr(), grad.data_ptr(), static_cast<size_t>(xc.numel()), &e);
    drb::check(rc == 0, drb::ErrorCode::model, "energy callback returned " + std::to_string(rc));
    drb::check(std::isfinite(e), drb::ErrorCode::model, "energy callback returned a non-finite energy");
    return at::scalar_tensor(e, x0.options()) + ((x0 - xc) * grad).sum();
  }

 private:
  drb_energy_fn fn_;
  void* user_;
};

// A caller's float32 array as a tensor of `shape` (no copy; the caller's buffer outlives the call).
at::Tensor float_view(const float* data, const std::vector<int64_t>& shape, const char* name) {
  drb::check_arg(data != nullptr, std::string(name) + " is NULL");
  return at::from_blob(const_cast<float*>(data), shape, at::TensorOptions().dtype(at::kFloat));
}

// A string out through the caller's buffer: *needed (when given) receives its length plus 1.
void write_string(const std::string& text, char* buffer, size_t capacity, size_t* needed) {
  if (needed != nullptr) *needed = text.size() + 1;
  drb::check_arg(buffer != nullptr && capacity > text.size(),
                 "buffer holds " + std::to_string(capacity) + " bytes, " + std::to_string(text.size() + 1) + " needed");
  std::memcpy(buffer, text.c_str(), text.size() + 1);
}

// drb_sample_params' composition fields as the library's step hook (x: [B, C, F, H, W]).
std::shared_ptr<drb::guide::Composite> composite_hook(const drb_sample_params& p, const at::Tensor& xt) {
  drb::check_arg(xt.dim() == 5, "composition needs x of shape [B, C, F, H, W], got " + c10::str(xt.sizes()));
  const auto opts = at::TensorOptions().dtype(xt.scalar_type());
  const at::Tensor mask = float_view(p.composite_mask, {xt.size(2), xt.size(3), xt.size(4)}, "params.composite_mask");
  const at::Tensor noise = p.composite_noise != nullptr
                               ? at::from_blob(const_cast<void*>(p.composite_noise), xt.sizes(), opts).clone()
                               : at::Tensor();
  return std::make_shared<drb::guide::Composite>(
      at::from_blob(const_cast<void*>(p.composite_plate), xt.sizes(), opts).clone(),
      mask.clone().view({1, 1, xt.size(2), xt.size(3), xt.size(4)}), noise,
      drb::guide::CompositeOptions{p.composite_resample, p.composite_free_tail_steps, p.composite_final_paste != 0},
      p.seed);
}

// drb_sample_params' energy fields as the library's energy terms (empty: no energy guidance).
std::vector<drb::guide::EnergyTerm> energy_terms(const drb_sample_params& p, const at::Tensor& xt) {
  std::vector<drb::guide::EnergyTerm> energies;
  if (p.energy != nullptr) energies.push_back({std::make_shared<CallbackEnergy>(p.energy, p.energy_user), 1.0});
  if (p.energy_flow_backward != nullptr) {
    drb::check_arg(xt.dim() == 5, "the flow energy needs x of shape [B, C, F, H, W], got " + c10::str(xt.sizes()));
    const int64_t f = xt.size(2), h = xt.size(3), w = xt.size(4);
    const at::Tensor valid = p.energy_flow_valid != nullptr
                                 ? float_view(p.energy_flow_valid, {f, h, w}, "params.energy_flow_valid").clone()
                                 : at::Tensor();
    energies.push_back({std::make_shared<drb::guide::FlowWarpEnergy>(
                            float_view(p.energy_flow_backward, {f, 2, h, w}, "params.energy_flow_backward").clone(),
                            valid),
                        1.0});
  }
  return energies;
}

}  // namespace

struct drb_scene {
  drb::physics::Scene scene;
};
struct drb_track {
  drb::physics::SimTrack track;
};
struct drb_model {
  std::shared_ptr<const drb::models::wan::Bundle> bundle;
};
struct drb_shot {
  drb::pipeline::Shot shot;
  std::optional<drb::pipeline::ShotResult> result;  // the last successful render
};

namespace {

template <typename T>
void check_out(T** out) {
  drb::check_arg(out != nullptr, "out is NULL");
  *out = nullptr;
}
void check_path(const char* path) { drb::check_arg(path != nullptr, "path is NULL"); }
const drb::physics::SimTrack& track_of(const drb_track* t) {
  drb::check_arg(t != nullptr, "track is NULL");
  return t->track;
}
const drb::pipeline::ShotResult& result_of(const drb_shot* shot, const char* function) {
  drb::check_arg(shot != nullptr, "shot is NULL");
  drb::check_arg(shot->result.has_value(), std::string(function) +
                                               ": the shot has not been rendered (call drb_shot_render first, and "
                                               "check that it returned DRB_OK)");
  return *shot->result;
}

// The C params over params_json (or the defaults): each plain field set overrides.
drb::pipeline::ShotParams shot_params_of(const drb_shot_params& p) {
  drb::pipeline::ShotParams s =
      p.params_json != nullptr ? drb::pipeline::ShotParams::from_json(p.params_json) : drb::pipeline::ShotParams{};
  if (p.source != nullptr) {
    s.source = p.source;
    if (p.scene == nullptr) s.scene.reset();  // both set: left for validate() to reject
  }
  if (p.scene != nullptr) {
    s.scene = p.scene->scene;
    if (p.source == nullptr) s.source.clear();
  }
  if (p.output_dir != nullptr) s.output.dir = p.output_dir;
  if (p.frames != 0) s.frames = p.frames;
  if (p.width != 0) s.width = p.width;
  if (p.height != 0) s.height = p.height;
  if (p.steps != 0) s.steps = p.steps;
  if (p.seed != 0) s.seed = p.seed;
  if (p.prompt != nullptr) s.prompt = p.prompt;
  if (p.has_intensity != 0) s.intensity = p.intensity;
  if (p.preview != 0) s.preview = true;
  if (p.control != nullptr) s.guide.control = p.control;
  if (p.has_control_scale != 0) s.guide.control_scale = p.control_scale;
  return s;
}

}  // namespace

extern "C" {

const char* drb_version(void) { return drb::version(); }
int drb_api_version(void) { return DRB_API_VERSION; }
const char* drb_last_error(void) { return g_last_error.c_str(); }

size_t drb_sampler_count(void) {
  static const size_t n = drb::sampler_names().size();
  return n;
}
const char* drb_sampler_name(size_t index) {
  static const std::vector<std::string> names = drb::sampler_names();
  return index < names.size() ? names[index].c_str() : nullptr;
}
size_t drb_schedule_count(void) { return drb::schedules::names().size(); }
const char* drb_schedule_name(size_t index) {
  static const std::vector<std::string> names = drb::schedules::names();
  return index < names.size() ? names[index].c_str() : nullptr;
}

void drb_schedule_params_init(drb_schedule_params* p) {
  if (p == nullptr) return;
  const drb::schedules::ScheduleParams d;
  *p = drb_schedule_params{};
  p->struct_size = sizeof(*p);
  p->sigma_min = d.sigma_min;
  p->sigma_max = d.sigma_max;
  p->flow_shift = d.flow.shift;
}

drb_status drb_schedule(const char* name, int64_t steps, const drb_schedule_params* params, double* sigmas_out,
                        size_t capacity, size_t* count_out) {
  return guard([&] {
    drb::check_arg(name != nullptr, "schedule name is NULL");
    const auto p = read_params(params, drb_schedule_params_init);
    drb::schedules::ScheduleParams sp;
    sp.sigma_min = p.sigma_min;
    sp.sigma_max = p.sigma_max;
    if (p.rho > 0) sp.rho = p.rho;
    sp.flow.shift = p.flow_shift;
    if (p.has_flow_mu) sp.flow.mu = p.flow_mu;
    if (p.shift_terminal > 0) sp.flow.shift_terminal = p.shift_terminal;
    drb::check_arg(p.flow_spacing == 0 || p.flow_spacing == 1, "flow_spacing must be 0 (euler) or 1 (unipc)");
    sp.flow.spacing = p.flow_spacing == 1 ? drb::schedules::FlowSpacing::unipc : drb::schedules::FlowSpacing::euler;
    const at::Tensor s = drb::schedules::by_name(name, steps, sp);
    const size_t n = static_cast<size_t>(s.numel());
    if (count_out != nullptr) *count_out = n;
    drb::check_arg(sigmas_out != nullptr && capacity >= n,
                   "sigmas_out holds " + std::to_string(capacity) + " values, " + std::to_string(n) + " needed");
    std::memcpy(sigmas_out, s.data_ptr<double>(), n * sizeof(double));
  });
}

void drb_sample_params_init(drb_sample_params* p) {
  if (p == nullptr) return;
  *p = drb_sample_params{};
  p->struct_size = sizeof(*p);
  p->sampler = "euler";
  p->eta = -1;
  p->s_noise = 1;
  p->s_tmax = INFINITY;
  p->composite_final_paste = 1;
  p->energy_strength = 1;
  p->energy_sigma_start = INFINITY;
  p->energy_steps = 1;
}

drb_status drb_sample(drb_denoise_fn model, void* model_user, drb_dtype dtype, const int64_t* shape, size_t ndim,
                      void* x, const double* sigmas, size_t n_sigmas, const drb_sample_params* params) {
  return guard([&] {
    drb::check_arg(model != nullptr, "model callback is NULL");
    drb::check_arg(x != nullptr, "x is NULL");
    drb::check_arg(sigmas != nullptr, "sigmas is NULL");
    drb::check_arg(n_sigmas >= 1 && n_sigmas <= 100001, "n_sigmas must be in [1, 100001]");
    const auto p = read_params(params, drb_sample_params_init);
    drb::check_arg(p.sampler != nullptr, "params.sampler is NULL");
    const auto st = read_dtype(dtype);
    const at::Tensor xt = at::from_blob(x, read_shape(shape, ndim), at::TensorOptions().dtype(st));
    const at::Tensor s = at::from_blob(const_cast<double*>(sigmas), {static_cast<int64_t>(n_sigmas)},
                                       at::TensorOptions().dtype(at::kDouble))
                             .clone();
    drb::SampleOptions o;
    if (p.eta >= 0) o.eta = p.eta;
    o.s_noise = p.s_noise;
    o.s_churn = p.s_churn;
    o.s_tmin = p.s_tmin;
    o.s_tmax = p.s_tmax;
    o.order = p.order;
    o.noise_address.seed = p.seed;
    if (p.progress != nullptr)
      o.callback = [&](const drb::StepInfo& info) {
        return p.progress(p.progress_user, info.step, info.num_steps, info.sigma, info.sigma_next) != 0;
      };
    drb::guide::Guided guidance;
    if (p.composite_plate != nullptr) guidance.composite = composite_hook(p, xt);
    guidance.energies = energy_terms(p, xt);
    guidance.energy.strength = p.energy_strength;
    guidance.energy.sigma_start = p.energy_sigma_start;
    guidance.energy.sigma_end = p.energy_sigma_end;
    guidance.energy.steps = p.energy_steps;
    const auto den = drb::guide::guided(std::make_shared<CallbackDenoiser>(model, model_user), guidance, o);
    drb::SamplerState state = drb::run(*den, drb::start_state(p.sampler, xt.clone()), s, o);
    xt.copy_(state.x);  // also when cancelled: x holds the state after the last step run
    drb::check_finished(state);
  });
}

void drb_noise_warp_params_init(drb_noise_warp_params* p) {
  if (p == nullptr) return;
  *p = drb_noise_warp_params{};
  p->struct_size = sizeof(*p);
  const drb::guide::NoiseWarpOptions d;
  p->channels = d.channels;
  p->factor = d.factor;
  p->consistency_tolerance = d.consistency_tolerance;
  p->temporal_factor = 1;
  p->reduction = DRB_REDUCE_BLEND_NORMALIZED;
  p->device = "cpu";
}

drb_status drb_warp_noise(const float* forward, const float* backward, int64_t frames, int64_t height, int64_t width,
                          const drb_noise_warp_params* params, float* out, size_t capacity, size_t* count_out) {
  return guard([&] {
    drb::check_arg(count_out != nullptr, "count_out is NULL");
    const auto p = read_params(params, drb_noise_warp_params_init);
    const auto shape = read_shape(std::vector<int64_t>{frames, 2, height, width}.data(), 4);
    drb::check_arg(p.reduction >= DRB_REDUCE_PICK && p.reduction <= DRB_REDUCE_BLEND_NORMALIZED,
                   "params.reduction must be a drb_temporal_reduction, got " + std::to_string(p.reduction));
    const at::Tensor fwd = float_view(forward, shape, "forward");
    const at::Tensor bwd = backward != nullptr ? float_view(backward, shape, "backward") : at::Tensor();
    const at::Tensor noise = drb::guide::warp_noise(
        fwd, bwd,
        drb::guide::NoiseWarpOptions{p.channels, p.factor, p.seed, p.degradation, p.consistency_tolerance,
                                     p.device != nullptr ? p.device : "cpu"},
        p.latent_height, p.latent_width, p.temporal_factor, static_cast<drb::guide::TemporalReduction>(p.reduction));
    *count_out = static_cast<size_t>(noise.numel());
    drb::check_arg(out != nullptr && capacity >= *count_out,
                   "out holds " + std::to_string(capacity) + " floats, the noise needs " + std::to_string(*count_out));
    at::from_blob(out, {noise.numel()}, at::TensorOptions().dtype(at::kFloat)).copy_(noise.flatten().cpu());
  });
}

drb_status drb_sdedit_start(drb_dtype dtype, const int64_t* shape, size_t ndim, const void* encoded, const void* noise,
                            const double* sigmas, size_t n_sigmas, double strength, void* x_out, double* sigmas_out,
                            size_t* n_sigmas_out) {
  return guard([&] {
    drb::check_arg(encoded != nullptr && noise != nullptr && x_out != nullptr, "encoded, noise and x_out must not be NULL");
    drb::check_arg(sigmas != nullptr && sigmas_out != nullptr && n_sigmas_out != nullptr,
                   "sigmas, sigmas_out and n_sigmas_out must not be NULL");
    drb::check_arg(n_sigmas >= 1 && n_sigmas <= 100001, "n_sigmas must be in [1, 100001]");
    const auto opts = at::TensorOptions().dtype(read_dtype(dtype));
    const auto sh = read_shape(shape, ndim);
    const at::Tensor s = at::from_blob(const_cast<double*>(sigmas), {static_cast<int64_t>(n_sigmas)},
                                       at::TensorOptions().dtype(at::kDouble));
    const drb::guide::SDEditStart start = drb::guide::sdedit_start(
        at::from_blob(const_cast<void*>(encoded), sh, opts), at::from_blob(const_cast<void*>(noise), sh, opts), s, strength);
    at::from_blob(x_out, sh, opts).copy_(start.x);
    *n_sigmas_out = static_cast<size_t>(start.sigmas.numel());
    at::from_blob(sigmas_out, {start.sigmas.numel()}, at::TensorOptions().dtype(at::kDouble)).copy_(start.sigmas);
  });
}

drb_status drb_prepare_mask(const float* masks, int64_t frames, int64_t height, int64_t width, int64_t latent_height,
                            int64_t latent_width, int64_t temporal_factor, int64_t dilate, int64_t feather, float* out,
                            size_t capacity, size_t* count_out) {
  return guard([&] {
    drb::check_arg(count_out != nullptr, "count_out is NULL");
    const at::Tensor m = float_view(masks, read_shape(std::vector<int64_t>{frames, height, width}.data(), 3), "masks");
    const at::Tensor latent =
        drb::guide::prepare_mask(m, latent_height, latent_width, temporal_factor, dilate, feather);
    *count_out = static_cast<size_t>(latent.numel());
    drb::check_arg(out != nullptr && capacity >= *count_out,
                   "out holds " + std::to_string(capacity) + " floats, the mask needs " + std::to_string(*count_out));
    at::from_blob(out, {latent.numel()}, at::TensorOptions().dtype(at::kFloat)).copy_(latent.flatten());
  });
}

drb_status drb_randn(uint64_t seed, uint32_t stream, drb_dtype dtype, const int64_t* shape, size_t ndim, void* out) {
  return guard([&] {
    drb::check_arg(out != nullptr, "out is NULL");
    const auto st = read_dtype(dtype);
    const auto sh = read_shape(shape, ndim);
    const at::Tensor n = drb::randn(sh, drb::NoiseAddress{seed, stream, 0, 0}, at::TensorOptions().dtype(st));
    at::from_blob(out, sh, at::TensorOptions().dtype(st)).copy_(n);
  });
}

drb_status drb_scene_load(const char* path, drb_scene** out) {
  return guard([&] {
    check_out(out);
    check_path(path);
    *out = new drb_scene{drb::physics::load_scene(path)};
  });
}

drb_status drb_scene_parse(const char* json, size_t length, drb_scene** out) {
  return guard([&] {
    check_out(out);
    drb::check_arg(json != nullptr, "json is NULL");
    *out = new drb_scene{drb::physics::parse_scene(std::string(json, length))};
  });
}

void drb_scene_free(drb_scene* scene) { delete scene; }

drb_status drb_scene_to_json(const drb_scene* scene, char* buffer, size_t capacity, size_t* needed) {
  return guard([&] {
    drb::check_arg(scene != nullptr, "scene is NULL");
    write_string(drb::physics::to_json(scene->scene), buffer, capacity, needed);
  });
}

drb_status drb_simulate(const drb_scene* scene, drb_sim_progress_fn progress, void* progress_user, drb_track** out) {
  return guard([&] {
    check_out(out);
    drb::check_arg(scene != nullptr, "scene is NULL");
    drb::physics::SimProgress p;
    if (progress != nullptr) p = [&](int64_t f, int64_t n) { return progress(progress_user, f, n) != 0; };
    *out = new drb_track{drb::physics::simulate(scene->scene, p)};
  });
}

void drb_track_free(drb_track* track) { delete track; }

drb_status drb_track_export_glb(const drb_track* track, const char* path) {
  return guard([&] {
    check_path(path);
    drb::physics::export_glb(track_of(track), path);
  });
}

drb_status drb_track_import_glb(const char* path, double fps, drb_track** out) {
  return guard([&] {
    check_out(out);
    check_path(path);
    *out = new drb_track{drb::physics::import_glb(path, fps)};
  });
}

drb_status drb_track_save(const drb_track* track, const char* path) {
  return guard([&] {
    check_path(path);
    drb::physics::save_track(track_of(track), path);
  });
}

drb_status drb_track_load(const char* path, drb_track** out) {
  return guard([&] {
    check_out(out);
    check_path(path);
    *out = new drb_track{drb::physics::load_track(path)};
  });
}

int64_t drb_track_num_frames(const drb_track* track) { return track ? track->track.num_frames() : 0; }
int64_t drb_track_num_pieces(const drb_track* track) { return track ? track->track.num_pieces() : 0; }
int64_t drb_track_num_breaks(const drb_track* track) {
  return track ? static_cast<int64_t>(track->track.breaks.size()) : 0;
}
double drb_track_fps(const drb_track* track) { return track ? track->track.fps : 0.0; }

drb_status drb_track_poses(const drb_track* track, int64_t frame, float* out, size_t capacity) {
  return guard([&] {
    const auto& t = track_of(track);
    drb::check_arg(frame >= 0 && frame < t.num_frames(),
                   "frame " + std::to_string(frame) + " outside [0, " + std::to_string(t.num_frames()) + ")");
    const size_t n = static_cast<size_t>(t.num_pieces()) * 7;
    drb::check_arg(out != nullptr && capacity >= n,
                   "out holds " + std::to_string(capacity) + " floats, " + std::to_string(n) + " needed");
    std::memcpy(out, &t.poses(static_cast<size_t>(frame), 0, 0), n * sizeof(float));
  });
}

drb_status drb_track_piece_mesh(const drb_track* track, int64_t piece, float* vertices, size_t vertex_capacity,
                                uint32_t* triangles, size_t triangle_capacity, size_t* num_vertices,
                                size_t* num_triangles) {
  return guard([&] {
    const auto& t = track_of(track);
    drb::check_arg(piece >= 0 && piece < t.num_pieces(),
                   "piece " + std::to_string(piece) + " outside [0, " + std::to_string(t.num_pieces()) + ")");
    const auto& mesh = t.pieces[static_cast<size_t>(piece)].mesh;
    if (num_vertices != nullptr) *num_vertices = mesh.vertices.size();
    if (num_triangles != nullptr) *num_triangles = mesh.triangles.size();
    drb::check_arg(vertices != nullptr && vertex_capacity >= 3 * mesh.vertices.size() && triangles != nullptr &&
                       triangle_capacity >= 3 * mesh.triangles.size(),
                   "mesh buffers too small: " + std::to_string(3 * mesh.vertices.size()) + " floats and " +
                       std::to_string(3 * mesh.triangles.size()) + " indices needed");
    for (size_t i = 0; i < mesh.vertices.size(); ++i)
      for (int k = 0; k < 3; ++k) vertices[3 * i + static_cast<size_t>(k)] = mesh.vertices[i][k];
    for (size_t i = 0; i < mesh.triangles.size(); ++i)
      for (size_t k = 0; k < 3; ++k) triangles[3 * i + k] = mesh.triangles[i][k];
  });
}

drb_status drb_default_model_path(char* buffer, size_t capacity, size_t* needed) {
  return guard([&] { write_string(drb::models::wan::default_model_path(), buffer, capacity, needed); });
}

drb_status drb_model_load(const char* path, drb_model** out) {
  return guard([&] {
    check_out(out);
    const std::string where =
        path == nullptr || *path == '\0' ? drb::models::wan::default_model_path() : std::string(path);
    *out = new drb_model{std::make_shared<const drb::models::wan::Bundle>(drb::models::wan::Bundle::load(where))};
  });
}

void drb_model_free(drb_model* model) { delete model; }

drb_status drb_model_path(const drb_model* model, char* buffer, size_t capacity, size_t* needed) {
  return guard([&] {
    drb::check_arg(model != nullptr, "model is NULL");
    write_string(model->bundle->path, buffer, capacity, needed);
  });
}

void drb_shot_params_init(drb_shot_params* p) {
  if (p == nullptr) return;
  *p = drb_shot_params{};
  p->struct_size = sizeof(*p);
}

drb_status drb_shot_create(const drb_shot_params* params, const drb_model* model, drb_shot** out) {
  return guard([&] {
    check_out(out);
    const auto p = read_params(params, drb_shot_params_init);
    drb::pipeline::Shot shot(shot_params_of(p), model != nullptr ? model->bundle : nullptr);
    *out = new drb_shot{std::move(shot), std::nullopt};
  });
}

void drb_shot_free(drb_shot* shot) { delete shot; }

drb_status drb_shot_render(drb_shot* shot, drb_shot_progress_fn progress, void* progress_user) {
  return guard([&] {
    drb::check_arg(shot != nullptr, "shot is NULL");
    shot->result.reset();
    drb::pipeline::ShotCallback callback;
    if (progress != nullptr)
      callback = [&](const drb::pipeline::ShotProgress& info) {
        return progress(progress_user, info.stage.c_str(), info.stage_index, info.num_stages, info.step,
                        info.num_steps, info.elapsed, info.remaining) != 0;
      };
    shot->result = shot->shot.render(callback);
  });
}

drb_status drb_shot_frames(const drb_shot* shot, float* out, size_t capacity, size_t* count_out, int64_t* frames,
                           int64_t* height, int64_t* width) {
  return guard([&] {
    const at::Tensor& f = result_of(shot, "drb_shot_frames").frames;  // [F, 3, H, W]
    drb::check(f.defined() && f.dim() == 4 && f.size(1) == 3, drb::ErrorCode::internal,
               "drb_shot_frames: the rendered frames are not [F, 3, H, W]");
    const size_t n = static_cast<size_t>(f.numel());
    if (count_out != nullptr) *count_out = n;
    if (frames != nullptr) *frames = f.size(0);
    if (height != nullptr) *height = f.size(2);
    if (width != nullptr) *width = f.size(3);
    drb::check_arg(out != nullptr && capacity >= n,
                   "drb_shot_frames: out holds " + std::to_string(capacity) + " floats, the frames need " +
                       std::to_string(n) + " (" + std::to_string(f.size(0)) + " x " + std::to_string(f.size(2)) +
                       " x " + std::to_string(f.size(3)) + " x 3)");
    at::from_blob(out, {f.size(0), f.size(2), f.size(3), 3}, at::TensorOptions().dtype(at::kFloat))
        .copy_(f.permute({0, 2, 3, 1}));
  });
}

drb_status drb_shot_output_dir(const drb_shot* shot, char* buffer, size_t capacity, size_t* needed) {
  return guard([&] { write_string(result_of(shot, "drb_shot_output_dir").output_dir, buffer, capacity, needed); });
}

drb_status drb_shot_sidecar(const drb_shot* shot, char* buffer, size_t capacity, size_t* needed) {
  return guard([&] { write_string(result_of(shot, "drb_shot_sidecar").sidecar, buffer, capacity, needed); });
}

drb_status drb_shot_params_json(const drb_shot* shot, char* buffer, size_t capacity, size_t* needed) {
  return guard([&] {
    drb::check_arg(shot != nullptr, "shot is NULL");
    write_string(shot->shot.params().to_json(), buffer, capacity, needed);
  });
}

}  // extern "C"
