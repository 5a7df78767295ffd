// The `derrumbe` command: argument parsing (CLI11), progress display and error translation
// around the library's Shot, simulation and renderer. No stage is assembled here.
//
// Exit codes: 0 success; 1 internal error; 2 bad usage or bad input; 3 I/O; 4 model failure;
// 130 cancelled (Ctrl-C).
#include "cli.hpp"

#include <ATen/Context.h>
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "derrumbe/core/version.hpp"
#include "derrumbe/io/exr.hpp"
#include "derrumbe/io/image.hpp"
#include "derrumbe/physics/io.hpp"
#include "derrumbe/physics/simulate.hpp"
#include "derrumbe/pipeline/shot.hpp"
#include "derrumbe/render/aovs.hpp"
#include "derrumbe/sample/sampler.hpp"
#include "derrumbe/sample/schedules.hpp"

namespace drb::cli {
namespace {

namespace fs = std::filesystem;

enum Exit { kOk = 0, kInternal = 1, kBadInput = 2, kIo = 3, kModel = 4, kCancelled = 130 };

std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) { g_interrupted = true; }

// Ctrl-C cancels the shot at its next progress report (exit 130); the caller's handler (Python's,
// when run from `python -m derrumbe`) is restored afterwards.
class InterruptGuard {
 public:
  InterruptGuard() : previous_(std::signal(SIGINT, on_interrupt)) { g_interrupted = false; }
  ~InterruptGuard() { std::signal(SIGINT, previous_); }

 private:
  void (*previous_)(int);
};

int exit_code(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument:
    case ErrorCode::not_found:
    case ErrorCode::parse:
    case ErrorCode::unsupported:
    case ErrorCode::file_not_found: return kBadInput;
    case ErrorCode::io: return kIo;
    case ErrorCode::model: return kModel;
    case ErrorCode::cancelled: return kCancelled;
    case ErrorCode::internal: return kInternal;
  }
  return kInternal;
}

std::string clock_text(double seconds) {
  if (seconds < 0) return "--:--";
  const auto s = static_cast<long>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  return buf;
}

// A bar redrawn in place on a terminal; one plain line per update otherwise (logs, pipes).
class ProgressDisplay {
 public:
  ProgressDisplay() : terminal_(::isatty(STDERR_FILENO) != 0) {}
  ~ProgressDisplay() { finish(); }

  bool operator()(const pipeline::ShotProgress& p) {
    std::string line = "[" + std::to_string(p.stage_index + 1) + "/" + std::to_string(p.num_stages) + " " + p.stage + "]";
    if (p.num_steps > 0) {
      const int width = 24;
      const int filled = static_cast<int>(width * p.step / p.num_steps);
      if (terminal_) line += " |" + std::string(filled, '#') + std::string(width - filled, ' ') + "|";
      line += " step " + std::to_string(p.step) + "/" + std::to_string(p.num_steps);
    }
    line += "  elapsed " + clock_text(p.elapsed) + "  left " + clock_text(p.remaining);
    if (terminal_)
      std::fprintf(stderr, "\r%-100s", line.c_str());
    else
      std::fprintf(stderr, "%s\n", line.c_str());
    std::fflush(stderr);
    drawn_ = terminal_;
    return g_interrupted.load();
  }
  void finish() {
    if (drawn_) std::fprintf(stderr, "\n");
    drawn_ = false;
  }

 private:
  bool terminal_;
  bool drawn_ = false;
};

// "main" or "2": a scene camera by name or by index.
pipeline::CameraChoice camera_choice(const std::string& text) {
  pipeline::CameraChoice choice;
  if (!text.empty() && text.find_first_not_of("0123456789") == std::string::npos)
    choice.index = std::stoll(text);
  else
    choice.name = text;
  return choice;
}

struct GenerateArgs {
  std::string scene, camera, model, prompt, negative, sidecar, out, params_file, cache, sampler, plate, control;
  std::optional<double> intensity, fps, strength, control_scale;
  std::optional<int64_t> steps, frames, width, height, first_frame, start;
  std::optional<uint64_t> seed;
  std::vector<uint64_t> seeds;
  std::vector<double> intensities;
  bool preview = false, png = false, no_exr = false, no_mp4 = false, control_guidance = false;
};

