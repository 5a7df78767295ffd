/* The C API compiled as strict C11: sampling with a denoiser written in C, schedules, errors. */
#include <math.h>
#include <stdio.h>
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
  CHECK(drb_prepare_mask(masks, F, H, W, LH, LW, 1, 0, 0, mask) == DRB_OK);
  CHECK(mask[0] == 0.0f && mask[LW - 1] == 1.0f);
  masks[0] = 2.0f;
  CHECK(drb_prepare_mask(masks, F, H, W, LH, LW, 1, 0, 0, mask) == DRB_ERR_INVALID_ARGUMENT);
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

static int stop_after_two(void* user, int64_t step, int64_t num_steps, double sigma, double sigma_next) {
  (void)user; (void)num_steps; (void)sigma; (void)sigma_next;
  return step == 1;
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

  test_physics();
  test_guide();

  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
