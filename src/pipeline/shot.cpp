// The shot's stages, each cached on disk by the hash of its inputs (see shot.hpp).
#include "derrumbe/pipeline/shot.hpp"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "derrumbe/core/hash.hpp"
#include "derrumbe/core/rng.hpp"
#include "derrumbe/core/version.hpp"
#include "derrumbe/guide/guided.hpp"
#include "derrumbe/guide/noise_warp.hpp"
#include "derrumbe/guide/sdedit.hpp"
#include "derrumbe/io/exr.hpp"
#include "derrumbe/io/image.hpp"
#include "derrumbe/io/video.hpp"
#include "derrumbe/models/safetensors.hpp"
#include "derrumbe/models/wan/control.hpp"
#include "derrumbe/models/wan/denoiser.hpp"
#include "derrumbe/physics/io.hpp"
#include "derrumbe/physics/simulate.hpp"
#include "derrumbe/render/output.hpp"
#include "derrumbe/render/tensor.hpp"
#include "derrumbe/sample/guidance.hpp"
#include "derrumbe/sample/sampler.hpp"
#include "derrumbe/sample/schedules.hpp"
#include "timings.hpp"

namespace drb::pipeline {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using models::wan::Bundle;
using Tensors = std::map<std::string, at::Tensor>;

const std::vector<std::string> kStages = {"model", "simulate", "render",  "text", "conditioning",
                                          "noise", "sample",   "decode", "write"};

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool has_extension(const std::string& path, std::initializer_list<const char*> extensions) {
  std::string ext = fs::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* e : extensions)
    if (ext == e) return true;
  return false;
}

// A stage's key: the stage name and the library version, then its inputs.
Sha256 stage_hash(const std::string& stage) {
  Sha256 sha;
  sha.field(stage).field(drb::version());
  return sha;
}

void save_tensors(const std::string& path, const Tensors& tensors) {
  io::write_atomically(path, [&](const std::string& tmp) {
    models::save_safetensors(tmp, std::vector<std::pair<std::string, at::Tensor>>(tensors.begin(), tensors.end()));
  });
}

// A cached entry, or nothing when it is missing or unreadable (a damaged entry is recomputed).
std::optional<Tensors> load_tensors(const std::string& path) {
  if (!fs::exists(path)) return std::nullopt;
  try {
    const models::SafetensorsFile file = models::SafetensorsFile::open(path);
    Tensors out;
    for (const auto& entry : file.entries()) out[entry.name] = file.tensor(entry.name).clone();
    return out;
  } catch (const Error&) {
    return std::nullopt;
  }
}

// The sRGB transfer function on a tensor: the VAE sees display-encoded frames.
at::Tensor linear_to_srgb(const at::Tensor& linear) {
  const at::Tensor x = linear.clamp(0, 1);
  return at::where(x <= 0.0031308, x * 12.92, 1.055 * at::pow(x, 1.0 / 2.4) - 0.055);
}

// [F, C, H, W] in [0, 1] -> the VAE's [1, C, F, H, W] in [-1, 1].
at::Tensor to_vae_video(const at::Tensor& frames) { return (frames * 2 - 1).permute({1, 0, 2, 3}).unsqueeze(0); }

std::vector<io::Image> to_images(const at::Tensor& frames) {  // [F, C, H, W] -> images
  const at::Tensor hwc = frames.permute({0, 2, 3, 1}).contiguous().to(at::kFloat);
  std::vector<io::Image> images;
  for (int64_t f = 0; f < hwc.size(0); ++f) {
    io::Image image = io::Image::blank(static_cast<int>(hwc.size(2)), static_cast<int>(hwc.size(1)),
                                       static_cast<int>(hwc.size(3)));
    std::memcpy(image.pixels.data(), hwc[f].data_ptr<float>(), image.pixels.size() * sizeof(float));
    images.push_back(std::move(image));
  }
  return images;
}

at::Tensor from_images(const std::vector<io::Image>& images) {  // RGB images -> [F, 3, H, W]
  std::vector<at::Tensor> frames;
  for (const io::Image& image : images)
    frames.push_back(at::from_blob(const_cast<float*>(image.pixels.data()), {image.height, image.width, image.channels},
                                   at::kFloat)
                         .permute({2, 0, 1})
                         .clone());
  return at::stack(frames);
}

int64_t round_down_to(int64_t value, int64_t multiple) { return std::max(multiple, value / multiple * multiple); }

// One render() of a shot: the stages in order, with progress and the record of what ran.
class Run {
 public:
  Run(const ShotParams& params, const Bundle& model, const ShotCallback& progress, Clock::time_point start)
      : p_(params),
        m_(model),
        progress_(progress),
        start_(start),
        stage_start_(start),
        cache_(p_.cache_dir.empty() ? (fs::path(p_.output.dir) / ".derrumbe-cache") : fs::path(p_.cache_dir)),
        timings_((cache_ / "timings.json").string()) {
    tf_ = m_.temporal_factor();
    lh_ = p_.height / m_.spatial_factor();
    lw_ = p_.width / m_.spatial_factor();
  }