void add_generate(CLI::App& app, GenerateArgs& a) {
  auto* g = app.add_subcommand("generate", "Simulate, render and generate a shot (MP4, EXR sequence, sidecar)");
  g->add_option("scene", a.scene, "Scene file (.json) or imported track (.glb, .drbtrack)");
  g->add_option("--params", a.params_file, "Shot settings as JSON (ShotParams); flags override them");
  g->add_option("--sidecar", a.sidecar, "Re-run the shot a sidecar describes, with the same model files");
  g->add_option("--camera", a.camera, "Scene camera by name or index");
  g->add_option("--intensity", a.intensity, "Destruction intensity in [0, 1] (overrides the scene's)");
  g->add_option("--model", a.model, "A diffusers Wan directory (default: the embedded default model)");
  g->add_option("--prompt", a.prompt, "Prompt");
  g->add_option("--negative-prompt", a.negative, "Negative prompt");
  g->add_option("--steps", a.steps, "Sampling steps");
  g->add_option("--sampler", a.sampler, "Sampler (see `derrumbe samplers`)");
  g->add_option("--seed", a.seed, "Noise seed");
  g->add_option("--frames", a.frames, "Video frames (1 + 4k for Wan)");
  g->add_option("--width", a.width, "Width in pixels");
  g->add_option("--height", a.height, "Height in pixels");
  g->add_option("--fps", a.fps, "Frames per second (default: the scene's)");
  g->add_option("--first-frame", a.first_frame, "Number of the first written frame (default 1001)");
  g->add_option("--start", a.start, "Simulation frame the shot begins at (default 0)");
  g->add_option("--strength", a.strength, "SDEdit strength from the proxy render, (0, 1]");
  g->add_option("--control", a.control,
                "Control video for a control model: auto, none, proxy, depth, coverage (default auto)");
  g->add_option("--control-scale", a.control_scale, "VACE control scale (default 1)");
  g->add_flag("--control-guidance", a.control_guidance,
              "CFG's negative branch runs without the control: the guidance scale also pushes toward it");
  g->add_option("--plate", a.plate, "Background plate: image sequence (name.%04d.png / .exr) or video");
  g->add_option("--seeds", a.seeds, "Variations: one shot per seed (each in its own folder)")->delimiter(',');
  g->add_option("--intensities", a.intensities, "Variations: one shot per intensity")->delimiter(',');
  g->add_flag("--preview", a.preview, "Half resolution and half the steps, under OUT/preview");
  g->add_flag("--png", a.png, "Also write a PNG sequence");
  g->add_flag("--no-exr", a.no_exr, "Do not write the EXR sequence");
  g->add_flag("--no-mp4", a.no_mp4, "Do not write the MP4");
  g->add_option("--out", a.out, "Output folder (default: shot)");
  g->add_option("--cache", a.cache, "Stage cache folder (default: OUT/.derrumbe-cache)");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), fs::exists(path) ? ErrorCode::io : ErrorCode::file_not_found, "cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

int generate(const GenerateArgs& a) {
  std::unique_ptr<pipeline::Shot> base;
  pipeline::ShotParams p;
  if (!a.sidecar.empty()) {
    base = std::make_unique<pipeline::Shot>(pipeline::Shot::from_sidecar(a.sidecar));
    p = base->params();
  } else if (!a.params_file.empty()) {
    p = pipeline::ShotParams::from_json(read_file(a.params_file));
  }
  check_arg(!a.scene.empty() || !a.sidecar.empty() || !a.params_file.empty() || p.scene.has_value(),
            "generate: give a SCENE (or --sidecar / --params)");
  if (!a.scene.empty()) p.source = a.scene, p.scene.reset();
  if (!a.camera.empty()) p.camera = camera_choice(a.camera);
  if (a.intensity) p.intensity = a.intensity;
  if (!a.model.empty()) p.model = a.model;
  if (!a.prompt.empty()) p.prompt = a.prompt;
  if (!a.negative.empty()) p.negative_prompt = a.negative;
  if (!a.sampler.empty()) p.sampler = a.sampler;
  if (!a.plate.empty()) p.guide.plate = a.plate;
  if (a.steps) p.steps = *a.steps;
  if (a.seed) p.seed = *a.seed;
  if (a.frames) p.frames = *a.frames;
  if (a.width) p.width = *a.width;
  if (a.height) p.height = *a.height;
  if (a.fps) p.fps = *a.fps;
  if (a.first_frame) p.first_frame = *a.first_frame;
  if (a.start) p.start = *a.start;
  if (a.strength) p.guide.sdedit_strength = *a.strength;
  if (!a.control.empty()) p.guide.control = a.control;
  if (a.control_scale) p.guide.control_scale = *a.control_scale;
  if (a.control_guidance) p.guide.control_guidance = true;
  if (!a.out.empty()) p.output.dir = a.out;
  if (!a.cache.empty()) p.cache_dir = a.cache;
  if (a.preview) p.preview = true;
  if (a.png) p.output.png = true;
  if (a.no_exr) p.output.exr = false;
  if (a.no_mp4) p.output.mp4 = false;

  pipeline::Shot shot(p, nullptr);
  ProgressDisplay display;
  auto progress = [&](const pipeline::ShotProgress& info) { return display(info); };
  std::vector<pipeline::ShotResult> results;
  if (!a.seeds.empty() || !a.intensities.empty()) {
    pipeline::Variations v;
    v.seeds = a.seeds, v.intensities = a.intensities;
    results = shot.variations(v, progress);
  } else {
    results.push_back(shot.render(progress));
  }
  display.finish();
  for (const pipeline::ShotResult& r : results) {
    std::printf("%lld frames in %s\n", static_cast<long long>(r.frames.size(0)), r.output_dir.c_str());
    for (const std::string& f : r.files) std::printf("  %s\n", f.c_str());
  }
  return kOk;
}

