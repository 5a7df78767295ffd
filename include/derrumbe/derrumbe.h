/* derrumbe C API: the only header C code includes.
 *
 * Conventions
 * - Every function returns drb_status (DRB_OK = 0) unless it says otherwise; nothing throws
 *   or aborts. After a failure, drb_last_error() gives this thread's message, which names the
 *   offending value, key or file.
 * - Params structs start with `size_t struct_size` and are filled with defaults by
 *   drb_*_params_init(&p); fields are only ever appended, so old callers keep working (a
 *   smaller struct_size: the fields after it keep their defaults). A struct_size of 0, or one
 *   larger than this build's struct (a caller built against a newer header), is an error.
 * - Buffers are the caller's: derrumbe reads and writes them during the call and keeps no
 *   pointer afterwards. Strings returned as `const char*` are static unless stated.
 * - Callbacks are per call. A progress callback returns non-zero to cancel.
 */
#ifndef DERRUMBE_H
#define DERRUMBE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DRB_BUILDING_LIBRARY)
#define DRB_CAPI __attribute__((visibility("default")))
#else
#define DRB_CAPI
#endif

/* API version history:
 *   1  first release.
 *   2  drb_prepare_mask takes (capacity, count_out) like drb_warp_noise (was: an unchecked out);
 *      added drb_model (drb_model_load, drb_model_free, drb_model_path, drb_default_model_path)
 *      and drb_shot (drb_shot_create, drb_shot_render, drb_shot_frames, drb_shot_output_dir,
 *      drb_shot_sidecar, drb_shot_params_json). */
#define DRB_API_VERSION 2

typedef enum drb_status {
  DRB_OK = 0,
  DRB_ERR_INVALID_ARGUMENT = 1, /* a bad value, shape, dtype or name */
  DRB_ERR_NOT_FOUND = 2,        /* a missing file, key or unknown name */
  DRB_ERR_IO = 3,
  DRB_ERR_PARSE = 4,            /* a malformed file */
  DRB_ERR_CANCELLED = 5,        /* a callback asked to stop */
  DRB_ERR_MODEL = 6,            /* the denoiser callback failed or returned non-finite values */
  DRB_ERR_UNSUPPORTED = 7,
  DRB_ERR_INTERNAL = 8,
  DRB_ERR_OUT_OF_MEMORY = 9
} drb_status;

typedef enum drb_dtype { DRB_FLOAT32 = 0, DRB_FLOAT64 = 1 } drb_dtype;

/* Run-time version, "MAJOR.MINOR.PATCH"; DRB_API_VERSION is the compile-time API version. */
DRB_CAPI const char* drb_version(void);
DRB_CAPI int drb_api_version(void);
/* The calling thread's last error message ("" if none). Valid until the thread's next call. */
DRB_CAPI const char* drb_last_error(void);

/* ---- samplers and schedules ------------------------------------------------------------- */

/* Names of the samplers (euler, dpmpp_2m, uni_pc, ...): index < drb_sampler_count(). */
DRB_CAPI size_t drb_sampler_count(void);
DRB_CAPI const char* drb_sampler_name(size_t index); /* NULL when out of range */
DRB_CAPI size_t drb_schedule_count(void);
DRB_CAPI const char* drb_schedule_name(size_t index);

typedef struct drb_schedule_params {
  size_t struct_size;
  double sigma_min;       /* karras, exponential, polyexponential, kl_optimal */
  double sigma_max;
  double rho;             /* 0: the schedule's default (karras 7, polyexponential 1) */
  double flow_shift;      /* flow_shift: static shift (default 1) */
  double flow_mu;         /* flow_shift: dynamic shift when has_flow_mu != 0 */
  int has_flow_mu;
  double shift_terminal;  /* flow_shift: 0 = none */
  int flow_spacing;       /* flow_shift: 0 = FlowMatchEuler spacing, 1 = UniPC (Wan) spacing */
} drb_schedule_params;
DRB_CAPI void drb_schedule_params_init(drb_schedule_params* params);

/* Writes steps + 1 VE sigmas (decreasing, ending in 0) for the named schedule into
 * sigmas_out[0 .. capacity). *count_out receives the number needed even when capacity is too
 * small (then DRB_ERR_INVALID_ARGUMENT). params may be NULL for defaults. */
