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

  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