physics::SimTrack load_source(const std::string& path, std::optional<double> intensity) {
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".glb") return physics::import_glb(path);
  if (ext == ".drbtrack") return physics::load_track(path);
  physics::Scene scene = physics::load_scene(path);
  if (intensity) scene.intensity = *intensity, physics::validate(scene);
  return physics::simulate(scene);
}

int info() {
  std::printf("derrumbe %s\n", drb::version());
  std::printf("torch CUDA: %s (%d device(s))\n", at::hasCUDA() ? "available" : "not available",
              at::hasCUDA() ? static_cast<int>(at::getNumGPUs()) : 0);
#ifdef DRB_WITH_CUDA_KERNELS
  std::printf("CUDA kernels: built\n");
#else
  std::printf("CUDA kernels: not built\n");
#endif
  try {
    std::printf("default model: %s\n", models::wan::default_model_path().c_str());
  } catch (const Error& e) {
    std::printf("default model: not found (%s)\n", e.what());
  }
  return kOk;
}

}  // namespace

int run(int argc, const char* const* argv) {
  CLI::App app{"derrumbe: physics simulation to generated video shots", "derrumbe"};
  app.require_subcommand(1);
  app.set_version_flag("--version", drb::version());
  GenerateArgs gen;
  add_generate(app, gen);

  std::string sim_scene, sim_out;
  std::optional<double> sim_intensity;
  auto* sim = app.add_subcommand("simulate", "Fracture and simulate a scene; write the track (.glb or .drbtrack)");
  sim->add_option("scene", sim_scene, "Scene file (.json)")->required();
  sim->add_option("--out", sim_out, "Track file: .glb (DCCs) or .drbtrack (the cache)")->required();
  sim->add_option("--intensity", sim_intensity, "Destruction intensity in [0, 1]");

  std::string aov_source, aov_out, aov_camera = "0";
  int64_t aov_width = 832, aov_height = 480, aov_frames = 0, aov_first = 1001;
  auto* aov = app.add_subcommand("render-aovs", "Render the conditioning passes as an EXR sequence");
  aov->add_option("source", aov_source, "Scene (.json) or track (.glb, .drbtrack)")->required();
  aov->add_option("--out", aov_out, "Output folder")->required();
  aov->add_option("--camera", aov_camera, "Camera by name or index");
  aov->add_option("--width", aov_width, "Width");
  aov->add_option("--height", aov_height, "Height");
  aov->add_option("--frames", aov_frames, "Frames (0: all)");
  aov->add_option("--first-frame", aov_first, "Number of the first written frame");

  auto* samplers = app.add_subcommand("samplers", "List the samplers and schedules");
  auto* info_cmd = app.add_subcommand("info", "Version, build options, devices, the default model");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kOk : kBadInput;
  }

  const InterruptGuard interrupt_guard;
  try {
    if (app.got_subcommand("generate")) return generate(gen);
    if (app.got_subcommand(sim)) {
      const physics::SimTrack track = load_source(sim_scene, sim_intensity);
      const bool glb = fs::path(sim_out).extension() == ".glb";
      io::write_atomically(sim_out, [&](const std::string& tmp) {
        glb ? physics::export_glb(track, tmp) : physics::save_track(track, tmp);
      });
      std::printf("%lld frames, %lld pieces -> %s\n", static_cast<long long>(track.num_frames()),
                  static_cast<long long>(track.num_pieces()), sim_out.c_str());
      return kOk;
    }
    if (app.got_subcommand(aov)) {
      const physics::SimTrack track = load_source(aov_source, std::nullopt);
      const physics::Camera camera = pipeline::resolve_camera(track, camera_choice(aov_camera));
      render::RenderOptions options;
      options.width = static_cast<int>(aov_width), options.height = static_cast<int>(aov_height);
      const int64_t frames = aov_frames > 0 ? aov_frames : track.num_frames();
      const std::vector<render::AOVs> aovs = render::render_sequence(track, camera, 0, frames, options);
      pipeline::write_exr_sequence(track, camera, aovs, nullptr, (fs::path(aov_out) / "aovs.%04d.exr").string(),
                                   aov_first);
      std::printf("%lld frames -> %s\n", static_cast<long long>(frames), aov_out.c_str());
      return kOk;
    }
    if (app.got_subcommand(samplers)) {
      for (const std::string& name : sampler_names()) std::printf("%s\n", name.c_str());
      std::printf("\nschedules:\n");
      for (const std::string& name : schedules::names()) std::printf("  %s\n", name.c_str());
      return kOk;
    }
    if (app.got_subcommand(info_cmd)) return info();
  } catch (const Error& e) {
    std::fprintf(stderr, "\nderrumbe: error: %s\n", e.what());
    return exit_code(e.code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nderrumbe: internal error: %s\n", e.what());
    return kInternal;
  }
  return kBadInput;
}

}  // namespace drb::cli
