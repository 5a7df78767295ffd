// A diffusers Wan directory as one bundle, and where the default model lives.
#include "derrumbe/models/wan/bundle.hpp"

#include <dlfcn.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "derrumbe/core/hash.hpp"

namespace drb::models::wan {
namespace fs = std::filesystem;

namespace {

const char* const kComponents[] = {"transformer", "vae", "text_encoder", "tokenizer", "scheduler"};

nlohmann::json read_json(const fs::path& file) {
  check(fs::is_regular_file(file), ErrorCode::file_not_found, "wan model: missing " + file.string());
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  check(!in.bad(), ErrorCode::io, "wan model: cannot read " + file.string());
  try {
    return nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::parse, "wan model: " + file.string() + " is not valid JSON: " + e.what());
  }
}

// The scheduler's default shift: UniPC with flow sigmas stores flow_shift, FlowMatchEuler shift.
void read_scheduler(const fs::path& dir, Bundle& bundle) {
  const nlohmann::json config = read_json(dir / "scheduler_config.json");
  check(config.is_object(), ErrorCode::parse, "wan model: " + (dir / "scheduler_config.json").string() +
                                                  " must be a JSON object");
  bundle.scheduler = config.value("_class_name", bundle.scheduler);
  for (const char* key : {"flow_shift", "shift"}) {
    const auto it = config.find(key);
    if (it == config.end() || it->is_null()) continue;
    check(it->is_number() && it->get<double>() > 0, ErrorCode::parse,
          "wan model: scheduler_config.json: '" + std::string(key) + "' must be a positive number");
    bundle.flow_shift = it->get<double>();
    return;
  }
}

// Every regular file of the component folders, hashed, sorted by relative path.
std::vector<std::pair<std::string, std::string>> hash_files(const fs::path& root) {
  std::vector<std::pair<std::string, std::string>> files;
  for (const char* component : kComponents)
    for (const auto& entry : fs::recursive_directory_iterator(root / component))
      if (entry.is_regular_file())
        files.emplace_back(fs::relative(entry.path(), root).generic_string(), sha256_file(entry.path().string()));
  files.emplace_back("model_index.json", sha256_file((root / "model_index.json").string()));
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

int64_t Bundle::spatial_factor() const { return vae->config().scale_factor_spatial; }
int64_t Bundle::temporal_factor() const { return vae->config().scale_factor_temporal; }
int64_t Bundle::latent_channels() const { return vae->config().z_dim; }
int64_t Bundle::patch_height() const { return transformer->config().patch_size[1]; }
int64_t Bundle::patch_width() const { return transformer->config().patch_size[2]; }

int64_t Bundle::concat_channels() const {
  return transformer->config().in_channels - transformer->config().out_channels;
}
bool Bundle::vace() const { return !transformer->config().vace_layers.empty(); }

void Bundle::check_widths(const std::function<std::string(const char*)>& context) const {
  const TransformerConfig& t = transformer->config();
  const int64_t z = vae->config().z_dim;
  check_arg(z == t.out_channels, context("vae") + "the VAE's z_dim (" + std::to_string(z) +
                                     ") differs from the transformer's out_channels (" +
                                     std::to_string(t.out_channels) + ")");
  check_arg(concat_channels() >= 0 && concat_channels() % z == 0,
            context("transformer") + "the transformer's in_channels (" + std::to_string(t.in_channels) +
                ") are not the latents plus whole control latents of " + std::to_string(z) +
                " channels (an image-to-video or inpainting model, which is not supported)");
  check_arg(text_encoder->config().d_model == t.text_dim,
            context("text_encoder") + "the text encoder's width (" + std::to_string(text_encoder->config().d_model) +
                ") differs from the transformer's text_dim (" + std::to_string(t.text_dim) + ")");
}

std::string Bundle::component_hash(const std::string& component) const {
  Sha256 sha;
  bool any = false;
  for (const auto& [name, hash] : files)
    if (name.rfind(component + "/", 0) == 0) sha.field(name).field(hash), any = true;
  check_arg(any, "wan model: no files of component '" + component + "' in " + path);
  return sha.hex();
}

Bundle Bundle::load(const std::string& path, at::ScalarType dtype, c10::Device device) {
  const fs::path root(path);
  // A JSON file listing single files (load_bundle_json).
  if (fs::is_regular_file(root) && root.extension() == ".json") return load_bundle_json(path, dtype, device);
  check(fs::is_directory(root), ErrorCode::file_not_found, "wan model: no such directory '" + path + "'");
  check(fs::is_regular_file(root / "model_index.json"), ErrorCode::file_not_found,
        "wan model: '" + path + "' has no model_index.json (expected a diffusers Wan directory with transformer/, "
        "vae/, text_encoder/, tokenizer/ and scheduler/)");
  for (const char* component : kComponents)
    check(fs::is_directory(root / component), ErrorCode::file_not_found,
          "wan model: '" + path + "' has no " + component + "/ folder");
  Bundle b;
  b.path = path;
  b.transformer = std::make_shared<const Transformer>(Transformer::load((root / "transformer").string(), dtype, device));
  b.vae = std::make_shared<const Vae>(Vae::load((root / "vae").string(), dtype, device));
  b.text_encoder =
      std::make_shared<const UMT5Encoder>(UMT5Encoder::load((root / "text_encoder").string(), dtype, device));
  b.tokenizer = std::make_shared<const Tokenizer>(Tokenizer::load((root / "tokenizer").string()));
  read_scheduler(root / "scheduler", b);
  b.check_widths([&](const char*) { return "wan model '" + path + "': "; });
  b.files = hash_files(root);
  return b;
}

std::string default_model_path() {
  std::vector<fs::path> tried;
  if (const char* env = std::getenv("DERRUMBE_DEFAULT_MODEL"); env != nullptr && *env != '\0')
    tried.emplace_back(env);
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&default_model_path), &info) != 0 && info.dli_fname != nullptr) {
    const fs::path library_dir = fs::path(info.dli_fname).parent_path();
    tried.push_back(library_dir / "default-model");
    tried.push_back(library_dir / ".." / "share" / "derrumbe" / "default-model");
  }
  tried.emplace_back(DRB_SOURCE_DIR "/assets/default-model");
  std::string places;
  for (const fs::path& place : tried) {
    if (fs::is_regular_file(place / "model_index.json")) return fs::weakly_canonical(place).string();
    places += (places.empty() ? "" : ", ") + place.string();
  }
  throw Error(ErrorCode::not_found, "the default model is not installed (looked in: " + places +
                                        "); set DERRUMBE_DEFAULT_MODEL or pass a model path");
}

}  // namespace drb::models::wan