  ShotResult go() {
    check_sizes();
    for (const fs::path& folder : {fs::path(p_.output.dir), cache_}) make_folder(folder);
    const physics::SimTrack track = simulate();
    const physics::Camera camera = resolve_camera(track, p_.camera);
    const std::vector<render::AOVs> aovs = render_aovs(track, camera);
    const Tensors text = encode_text();
    const Tensors cond = conditioning(aovs);
    const at::Tensor noise = start_noise(aovs);
    const at::Tensor latents = sample(text, cond, noise);
    result_.frames = decode(latents);
    write(track, camera, aovs);
    return std::move(result_);
  }

  void record_model(double seconds) { result_.stages.push_back({"model", m_.path, true, seconds}); }

 private:
  // --- bookkeeping -------------------------------------------------------------------------

  // `stage_left`: the running stage's own estimate of its time left (-1: none).
  void report(const std::string& stage, int64_t step = 0, int64_t num_steps = 0, double stage_left = -1) {
    if (!progress_) return;
    ShotProgress info;
    info.stage = stage;
    const auto index = std::find(kStages.begin(), kStages.end(), stage) - kStages.begin();
    info.stage_index = index;
    info.num_stages = static_cast<int64_t>(kStages.size());
    info.step = step, info.num_steps = num_steps;
    info.elapsed = seconds_since(start_);
    info.remaining = shot_left(index, step, num_steps, stage_left);
    if (progress_(info)) throw Error(ErrorCode::cancelled, "shot cancelled during " + stage);
  }

  // The whole shot's time left (see timings.hpp); -1 while nothing is known.
  double shot_left(size_t index, int64_t step, int64_t num_steps, double stage_left) const {
    const double in_stage = seconds_since(stage_start_);
    if (stage_left < 0 && step > 0 && num_steps > 0) stage_left = in_stage / step * (num_steps - step);
    if (stage_left < 0) {
      const double whole = timings_.estimate(kStages[index], work(kStages[index]));
      if (whole >= 0) stage_left = std::max(0.0, whole - in_stage);
    }
    bool known = stage_left >= 0;
    double left = std::max(0.0, stage_left);
    for (size_t later = index + 1; later < kStages.size(); ++later) {
      const double e = timings_.estimate(kStages[later], work(kStages[later]));
      if (e >= 0) left += e, known = true;
    }
    return known ? left : -1.0;
  }

  // A stage's amount of work, the unit its measured rate is kept in: a run (simulation, text),
  // a sampling step over the latents, or a frame of pixels.
  double work(const std::string& stage) const {
    if (stage == "simulate" || stage == "text") return 1.0;
    if (stage == "sample") {
      const double latents = static_cast<double>(m_.latent_channels()) * ((p_.frames - 1) / tf_ + 1) * lh_ * lw_;
      return std::ceil(p_.steps * p_.guide.sdedit_strength) * latents;
    }
    return static_cast<double>(p_.frames) * p_.width * p_.height;
  }

  void begin(const std::string& name) {
    stage_start_ = Clock::now();
    report(name);
  }

  // Records a stage that began with begin(); what it computed (not reused) becomes history.
  void finished(const std::string& name, const std::string& key, bool reused) {
    const double seconds = seconds_since(stage_start_);
    result_.stages.push_back({name, key, reused, seconds});
    if (!reused) timings_.measured(name, seconds, work(name));
  }

  // Runs `compute` unless `load` finds the entry; records the stage.
  template <class T>
  T stage(const std::string& name, const std::string& key, const std::function<std::optional<T>()>& load,
          const std::function<T()>& compute) {
    begin(name);
    std::optional<T> value = load();
    const bool reused = value.has_value();
    if (!reused) value = compute();
    finished(name, key, reused);
    return std::move(*value);
  }

  static void make_folder(const fs::path& folder) {
    std::error_code ec;
    fs::create_directories(folder, ec);
    check(!ec && fs::is_directory(folder), ErrorCode::io,
          "shot: cannot create the folder " + folder.string() + (ec ? ": " + ec.message() : std::string()));
  }

  std::string entry(const std::string& stage, const std::string& key, const std::string& suffix) const {
    make_folder(cache_ / stage);
    return (cache_ / stage / (key + suffix)).string();
  }

  void check_sizes() const {
    const int64_t sx = m_.spatial_factor() * m_.patch_width(), sy = m_.spatial_factor() * m_.patch_height();
    check_arg(p_.width % sx == 0 && p_.height % sy == 0,
              "shot: " + std::to_string(p_.width) + "x" + std::to_string(p_.height) + " is not a multiple of " +
                  std::to_string(sx) + "x" + std::to_string(sy) + " (the model's VAE factor times its patch size)");
    check_arg((p_.frames - 1) % tf_ == 0,
              "shot: frames = " + std::to_string(p_.frames) + " breaks the model's 1 + " + std::to_string(tf_) +
                  "k rule (temporal factor " + std::to_string(tf_) + "): use " +
                  std::to_string(1 + (p_.frames - 1) / tf_ * tf_) + " or " +
                  std::to_string(1 + ((p_.frames - 1) / tf_ + 1) * tf_));
  }