DRB_CAPI drb_status drb_schedule(const char* name, int64_t steps, const drb_schedule_params* params,
                                 double* sigmas_out, size_t capacity, size_t* count_out);

/* ---- sampling ----------------------------------------------------------------------------- */

/* The model: write the denoised estimate x0 of x (count contiguous elements of the dtype given
 * to drb_sample, shape as given there) at noise level sigma (VE form x = x0 + sigma * noise).
 * Return 0 on success; non-zero fails the call with DRB_ERR_MODEL. */
typedef int (*drb_denoise_fn)(void* user, const void* x, void* x0_out, size_t count, double sigma);

/* Called after each step; return non-zero to cancel (drb_sample then returns DRB_ERR_CANCELLED
 * and x holds the state after that step). */
typedef int (*drb_progress_fn)(void* user, int64_t step, int64_t num_steps, double sigma, double sigma_next);

/* An energy on the predicted x0: write E(x0) to *energy_out and dE/dx0 (count elements of the
 * sampling dtype) to grad_out. Return 0 on success; non-zero fails the call with DRB_ERR_MODEL. */
typedef int (*drb_energy_fn)(void* user, const void* x0, void* grad_out, size_t count, double* energy_out);

typedef struct drb_sample_params {
  size_t struct_size;
  const char* sampler;  /* default "euler" */
  double eta;           /* negative: the sampler's default (1 for ancestral/SDE, 0 for ddim) */
  double s_noise;       /* 1 */
  double s_churn;       /* 0 */
  double s_tmin;        /* 0 */
  double s_tmax;        /* +inf */
  int order;            /* 0: the sampler's default */
  uint64_t seed;        /* noise seed for stochastic samplers */
  drb_progress_fn progress;
  void* progress_user;
  /* Masked composition over a plate (guide/composite.hpp); x must be [B, C, F, H, W]. Off
   * while composite_plate is NULL. */
  const void* composite_plate;        /* x's dtype and shape: the encoded plate */
  const float* composite_mask;        /* [F, H, W] in [0, 1], 1 where the model generates */
  const void* composite_noise;        /* x's dtype and shape, or NULL: noise drawn from `seed` */
  int64_t composite_resample;         /* RePaint passes per step, 0 to 7 (default 0) */
  int64_t composite_free_tail_steps;  /* last steps without composition (default 0) */
  int composite_final_paste;          /* paste the plate into the result (default 1) */
  /* Energy guidance on the predicted x0 (guide/energy.hpp, x0 mode): a C energy and/or the
   * flow-warp energy. Off while both `energy` and `energy_flow_backward` are NULL. */
  drb_energy_fn energy;
  void* energy_user;
  const float* energy_flow_backward;  /* [F, 2, H, W] pixels on x's grid (frame f -> f - 1), or NULL */
  const float* energy_flow_valid;     /* [F, H, W] in [0, 1], or NULL for all ones */
  double energy_strength;             /* RMS size of each correction (default 1) */
  double energy_sigma_start;          /* guidance while sigma_end <= sigma <= sigma_start (+inf) */
  double energy_sigma_end;            /* (0) */
  int64_t energy_steps;               /* gradient steps per evaluation (1) */
} drb_sample_params;
DRB_CAPI void drb_sample_params_init(drb_sample_params* params);

/* Samples in place: x (count = product of shape elements) starts at sigmas[0] and ends at the
 * last sigma. sigmas: finite, strictly decreasing, >= 0; at least 2 of them, or the single
 * [0] (nothing to run, as drb_sdedit_start returns at strength 0). */
DRB_CAPI drb_status drb_sample(drb_denoise_fn model, void* model_user, drb_dtype dtype, const int64_t* shape,
                               size_t ndim, void* x, const double* sigmas, size_t n_sigmas,
                               const drb_sample_params* params);

/* Seeded N(0, 1) noise addressed by (seed, stream, batch item, element), as the samplers draw
 * it: the same values for any batch split, thread count or number of frames. */
DRB_CAPI drb_status drb_randn(uint64_t seed, uint32_t stream, drb_dtype dtype, const int64_t* shape, size_t ndim,
                              void* out);

/* ---- guidance from the simulation ----------------------------------------------------------- */

typedef enum drb_temporal_reduction {
  DRB_REDUCE_PICK = 0,             /* a latent frame takes its group's last video frame */
  DRB_REDUCE_BLEND = 1,            /* the group's mean */
  DRB_REDUCE_BLEND_NORMALIZED = 2  /* the mean rescaled to unit variance */
} drb_temporal_reduction;

