// A Wan model as users download it: a diffusers directory (model_index.json beside
// transformer/, vae/, text_encoder/, tokenizer/, scheduler/), loaded into the native modules,
// with what the model determines for a shot (compression factors, latent channels, patch size,
// the scheduler's default shift) read from its configs and the SHA-256 of every file it holds
// (a shot's sidecar names the exact weights it was made with).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "derrumbe/models/wan/text.hpp"
#include "derrumbe/models/wan/transformer.hpp"
#include "derrumbe/models/wan/vae.hpp"

namespace drb::models::wan {

struct DRB_EXPORT Bundle {
  std::string path;
  std::shared_ptr<const Transformer> transformer;
  std::shared_ptr<const Vae> vae;
  std::shared_ptr<const UMT5Encoder> text_encoder;
  std::shared_ptr<const Tokenizer> tokenizer;
  std::string scheduler = "UniPCMultistepScheduler";  // the scheduler config's _class_name
  double flow_shift = 3.0;                            // its flow_shift (UniPC) or shift (FlowMatchEuler)
  // (path relative to the bundle, SHA-256) of every file of each component, sorted by path.
  std::vector<std::pair<std::string, std::string>> files;

  // What a shot's sizes must respect, read from the loaded configs.
  int64_t spatial_factor() const;   // pixels per latent pixel (the VAE's)
  int64_t temporal_factor() const;  // video frames per latent frame after the first
  int64_t latent_channels() const;  // the VAE's z_dim (= the transformer's out_channels)
  // How the transformer takes a control video: channels appended to the noisy latents
  // (in_channels - out_channels; Wan2.1-Fun-Control: 32 = control + reference-image latents),
  // or VACE blocks (vace_layers). Both 0 / false for a text-to-video model.
  int64_t concat_channels() const;
  bool vace() const;
  int64_t patch_height() const;     // latent pixels per transformer token, vertically
  int64_t patch_width() const;
  // The SHA-256 over the hashes of one component's files ("transformer", "vae", ...).
  std::string component_hash(const std::string& component) const;
  // The components fit together: the VAE's z_dim is the transformer's out_channels, its
  // concatenated channels are whole latents, the text encoder's width is its text_dim. An error
  // (ErrorCode::invalid_argument) starts with context(the component at fault: "vae", "transformer",
  // "text_encoder").
  void check_widths(const std::function<std::string(const char*)>& context) const;

  // Loads a diffusers Wan directory. Missing components, files or configs are errors naming
  // them (ErrorCode::file_not_found for a missing path); a VAE whose z_dim differs from the
  // transformer's in_channels, or a text encoder whose width differs from the transformer's
  // text_dim, is ErrorCode::invalid_argument.
  // Also loads a JSON file listing single files ("bundle.json"; see load_bundle_json in
  // single_file.hpp) when `path` is a regular file ending in .json.
  static Bundle load(const std::string& path, at::ScalarType dtype = at::kFloat, c10::Device device = c10::kCPU);

  // A bundle of single files as users keep them (ComfyUI / the Wan repository): a transformer
  // and a VAE safetensors file, the umT5 encoder's safetensors file, the tokenizer's
  // SentencePiece model (or a directory holding one); the layouts, dtypes (fp8 and ComfyUI's
  // scaled fp8 included) and configs are worked out from the files (single_file.hpp); each of
  // the three may also be a component directory. `files` lists "transformer/<basename>",
  // "vae/<basename>", "text_encoder/<basename>", "tokenizer/<basename>" (a directory: every file
  // in it) with their SHA-256; `path` is the transformer's; the scheduler is Wan's UniPC.
  static Bundle load_files(const std::string& transformer, const std::string& vae, const std::string& text_encoder,
                           const std::string& tokenizer, double flow_shift = 3.0, at::ScalarType dtype = at::kFloat,
                           c10::Device device = c10::kCPU);
};

// A bundle described by a JSON file ("bundle.json"), every path relative to that file:
//   {"transformer": "wan2.1_t2v_1.3B_fp16.safetensors", "vae": "wan_2.1_vae.safetensors",
//    "text_encoder": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "tokenizer": "spiece.model",
//    "flow_shift": 3.0, "scheduler": "UniPCMultistepScheduler",
//    "transformer_config": {...} | "config.json", "vae_config": ..., "text_encoder_config": ...}
// transformer, vae, text_encoder and tokenizer are required; each may also be a component
// directory (config.json + safetensors; for the tokenizer a directory holding spiece.model).
// The *_config entries (a JSON object, or the path of a JSON file) override fields of the
// config inferred from a single file's shapes (single_file.hpp). Unknown keys are errors; every
// error names the file and the key. `path` is the JSON file; `files` as in load_files.
// Bundle::load(path) calls this for a regular file ending in .json.
DRB_EXPORT Bundle load_bundle_json(const std::string& json_file, at::ScalarType dtype = at::kFloat,
                                   c10::Device device = c10::kCPU);

// Where the default model is: $DERRUMBE_DEFAULT_MODEL, else default-model/ beside the library
// (the Python wheel), ../share/derrumbe/default-model from it (an installed prefix), else the
// source tree's assets/default-model (a build tree). ErrorCode::not_found lists the places tried.
DRB_EXPORT std::string default_model_path();

}  // namespace drb::models::wan