  // --- simulate ------------------------------------------------------------------------------

  physics::SimTrack simulate() {
    Sha256 sha = stage_hash("simulate");
    std::optional<physics::Scene> scene = p_.scene;
    const bool imported = !p_.source.empty() && has_extension(p_.source, {".glb", ".drbtrack", ".track"});
    if (!p_.source.empty() && !imported) scene = physics::load_scene(p_.source);
    if (scene) {
      if (p_.intensity) scene->intensity = *p_.intensity;
      if (p_.fps > 0) scene->fps = p_.fps;
      physics::validate(*scene);
      sha.field("scene").field(physics::to_json(*scene));
    } else {
      check_arg(!p_.intensity, "shot: an intensity override needs a scene source, not an imported track (" +
                                   p_.source + ")");
      sha.field("import").field(fs::path(p_.source).extension().string()).field(sha256_file(p_.source));
      sha.field(std::to_string(p_.fps));
    }
    const std::string key = sha.hex(), path = entry("simulate", key, ".drbtrack");
    physics::SimTrack track = stage<physics::SimTrack>(
        "simulate", key,
        [&]() -> std::optional<physics::SimTrack> {
          if (!fs::exists(path)) return std::nullopt;
          try {
            return physics::load_track(path);
          } catch (const Error&) {
            return std::nullopt;
          }
        },
        [&] {
          physics::SimTrack t;
          if (scene) {
            t = physics::simulate(*scene, [&](int64_t frame, int64_t n) {
              report("simulate", frame, n);
              return false;
            });
          } else if (has_extension(p_.source, {".glb"})) {
            t = physics::import_glb(p_.source, p_.fps > 0 ? p_.fps : 24.0);
          } else {
            t = physics::load_track(p_.source);
          }
          io::write_atomically(path, [&](const std::string& tmp) { physics::save_track(t, tmp); });
          return t;
        });
    sim_key_ = key;
    check_arg(track.num_frames() >= p_.start + p_.frames,
              "shot: the simulation has " + std::to_string(track.num_frames()) + " frames, the shot needs " +
                  std::to_string(p_.start + p_.frames) + " (start " + std::to_string(p_.start) + " + frames " +
                  std::to_string(p_.frames) + "; lengthen the scene's duration or shorten the shot)");
    return track;
  }

  // --- render --------------------------------------------------------------------------------

  std::vector<render::AOVs> render_aovs(const physics::SimTrack& track, const physics::Camera& camera) {
    const std::string key = stage_hash("render")
                                .field(sim_key_)
                                .field(physics::camera_to_json(camera))
                                .field(std::to_string(p_.start) + "+" + std::to_string(p_.frames) + " " +
                                       std::to_string(p_.width) + "x" + std::to_string(p_.height))
                                .hex();
    const fs::path dir = entry("render", key, "");
    auto frame_file = [&](const fs::path& folder, int64_t f) { return io::frame_path((folder / "aov.%04d.exr").string(), f); };
    render_key_ = key;
    return stage<std::vector<render::AOVs>>(
        "render", key,
        [&]() -> std::optional<std::vector<render::AOVs>> {
          if (!fs::is_directory(dir)) return std::nullopt;
          try {
            std::vector<render::AOVs> frames;
            for (int64_t f = 0; f < p_.frames; ++f) frames.push_back(render::read_exr(frame_file(dir, f)));
            return frames;
          } catch (const Error&) {
            return std::nullopt;
          }
        },
        [&] {
          render::RenderOptions options;
          options.width = static_cast<int>(p_.width), options.height = static_cast<int>(p_.height);
          std::vector<render::AOVs> frames = render::render_sequence(track, camera, p_.start, p_.start + p_.frames, options);
          io::write_directory_atomically(dir.string(), [&](const std::string& tmp) {
            for (int64_t f = 0; f < p_.frames; ++f) render::write_exr(frames[f], frame_file(tmp, f));
          });
          return frames;
        });
  }

  // --- conditioning ----------------------------------------------------------------------------

  Tensors encode_text() {
    const std::string key = stage_hash("text")
                                .field(m_.component_hash("text_encoder"))
                                .field(m_.component_hash("tokenizer"))
                                .field(p_.prompt)
                                .field(p_.negative_prompt)
                                .field(std::to_string(p_.max_sequence_length))
                                .hex();
    text_key_ = key;
    const std::string path = entry("text", key, ".safetensors");
    return stage<Tensors>("text", key, [&] { return load_tensors(path); }, [&] {
      Tensors t;
      t["cond"] = models::wan::encode_prompts(*m_.tokenizer, *m_.text_encoder, {p_.prompt}, p_.max_sequence_length);
      t["uncond"] =
          models::wan::encode_prompts(*m_.tokenizer, *m_.text_encoder, {p_.negative_prompt}, p_.max_sequence_length);
      save_tensors(path, t);
      return t;
    });
  }

