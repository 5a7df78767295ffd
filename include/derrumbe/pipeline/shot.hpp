// The shot: a scene and settings in, finished frames out (MP4, EXR and PNG sequences, a sidecar),
// through the stages simulate -> render AOVs -> conditioning -> sample -> decode -> write.
//
// Every stage's result is cached on disk under ShotParams::cache_dir, keyed by a SHA-256 of
// exactly what it depends on (file contents, the parameters it reads, the library version):
//   simulate      the scene (after the intensity/fps overrides) or the imported file's bytes
//   render        simulate + camera, start, frames, size
//   text          the text encoder's and tokenizer's files, prompts, sequence length
//   conditioning  render + the VAE's files, plate file bytes, mask and control settings
//                 (seed-independent)
//   noise         render + seed, warp settings, latent size                 (seed-dependent)
//   sample        text + conditioning + noise + the transformer's files, sampler settings
//   decode        sample + the VAE's files
// so a new camera reuses the simulation, a new seed or sampler reuses the AOVs, the text and
// the seed-independent conditioning, and a new prompt reuses all but the text and what follows.
// Every file is written under a temporary name and renamed; sampling saves its SamplerState
// every `checkpoint_every` steps, and a rerun of an interrupted shot resumes from the last
// finished stage and saved step with bit-identical frames.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "derrumbe/io/exr.hpp"
#include "derrumbe/models/wan/bundle.hpp"
#include "derrumbe/physics/scene.hpp"
#include "derrumbe/physics/track.hpp"

namespace drb::pipeline {

// Which camera sees the shot: explicit keys when given, else a scene camera by name when
// `name` is set, else by index.
struct CameraChoice {
  std::string name;
  int64_t index = 0;
  std::vector<physics::CameraKey> keys;
};

struct GuidanceParams {
  // Noise warped along the rendered flow (Go-with-the-Flow); off: plain seeded noise.
  bool noise_warp = true;
  double noise_degradation = 0.0;  // 0: warped noise ... 1: fresh noise every frame
  // SDEdit from the proxy render: the fraction of the schedule that runs (1: from pure noise).
  double sdedit_strength = 0.85;
  // Masked composition: the model generates inside the mask; outside, the plate is kept. The
  // plate is an image sequence (PNG or EXR pattern with a frame field) or a video; empty: the
  // proxy render. Its frames are read from plate_first_frame (-1: the shot's first_frame).
  bool composite = true;
  std::string plate;
  int64_t plate_first_frame = -1;
  // The mask from the renderer: the maximum of the named sources, "coverage" (the pieces),
  // "dust", "ids" (the pieces listed in mask_ids).
  std::vector<std::string> mask{"coverage", "dust"};
  std::vector<int64_t> mask_ids;
  int64_t mask_dilate = 4, mask_feather = 4;  // pixels
  int64_t repaint = 0;                        // RePaint passes per step (0 to 7)
  int64_t free_tail_steps = 2;                // last steps without composition
  // The control video for a model that takes one (VACE, or channel concatenation as
  // Wan2.1-Fun-Control; the default model): "proxy" (the proxy render), "depth" (inverse depth,
  // near white, normalized over the shot, as depth-control videos are), "coverage" (the pieces'
  // alpha), "none"; "auto": "proxy" for such a model, "none" otherwise. Naming a control for a
  // model that takes none is an error. control_scale: VACE's hint scale (conditioning_scale).
  std::string control = "auto";
  double control_scale = 1.0;
  // Control guidance: CFG's negative branch runs without the control, so that the guidance
  // scale pushes toward the control as well as the prompt (off: both branches see it).
  bool control_guidance = false;
  // Flow-warp consistency energy on the predicted x0 (0: off) and its sigma interval.
  double flow_energy = 0.05;
  double flow_energy_sigma_start = std::numeric_limits<double>::infinity();
  double flow_energy_sigma_end = 0.0;
};

struct OutputParams {
  std::string dir = "shot";
  std::string name = "shot";     // files: {name}.mp4, {name}.%04d.exr, {name}.%04d.png
  bool mp4 = true;
  bool exr = true;               // beauty + AOVs + Cryptomatte, one file per frame
  bool png = false;
  int png_bits = 8;              // 8 or 16
  std::string color_space = "acescg";  // the EXR beauty: "acescg" or "srgb"
  int crf = 18;
};

struct ShotParams {
  // The source: a scene file (.json), an imported track (.glb, or the track cache .drbtrack),
  // or a scene given in code (then `source` is empty).
  std::string source;
  std::optional<physics::Scene> scene;
  std::optional<double> intensity;  // overrides the scene's (scene sources only)
  CameraChoice camera;
  int64_t frames = 17;              // video frames: 1 + temporal_factor * k (Wan: 4n + 1)
  int64_t width = 160, height = 96; // multiples of the model's spatial factor times its patch size
  double fps = 0.0;                 // 0: the scene's (an imported track is sampled at 24)
  int64_t first_frame = 1001;       // the number of the first written frame
  int64_t start = 0;                // the simulation frame the shot begins at (a window of it)
  std::string model;                // a diffusers Wan directory; empty: the default model
  std::string prompt = "a tall concrete building collapses into the street, dust and debris";
  std::string negative_prompt = "blurry, static";
  int64_t max_sequence_length = 512;  // prompt tokens (Wan: 512)
  std::string sampler = "uni_pc_bh2";
  std::string schedule = "flow_unipc";  // flow_unipc (Wan's UniPC spacing), flow_euler, linear_quadratic
  int64_t steps = 12;
  std::optional<double> shift;      // default: the model scheduler's
  std::string guidance = "cfg";     // cfg, cfg_zero, apg
  double guidance_scale = 5.0;
  uint64_t seed = 0;
  GuidanceParams guide;
  OutputParams output;
  std::string cache_dir;            // empty: {output.dir}/.derrumbe-cache
  int64_t checkpoint_every = 1;     // sampling steps between saved states
  // Preview: half the resolution (rounded to what the model takes) and half the steps (at
  // least 4), written under {output.dir}/preview.
  bool preview = false;

