/* derrumbe C API: the only header C code includes.
 *
 * Conventions
 * - Every function returns drb_status (DRB_OK = 0) unless it says otherwise; nothing throws
 *   or aborts. After a failure, drb_last_error() gives this thread's message, which names the
 *   offending value, key or file.
 * - Params structs start with `size_t struct_size` and are filled with defaults by
 *   drb_*_params_init(&p); fields are only ever appended, so old callers keep working.
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

#define DRB_API_VERSION 1

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
 * frame's group of video frames. */
DRB_CAPI drb_status drb_prepare_mask(const float* masks, int64_t frames, int64_t height, int64_t width,
                                     int64_t latent_height, int64_t latent_width, int64_t temporal_factor,
                                     int64_t dilate, int64_t feather, float* out);

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

#ifdef __cplusplus
}
#endif
#endif /* DERRUMBE_H */