  int64_t plate_first_frame() const {
    return p_.guide.plate_first_frame >= 0 ? p_.guide.plate_first_frame : p_.first_frame;
  }

  // The plate's identity for the cache: its files' contents (a sequence: each frame's).
  std::string plate_hash() const {
    if (p_.guide.plate.empty()) return "proxy";
    Sha256 sha;
    const bool sequence = has_extension(p_.guide.plate, {".png", ".exr"});
    for (int64_t f = 0; f < (sequence ? p_.frames : 1); ++f) {
      const std::string file = sequence ? io::frame_path(p_.guide.plate, plate_first_frame() + f) : p_.guide.plate;
      check(fs::exists(file), ErrorCode::file_not_found, "shot: plate frame missing: " + file);
      sha.field(sha256_file(file));
    }
    return sha.field(std::to_string(plate_first_frame())).hex();
  }

  at::Tensor encode(const at::Tensor& frames) const {  // [F, 3, H, W] in [0, 1]
    return m_.vae->encode(to_vae_video(frames).to(m_.vae->parameters().begin()->second.dtype()));
  }

  at::Tensor render_mask(const std::vector<render::AOVs>& aovs) const {
    at::Tensor mask = at::zeros({p_.frames, p_.height, p_.width});
    for (const std::string& source : p_.guide.mask) {
      if (source == "coverage") mask = at::maximum(mask, render::aovs_to_tensor(aovs, {"A"}).select(1, 0));
      if (source == "dust") mask = at::maximum(mask, render::aovs_to_tensor(aovs, {"dust"}).select(1, 0));
      if (source == "ids") {
        const at::Tensor ids = render::aovs_to_tensor(aovs, {"id"}).select(1, 0);
        const at::Tensor wanted = at::tensor(p_.guide.mask_ids, at::kLong).to(at::kFloat);
        mask = at::maximum(mask, at::isin(ids, wanted).to(at::kFloat));
      }
    }
    return mask;
  }

  // The control video the shot gives the model: guide.control resolved against what the model
  // takes ("none" for a model that takes none).
  std::string control_kind() const {
    const bool takes = m_.vace() || m_.concat_channels() > 0;
    const std::string& c = p_.guide.control;
    if (c == "auto") return takes ? "proxy" : "none";
    check_arg(c == "none" || takes, "shot: guide.control = '" + c + "', but the model '" + m_.path +
                                        "' takes no control video (it has neither VACE blocks nor control channels)");
    return c;
  }

  // The control video's frames [F, 3, H, W] in [0, 1] from the renderer's passes.
  at::Tensor control_video(const std::vector<render::AOVs>& aovs, const std::string& kind) const {
    if (kind == "proxy") return linear_to_srgb(render::aovs_to_tensor(aovs, {"R", "G", "B"}));
    at::Tensor grey;
    if (kind == "coverage") grey = render::aovs_to_tensor(aovs, {"A"});
    if (kind == "depth") {  // inverse depth, 0 where nothing was hit (Z = inf), 1 at the nearest point
      grey = 1.0 / render::aovs_to_tensor(aovs, {"Z"});
      grey = grey / grey.max().clamp_min(1e-12);
    }
    check(grey.defined(), ErrorCode::internal, "shot: unknown control '" + kind + "'");
    return grey.expand({-1, 3, -1, -1}).clamp(0, 1);
  }

  Tensors conditioning(const std::vector<render::AOVs>& aovs) {
    const GuidanceParams& g = p_.guide;
    const std::string control = control_kind();
    std::string mask_ids;
    for (int64_t id : g.mask_ids) mask_ids += std::to_string(id) + ",";
    std::string mask_sources;
    for (const std::string& m : g.mask) mask_sources += m + ",";
    const std::string key = stage_hash("conditioning")
                                .field(render_key_)
                                .field(m_.component_hash("vae"))
                                .field(plate_hash())
                                .field(mask_sources + ";" + mask_ids + ";" + std::to_string(g.mask_dilate) + ";" +
                                       std::to_string(g.mask_feather))
                                .field(control + (m_.vace() ? ";vace" : ";concat"))
                                .hex();
    cond_key_ = key;
    const std::string path = entry("conditioning", key, ".safetensors");
    return stage<Tensors>("conditioning", key, [&] { return load_tensors(path); }, [&] {
      Tensors t;
      t["proxy"] = encode(control_video(aovs, "proxy"));
      if (control != "none") {
        const at::Tensor video = control_video(aovs, control);
        if (m_.vace())
          t["control"] = models::wan::vace_context(*m_.vae, to_vae_video(video));
        else
          t["control"] = control == "proxy" ? t["proxy"] : encode(video);
      }
      if (!g.plate.empty()) {
        at::Tensor plate = from_images(io::read_plate(g.plate, plate_first_frame(), p_.frames));
        if (plate.size(2) != p_.height || plate.size(3) != p_.width)
          plate = at::_upsample_bilinear2d_aa(plate, {p_.height, p_.width}, false).clamp(0, 1);
        t["plate"] = encode(plate);
      }
      t["mask"] = guide::prepare_mask(render_mask(aovs), lh_, lw_, tf_, g.mask_dilate, g.mask_feather);
      const guide::LatentFlow flow =
          guide::latent_flow(render::aovs_to_tensor(aovs, {"backward.u", "backward.v"}), {}, lh_, lw_, tf_);
      t["flow_backward"] = flow.backward;
      t["flow_valid"] = flow.valid;
      save_tensors(path, t);
      return t;
    });
  }

