/* The C API compiled as strict C11: sampling with a denoiser written in C, schedules, errors,
 * physics, guidance, and a small shot on the default model. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "derrumbe/derrumbe.h"

static int failures = 0;
static int checks = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    ++checks;                                                         \
    if (!(cond)) {                                                    \
      ++failures;                                                     \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                 \
  } while (0)

/* Data N(mu, s^2): exact denoiser E[x0 | x] = mu + s^2 / (s^2 + sigma^2) (x - mu). */
typedef struct gaussian {
  double mu, s;
  int calls;
  int fail_at_call;
} gaussian;

static int gaussian_denoise(void* user, const void* x, void* out, size_t count, double sigma) {
  gaussian* g = (gaussian*)user;
  const double* xi = (const double*)x;
  double* o = (double*)out;
  size_t i;
  if (++g->calls == g->fail_at_call) return 7;
  for (i = 0; i < count; ++i) o[i] = g->mu + g->s * g->s / (g->s * g->s + sigma * sigma) * (xi[i] - g->mu);
  return 0;
}

static int stop_at_frame_3(void* user, int64_t frame, int64_t num_frames) {
  (void)num_frames;
  ++*(int*)user;
  return frame == 3;
}

/* Physics through the C API: parse, simulate, query, export and import, cache, errors. */
static void test_physics(void) {
  const char* bad_json = "{\"version\": 1, \"buildings\": [";
  const char* unknown_key = "{\"version\": 1, \"buildings\": [{\"colour\": 3}]}";
  drb_scene* scene = NULL;
  drb_track* track = NULL;
  drb_track* again = NULL;
  char json[8192];
  size_t needed = 0, nv = 0, nt = 0;
  float poses[7 * 4096];
  float vertices[3 * 256];
  uint32_t triangles[3 * 512];
  int calls = 0;

  CHECK(drb_scene_parse(bad_json, strlen(bad_json), &scene) == DRB_ERR_PARSE && scene == NULL);
  CHECK(drb_scene_parse(unknown_key, strlen(unknown_key), &scene) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(drb_last_error(), "buildings[0].colour: unknown key") != NULL);
  CHECK(drb_scene_load("/nonexistent/scene.json", &scene) == DRB_ERR_NOT_FOUND);
  CHECK(drb_scene_load(DRB_EXAMPLES_DIR "/scenes/small.json", &scene) == DRB_OK && scene != NULL);
  CHECK(drb_scene_to_json(scene, json, sizeof json, &needed) == DRB_OK);
  CHECK(needed == strlen(json) + 1 && strstr(json, "\"floors\": 3") != NULL);
  CHECK(drb_scene_to_json(scene, json, 4, &needed) == DRB_ERR_INVALID_ARGUMENT);

  CHECK(drb_simulate(scene, stop_at_frame_3, &calls, &track) == DRB_ERR_CANCELLED && track == NULL);
  CHECK(calls == 3);
  CHECK(drb_simulate(scene, NULL, NULL, &track) == DRB_OK && track != NULL);
  CHECK(drb_track_num_frames(track) == 48);
  CHECK(drb_track_fps(track) == 24.0);
  CHECK(drb_track_num_pieces(track) > 20 && drb_track_num_pieces(track) <= 4096);
  CHECK(drb_track_num_breaks(track) > 0);
  CHECK(drb_track_poses(track, 47, poses, sizeof poses / sizeof poses[0]) == DRB_OK);
  CHECK(drb_track_poses(track, 48, poses, sizeof poses / sizeof poses[0]) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(drb_track_poses(track, 0, poses, 3) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(drb_track_piece_mesh(track, 0, vertices, 3 * 256, triangles, 3 * 512, &nv, &nt) == DRB_OK);
  CHECK(nv >= 8 && nt >= 12);
  CHECK(drb_track_piece_mesh(track, 0, vertices, 3, triangles, 3, &nv, &nt) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(drb_track_piece_mesh(track, -1, vertices, 3 * 256, triangles, 3 * 512, &nv, &nt) == DRB_ERR_INVALID_ARGUMENT);

  CHECK(drb_track_save(track, "test_capi_track.drbtrack") == DRB_OK);
  CHECK(drb_track_load("test_capi_track.drbtrack", &again) == DRB_OK);
  CHECK(drb_track_num_pieces(again) == drb_track_num_pieces(track));
  drb_track_free(again);
  again = NULL;
  CHECK(drb_track_export_glb(track, "test_capi_track.glb") == DRB_OK);
  CHECK(drb_track_import_glb("test_capi_track.glb", 24.0, &again) == DRB_OK);
  CHECK(drb_track_num_frames(again) == 48 && drb_track_num_pieces(again) == drb_track_num_pieces(track));
  {
    drb_track* wrong = NULL;
    CHECK(drb_track_load("test_capi_track.glb", &wrong) == DRB_ERR_PARSE && wrong == NULL);
    CHECK(strstr(drb_last_error(), "test_capi_track.glb") != NULL);
  }
  remove("test_capi_track.drbtrack");
  remove("test_capi_track.glb");
  drb_track_free(again);
  drb_track_free(track);
  drb_scene_free(scene);
  drb_scene_free(NULL);
  drb_track_free(NULL);
  CHECK(drb_track_num_frames(NULL) == 0);
}

/* E(x0) = mean((x0 - 1)^2) and its gradient, in float64. */
static int pull_to_one(void* user, const void* x0, void* grad, size_t count, double* energy) {
  const double* x = (const double*)x0;
  double* g = (double*)grad;
  size_t i;
  double e = 0;
  ++*(int*)user;
  for (i = 0; i < count; ++i) {
    e += (x[i] - 1.0) * (x[i] - 1.0) / (double)count;
    g[i] = 2.0 * (x[i] - 1.0) / (double)count;
  }
  *energy = e;
  return 0;
}

/* Guidance through the C API: warped noise, SDEdit start, masks, composition and energies. */
static void test_guide(void) {
  enum { F = 5, H = 16, W = 16, C = 2, LH = 4, LW = 4 };
  static float forward[F * 2 * H * W], backward[F * 2 * H * W], noise[C * F * LH * LW], masks[F * H * W];
  static float mask[F * LH * LW];
  static double plate[C * F * LH * LW], x[C * F * LH * LW], start_noise[C * F * LH * LW];
  const int64_t shape[5] = {1, C, F, LH, LW};
  double sigmas[11], tail[11];
  size_t i, n = 0, count = 0;
  int f, y, xx, c, energy_calls = 0, exact = 1, moved = 0;
  drb_noise_warp_params wp;
  drb_schedule_params sp;
  drb_sample_params p;
  gaussian g = {0.5, 0.2, 0, -1};

  /* One latent pixel (4 grid pixels) to the right per frame: the latent noise shifts exactly. */
  for (i = 0; i < F * 2 * H * W; ++i) {
    const int u_plane = (i / (H * W)) % 2 == 0;
    forward[i] = u_plane ? 4.0f : 0.0f;
    backward[i] = -forward[i];
  }
  drb_noise_warp_params_init(&wp);
  wp.channels = C;
  wp.factor = 4;
  CHECK(drb_warp_noise(forward, backward, F, H, W, &wp, noise, 3, &count) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(count == C * F * LH * LW);
  CHECK(drb_warp_noise(forward, backward, F, H, W, &wp, noise, count, &count) == DRB_OK);
  for (c = 0; c < C; ++c)
    for (y = 0; y < LH; ++y)
      for (xx = 1; xx < LW; ++xx)
        exact &= noise[((c * F + 1) * LH + y) * LW + xx] == noise[((c * F + 0) * LH + y) * LW + xx - 1];
  CHECK(exact);
  forward[7] = NAN;
  CHECK(drb_warp_noise(forward, backward, F, H, W, &wp, noise, count, &count) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(drb_last_error(), "NaN") != NULL);
  forward[7] = 4.0f;
  wp.reduction = 9;
  CHECK(drb_warp_noise(forward, backward, F, H, W, &wp, noise, count, &count) == DRB_ERR_INVALID_ARGUMENT);

  /* SDEdit: strength 0 is the input itself with nothing to run; 0.5 runs the last 5 of 10 steps. */
  drb_schedule_params_init(&sp);
  sp.sigma_min = 0.01;
  sp.sigma_max = 10.0;
  CHECK(drb_schedule("karras", 10, &sp, sigmas, 11, &n) == DRB_OK);
  for (i = 0; i < C * F * LH * LW; ++i) {
    plate[i] = (double)(i % 7) / 7.0;
    start_noise[i] = noise[i];
  }
  CHECK(drb_sdedit_start(DRB_FLOAT64, shape, 5, plate, start_noise, sigmas, n, 0.0, x, tail, &count) == DRB_OK);
  CHECK(count == 1 && tail[0] == 0.0 && memcmp(x, plate, sizeof x) == 0);
  drb_sample_params_init(&p);
  CHECK(drb_sample(gaussian_denoise, &g, DRB_FLOAT64, shape, 5, x, tail, count, &p) == DRB_OK);
  CHECK(g.calls == 0 && memcmp(x, plate, sizeof x) == 0);
  CHECK(drb_sdedit_start(DRB_FLOAT64, shape, 5, plate, start_noise, sigmas, n, 0.5, x, tail, &count) == DRB_OK);
  CHECK(count == 6 && tail[0] == sigmas[5]);
  CHECK(fabs(x[3] - (plate[3] + sigmas[5] * start_noise[3])) < 1e-12);
  CHECK(drb_sdedit_start(DRB_FLOAT64, shape, 5, plate, start_noise, sigmas, n, 1.5, x, tail, &count) ==
        DRB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(drb_last_error(), "strength") != NULL);

  /* Composition: the plate is kept exactly where the mask is 0 (the left half). */
  for (f = 0; f < F; ++f)
    for (y = 0; y < H; ++y)
      for (xx = 0; xx < W; ++xx) masks[(f * H + y) * W + xx] = xx >= W / 2 ? 1.0f : 0.0f;
  count = 0;
  CHECK(drb_prepare_mask(masks, F, H, W, LH, LW, 1, 0, 0, mask, 3, &count) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(count == F * LH * LW);
  CHECK(strstr(drb_last_error(), "80") != NULL);
  CHECK(drb_prepare_mask(masks, F, H, W, LH, LW, 1, 0, 0, NULL, 0, &count) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(count == F * LH * LW);
  CHECK(drb_prepare_mask(masks, F, H, W, LH, LW, 1, 0, 0, mask, F * LH * LW, NULL) == DRB_ERR_INVALID_ARGUMENT);
  count = 0;
  CHECK(drb_prepare_mask(masks, F, H, W, LH, LW, 1, 0, 0, mask, F * LH * LW, &count) == DRB_OK);
  CHECK(count == F * LH * LW);
  CHECK(mask[0] == 0.0f && mask[LW - 1] == 1.0f);
  {
    /* Temporal factor 4: 1 + (5 - 1) / 4 = 2 latent frames. */
    float two[2 * LH * LW];
    CHECK(drb_prepare_mask(masks, F, H, W, LH, LW, 4, 0, 0, two, 2 * LH * LW, &count) == DRB_OK);
    CHECK(count == 2 * LH * LW);
  }
  masks[0] = 2.0f;
  CHECK(drb_prepare_mask(masks, F, H, W, LH, LW, 1, 0, 0, mask, F * LH * LW, &count) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(drb_last_error(), "[0, 1]") != NULL);
  for (i = 0; i < C * F * LH * LW; ++i) x[i] = 10.0 * start_noise[i];
  p.composite_plate = plate;
  p.composite_mask = mask;
  CHECK(drb_sample(gaussian_denoise, &g, DRB_FLOAT64, shape, 5, x, sigmas, n, &p) == DRB_OK);
  for (i = 0; i < C * F * LH * LW; ++i) {
    if (i % LW < LW / 2)
      exact &= x[i] == plate[i];
    else
      moved += fabs(x[i] - plate[i]) > 1e-3;
  }
  CHECK(exact);
  CHECK(moved > 0);
  p.composite_resample = 9;
  CHECK(drb_sample(gaussian_denoise, &g, DRB_FLOAT64, shape, 5, x, sigmas, n, &p) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(drb_last_error(), "resample") != NULL);

  /* Energy guidance: a C energy pulling x0 towards 1 moves the result towards 1. */
  {
    double plain = 0, guided = 0;
    drb_sample_params_init(&p);
    for (i = 0; i < C * F * LH * LW; ++i) x[i] = 10.0 * start_noise[i];
    CHECK(drb_sample(gaussian_denoise, &g, DRB_FLOAT64, shape, 5, x, sigmas, n, &p) == DRB_OK);
    for (i = 0; i < C * F * LH * LW; ++i) plain += (x[i] - 1.0) * (x[i] - 1.0);
    p.energy = pull_to_one;
    p.energy_user = &energy_calls;
    p.energy_strength = 0.2;
    for (i = 0; i < C * F * LH * LW; ++i) x[i] = 10.0 * start_noise[i];
    CHECK(drb_sample(gaussian_denoise, &g, DRB_FLOAT64, shape, 5, x, sigmas, n, &p) == DRB_OK);
    for (i = 0; i < C * F * LH * LW; ++i) guided += (x[i] - 1.0) * (x[i] - 1.0);
    CHECK(energy_calls == 10);
    CHECK(guided < 0.5 * plain);
  }
}

/* What a shot's progress callback saw; cancels at `cancel_stage` once `step` >= cancel_step. */
typedef struct shot_progress {
  int calls;
  int bad;            /* calls with inconsistent values */
  int saw_sample_steps;
  int64_t last_stage_index;
  const char* cancel_stage;
  int64_t cancel_step;
} shot_progress;

static int on_shot_progress(void* user, const char* stage, int64_t stage_index, int64_t num_stages, int64_t step,
                            int64_t num_steps, double elapsed, double remaining) {
  shot_progress* sp = (shot_progress*)user;
  ++sp->calls;
  if (stage == NULL || stage_index < 0 || stage_index >= num_stages || step < 0 || step > num_steps || elapsed < 0 ||
      stage_index < sp->last_stage_index)
    ++sp->bad;
  sp->last_stage_index = stage_index;
  if (stage != NULL && strcmp(stage, "sample") == 0 && num_steps > 0) {
    sp->saw_sample_steps = 1;
    if (remaining < 0) ++sp->bad; /* known once a sampling step is done */
  }
  return sp->cancel_stage != NULL && stage != NULL && strcmp(stage, sp->cancel_stage) == 0 && step >= sp->cancel_step;
}

static int file_exists(const char* path) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) return 0;
  fclose(f);
  return 1;
}

/* Models and shots through the C API: loading errors, params errors and overrides, a small
 * shot on the default model (cancelled, resumed, written, read back). */
static void test_shot(void) {
  const char* scene_path = DRB_EXAMPLES_DIR "/scenes/small.json";
  char dir[] = "/tmp/drb_test_capi_XXXXXX";
  char text[8192], path[4096];
  size_t needed = 0, count = 0, i;
  int64_t nf = 0, nh = 0, nw = 0;
  drb_model* model = NULL;
  drb_model* missing = NULL;
  drb_shot* shot = NULL;
  drb_shot_params p;
  shot_progress progress;
  float few[7];
  float* frames = NULL;

  drb_model_free(NULL);
  drb_shot_free(NULL);
  CHECK(mkdtemp(dir) != NULL);

  /* Loading: a missing folder names it; a folder that is not a model names what it lacks. */
  CHECK(drb_model_load("/nonexistent/derrumbe-model", &missing) == DRB_ERR_NOT_FOUND && missing == NULL);
  CHECK(strstr(drb_last_error(), "/nonexistent/derrumbe-model") != NULL);
  CHECK(drb_model_load(DRB_EXAMPLES_DIR "/scenes", &missing) != DRB_OK && missing == NULL);
  CHECK(strstr(drb_last_error(), "model_index.json") != NULL);
  CHECK(drb_model_load(NULL, NULL) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(drb_default_model_path(path, 1, &needed) == DRB_ERR_INVALID_ARGUMENT && needed > 1);
  CHECK(drb_default_model_path(path, sizeof path, &needed) == DRB_OK && needed == strlen(path) + 1);
  CHECK(drb_model_load(NULL, &model) == DRB_OK && model != NULL);
  CHECK(drb_model_path(model, text, sizeof text, &needed) == DRB_OK && strcmp(text, path) == 0);
  CHECK(drb_model_path(NULL, text, sizeof text, &needed) == DRB_ERR_INVALID_ARGUMENT);

  /* Params: malformed JSON, unknown keys, out of range, both a source and a scene. */
  drb_shot_params_init(&p);
  CHECK(p.struct_size == sizeof p && p.frames == 0 && p.source == NULL && p.has_intensity == 0);
  p.source = scene_path;
  p.output_dir = dir;
  p.params_json = "{\"frames\": ";
  CHECK(drb_shot_create(&p, model, &shot) == DRB_ERR_PARSE && shot == NULL);
  CHECK(strstr(drb_last_error(), "malformed JSON") != NULL);
  p.params_json = "{\"framez\": 5}";
  CHECK(drb_shot_create(&p, model, &shot) == DRB_ERR_INVALID_ARGUMENT && shot == NULL);
  CHECK(strstr(drb_last_error(), "framez: unknown key") != NULL);
  p.params_json = "{\"frames\": 0}";
  CHECK(drb_shot_create(&p, model, &shot) == DRB_ERR_INVALID_ARGUMENT && shot == NULL);
  CHECK(strstr(drb_last_error(), "frames") != NULL);
  p.params_json = "{\"guide\": {\"repaint\": 9}}";
  CHECK(drb_shot_create(&p, model, &shot) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(drb_last_error(), "guide.repaint") != NULL);
  p.params_json = NULL;
  p.frames = -3;
  CHECK(drb_shot_create(&p, model, &shot) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(drb_last_error(), "frames") != NULL);
  p.frames = 0;
  p.intensity = 1.5;
  p.has_intensity = 1;
  CHECK(drb_shot_create(&p, model, &shot) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(drb_last_error(), "intensity") != NULL);
  p.has_intensity = 0;
  p.source = NULL;
  CHECK(drb_shot_create(&p, model, &shot) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(drb_last_error(), "source") != NULL);
  {
    drb_scene* scene = NULL;
    CHECK(drb_scene_load(scene_path, &scene) == DRB_OK);
    p.scene = scene;
    p.source = scene_path;
    CHECK(drb_shot_create(&p, model, &shot) == DRB_ERR_INVALID_ARGUMENT && shot == NULL);
    CHECK(strstr(drb_last_error(), "not both") != NULL);
    /* An in-code scene replaces the JSON's source; the scene handle may go right after. */
    p.source = NULL;
    p.params_json = "{\"source\": \"elsewhere.json\"}";
    CHECK(drb_shot_create(&p, NULL, &shot) == DRB_OK && shot != NULL);
    drb_scene_free(scene);
    CHECK(drb_shot_params_json(shot, text, sizeof text, &needed) == DRB_OK);
    CHECK(strstr(text, "\"source\": \"\"") != NULL && strstr(text, "\"floors\": 3") != NULL);
    drb_shot_free(shot);
    shot = NULL;
    p.scene = NULL;
  }

  /* The plain fields override params_json; what they leave at 0 / NULL keeps its values. */
  p.source = scene_path;
  p.params_json = "{\"frames\": 9, \"seed\": 7, \"steps\": 30, \"prompt\": \"rubble\", \"output\": {\"exr\": false}}";
  p.frames = 6; /* breaks the model's 1 + 4k rule: found at render */
  p.width = 64;
  p.height = 48;
  p.steps = 2;
  p.intensity = 0.25;
  p.has_intensity = 1;
  p.preview = 1;
  p.control = "sideways";
  CHECK(drb_shot_create(&p, model, &shot) == DRB_ERR_INVALID_ARGUMENT && shot == NULL);
  CHECK(strstr(drb_last_error(), "guide.control") != NULL && strstr(drb_last_error(), "sideways") != NULL);
  p.control = "depth";
  p.control_scale = 0.0; /* a set zero is kept (has_control_scale) */
  p.has_control_scale = 1;
  CHECK(drb_shot_create(&p, model, &shot) == DRB_OK && shot != NULL);
  CHECK(drb_shot_params_json(shot, text, 8, &needed) == DRB_ERR_INVALID_ARGUMENT && needed > 8);
  CHECK(drb_shot_params_json(shot, text, sizeof text, &needed) == DRB_OK && needed == strlen(text) + 1);
  CHECK(strstr(text, "\"frames\": 6") != NULL && strstr(text, "\"seed\": 7") != NULL);
  CHECK(strstr(text, "\"steps\": 2") != NULL && strstr(text, "\"prompt\": \"rubble\"") != NULL);
  CHECK(strstr(text, "\"intensity\": 0.25") != NULL && strstr(text, "\"preview\": true") != NULL);
  CHECK(strstr(text, "\"exr\": false") != NULL && strstr(text, "\"width\": 64") != NULL);
  CHECK(strstr(text, dir) != NULL);
  CHECK(strstr(text, "\"control\": \"depth\"") != NULL && strstr(text, "\"control_scale\": 0.0") != NULL);
  p.preview = 0;
  p.has_intensity = 0;
  p.control = NULL;
  p.has_control_scale = 0;
  drb_shot_free(shot);
  shot = NULL;
  CHECK(drb_shot_create(&p, model, &shot) == DRB_OK);
  CHECK(drb_shot_render(shot, NULL, NULL) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(drb_last_error(), "frames = 6") != NULL);
  CHECK(drb_shot_frames(shot, few, 7, &count, &nf, &nh, &nw) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(drb_last_error(), "drb_shot_render") != NULL);
  CHECK(drb_shot_sidecar(shot, path, sizeof path, &needed) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(drb_shot_output_dir(shot, path, sizeof path, &needed) == DRB_ERR_INVALID_ARGUMENT);
  drb_shot_free(shot);
  shot = NULL;

  /* The small shot: 5 frames of 64x48, 2 steps, on the default model. The model handle may be
   * freed once the shot holds it. */
  drb_shot_params_init(&p);
  p.source = scene_path;
  p.output_dir = dir;
  p.frames = 5;
  p.width = 64;
  p.height = 48;
  p.steps = 2;
  CHECK(drb_shot_create(&p, model, &shot) == DRB_OK);
  drb_model_free(model);
  model = NULL;

  /* Cancelled at once, then during sampling (after step 1 of 2, the state is saved). */
  memset(&progress, 0, sizeof progress);
  progress.cancel_stage = "model";
  CHECK(drb_shot_render(shot, on_shot_progress, &progress) == DRB_ERR_CANCELLED);
  CHECK(progress.calls == 1);
  memset(&progress, 0, sizeof progress);
  progress.cancel_stage = "sample";
  progress.cancel_step = 1;
  CHECK(drb_shot_render(shot, on_shot_progress, &progress) == DRB_ERR_CANCELLED);
  CHECK(strstr(drb_last_error(), "cancelled") != NULL);
  CHECK(progress.saw_sample_steps && progress.bad == 0);
  CHECK(drb_shot_frames(shot, few, 7, &count, &nf, &nh, &nw) == DRB_ERR_INVALID_ARGUMENT);

  /* Resumed to the end: the files are written, the frames read back. */
  memset(&progress, 0, sizeof progress);
  CHECK(drb_shot_render(shot, on_shot_progress, &progress) == DRB_OK);
  CHECK(progress.calls >= 9 && progress.bad == 0 && progress.saw_sample_steps);
  CHECK(drb_shot_output_dir(shot, NULL, 0, &needed) == DRB_ERR_INVALID_ARGUMENT && needed == strlen(dir) + 1);
  CHECK(drb_shot_output_dir(shot, path, sizeof path, &needed) == DRB_OK && strcmp(path, dir) == 0);
  CHECK(drb_shot_sidecar(shot, path, sizeof path, &needed) == DRB_OK && file_exists(path));
  CHECK(strstr(path, ".json") != NULL);
  snprintf(path, sizeof path, "%s/shot.mp4", dir);
  CHECK(file_exists(path));
  snprintf(path, sizeof path, "%s/shot.1001.exr", dir);
  CHECK(file_exists(path));

  count = 0;
  CHECK(drb_shot_frames(shot, few, 7, &count, &nf, &nh, &nw) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(count == 5 * 48 * 64 * 3 && nf == 5 && nh == 48 && nw == 64);
  CHECK(strstr(drb_last_error(), "46080") != NULL);
  frames = (float*)malloc(count * sizeof *frames);
  CHECK(frames != NULL);
  if (frames != NULL) {
    int in_range = 1;
    double lo = 1.0, hi = 0.0;
    CHECK(drb_shot_frames(shot, frames, count, &count, NULL, NULL, NULL) == DRB_OK);
    for (i = 0; i < count; ++i) {
      in_range &= frames[i] >= 0.0f && frames[i] <= 1.0f;
      if (frames[i] < lo) lo = frames[i];
      if (frames[i] > hi) hi = frames[i];
    }
    CHECK(in_range);
    CHECK(hi - lo > 0.01); /* not a constant image */
    free(frames);
  }
  drb_shot_free(shot);

  /* The render cannot create its folder: an error naming it, no crash. */
  drb_shot_params_init(&p);
  p.source = scene_path;
  p.output_dir = "/proc/derrumbe-cannot-write-here";
  p.frames = 5;
  p.width = 64;
  p.height = 48;
  p.steps = 2;
  shot = NULL;
  CHECK(drb_shot_create(&p, NULL, &shot) == DRB_OK);
  CHECK(drb_shot_render(shot, NULL, NULL) != DRB_OK);
  CHECK(strstr(drb_last_error(), "/proc/derrumbe-cannot-write-here") != NULL);
  drb_shot_free(shot);

  snprintf(text, sizeof text, "rm -rf '%s'", dir);
  CHECK(system(text) == 0);
}

static int stop_after_two(void* user, int64_t step, int64_t num_steps, double sigma, double sigma_next) {
  (void)user; (void)num_steps; (void)sigma; (void)sigma_next;
  return step == 1;
}

/* Misuse of every entry point: NULL for each pointer argument, NULL handles, struct_size of
 * zero, smaller than today's (an older caller: defaults fill the rest) and larger, buffers one
 * element too small. Each gives a status and a message, never a crash or a write past a buffer
 * (the C example runs under ASan in CTest; this test checks the statuses). */
#define MISUSE(call)                                                     \
  do {                                                                   \
    const drb_status status_ = (call);                                   \
    CHECK(status_ != DRB_OK);                                            \
    CHECK(drb_last_error() != NULL && drb_last_error()[0] != '\0');      \
  } while (0)

static int identity_denoise(void* user, const void* x, void* out, size_t count, double sigma) {
  (void)user, (void)sigma;
  memcpy(out, x, count * sizeof(float));
  return 0;
}

static void test_misuse(void) {
  enum { F = 2, H = 8, W = 8 };
  static float flow[F * 2 * H * W], masks[F * H * W], out[4096], poses[7 * 4096], vertices[3 * 256];
  static uint32_t triangles[3 * 512];
  const int64_t shape[2] = {2, 3};
  const double sigmas[3] = {2.0, 1.0, 0.0};
  float x[6] = {0}, noise[6] = {0};
  double tail[3];
  char text[16];
  size_t n = 0, nv = 0, nt = 0, count = 0;
  int64_t frames = 0, height = 0, width = 0;
  drb_scene* scene = NULL;
  drb_track* track = NULL;
  drb_model* model = NULL;
  drb_shot* shot = NULL;
  drb_schedule_params sp;
  drb_sample_params p;
  drb_noise_warp_params wp;
  drb_shot_params shp;
  const char* json = "{\"version\": 1}";

  /* schedules and sampling */
  MISUSE(drb_schedule(NULL, 10, NULL, tail, 3, &n));
  MISUSE(drb_schedule("karras", 10, NULL, NULL, 11, &n));
  MISUSE(drb_schedule("karras", 10, NULL, tail, 3, NULL));
  drb_schedule_params_init(&sp);
  sp.struct_size = 0;
  MISUSE(drb_schedule("karras", 2, &sp, tail, 3, &n));
  sp.struct_size = sizeof sp + 1024;
  MISUSE(drb_schedule("karras", 2, &sp, tail, 3, &n));
  CHECK(strstr(drb_last_error(), "struct_size") != NULL);
  sp.struct_size = sizeof(size_t) + sizeof(double); /* an older caller: sigma_min only */
  sp.sigma_min = 0.5;
  CHECK(drb_schedule("karras", 2, &sp, tail, 3, &n) == DRB_OK && n == 3 && tail[1] > 0.5);
  MISUSE(drb_sample(NULL, NULL, DRB_FLOAT32, shape, 2, x, sigmas, 3, NULL));
  MISUSE(drb_sample(identity_denoise, NULL, DRB_FLOAT32, NULL, 2, x, sigmas, 3, NULL));
  MISUSE(drb_sample(identity_denoise, NULL, DRB_FLOAT32, shape, 2, NULL, sigmas, 3, NULL));
  MISUSE(drb_sample(identity_denoise, NULL, DRB_FLOAT32, shape, 2, x, NULL, 3, NULL));
  MISUSE(drb_sample(identity_denoise, NULL, (drb_dtype)99, shape, 2, x, sigmas, 3, NULL));
  drb_sample_params_init(&p);
  p.struct_size = 0;
  MISUSE(drb_sample(identity_denoise, NULL, DRB_FLOAT32, shape, 2, x, sigmas, 3, &p));
  drb_sample_params_init(&p);
  p.sampler = NULL;
  MISUSE(drb_sample(identity_denoise, NULL, DRB_FLOAT32, shape, 2, x, sigmas, 3, &p));
  MISUSE(drb_randn(1, 0, DRB_FLOAT32, NULL, 2, x));
  MISUSE(drb_randn(1, 0, DRB_FLOAT32, shape, 2, NULL));
  MISUSE(drb_randn(1, 0, DRB_FLOAT32, shape, 0, x));

  /* guidance */
  drb_noise_warp_params_init(&wp);
  wp.channels = 1;
  wp.factor = 4;
  MISUSE(drb_warp_noise(NULL, flow, F, H, W, &wp, out, 4096, &count));
  CHECK(drb_warp_noise(flow, NULL, F, H, W, &wp, out, 4096, &count) == DRB_OK); /* backward is optional */
  MISUSE(drb_warp_noise(flow, flow, F, H, W, &wp, NULL, 4096, &count));
  MISUSE(drb_warp_noise(flow, flow, F, H, W, &wp, out, 4096, NULL));
  CHECK(drb_warp_noise(flow, flow, F, H, W, &wp, out, 4096, &count) == DRB_OK);
  MISUSE(drb_warp_noise(flow, flow, F, H, W, &wp, out, count - 1, &count)); /* one too small */
  wp.struct_size = 0;
  MISUSE(drb_warp_noise(flow, flow, F, H, W, &wp, out, 4096, &count));
  MISUSE(drb_sdedit_start(DRB_FLOAT32, shape, 2, NULL, noise, sigmas, 3, 0.5, x, tail, &n));
  MISUSE(drb_sdedit_start(DRB_FLOAT32, shape, 2, x, NULL, sigmas, 3, 0.5, x, tail, &n));
  MISUSE(drb_sdedit_start(DRB_FLOAT32, shape, 2, x, noise, NULL, 3, 0.5, x, tail, &n));
  MISUSE(drb_sdedit_start(DRB_FLOAT32, shape, 2, x, noise, sigmas, 3, 0.5, NULL, tail, &n));
  MISUSE(drb_sdedit_start(DRB_FLOAT32, shape, 2, x, noise, sigmas, 3, 0.5, x, NULL, &n));
  MISUSE(drb_sdedit_start(DRB_FLOAT32, shape, 2, x, noise, sigmas, 3, 0.5, x, tail, NULL));
  MISUSE(drb_prepare_mask(NULL, F, H, W, 2, 2, 1, 0, 0, out, 4096, &count));
  CHECK(drb_prepare_mask(masks, F, H, W, 2, 2, 1, 0, 0, out, 4096, &count) == DRB_OK);
  MISUSE(drb_prepare_mask(masks, F, H, W, 2, 2, 1, 0, 0, out, count - 1, &count)); /* one too small */

  /* physics: NULL paths, texts, handles and outputs */
  MISUSE(drb_scene_load(NULL, &scene));
  MISUSE(drb_scene_load(DRB_EXAMPLES_DIR "/scenes/small.json", NULL));
  MISUSE(drb_scene_parse(NULL, 10, &scene));
  MISUSE(drb_scene_parse(json, strlen(json), NULL));
  MISUSE(drb_scene_to_json(NULL, text, sizeof text, &n));
  MISUSE(drb_simulate(NULL, NULL, NULL, &track));
  MISUSE(drb_track_export_glb(NULL, "x.glb"));
  MISUSE(drb_track_import_glb(NULL, 24.0, &track));
  MISUSE(drb_track_import_glb("x.glb", 24.0, NULL));
  MISUSE(drb_track_save(NULL, "x.drbtrack"));
  MISUSE(drb_track_load(NULL, &track));
  MISUSE(drb_track_load("x.drbtrack", NULL));
  MISUSE(drb_track_poses(NULL, 0, poses, 7));
  MISUSE(drb_track_piece_mesh(NULL, 0, vertices, 3 * 256, triangles, 3 * 512, &nv, &nt));
  CHECK(drb_track_num_pieces(NULL) == 0 && drb_track_num_breaks(NULL) == 0 && drb_track_fps(NULL) == 0.0);
  CHECK(drb_scene_load(DRB_EXAMPLES_DIR "/scenes/small.json", &scene) == DRB_OK);
  CHECK(drb_scene_to_json(scene, text, sizeof text, &n) == DRB_ERR_INVALID_ARGUMENT && n > sizeof text);
  MISUSE(drb_scene_to_json(scene, NULL, 0, &n));
  MISUSE(drb_simulate(scene, NULL, NULL, NULL));
  CHECK(drb_simulate(scene, NULL, NULL, &track) == DRB_OK);
  MISUSE(drb_track_export_glb(track, NULL));
  MISUSE(drb_track_save(track, NULL));
  MISUSE(drb_track_poses(track, 0, NULL, 4096 * 7));
  MISUSE(drb_track_poses(track, 0, poses, (size_t)(7 * drb_track_num_pieces(track) - 1))); /* one too small */
  MISUSE(drb_track_piece_mesh(track, 0, NULL, 3 * 256, triangles, 3 * 512, &nv, &nt));
  MISUSE(drb_track_piece_mesh(track, 0, vertices, 3 * 256, NULL, 3 * 512, &nv, &nt));
  /* the counts are optional outputs */
  CHECK(drb_track_piece_mesh(track, 0, vertices, 3 * 256, triangles, 3 * 512, NULL, NULL) == DRB_OK);
  MISUSE(drb_track_piece_mesh(track, -1, vertices, 3 * 256, triangles, 3 * 512, &nv, &nt));
  CHECK(drb_track_piece_mesh(track, 0, vertices, 3 * 256, triangles, 3 * 512, &nv, &nt) == DRB_OK);
  MISUSE(drb_track_piece_mesh(track, 0, vertices, 3 * nv - 1, triangles, 3 * 512, &nv, &nt)); /* one too small */
  MISUSE(drb_track_piece_mesh(track, 0, vertices, 3 * 256, triangles, 3 * nt - 1, &nv, &nt));
  drb_track_free(track);
  drb_scene_free(scene);

  /* models and shots: NULL handles and outputs; the shot's struct_size */
  MISUSE(drb_default_model_path(NULL, 0, &n));
  CHECK(drb_default_model_path(text, 1, &n) == DRB_ERR_INVALID_ARGUMENT && n > 1);
  MISUSE(drb_model_load("/nonexistent", NULL));
  MISUSE(drb_model_path(NULL, text, sizeof text, &n));
  drb_shot_params_init(&shp);
  MISUSE(drb_shot_create(&shp, NULL, NULL));
  shp.struct_size = 0;
  MISUSE(drb_shot_create(&shp, NULL, &shot));
  CHECK(shot == NULL);
  shp.struct_size = sizeof shp * 1000;
  MISUSE(drb_shot_create(&shp, NULL, &shot));
  CHECK(shot == NULL);
  MISUSE(drb_shot_render(NULL, NULL, NULL));
  MISUSE(drb_shot_frames(NULL, out, 4096, &count, &frames, &height, &width));
  MISUSE(drb_shot_output_dir(NULL, text, sizeof text, &n));
  MISUSE(drb_shot_sidecar(NULL, text, sizeof text, &n));
  MISUSE(drb_shot_params_json(NULL, text, sizeof text, &n));
  drb_model_free(model);
}

int main(void) {
  size_t i, n = 0;
  int found = 0;
  double sigmas[64];
  double x[6];
  const int64_t shape[2] = {2, 3};
  drb_schedule_params sp;
  drb_sample_params p;
  gaussian g = {0.5, 0.2, 0, -1};

  CHECK(drb_api_version() == DRB_API_VERSION);
  CHECK(strlen(drb_version()) > 0);
  for (i = 0; i < drb_sampler_count(); ++i) found += strcmp(drb_sampler_name(i), "dpmpp_2m") == 0;
  CHECK(found == 1);
  CHECK(drb_sampler_name(drb_sampler_count()) == NULL);
  CHECK(drb_schedule_count() >= 10);

  drb_schedule_params_init(&sp);
  sp.sigma_min = 0.002;
  sp.sigma_max = 80.0;
  CHECK(drb_schedule("karras", 40, &sp, sigmas, 64, &n) == DRB_OK);
  CHECK(n == 41);
  CHECK(fabs(sigmas[0] - 80.0) < 1e-9 && sigmas[40] == 0.0);
  CHECK(drb_schedule("karras", 40, &sp, sigmas, 10, &n) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(n == 41);
  CHECK(strstr(drb_last_error(), "41 needed") != NULL);
  CHECK(drb_schedule("karas", 40, &sp, sigmas, 64, &n) == DRB_ERR_NOT_FOUND);
  CHECK(strstr(drb_last_error(), "unknown schedule 'karas'") != NULL);
  CHECK(drb_schedule("karras", 40, &sp, sigmas, 64, &n) == DRB_OK);

  /* Sampling: the probability-flow ODE of a Gaussian has a closed-form end point. */
  CHECK(drb_randn(1, 0, DRB_FLOAT64, shape, 2, x) == DRB_OK);
  for (i = 0; i < 6; ++i) x[i] *= 80.0;
  {
    double start[6], exact;
    memcpy(start, x, sizeof x);
    drb_sample_params_init(&p);
    p.sampler = "dpmpp_2m";
    CHECK(drb_sample(gaussian_denoise, &g, DRB_FLOAT64, shape, 2, x, sigmas, n, &p) == DRB_OK);
    CHECK(g.calls == 40);
    for (i = 0; i < 6; ++i) {
      exact = 0.5 + (start[i] - 0.5) * 0.2 / sqrt(0.04 + 6400.0);
      CHECK(fabs(x[i] - exact) < 1e-2); /* "x = mu" would be about 0.2 off */
    }
  }

  /* Errors: unknown sampler, bad sigmas, failing model, cancel, NULLs. */
  p.sampler = "eulr";
  CHECK(drb_sample(gaussian_denoise, &g, DRB_FLOAT64, shape, 2, x, sigmas, n, &p) == DRB_ERR_NOT_FOUND);
  CHECK(strstr(drb_last_error(), "unknown sampler 'eulr'") != NULL);
  p.sampler = "euler";
  sigmas[3] = NAN;
  CHECK(drb_sample(gaussian_denoise, &g, DRB_FLOAT64, shape, 2, x, sigmas, n, &p) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(drb_last_error(), "sigmas[3]") != NULL);
  CHECK(drb_schedule("karras", 40, &sp, sigmas, 64, &n) == DRB_OK);
  g.calls = 0;
  g.fail_at_call = 3;
  CHECK(drb_sample(gaussian_denoise, &g, DRB_FLOAT64, shape, 2, x, sigmas, n, &p) == DRB_ERR_MODEL);
  CHECK(strstr(drb_last_error(), "returned 7") != NULL);
  g.fail_at_call = -1;
  g.calls = 0;
  p.progress = stop_after_two;
  CHECK(drb_sample(gaussian_denoise, &g, DRB_FLOAT64, shape, 2, x, sigmas, n, &p) == DRB_ERR_CANCELLED);
  CHECK(g.calls == 2);
  p.progress = NULL;
  CHECK(drb_sample(NULL, &g, DRB_FLOAT64, shape, 2, x, sigmas, n, &p) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(drb_sample(gaussian_denoise, &g, (drb_dtype)5, shape, 2, x, sigmas, n, &p) == DRB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(drb_last_error(), "dtype") != NULL);
  {
    const int64_t bad_shape[2] = {2, 0};
    CHECK(drb_sample(gaussian_denoise, &g, DRB_FLOAT64, bad_shape, 2, x, sigmas, n, &p) == DRB_ERR_INVALID_ARGUMENT);
    CHECK(strstr(drb_last_error(), "shape[1]") != NULL);
  }
  /* A params struct from an older caller (only the first fields) still works. */
  {
    drb_sample_params old;
    drb_sample_params_init(&old);
    old.struct_size = offsetof(drb_sample_params, eta);
    old.sampler = "heun";
    CHECK(drb_sample(gaussian_denoise, &g, DRB_FLOAT64, shape, 2, x, sigmas, n, &old) == DRB_OK);
  }

  CHECK(DRB_API_VERSION == 2);
  test_physics();
  test_misuse();
  test_guide();
  test_shot();

  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