  // Every field; from_json(to_json()) gives the same params. An in-code scene is embedded.
  DRB_EXPORT std::string to_json() const;
  // Unknown keys and wrong types are errors naming the key; missing keys keep their defaults.
  DRB_EXPORT static ShotParams from_json(const std::string& json_text);
  // Checks that need no model: sizes, frames >= 1, known names, ranges. Errors name the field.
  DRB_EXPORT void validate() const;
};

// Progress of a whole shot: the stage running, its step, and the time left (seconds, -1 while
// unknown: estimated from the sampling steps done).
struct ShotProgress {
  std::string stage;
  int64_t stage_index = 0, num_stages = 0;
  int64_t step = 0, num_steps = 0;
  // Seconds since render() began, and the estimated seconds the whole shot has left: the running
  // stage from its own rate, the later stages from the rates earlier runs with the same cache
  // folder measured (its timings.json); a stage never measured counts as 0 (-1: nothing known).
  double elapsed = 0.0, remaining = -1.0;
};
// Returns true to cancel (the shot then throws Error(cancelled) after saving what it has).
using ShotCallback = std::function<bool(const ShotProgress&)>;

struct StageRecord {
  std::string name;
  std::string key;     // the cache key (SHA-256 hex)
  bool reused = false; // found in the cache
  double seconds = 0.0;
};

struct ShotResult {
  at::Tensor frames;                // [F, 3, H, W] float32, display-referred sRGB in [0, 1]
  std::vector<std::string> files;   // what was written (videos, sequences' first frames, sidecar)
  std::string output_dir;
  std::string sidecar;              // path of the JSON sidecar
  std::vector<StageRecord> stages;
  DRB_EXPORT const StageRecord& stage(const std::string& name) const;
};

// One variation per combination of the lists (an empty list keeps the base value).
struct Variations {
  std::vector<uint64_t> seeds;
  std::vector<double> intensities;
  std::vector<CameraChoice> cameras;
};

// The camera a choice names on a track: its explicit keys, else the camera called `name`, else
// camera `index`. A missing camera is ErrorCode::not_found listing the track's cameras.
DRB_EXPORT physics::Camera resolve_camera(const physics::SimTrack& track, const CameraChoice& choice);

// Frames as an OpenEXR sequence (pattern with a frame field, numbered from first_frame): the
// beauty when given (display sRGB, converted to `space`), the AOVs, Cryptomatte ids of the
// pieces and each frame's camera matrices (the camera at its simulation frame / track fps;
// aovs[0] is simulation frame `start`).
DRB_EXPORT void write_exr_sequence(const physics::SimTrack& track, const physics::Camera& camera,
                                   const std::vector<render::AOVs>& aovs, const std::vector<io::Image>* beauty,
                                   const std::string& pattern, int64_t first_frame,
                                   io::ColorSpace space = io::ColorSpace::acescg, int64_t start = 0);

class DRB_EXPORT Shot {
 public:
  // The model is loaded on first use (or given, e.g. shared between shots).
  explicit Shot(ShotParams params, std::shared_ptr<const models::wan::Bundle> model = nullptr);
  // Re-runs exactly what a sidecar written by render() describes.
  static Shot from_sidecar(const std::string& path);

  ShotResult render(const ShotCallback& progress = {});
  ShotResult preview(const ShotCallback& progress = {});
  // Each variation in its own folder {output.dir}/v{index}_seed{seed}..., sharing the model and
  // the cache (a seed change reuses everything up to the noise).
  std::vector<ShotResult> variations(const Variations& variations, const ShotCallback& progress = {});

  const ShotParams& params() const { return params_; }
  const models::wan::Bundle& model();

 private:
  ShotParams params_;
  std::shared_ptr<const models::wan::Bundle> model_;
};

}  // namespace drb::pipeline