  at::Tensor start_noise(const std::vector<render::AOVs>& aovs) {
    const GuidanceParams& g = p_.guide;
    const int64_t channels = m_.latent_channels(), latent_frames = 1 + (p_.frames - 1) / tf_;
    const std::string key = stage_hash("noise")
                                .field(render_key_)
                                .field(std::to_string(p_.seed))
                                .field(g.noise_warp ? "warp" : "plain")
                                .field(std::to_string(g.noise_degradation))
                                .field(std::to_string(channels) + " " + std::to_string(m_.spatial_factor()) + " " +
                                       std::to_string(tf_))
                                .hex();
    noise_key_ = key;
    const std::string path = entry("noise", key, ".safetensors");
    return stage<at::Tensor>(
        "noise", key,
        [&]() -> std::optional<at::Tensor> {
          const auto t = load_tensors(path);
          return t ? std::optional<at::Tensor>(t->at("noise")) : std::nullopt;
        },
        [&] {
          at::Tensor noise;
          if (g.noise_warp) {
            guide::NoiseWarpOptions options;
            options.channels = channels, options.factor = m_.spatial_factor(), options.seed = p_.seed;
            options.degradation = g.noise_degradation;
            noise = guide::warp_noise(render::aovs_to_tensor(aovs, {"forward.u", "forward.v"}),
                                      render::aovs_to_tensor(aovs, {"backward.u", "backward.v"}), options, lh_, lw_, tf_);
          } else {
            NoiseAddress address;
            address.seed = p_.seed;
            noise = drb::randn({1, channels, latent_frames, lh_, lw_}, address, at::kFloat);
          }
          save_tensors(path, {{"noise", noise}});
          return noise;
        });
  }

  // --- sample ----------------------------------------------------------------------------------

  at::Tensor schedule() const {
    const double shift = p_.shift.value_or(m_.flow_shift);
    if (p_.schedule == "linear_quadratic") return schedules::linear_quadratic(p_.steps);
    schedules::FlowShift options;
    options.shift = shift;
    options.spacing = p_.schedule == "flow_unipc" ? schedules::FlowSpacing::unipc : schedules::FlowSpacing::euler;
    return schedules::flow_shift(p_.steps, options);
  }

  // The prompt-conditioned model with classifier-free guidance (or a variant).
  std::shared_ptr<Denoiser> denoiser(const Tensors& text, const Tensors& cond) const {
    models::wan::WanControl control;
    if (cond.count("control")) (m_.vace() ? control.vace : control.concat) = cond.at("control");
    control.scale = p_.guide.control_scale;
    control.in_uncond = !p_.guide.control_guidance;
    // Wan's UniPC scheduler hands the transformer integer timesteps; FlowMatchEuler does not.
    auto wan = std::make_shared<models::wan::WanDenoiser>(m_.transformer, text.at("cond"), text.at("uncond"),
                                                         p_.schedule == "flow_unipc", control);
    GuidanceOptions guidance;
    guidance.method = p_.guidance;
    guidance.scale = p_.guidance_scale;
    return std::make_shared<GuidedDenoiser>(wan, guidance);
  }

  // The simulation's guidance: composition over the plate (or the proxy), the flow-warp energy.
  guide::Guided guidance(const Tensors& cond, const at::Tensor& noise) const {
    guide::Guided g;
    if (p_.guide.composite) {
      guide::CompositeOptions composite;
      composite.resample = p_.guide.repaint;
      composite.free_tail_steps = p_.guide.free_tail_steps;
      const at::Tensor& plate = cond.count("plate") ? cond.at("plate") : cond.at("proxy");
      g.composite = std::make_shared<guide::Composite>(plate, cond.at("mask"), noise, composite, p_.seed);
    }
    if (p_.guide.flow_energy > 0) {
      g.energies = {{std::make_shared<guide::FlowWarpEnergy>(cond.at("flow_backward"), cond.at("flow_valid")), 1.0}};
      g.energy.strength = p_.guide.flow_energy;
      g.energy.sigma_start = p_.guide.flow_energy_sigma_start;
      g.energy.sigma_end = p_.guide.flow_energy_sigma_end;
    }
    return g;
  }

