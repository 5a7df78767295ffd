/* A shot through the C API: load the default model, render a small shot of a scene with a
 * progress callback, read the frames back and print their size and mean.
 *
 *   shot [OUTPUT_DIR [SCENE.json]]
 *
 * OUTPUT_DIR: where the MP4, the EXR sequence and the sidecar go (missing or "": a new
 * temporary folder). SCENE: default examples/scenes/small.json. Exits 1 with derrumbe's
 * message when a call fails. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "derrumbe/derrumbe.h"

#ifndef DRB_EXAMPLES_DIR
#define DRB_EXAMPLES_DIR "examples"
#endif

/* Prints a line when a stage starts, then about every quarter of its steps (each sampling step
 * of a short shot). */
static int print_progress(void* user, const char* stage, int64_t stage_index, int64_t num_stages, int64_t step,
                          int64_t num_steps, double elapsed_seconds, double remaining_seconds) {
  int* calls = (int*)user;
  const int64_t every = num_steps >= 8 ? num_steps / 4 : 1;
  ++*calls;
  if (num_steps > 0 && step % every != 0 && step + 1 < num_steps) return 0;
  printf("[%lld/%lld] %-12s", (long long)(stage_index + 1), (long long)num_stages, stage);
  if (num_steps > 0) printf(" step %lld/%lld", (long long)step, (long long)num_steps);
  printf("  %.1fs elapsed", elapsed_seconds);
  if (remaining_seconds >= 0) printf(", %.1fs left", remaining_seconds);
  printf("\n");
  fflush(stdout);
  return 0; /* non-zero would cancel the render */
}

/* Reports a failed call with derrumbe's message; returns non-zero when it failed. */
static int failed(drb_status status, const char* call) {
  if (status == DRB_OK) return 0;
  fprintf(stderr, "shot: %s failed (status %d): %s\n", call, (int)status, drb_last_error());
  return 1;
}

int main(int argc, char** argv) {
  char temp_dir[] = "/tmp/derrumbe-shot-XXXXXX";
  const char* output_dir = argc > 1 && argv[1][0] != '\0' ? argv[1] : NULL;
  const char* scene = argc > 2 ? argv[2] : DRB_EXAMPLES_DIR "/scenes/small.json";
  drb_model* model = NULL;
  drb_shot* shot = NULL;
  drb_shot_params params;
  float* frames = NULL;
  size_t count = 0, i, needed = 0;
  int64_t num_frames = 0, height = 0, width = 0;
  int calls = 0, rc = 1;
  double sum = 0.0;
  char path[4096];

  if (output_dir == NULL) {
    if (mkdtemp(temp_dir) == NULL) {
      perror("shot: mkdtemp");
      return 1;
    }
    output_dir = temp_dir;
  }
  printf("derrumbe %s (C API %d), scene %s, output %s\n", drb_version(), drb_api_version(), scene, output_dir);

  /* The default model, loaded once (it could be shared by several shots). */
  if (failed(drb_model_load(NULL, &model), "drb_model_load")) goto done;
  if (failed(drb_model_path(model, path, sizeof path, &needed), "drb_model_path")) goto done;
  printf("model: %s\n", path);

  /* Small settings: 5 frames (Wan takes 1 + 4k) of 64x48, 2 sampling steps. */
  drb_shot_params_init(&params);
  params.source = scene;
  params.output_dir = output_dir;
  params.frames = 5;
  params.width = 64;
  params.height = 48;
  params.steps = 2;
  params.seed = 1;
  if (failed(drb_shot_create(&params, model, &shot), "drb_shot_create")) goto done;

  /* All stages, then the files: MP4, EXR sequence and the JSON sidecar. */
  if (failed(drb_shot_render(shot, print_progress, &calls), "drb_shot_render")) goto done;

  /* The frames: ask for the size, then read them into a buffer of ours. */
  if (drb_shot_frames(shot, NULL, 0, &count, &num_frames, &height, &width) != DRB_ERR_INVALID_ARGUMENT || count == 0) {
    fprintf(stderr, "shot: drb_shot_frames did not report the size: %s\n", drb_last_error());
    goto done;
  }
  frames = (float*)malloc(count * sizeof *frames);
  if (frames == NULL) {
    fprintf(stderr, "shot: out of memory for %zu floats\n", count);
    goto done;
  }
  if (failed(drb_shot_frames(shot, frames, count, &count, &num_frames, &height, &width), "drb_shot_frames")) goto done;
  for (i = 0; i < count; ++i) sum += frames[i];
  printf("frames: %lld x %lld x %lld x 3 (%zu floats), mean %.4f, %d progress calls\n", (long long)num_frames,
         (long long)height, (long long)width, count, sum / (double)count, calls);

  if (failed(drb_shot_output_dir(shot, path, sizeof path, &needed), "drb_shot_output_dir")) goto done;
  printf("written to %s\n", path);
  if (failed(drb_shot_sidecar(shot, path, sizeof path, &needed), "drb_shot_sidecar")) goto done;
  printf("sidecar: %s\n", path);
  rc = 0;

done:
  free(frames);
  drb_shot_free(shot);
  drb_model_free(model);
  return rc;
}
