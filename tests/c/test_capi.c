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

  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