  std::string sample_key() const {
    const GuidanceParams& g = p_.guide;
    std::ostringstream settings;
    settings.precision(17);
    settings << p_.sampler << ";" << p_.schedule << ";" << p_.steps << ";" << p_.shift.value_or(m_.flow_shift) << ";"
             << p_.guidance << ";" << p_.guidance_scale << ";" << p_.seed << ";" << g.sdedit_strength << ";"
             << g.composite << ";" << g.repaint << ";" << g.free_tail_steps << ";" << g.flow_energy << ";"
             << g.flow_energy_sigma_start << ";" << g.flow_energy_sigma_end << ";" << g.control_scale << ";"
             << g.control_guidance;
    return stage_hash("sample")
        .field(text_key_)
        .field(cond_key_)
        .field(noise_key_)
        .field(m_.component_hash("transformer"))
        .field(settings.str())
        .hex();
  }

  at::Tensor sample(const Tensors& text, const Tensors& cond, const at::Tensor& noise) {
    const std::string key = sample_key();
    sample_key_ = key;
    const std::string latents_path = entry("sample", key, ".latents.safetensors");
    const std::string state_path = entry("sample", key, ".state");
    return stage<at::Tensor>(
        "sample", key,
        [&]() -> std::optional<at::Tensor> {
          const auto t = load_tensors(latents_path);
          return t ? std::optional<at::Tensor>(t->at("latents")) : std::nullopt;
        },
        [&] {
          const guide::SDEditStart start = guide::sdedit_start(cond.at("proxy"), noise, schedule(), p_.guide.sdedit_strength);
          SamplerState state = fs::exists(state_path) ? resumed_state(state_path) : start_state(p_.sampler, start.x);
          SampleOptions options;
          options.noise_address.seed = p_.seed;
          const std::shared_ptr<Denoiser> model = guide::guided(denoiser(text, cond), guidance(cond, noise), options);
          run_checkpointed(*model, state, start.sigmas, options, state_path);
          save_tensors(latents_path, {{"latents", state.x}});
          fs::remove(state_path);
          return state.x;
        });
  }

  SamplerState resumed_state(const std::string& path) const {
    SamplerState state = SamplerState::load(path);
    check(state.sampler == p_.sampler, ErrorCode::internal,
          "shot: the saved sampler state " + path + " is for '" + state.sampler + "'");
    state.cancelled = false;
    return state;
  }

  // Runs to the end, saving the state every checkpoint_every steps (a run cancelled by the
  // checkpoint callback continues from the saved state exactly as it would have gone on).
  void run_checkpointed(Denoiser& model, SamplerState& state, const at::Tensor& sigmas, SampleOptions options,
                        const std::string& state_path) {
    const int64_t num_steps = sigmas.size(0) - 1;
    const int64_t first = state.step;
    const auto start = Clock::now();
    bool user_cancelled = false;
    options.callback = [&](const StepInfo& info) {
      const int64_t done = info.step + 1;
      const double per_step = seconds_since(start) / static_cast<double>(done - first);
      try {
        report("sample", done, num_steps, per_step * static_cast<double>(num_steps - done));
      } catch (const Error&) {
        user_cancelled = true;
        return true;
      }
      return done < num_steps && done % p_.checkpoint_every == 0;  // stop to save
    };
    while (state.step < num_steps) {
      state = run(model, std::move(state), sigmas, options);
      if (state.step < num_steps || user_cancelled)
        io::write_atomically(state_path, [&](const std::string& tmp) { state.save(tmp); });
      if (user_cancelled) throw Error(ErrorCode::cancelled, "shot cancelled during sample (state saved at step " +
                                                               std::to_string(state.step) + ")");
      state.cancelled = false;
    }
  }

  // --- decode and write ------------------------------------------------------------------------

  at::Tensor decode(const at::Tensor& latents) {
    const std::string key = stage_hash("decode").field(sample_key_).field(m_.component_hash("vae")).hex();
    const std::string path = entry("decode", key, ".safetensors");
    return stage<at::Tensor>(
        "decode", key,
        [&]() -> std::optional<at::Tensor> {
          const auto t = load_tensors(path);
          return t ? std::optional<at::Tensor>(t->at("frames")) : std::nullopt;
        },
        [&] {
          const at::Tensor video = m_.vae->decode(latents).to(at::kFloat);  // [1, 3, F, H, W] in [-1, 1]
          const at::Tensor frames = ((video[0].permute({1, 0, 2, 3}) + 1) * 0.5).clamp(0, 1).contiguous();
          save_tensors(path, {{"frames", frames}});
          return frames;
        });
  }