typedef struct drb_noise_warp_params {
  size_t struct_size;
  int64_t channels;               /* 16 */
  int64_t factor;                 /* 8: warp grid = latent grid * factor per axis */
  uint64_t seed;                  /* 0 */
  double degradation;             /* 0: pure warped noise ... 1: fresh noise */
  double consistency_tolerance;   /* 1 grid pixel: forward/backward flow disagreement = occlusion */
  int64_t latent_height;          /* 0: flow height / factor */
  int64_t latent_width;           /* 0: flow width / factor */
  int64_t temporal_factor;        /* 1: video frames per latent frame after the first (Wan: 4) */
  int reduction;                  /* drb_temporal_reduction (DRB_REDUCE_BLEND_NORMALIZED) */
  const char* device;             /* "cpu" (default) or "cuda[:N]"; out is host memory either way */
} drb_noise_warp_params;
DRB_CAPI void drb_noise_warp_params_init(drb_noise_warp_params* params);

/* Noise warped along a shot's optical flow (Go-with-the-Flow; guide/noise_warp.hpp).
 * forward, backward: float32 [frames, 2, height, width] in pixels (frame f -> f + 1 and
 * f -> f - 1, as rendered); backward may be NULL. Writes float32
 * [channels, 1 + (frames - 1) / temporal_factor, latent_height, latent_width] to
 * out[0 .. capacity); *count_out receives the number of elements needed, also when capacity
 * is too small (then DRB_ERR_INVALID_ARGUMENT). */
DRB_CAPI drb_status drb_warp_noise(const float* forward, const float* backward, int64_t frames, int64_t height,
                                   int64_t width, const drb_noise_warp_params* params, float* out, size_t capacity,
                                   size_t* count_out);

/* SDEdit start from an encoded image or video (guide/sdedit.hpp): strength in [0, 1] runs the
 * last round(strength * steps) steps. Writes x_out = encoded + s0 * noise (x's dtype and
 * shape) and those sigmas, starting at s0 and ending in 0, to sigmas_out (capacity n_sigmas);
 * *n_sigmas_out receives their count (1 at strength 0: x_out = encoded, nothing to run). */
DRB_CAPI drb_status drb_sdedit_start(drb_dtype dtype, const int64_t* shape, size_t ndim, const void* encoded,
                                     const void* noise, const double* sigmas, size_t n_sigmas, double strength,
                                     void* x_out, double* sigmas_out, size_t* n_sigmas_out);

/* A composition mask on the latent grid from rendered masks: float32 [frames, height, width] in
 * [0, 1] -> float32 [1 + (frames - 1) / temporal_factor, latent_height, latent_width], dilated by
 * `dilate` and feathered by `feather` pixels, area-averaged, the maximum over each latent
 * frame's group of video frames. Written to out[0 .. capacity); *count_out receives the number
 * of elements needed, also when capacity is too small (then DRB_ERR_INVALID_ARGUMENT).
 * (API 2: capacity and count_out were added.) */
DRB_CAPI drb_status drb_prepare_mask(const float* masks, int64_t frames, int64_t height, int64_t width,
                                     int64_t latent_height, int64_t latent_width, int64_t temporal_factor,
                                     int64_t dilate, int64_t feather, float* out, size_t capacity,
                                     size_t* count_out);

/* ---- physics: scenes, simulation, tracks ---------------------------------------------------- */

/* A parsed, validated scene (docs/scene.md). Free with drb_scene_free (NULL-safe). */
typedef struct drb_scene drb_scene;
/* A simulated or imported SimTrack. Free with drb_track_free (NULL-safe). */
typedef struct drb_track drb_track;

DRB_CAPI drb_status drb_scene_load(const char* path, drb_scene** out);
DRB_CAPI drb_status drb_scene_parse(const char* json, size_t length, drb_scene** out);
DRB_CAPI void drb_scene_free(drb_scene* scene);
/* The scene as JSON into the caller's buffer; *needed receives the length plus 1 (the NUL). */
DRB_CAPI drb_status drb_scene_to_json(const drb_scene* scene, char* buffer, size_t capacity, size_t* needed);