  void write(const physics::SimTrack& track, const physics::Camera& camera, const std::vector<render::AOVs>& aovs) {
    begin("write");
    const OutputParams& o = p_.output;
    const fs::path dir(o.dir);
    const std::vector<io::Image> images = to_images(result_.frames);
    if (o.mp4) {
      io::VideoOptions video;
      video.fps = track.fps, video.crf = o.crf;
      const std::string path = (dir / (o.name + ".mp4")).string();
      io::write_mp4(images, path, video);
      result_.files.push_back(path);
    }
    if (o.exr) {
      const std::string pattern = (dir / (o.name + ".%04d.exr")).string();
      write_exr_sequence(track, camera, aovs, &images, pattern, p_.first_frame, io::color_space_from_name(o.color_space),
                         p_.start);
      result_.files.push_back(io::frame_path(pattern, p_.first_frame));
    }
    if (o.png) {
      const std::string pattern = (dir / (o.name + ".%04d.png")).string();
      for (size_t f = 0; f < images.size(); ++f)
        io::write_png(images[f], io::frame_path(pattern, p_.first_frame + static_cast<int64_t>(f)), o.png_bits);
      result_.files.push_back(io::frame_path(pattern, p_.first_frame));
    }
    write_sidecar(dir);
    result_.output_dir = dir.string();
    finished("write", "", false);
  }

  // Written last: a sidecar says the shot finished, and holds what re-runs it exactly.
  void write_sidecar(const fs::path& dir) {
    json doc;
    doc["derrumbe_version"] = drb::version();
    doc["params"] = json::parse(p_.to_json());
    doc["model"] = {{"path", m_.path}, {"files", json::object()}};
    for (const auto& [name, hash] : m_.files) doc["model"]["files"][name] = hash;
    doc["frames"] = {{"first", p_.first_frame}, {"last", p_.first_frame + p_.frames - 1}};
    doc["stages"] = json::object();
    for (const StageRecord& s : result_.stages)
      if (!s.key.empty() && s.name != "model") doc["stages"][s.name] = s.key;
    const std::string path = (dir / (p_.output.name + ".json")).string();
    io::write_atomically(path, [&](const std::string& tmp) {
      std::ofstream out(tmp, std::ios::binary);
      out << doc.dump(2) << "\n";
      check(out.good(), ErrorCode::io, "shot: cannot write " + tmp);
    });
    result_.sidecar = path;
    result_.files.push_back(path);
  }

  const ShotParams& p_;
  const Bundle& m_;
  const ShotCallback& progress_;
  Clock::time_point start_, stage_start_;
  fs::path cache_;
  detail::Timings timings_;
  int64_t tf_, lh_, lw_;
  std::string sim_key_, render_key_, text_key_, cond_key_, noise_key_, sample_key_;
  ShotResult result_;
};

// Preview: half the size (kept a multiple of what the model takes) and half the steps.
ShotParams preview_params(const ShotParams& params, const Bundle& model) {
  ShotParams p = params;
  const int64_t sx = model.spatial_factor() * model.patch_width(), sy = model.spatial_factor() * model.patch_height();
  p.width = round_down_to(params.width / 2, sx);
  p.height = round_down_to(params.height / 2, sy);
  p.steps = std::max<int64_t>(4, params.steps / 2);
  p.preview = false;
  if (p.cache_dir.empty()) p.cache_dir = (fs::path(params.output.dir) / ".derrumbe-cache").string();
  p.output.dir = (fs::path(params.output.dir) / "preview").string();
  return p;
}

}  // namespace

physics::Camera resolve_camera(const physics::SimTrack& track, const CameraChoice& choice) {
  if (!choice.keys.empty()) return physics::Camera{"explicit", choice.keys};
  std::string names;
  for (const physics::Camera& camera : track.cameras) {
    if (!choice.name.empty() && camera.name == choice.name) return camera;
    names += (names.empty() ? "" : ", ") + camera.name;
  }
  if (names.empty()) names = "none";
  check(choice.name.empty(), ErrorCode::not_found,
        "no camera named '" + choice.name + "' (the source has: " + names + ")");
  check(choice.index >= 0 && choice.index < static_cast<int64_t>(track.cameras.size()), ErrorCode::not_found,
        "camera index " + std::to_string(choice.index) + " out of range (the source has " +
            std::to_string(track.cameras.size()) + " camera(s): " + names + "); give explicit camera keys");
  return track.cameras[static_cast<size_t>(choice.index)];
}