/* Called once per simulated frame; return non-zero to cancel (DRB_ERR_CANCELLED). */
typedef int (*drb_sim_progress_fn)(void* user, int64_t frame, int64_t num_frames);
/* Fractures and simulates the scene; deterministic. */
DRB_CAPI drb_status drb_simulate(const drb_scene* scene, drb_sim_progress_fn progress, void* progress_user,
                                 drb_track** out);

DRB_CAPI void drb_track_free(drb_track* track);
DRB_CAPI drb_status drb_track_export_glb(const drb_track* track, const char* path);
DRB_CAPI drb_status drb_track_import_glb(const char* path, double fps, drb_track** out);
DRB_CAPI drb_status drb_track_save(const drb_track* track, const char* path);
DRB_CAPI drb_status drb_track_load(const char* path, drb_track** out);

/* Sizes; 0 for a NULL track. */
DRB_CAPI int64_t drb_track_num_frames(const drb_track* track);
DRB_CAPI int64_t drb_track_num_pieces(const drb_track* track);
DRB_CAPI int64_t drb_track_num_breaks(const drb_track* track);
DRB_CAPI double drb_track_fps(const drb_track* track);
/* Poses of every piece at `frame`: num_pieces * 7 floats (qx, qy, qz, qw, tx, ty, tz). */
DRB_CAPI drb_status drb_track_poses(const drb_track* track, int64_t frame, float* out, size_t capacity);
/* A piece's mesh in its local frame. Vertex and triangle counts go to *num_vertices and
 * *num_triangles (always); vertices (3 floats each) and triangles (3 indices each) are written
 * when the capacities (in floats / indices) suffice, else DRB_ERR_INVALID_ARGUMENT. */
DRB_CAPI drb_status drb_track_piece_mesh(const drb_track* track, int64_t piece, float* vertices, size_t vertex_capacity,
                                         uint32_t* triangles, size_t triangle_capacity, size_t* num_vertices,
                                         size_t* num_triangles);

/* ---- models ---------------------------------------------------------------------------------- */

/* A loaded video model (a diffusers Wan directory: model_index.json beside transformer/, vae/,
 * text_encoder/, tokenizer/, scheduler/; or anything else models/wan/bundle.hpp's Bundle::load
 * takes), on the CPU in float32, shareable between shots. Free
 * with drb_model_free (NULL-safe); a shot created with it holds its own reference, so the
 * model may be freed before the shots. */
typedef struct drb_model drb_model;

/* Where the default model is ($DERRUMBE_DEFAULT_MODEL, beside the library, the install prefix's
 * share/derrumbe/default-model or the source tree), as a NUL-terminated path in the caller's
 * buffer; *needed receives its length plus 1. DRB_ERR_NOT_FOUND lists the places tried. */
DRB_CAPI drb_status drb_default_model_path(char* buffer, size_t capacity, size_t* needed);
/* Loads the model at `path` (NULL or "": the default model). A missing path is
 * DRB_ERR_NOT_FOUND naming it; a folder that is not a model is an error naming what is missing. */
DRB_CAPI drb_status drb_model_load(const char* path, drb_model** out);
DRB_CAPI void drb_model_free(drb_model* model);
/* The folder the model was loaded from; *needed receives its length plus 1. */
DRB_CAPI drb_status drb_model_path(const drb_model* model, char* buffer, size_t capacity, size_t* needed);

/* ---- shots: a scene and settings in, finished frames and files out ----------------------------- */

/* A shot (pipeline/shot.hpp): simulate -> render AOVs -> conditioning -> sample -> decode ->
 * write, each stage cached on disk under the output folder (or the params' cache_dir). Free
 * with drb_shot_free (NULL-safe). A shot is used by one thread at a time. */
typedef struct drb_shot drb_shot;

/* The shot's settings: params_json holds any of them (the JSON of ShotParams::to_json, e.g. a
 * sidecar's "params" object; missing keys keep their defaults, unknown keys are errors); the
 * plain fields below override it. Every plain field left at its init value (0 / NULL) keeps
 * the value from params_json, or the default when params_json does not set it. */
typedef struct drb_shot_params {
  size_t struct_size;
  const char* params_json;  /* NULL: the defaults */
  const char* source;       /* a scene .json, an imported .glb or a .drbtrack; NULL: keep */
  const char* output_dir;   /* where the files go; NULL: keep (default "shot") */
  const drb_scene* scene;   /* an in-code scene instead of a source file (copied), or NULL;
                               replaces params_json's source (setting `source` too is an error) */
  int64_t frames;           /* video frames, 1 + 4k for Wan (default 17); 0: keep */
  int64_t width;            /* default 160; 0: keep */
  int64_t height;           /* default 96; 0: keep */
  int64_t steps;            /* sampling steps (default 12); 0: keep */
  uint64_t seed;            /* 0: keep (default 0; to force seed 0 over a JSON seed, set it there) */
  const char* prompt;       /* NULL: keep */
  double intensity;         /* the scene's intensity in [0, 1], used when has_intensity != 0 */
  int has_intensity;
  int preview;              /* non-zero: render a preview (half size, half steps, under
                               {output_dir}/preview); 0: keep */
  /* the control video of a control model (guide.control and guide.control_scale of ShotParams) */
  const char* control;      /* "auto", "none", "proxy", "depth", "coverage"; NULL: keep */
  double control_scale;     /* VACE's hint scale, used when has_control_scale != 0 */
  int has_control_scale;
} drb_shot_params;
DRB_CAPI void drb_shot_params_init(drb_shot_params* params);

/* Creates a shot; the settings are checked here (malformed params_json: DRB_ERR_PARSE; an
 * unknown key, a wrong type or a value out of range: DRB_ERR_INVALID_ARGUMENT naming the field).
 * Checks that need the model (sizes, the 1 + 4k frame rule) happen at render. model: shared
 * with the shot (the shot holds a reference), or NULL: the model the params name (the default
 * model when they name none) is loaded at the first render, where a failure to load it is
 * DRB_ERR_MODEL. */
DRB_CAPI drb_status drb_shot_create(const drb_shot_params* params, const drb_model* model, drb_shot** out);
DRB_CAPI void drb_shot_free(drb_shot* shot);

/* Progress of a render: the stage running ("model", "simulate", "render", "text",
 * "conditioning", "noise", "sample", "decode", "write"; valid during the call only), its index
 * among num_stages, its step among num_steps (0 of 0 when it has none), the seconds since the
 * render began and an estimate of the seconds left (-1 while unknown). Return non-zero to
 * cancel: drb_shot_render then returns DRB_ERR_CANCELLED, and a later render resumes from
 * what was finished and saved. */
typedef int (*drb_shot_progress_fn)(void* user, const char* stage, int64_t stage_index, int64_t num_stages,
                                    int64_t step, int64_t num_steps, double elapsed_seconds,
                                    double remaining_seconds);

/* Runs every stage (reusing cached ones) and writes the files (MP4, EXR sequence, ... and the
 * JSON sidecar, last) to the output folder; the result stays in the shot for drb_shot_frames,
 * drb_shot_output_dir and drb_shot_sidecar until the next render. progress may be NULL. */
DRB_CAPI drb_status drb_shot_render(drb_shot* shot, drb_shot_progress_fn progress, void* progress_user);

/* The rendered frames as float32 [frames, height, width, 3], interleaved RGB (display sRGB) in
 * [0, 1], into out[0 .. capacity). *count_out (may be NULL) receives the number of floats
 * needed and *frames, *height, *width (each may be NULL) the sizes, also when capacity is too
 * small (then DRB_ERR_INVALID_ARGUMENT). Before a successful render: DRB_ERR_INVALID_ARGUMENT. */
DRB_CAPI drb_status drb_shot_frames(const drb_shot* shot, float* out, size_t capacity, size_t* count_out,
                                    int64_t* frames, int64_t* height, int64_t* width);
/* The folder the last render wrote to, and its sidecar's path (NUL-terminated; *needed receives
 * the length plus 1). Before a successful render: DRB_ERR_INVALID_ARGUMENT. */
DRB_CAPI drb_status drb_shot_output_dir(const drb_shot* shot, char* buffer, size_t capacity, size_t* needed);
DRB_CAPI drb_status drb_shot_sidecar(const drb_shot* shot, char* buffer, size_t capacity, size_t* needed);
/* The shot's complete settings after the overrides, as ShotParams JSON (what the sidecar
 * records); *needed receives the length plus 1. */
DRB_CAPI drb_status drb_shot_params_json(const drb_shot* shot, char* buffer, size_t capacity, size_t* needed);

#ifdef __cplusplus
}
#endif
#endif /* DERRUMBE_H */