void write_exr_sequence(const physics::SimTrack& track, const physics::Camera& camera,
                        const std::vector<render::AOVs>& aovs, const std::vector<io::Image>* beauty,
                        const std::string& pattern, int64_t first_frame, io::ColorSpace space, int64_t start) {
  if (beauty != nullptr && beauty->size() != aovs.size())
    throw Error(ErrorCode::invalid_argument, "write_exr_sequence: " + std::to_string(aovs.size()) +
                                                 " AOV frames but " + std::to_string(beauty->size()) + " beauty frames");
  std::vector<std::string> names;
  for (const physics::Piece& piece : track.pieces) names.push_back(physics::piece_name(piece.id));
  for (size_t f = 0; f < aovs.size(); ++f) {
    const render::View view =
        render::make_view(render::camera_at(camera, static_cast<double>(start + static_cast<int64_t>(f)) / track.fps), aovs[f].width, aovs[f].height);
    const io::CameraMatrices matrices = io::camera_matrices(view);
    io::ExrFrame frame;
    frame.beauty = beauty != nullptr ? &(*beauty)[f] : nullptr;
    frame.beauty_space = space;
    frame.aovs = &aovs[f];
    frame.piece_names = &names;
    frame.camera = &matrices;
    io::write_exr_frame(frame, io::frame_path(pattern, first_frame + static_cast<int64_t>(f)));
  }
}

const StageRecord& ShotResult::stage(const std::string& name) const {
  for (const StageRecord& s : stages)
    if (s.name == name) return s;
  throw Error(ErrorCode::not_found, "shot result: no stage '" + name + "'");
}

Shot::Shot(ShotParams params, std::shared_ptr<const Bundle> model) : params_(std::move(params)), model_(std::move(model)) {
  params_.validate();
}

Shot Shot::from_sidecar(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), fs::exists(path) ? ErrorCode::io : ErrorCode::file_not_found, "sidecar: cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  json doc;
  try {
    doc = json::parse(text.str());
  } catch (const json::exception& e) {
    throw Error(ErrorCode::parse, "sidecar " + path + ": malformed JSON: " + e.what());
  }
  check(doc.is_object() && doc.contains("params") && doc.contains("model"), ErrorCode::parse,
        "sidecar " + path + ": expected an object with 'params' and 'model'");
  Shot shot(ShotParams::from_json(doc["params"].dump()));
  // The same weights, or the re-run would not be the same shot.
  const json& files = doc["model"]["files"];
  const Bundle& model = shot.model();
  check(files.is_object() && files.size() == model.files.size(), ErrorCode::invalid_argument,
        "sidecar " + path + ": the model at " + model.path + " holds other files than the shot was made with");
  for (const auto& [name, hash] : model.files)
    check(files.contains(name) && files[name] == hash, ErrorCode::invalid_argument,
          "sidecar " + path + ": the model file " + name + " differs from the one the shot was made with");
  return shot;
}

const Bundle& Shot::model() {
  if (!model_) {
    try {
      model_ = std::make_shared<const Bundle>(
          Bundle::load(params_.model.empty() ? models::wan::default_model_path() : params_.model));
    } catch (const Error& e) {
      throw Error(ErrorCode::model, std::string("loading the model: ") + e.what());
    }
  }
  return *model_;
}

ShotResult Shot::render(const ShotCallback& progress) {
  if (params_.preview) return preview(progress);
  const auto start = Clock::now();
  if (progress) {
    ShotProgress info;
    info.stage = "model", info.num_stages = static_cast<int64_t>(kStages.size());
    if (progress(info)) throw Error(ErrorCode::cancelled, "shot cancelled before loading the model");
  }
  const Bundle& bundle = model();
  Run run(params_, bundle, progress, start);
  run.record_model(seconds_since(start));
  return run.go();
}

ShotResult Shot::preview(const ShotCallback& progress) {
  Shot quick(preview_params(params_, model()), model_);
  return quick.render(progress);
}

std::vector<ShotResult> Shot::variations(const Variations& variations, const ShotCallback& progress) {
  const std::vector<uint64_t> seeds = variations.seeds.empty() ? std::vector<uint64_t>{params_.seed} : variations.seeds;
  std::vector<std::optional<double>> intensities{params_.intensity};
  if (!variations.intensities.empty()) intensities.assign(variations.intensities.begin(), variations.intensities.end());
  const std::vector<CameraChoice> cameras =
      variations.cameras.empty() ? std::vector<CameraChoice>{params_.camera} : variations.cameras;
  model();  // loaded once, shared by every variation
  std::vector<ShotResult> results;
  for (size_t c = 0; c < cameras.size(); ++c)
    for (size_t i = 0; i < intensities.size(); ++i)
      for (uint64_t seed : seeds) {
        ShotParams p = params_;
        p.seed = seed, p.intensity = intensities[i], p.camera = cameras[c];
        if (p.cache_dir.empty()) p.cache_dir = (fs::path(params_.output.dir) / ".derrumbe-cache").string();
        std::string folder = "v" + std::to_string(results.size()) + "_seed" + std::to_string(seed);
        if (variations.intensities.size() > 0) folder += "_intensity" + std::to_string(i);
        if (variations.cameras.size() > 0) folder += "_camera" + std::to_string(c);
        p.output.dir = (fs::path(params_.output.dir) / folder).string();
        results.push_back(Shot(p, model_).render(progress));
      }
  return results;
}

}  // namespace drb::pipeline
