// Wan models as users keep them (single_file.hpp): ComfyUI's fp8 side tensors, the original /
// ComfyUI key layouts of the VAE and the umT5 encoder, configs inferred from tensor shapes, and
// bundles assembled from single files. The transformer's original keys are mapped by
// diffusers_key (transformer.cpp); the VAE mapping follows diffusers'
// scripts/convert_wan_to_diffusers.py (convert_vae), written here for any num_res_blocks and
// any number of levels instead of the released VAE's fixed indices.
#include "derrumbe/models/wan/single_file.hpp"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "derrumbe/core/hash.hpp"
#include "weights.hpp"

namespace drb::models::wan {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
std::string shape_str(const std::vector<int64_t>& shape) { return c10::str(at::IntArrayRef(shape)); }

// The decimal index at s[pos...] up to the next '.', or -1.
int64_t index_at(const std::string& s, size_t pos, size_t* end = nullptr) {
  size_t e = pos;
  while (e < s.size() && std::isdigit(static_cast<unsigned char>(s[e]))) ++e;
  if (e == pos || e - pos > 9 || (e < s.size() && s[e] != '.')) return -1;
  if (end != nullptr) *end = e;
  return std::stoll(s.substr(pos, e - pos));
}

// The indices N of every "<prefix>N." name.
std::set<int64_t> indices(const std::vector<std::string>& names, const std::string& prefix) {
  std::set<int64_t> out;
  for (const std::string& n : names)
    if (starts_with(n, prefix)) {
      const int64_t i = index_at(n, prefix.size());
      if (i >= 0) out.insert(i);
    }
  return out;
}

json parse_overrides(const std::string& text, const char* what) {
  if (text.empty()) return json::object();
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::parse, std::string(what) + " overrides: invalid JSON: " + e.what());
  }
  check(j.is_object(), ErrorCode::parse, std::string(what) + " overrides: expected a JSON object, got " + j.dump());
  return j;
}

std::string read_text(const fs::path& file, const std::string& what) {
  check(fs::is_regular_file(file), ErrorCode::file_not_found, what + ": no such file '" + file.string() + "'");
  std::ifstream in(file, std::ios::binary);
  check(in.is_open(), ErrorCode::io, what + ": cannot read '" + file.string() + "'");
  std::stringstream text;
  text << in.rdbuf();
  check(!in.bad(), ErrorCode::io, what + ": cannot read '" + file.string() + "'");
  return text.str();
}

// --- the shapes of a checkpoint under model names ------------------------------------------------

// Model name -> stored name for the tensors of a checkpoint, with the shape lookups config
// inference needs; `stored_name` names a model key as the file would hold it (for messages).
struct Names {
  std::map<std::string, std::string> stored;  // model name -> stored name
  const Checkpoint* weights = nullptr;
  std::function<std::string(const std::string&)> stored_name;
  const char* what = "";

  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (const auto& kv : stored) out.push_back(kv.first);
    return out;
  }
  bool has(const std::string& name) const { return stored.count(name) != 0; }
  const std::vector<int64_t>* find(const std::string& name) const {
    const auto it = stored.find(name);
    return it == stored.end() ? nullptr : &weights->entry(it->second).shape;
  }
  // The shape of a tensor config inference needs, of the given rank.
  const std::vector<int64_t>& need(const std::string& name, size_t rank) const {
    const std::vector<int64_t>* s = find(name);
    if (s == nullptr)
      throw Error(ErrorCode::not_found, std::string(what) + ": missing '" + stored_name(name) +
                                            "' (needed to infer the config from the shapes)");
    check(s->size() == rank, ErrorCode::parse,
          std::string(what) + ": '" + stored.at(name) + "' has shape " + shape_str(*s) + ", expected " +
              std::to_string(rank) + " dimensions");
    return *s;
  }
};

// A file that holds none of the model's tensors (another model's file): say what it holds.
void check_is_a(bool ok, const char* what, const Checkpoint& weights) {
  if (ok) return;
  std::string sample;
  const std::vector<std::string> names = weights.names();
  for (size_t i = 0; i < names.size() && i < 3; ++i) sample += (i ? ", '" : "'") + names[i] + "'";
  throw Error(ErrorCode::invalid_argument, std::string("the file holds no ") + what + " (its " +
                                               std::to_string(names.size()) + " tensors start " +
                                               (sample.empty() ? "nowhere: none" : sample) + ")");
}

[[noreturn]] void contradicts(const char* what, const std::string& key, const std::vector<int64_t>& shape,
                              const std::string& why) {
  throw Error(ErrorCode::parse, std::string(what) + ": '" + key + "' has shape " + shape_str(shape) +
                                    ", which matches no config: " + why);
}

// Applies the overrides to the inferred config.json fields, then parses the result.
template <typename Config>
Config with_overrides(json inferred, const json& overrides, const char* what) {
  for (const auto& [key, value] : overrides.items()) inferred[key] = value;
  try {
    return Config::from_json(inferred.dump());
  } catch (const Error& e) {
    throw Error(e.code(), std::string(e.what()) + " (" + what + " inferred from the tensor shapes" +
                              (overrides.empty() ? "" : " with the overrides " + overrides.dump()) + ")");
  }
}

// --- VAE key layout ----------------------------------------------------------------------------------

// The inside of a residual block: residual.{0,2,3,6} and shortcut -> norm1, conv1, norm2, conv2,
// conv_shortcut; anything else (resample.1, time_conv) is unchanged.
std::string residual_to_diffusers(const std::string& rest) {
  static const std::pair<const char*, const char*> names[] = {{"residual.0.", "norm1."}, {"residual.2.", "conv1."},
                                                              {"residual.3.", "norm2."}, {"residual.6.", "conv2."},
                                                              {"shortcut.", "conv_shortcut."}};
  for (const auto& [from, to] : names)
    if (starts_with(rest, from)) return to + rest.substr(std::string(from).size());
  return rest;
}
std::string residual_to_original(const std::string& rest) {
  static const std::pair<const char*, const char*> names[] = {{"norm1.", "residual.0."}, {"conv1.", "residual.2."},
                                                              {"norm2.", "residual.3."}, {"conv2.", "residual.6."},
                                                              {"conv_shortcut.", "shortcut."}};
  for (const auto& [from, to] : names)
    if (starts_with(rest, from)) return to + rest.substr(std::string(from).size());
  return rest;
}

// Residual blocks per level of a VAE checkpoint (diffusers or original keys): the position of the
// encoder's first downsampler in its flat list, or the list's length when there is one level.
int64_t vae_num_res_blocks(const std::vector<std::string>& names) {
  std::vector<std::string> plain;
  for (const std::string& n : names) plain.push_back(starts_with(n, "first_stage_model.") ? n.substr(18) : n);
  for (const char* list : {"encoder.downsamples.", "encoder.down_blocks."}) {
    const std::set<int64_t> all = indices(plain, list);
    if (all.empty()) continue;
    int64_t first_resample = -1;
    for (const std::string& n : plain) {
      if (!starts_with(n, list)) continue;
      size_t end = 0;
      const int64_t i = index_at(n, std::string(list).size(), &end);
      if (i >= 0 && starts_with(n.substr(end + 1), "resample.") && (first_resample < 0 || i < first_resample))
        first_resample = i;
    }
    return first_resample >= 0 ? first_resample : static_cast<int64_t>(all.size());
  }
  return 2;
}

bool vae_is_original(const std::vector<std::string>& names) {
  for (const std::string& n : names) {
    const std::string k = starts_with(n, "first_stage_model.") ? n.substr(18) : n;
    if (starts_with(k, "encoder.downsamples.") || starts_with(k, "decoder.upsamples.") ||
        starts_with(k, "encoder.middle.") || starts_with(k, "decoder.middle."))
      return true;
  }
  return false;
}

// --- JSON of the configs (the inferred values as config.json fields) --------------------------------

json to_json(const TransformerConfig& c) {
  json j = {{"patch_size", {c.patch_size[0], c.patch_size[1], c.patch_size[2]}},
          {"num_attention_heads", c.num_attention_heads},
          {"attention_head_dim", c.attention_head_dim},
          {"in_channels", c.in_channels},
          {"out_channels", c.out_channels},
          {"text_dim", c.text_dim},
          {"freq_dim", c.freq_dim},
          {"ffn_dim", c.ffn_dim},
          {"num_layers", c.num_layers},
          {"cross_attn_norm", c.cross_attn_norm},
          {"qk_norm", c.qk_norm},
          {"eps", c.eps},
          {"rope_max_seq_len", c.rope_max_seq_len}};
  if (!c.vace_layers.empty()) {
    j["vace_layers"] = c.vace_layers;
    j["vace_in_channels"] = c.vace_in_channels;
  }
  return j;
}

json to_json(const UMT5Config& c) {
  return {{"vocab_size", c.vocab_size},
          {"d_model", c.d_model},
          {"d_kv", c.d_kv},
          {"d_ff", c.d_ff},
          {"num_layers", c.num_layers},
          {"num_heads", c.num_heads},
          {"relative_attention_num_buckets", c.relative_attention_num_buckets},
          {"relative_attention_max_distance", c.relative_attention_max_distance},
          {"layer_norm_epsilon", c.layer_norm_epsilon},
          {"feed_forward_proj", c.feed_forward_proj}};
}

// --- hashing a bundle's files ------------------------------------------------------------------------

void hash_component(const std::string& component, const fs::path& p,
                    std::vector<std::pair<std::string, std::string>>& files) {
  if (fs::is_directory(p)) {
    for (const auto& entry : fs::recursive_directory_iterator(p))
      if (entry.is_regular_file())
        files.emplace_back(component + "/" + fs::relative(entry.path(), p).generic_string(),
                           sha256_file(entry.path().string()));
    return;
  }
  files.emplace_back(component + "/" + p.filename().string(), sha256_file(p.string()));
  if (!ends_with(p.filename().string(), ".index.json")) return;
  // A sharded checkpoint: its shards too.
  std::set<std::string> shards;
  try {
    const json index = json::parse(read_text(p, "wan model"));
    for (const auto& [name, shard] : index.at("weight_map").items()) shards.insert(shard.get<std::string>());
  } catch (const json::exception& e) {
    throw Error(ErrorCode::parse, "wan model: " + p.string() + ": not a safetensors index: " + e.what());
  }
  for (const std::string& shard : shards)
    files.emplace_back(component + "/" + fs::path(shard).filename().string(),
                       sha256_file((p.parent_path() / shard).string()));
}

// What a bundle is made of, from load_files or a bundle.json.
struct Parts {
  std::string path;  // the bundle's path (the JSON file, or the transformer's)
  std::string transformer, vae, text_encoder, tokenizer;
  std::string transformer_config, vae_config, text_encoder_config;  // overrides ("" none)
  double flow_shift = 3.0;
  std::string scheduler = "UniPCMultistepScheduler";
};

// Loads one component; errors get `context` in front (the bundle file and its key).
template <typename Fn>
auto component(const std::string& context, Fn&& load) {
  try {
    return load();
  } catch (const Error& e) {
    throw Error(e.code(), context + e.what());
  }
}

Bundle assemble(const Parts& p, at::ScalarType dtype, c10::Device device,
                const std::function<std::string(const char*)>& context) {
  check_arg(std::isfinite(p.flow_shift) && p.flow_shift > 0,
            context("flow_shift") + "flow_shift must be a positive number, got " + std::to_string(p.flow_shift));
  const auto overrides_for_directory = [&](const std::string& path, const std::string& overrides, const char* key) {
    check_arg(overrides.empty() || !fs::is_directory(path),
              context(key) + "'" + path + "' is a directory (with its own config.json): config overrides apply to "
                             "single files only");
  };
  Bundle b;
  b.path = p.path;
  b.transformer = component(context("transformer"), [&] {
    overrides_for_directory(p.transformer, p.transformer_config, "transformer");
    return std::make_shared<const Transformer>(
        load_transformer_file(p.transformer, dtype, device, p.transformer_config));
  });
  b.vae = component(context("vae"), [&] {
    overrides_for_directory(p.vae, p.vae_config, "vae");
    return std::make_shared<const Vae>(load_vae_file(p.vae, dtype, device, p.vae_config));
  });
  b.text_encoder = component(context("text_encoder"), [&] {
    overrides_for_directory(p.text_encoder, p.text_encoder_config, "text_encoder");
    return std::make_shared<const UMT5Encoder>(load_umt5_file(p.text_encoder, dtype, device, p.text_encoder_config));
  });
  b.tokenizer =
      component(context("tokenizer"), [&] { return std::make_shared<const Tokenizer>(Tokenizer::load(p.tokenizer)); });
  b.scheduler = p.scheduler;
  b.flow_shift = p.flow_shift;
  b.check_widths(context);
  hash_component("transformer", p.transformer, b.files);
  hash_component("vae", p.vae, b.files);
  hash_component("text_encoder", p.text_encoder, b.files);
  hash_component("tokenizer", p.tokenizer, b.files);
  std::sort(b.files.begin(), b.files.end());
  return b;
}

}  // namespace

// --- internal: fp8, quantization side tensors, layouts ---------------------------------------------

namespace detail {

bool is_quantization_key(const std::string& key) {
  if (key == "scaled_fp8" || ends_with(key, ".scaled_fp8")) return true;
  for (const char* suffix : {".scale_weight", ".scale_input", ".weight_scale", ".weight_scale_2", ".input_scale",
                             ".comfy_quant"})
    if (ends_with(key, suffix)) return true;
  return false;
}

bool is_weight_dtype(const std::string& dtype) {
  return is_float_dtype(dtype) || dtype == "F8_E4M3" || dtype == "F8_E5M2";
}

at::Tensor read_weight(const Checkpoint& weights, const std::string& key, at::ScalarType dtype) {
  if (!ends_with(key, ".weight")) return weights.tensor(key, dtype);
  const std::string layer = key.substr(0, key.size() - 7);
  if (weights.contains(layer + ".comfy_quant")) {
    // ComfyUI's per-layer descriptor: a uint8 tensor holding JSON {"format": ...}.
    const at::Tensor bytes = weights.tensor(layer + ".comfy_quant", at::kByte).contiguous();
    std::string format;
    try {
      const json conf = json::parse(std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()),
                                                static_cast<size_t>(bytes.numel())));
      format = conf.value("format", "");
    } catch (const json::exception& e) {
      throw Error(ErrorCode::parse, "'" + layer + ".comfy_quant' is not a ComfyUI quantization descriptor: " + e.what());
    }
    check(format == "float8_e4m3fn" || format == "float8_e5m2", ErrorCode::unsupported,
          "'" + layer + "' is quantized as '" + format +
              "' (ComfyUI comfy_quant); only float8_e4m3fn and float8_e5m2 with a per-tensor scale load");
  }
  for (const char* suffix : {".scale_weight", ".weight_scale"}) {
    const std::string scale_key = layer + suffix;
    if (!weights.contains(scale_key)) continue;
    const at::Tensor scale = weights.tensor(scale_key, at::kFloat);
    const at::Tensor value = weights.tensor(key, at::kFloat);
    check_arg(scale.numel() >= 1, "'" + scale_key + "' is empty");
    if (scale.numel() == 1) return (value * scale.reshape({})).to(dtype);
    // A per-channel scale must broadcast to the weight without changing its shape.
    check(scale.dim() <= value.dim() && at::infer_size(value.sizes(), scale.sizes()) == value.sizes(),
          ErrorCode::unsupported,
          "'" + scale_key + "' has shape " + c10::str(scale.sizes()) + ", which does not scale '" + key + "' " +
              c10::str(value.sizes()) + " (a per-tensor or broadcastable per-channel scale is expected)");
    return (value * scale).to(dtype);
  }
  return weights.tensor(key, dtype);
}

std::string original_transformer_key(const std::string& diffusers) {
  std::string k = diffusers;
  if (k == "scale_shift_table") return "head.modulation";
  if (starts_with(k, "proj_out.")) return "head.head." + k.substr(9);
  static const std::pair<const char*, const char*> renames[] = {
      {"condition_embedder.time_embedder.linear_1", "time_embedding.0"},
      {"condition_embedder.time_embedder.linear_2", "time_embedding.2"},
      {"condition_embedder.text_embedder.linear_1", "text_embedding.0"},
      {"condition_embedder.text_embedder.linear_2", "text_embedding.2"},
      {"condition_embedder.time_proj", "time_projection.1"},
      {"attn1.", "self_attn."},
      {"attn2.", "cross_attn."},
      {".to_out.0.", ".o."},
      {".to_q.", ".q."},
      {".to_k.", ".k."},
      {".to_v.", ".v."},
      {"ffn.net.0.proj", "ffn.0"},
      {"ffn.net.2", "ffn.2"},
      {"norm2", "norm3"},
      {"scale_shift_table", "modulation"},
      {".proj_in.", ".before_proj."},  // VACE blocks (the top-level proj_out returned above)
      {".proj_out.", ".after_proj."},
  };
  for (const auto& [from, to] : renames) {
    const std::string f(from), t(to);
    for (size_t pos = k.find(f); pos != std::string::npos; pos = k.find(f, pos + t.size())) k.replace(pos, f.size(), t);
  }
  return k;
}

std::string original_vae_key(const std::string& d, int64_t num_res_blocks) {
  if (starts_with(d, "quant_conv.")) return "conv1." + d.substr(11);
  if (starts_with(d, "post_quant_conv.")) return "conv2." + d.substr(16);
  for (const std::string side : {"encoder.", "decoder."}) {
    if (!starts_with(d, side)) continue;
    const std::string rest = d.substr(side.size());
    if (starts_with(rest, "conv_in.")) return side + "conv1." + rest.substr(8);
    if (starts_with(rest, "norm_out.")) return side + "head.0." + rest.substr(9);
    if (starts_with(rest, "conv_out.")) return side + "head.2." + rest.substr(9);
    if (starts_with(rest, "mid_block.attentions.0.")) return side + "middle.1." + rest.substr(23);
    for (int r : {0, 1}) {
      const std::string p = "mid_block.resnets." + std::to_string(r) + ".";
      if (starts_with(rest, p)) return side + "middle." + std::to_string(2 * r) + "." + residual_to_original(rest.substr(p.size()));
    }
    if (starts_with(rest, "down_blocks.")) {
      size_t end = 0;
      const int64_t n = index_at(rest, 12, &end);
      if (n >= 0) return side + "downsamples." + std::to_string(n) + "." + residual_to_original(rest.substr(end + 1));
    }
    if (starts_with(rest, "up_blocks.")) {
      size_t end = 0;
      const int64_t level = index_at(rest, 10, &end);
      if (level < 0) return d;
      const std::string inner = rest.substr(end + 1);
      const int64_t base = level * (num_res_blocks + 2);
      if (starts_with(inner, "resnets.")) {
        size_t e2 = 0;
        const int64_t r = index_at(inner, 8, &e2);
        if (r >= 0)
          return side + "upsamples." + std::to_string(base + r) + "." + residual_to_original(inner.substr(e2 + 1));
      }
      if (starts_with(inner, "upsamplers.0."))
        return side + "upsamples." + std::to_string(base + num_res_blocks + 1) + "." + inner.substr(13);
    }
  }
  return d;
}

Umt5Layout Umt5Layout::detect(const std::vector<std::string>& names) {
  Umt5Layout l;
  // The first layer's query projection names the layout; without layers, the embedding does.
  for (const std::string& n : names) {
    if (ends_with(n, "blocks.0.attn.q.weight")) {
      l.wan = true;
      l.prefix = n.substr(0, n.size() - std::string("blocks.0.attn.q.weight").size());
      return l;
    }
    const std::string tail = "block.0.layer.0.SelfAttention.q.weight";
    if (ends_with(n, tail)) {
      std::string stem = n.substr(0, n.size() - tail.size());
      if (ends_with(stem, "decoder.")) continue;  // an encoder-decoder checkpoint's decoder
      l.has_encoder = ends_with(stem, "encoder.");
      if (l.has_encoder) stem.resize(stem.size() - 8);
      l.prefix = stem;
      return l;
    }
  }
  for (const std::string& n : names) {
    if (ends_with(n, "shared.weight")) {
      l.prefix = n.substr(0, n.size() - 13);
      return l;
    }
    if (ends_with(n, "token_embedding.weight")) {
      l.wan = true;
      l.prefix = n.substr(0, n.size() - 22);
      return l;
    }
  }
  return l;
}

std::string Umt5Layout::transformers_name(const std::string& stored) const {
  if (!starts_with(stored, prefix) || is_quantization_key(stored)) return "";
  const std::string k = stored.substr(prefix.size());
  if (k == "spiece_model") return "";
  if (wan) {
    if (k == "token_embedding.weight") return "shared.weight";
    if (k == "norm.weight") return "encoder.final_layer_norm.weight";
    if (!starts_with(k, "blocks.")) return k;  // left as it is: an unexpected key
    size_t end = 0;
    const int64_t i = index_at(k, 7, &end);
    if (i < 0) return k;
    const std::string rest = k.substr(end + 1), b = "encoder.block." + std::to_string(i) + ".";
    static const std::pair<const char*, const char*> names[] = {
        {"norm1.weight", "layer.0.layer_norm.weight"},
        {"attn.q.weight", "layer.0.SelfAttention.q.weight"},
        {"attn.k.weight", "layer.0.SelfAttention.k.weight"},
        {"attn.v.weight", "layer.0.SelfAttention.v.weight"},
        {"attn.o.weight", "layer.0.SelfAttention.o.weight"},
        {"pos_embedding.embedding.weight", "layer.0.SelfAttention.relative_attention_bias.weight"},
        {"norm2.weight", "layer.1.layer_norm.weight"},
        {"ffn.gate.0.weight", "layer.1.DenseReluDense.wi_0.weight"},  // gelu(gate(x)) * fc1(x)
        {"ffn.fc1.weight", "layer.1.DenseReluDense.wi_1.weight"},
        {"ffn.fc2.weight", "layer.1.DenseReluDense.wo.weight"},
    };
    for (const auto& [from, to] : names)
      if (rest == from) return b + to;
    return k;
  }
  if (has_encoder) return k;
  if (starts_with(k, "block.") || k == "final_layer_norm.weight" || k == "embed_tokens.weight") return "encoder." + k;
  return k;
}

std::string Umt5Layout::stored_name(const std::string& t) const {
  if (wan) {
    if (t == "shared.weight") return prefix + "token_embedding.weight";
    if (t == "encoder.final_layer_norm.weight") return prefix + "norm.weight";
    if (starts_with(t, "encoder.block.")) {
      size_t end = 0;
      const int64_t i = index_at(t, 14, &end);
      const std::string rest = t.substr(end + 1), b = prefix + "blocks." + std::to_string(i) + ".";
      static const std::pair<const char*, const char*> names[] = {
          {"layer.0.layer_norm.weight", "norm1.weight"},
          {"layer.0.SelfAttention.q.weight", "attn.q.weight"},
          {"layer.0.SelfAttention.k.weight", "attn.k.weight"},
          {"layer.0.SelfAttention.v.weight", "attn.v.weight"},
          {"layer.0.SelfAttention.o.weight", "attn.o.weight"},
          {"layer.0.SelfAttention.relative_attention_bias.weight", "pos_embedding.embedding.weight"},
          {"layer.1.layer_norm.weight", "norm2.weight"},
          {"layer.1.DenseReluDense.wi_0.weight", "ffn.gate.0.weight"},
          {"layer.1.DenseReluDense.wi_1.weight", "ffn.fc1.weight"},
          {"layer.1.DenseReluDense.wo.weight", "ffn.fc2.weight"},
      };
      for (const auto& [from, to] : names)
        if (rest == from) return b + to;
    }
    return prefix + t;
  }
  if (!has_encoder && starts_with(t, "encoder.")) return prefix + t.substr(8);
  return prefix + t;
}

}  // namespace detail

// --- VAE keys ----------------------------------------------------------------------------------------

std::string vae_diffusers_key(const std::string& key, int64_t num_res_blocks) {
  std::string k = starts_with(key, "first_stage_model.") ? key.substr(18) : key;
  if (starts_with(k, "conv1.")) return "quant_conv." + k.substr(6);
  if (starts_with(k, "conv2.")) return "post_quant_conv." + k.substr(6);
  for (const std::string side : {"encoder.", "decoder."}) {
    if (!starts_with(k, side)) continue;
    const std::string rest = k.substr(side.size());
    if (starts_with(rest, "conv1.")) return side + "conv_in." + rest.substr(6);
    if (starts_with(rest, "head.0.")) return side + "norm_out." + rest.substr(7);
    if (starts_with(rest, "head.2.")) return side + "conv_out." + rest.substr(7);
    if (starts_with(rest, "middle.")) {
      size_t end = 0;
      const int64_t i = index_at(rest, 7, &end);
      const std::string inner = end ? rest.substr(end + 1) : "";
      if (i == 1) return side + "mid_block.attentions.0." + inner;
      if (i == 0 || i == 2)
        return side + "mid_block.resnets." + std::to_string(i / 2) + "." + residual_to_diffusers(inner);
      return k;
    }
    if (side == "encoder." && starts_with(rest, "downsamples.")) {
      size_t end = 0;
      const int64_t n = index_at(rest, 12, &end);
      if (n >= 0) return side + "down_blocks." + std::to_string(n) + "." + residual_to_diffusers(rest.substr(end + 1));
    }
    if (side == "decoder." && starts_with(rest, "upsamples.") && num_res_blocks > 0) {
      // The flat list holds, per level, num_res_blocks + 1 residual blocks and then (on every
      // level but the last) the upsampler.
      size_t end = 0;
      const int64_t n = index_at(rest, 10, &end);
      if (n < 0) return k;
      const int64_t per_level = num_res_blocks + 2, level = n / per_level, pos = n % per_level;
      const std::string inner = rest.substr(end + 1), block = side + "up_blocks." + std::to_string(level) + ".";
      if (pos <= num_res_blocks) return block + "resnets." + std::to_string(pos) + "." + residual_to_diffusers(inner);
      return block + "upsamplers.0." + inner;
    }
  }
  return k;
}

// --- configs from shapes -----------------------------------------------------------------------------

TransformerConfig infer_transformer_config(const Checkpoint& weights, const std::string& overrides_json) {
  const json overrides = parse_overrides(overrides_json, "wan transformer config");
  Names n;
  n.weights = &weights;
  n.what = "wan transformer";
  std::string prefix;
  bool original = false;
  for (const std::string& name : weights.names()) {
    if (detail::is_quantization_key(name) || name.find("norm_added_q") != std::string::npos) continue;
    const std::string d = diffusers_key(name);
    original = original || d != name;
    if (starts_with(name, "model.diffusion_model.")) prefix = "model.diffusion_model.";
    n.stored.emplace(d, name);
  }
  n.stored_name = [&](const std::string& d) { return original ? prefix + detail::original_transformer_key(d) : d; };
  for (const auto& [d, name] : n.stored) {
    check(!starts_with(d, "condition_embedder.image_embedder") && d.find(".add_k_proj") == std::string::npos,
          ErrorCode::unsupported,
          "wan transformer: '" + name + "' belongs to an image-to-video model; only text-to-video models load");
    check(!starts_with(d, "motion_encoder.") && !starts_with(d, "face_"), ErrorCode::unsupported,
          "wan transformer: '" + name + "' belongs to an Animate model; it does not load");
  }

  check_is_a(n.has("patch_embedding.weight") || !indices(n.keys(), "blocks.").empty(), "Wan transformer", weights);
  TransformerConfig c;
  const auto& patch = n.need("patch_embedding.weight", 5);
  const int64_t dim = patch[0];
  c.in_channels = patch[1];
  c.patch_size = {patch[2], patch[3], patch[4]};
  const std::set<int64_t> blocks = indices(n.keys(), "blocks.");
  c.num_layers = blocks.empty() ? 0 : *blocks.rbegin() + 1;
  const auto& text = n.need("condition_embedder.text_embedder.linear_1.weight", 2);
  c.text_dim = text[1];
  const auto& time = n.need("condition_embedder.time_embedder.linear_1.weight", 2);
  c.freq_dim = time[1];
  for (const auto* s : {&text, &time})
    if ((*s)[0] != dim)
      contradicts("wan transformer", n.stored.at(s == &text ? "condition_embedder.text_embedder.linear_1.weight"
                                                            : "condition_embedder.time_embedder.linear_1.weight"),
                  *s, "its output width differs from the inner dim " + std::to_string(dim) + " of '" +
                          n.stored.at("patch_embedding.weight") + "'");
  const auto& out = n.need("proj_out.weight", 2);
  const int64_t per_token = patch[2] * patch[3] * patch[4];
  if (out[0] % per_token != 0)
    contradicts("wan transformer", n.stored.at("proj_out.weight"), out,
                "its rows are not a multiple of the patch volume " + std::to_string(per_token));
  c.out_channels = out[0] / per_token;
  if (c.num_layers > 0) {
    c.ffn_dim = n.need("blocks.0.ffn.net.0.proj.weight", 2)[0];
    c.cross_attn_norm = n.has("blocks.0.norm2.weight");
  }
  // VACE: n blocks spread evenly over the layers, as both released models have them (1.3B:
  // every 2nd of 30, 14B: every 5th of 40); a config's vace_layers overrides the spacing.
  const std::set<int64_t> vace = indices(n.keys(), "vace_blocks.");
  if (!vace.empty()) {
    const int64_t count = *vace.rbegin() + 1;
    c.vace_in_channels = n.need("vace_patch_embedding.weight", 5)[1];
    const int64_t stride = c.num_layers % count == 0 ? c.num_layers / count : 0;
    check(stride > 0 || overrides.contains("vace_layers"), ErrorCode::parse,
          "wan transformer: " + std::to_string(count) + " VACE blocks do not spread evenly over " +
              std::to_string(c.num_layers) + " layers; give the config's vace_layers");
    for (int64_t i = 0; i < count; ++i) c.vace_layers.push_back(i * stride);
  }
  // Heads: Wan's are 128 wide; a config may say otherwise (either field fixes the other).
  const auto int_override = [&](const char* key) -> int64_t {
    if (!overrides.contains(key)) return 0;
    check(overrides[key].is_number_integer() && overrides[key].get<int64_t>() > 0, ErrorCode::parse,
          std::string("wan transformer config overrides: '") + key + "' must be a positive integer, got " +
              overrides[key].dump());
    return overrides[key].get<int64_t>();
  };
  int64_t heads = int_override("num_attention_heads"), head_dim = int_override("attention_head_dim");
  if (heads == 0 && head_dim == 0) head_dim = 128;
  if (heads == 0) {
    if (dim % head_dim != 0)
      contradicts("wan transformer", n.stored.at("patch_embedding.weight"), patch,
                  "the inner dim " + std::to_string(dim) + " is not a multiple of the head dim " +
                      std::to_string(head_dim) +
                      (overrides.contains("attention_head_dim")
                           ? std::string()
                           : " (Wan's); give the config's attention_head_dim or num_attention_heads"));
    heads = dim / head_dim;
  } else if (head_dim == 0) {
    if (dim % heads != 0)
      contradicts("wan transformer", n.stored.at("patch_embedding.weight"), patch,
                  "the inner dim " + std::to_string(dim) + " does not split into " + std::to_string(heads) + " heads");
    head_dim = dim / heads;
  }
  c.num_attention_heads = heads;
  c.attention_head_dim = head_dim;
  return with_overrides<TransformerConfig>(to_json(c), overrides, "wan transformer config");
}

VaeConfig infer_vae_config(const Checkpoint& weights, const std::string& overrides_json) {
  const json overrides = parse_overrides(overrides_json, "wan vae config");
  const std::vector<std::string> names = weights.names();
  const int64_t R = overrides.contains("num_res_blocks") && overrides["num_res_blocks"].is_number_integer()
                        ? overrides["num_res_blocks"].get<int64_t>()
                        : vae_num_res_blocks(names);
  const bool original = vae_is_original(names);
  Names n;
  n.weights = &weights;
  n.what = "wan vae";
  std::string prefix;
  for (const std::string& name : names) {
    if (detail::is_quantization_key(name)) continue;
    if (starts_with(name, "first_stage_model.")) prefix = "first_stage_model.";
    n.stored.emplace(vae_diffusers_key(name, R), name);
  }
  n.stored_name = [&](const std::string& d) { return original ? prefix + detail::original_vae_key(d, R) : d; };
  // Wan2.2's VAE: residual down blocks (diffusers: encoder.down_blocks.N.resnets.M; original:
  // encoder.downsamples.N.downsamples.M).
  const auto count = [](const std::string& s, const std::string& part) {
    size_t c = 0;
    for (size_t pos = s.find(part); pos != std::string::npos; pos = s.find(part, pos + 1)) ++c;
    return c;
  };
  for (const auto& [d, name] : n.stored)
    check(!(starts_with(d, "encoder.down_blocks.") && d.find(".resnets.") != std::string::npos) &&
              count(name, "downsamples.") < 2 && count(name, "upsamples.") < 2,
          ErrorCode::unsupported, "wan vae: '" + name + "' belongs to the Wan2.2 (residual) VAE; as a single file "
                                  "only the Wan2.1 VAE loads (load Wan2.2's as a diffusers directory)");

  check_is_a(std::any_of(n.stored.begin(), n.stored.end(),
                         [](const auto& kv) {
                           return starts_with(kv.first, "encoder.") || starts_with(kv.first, "decoder.");
                         }),
             "Wan VAE", weights);
  json j = json::object();
  const auto& post = n.need("post_quant_conv.weight", 5);
  const int64_t z_dim = post[0];
  const auto& conv_in = n.need("encoder.conv_in.weight", 5);
  const int64_t base = conv_in[0];
  const auto& conv_out = n.need("decoder.conv_out.weight", 5);
  const std::set<int64_t> up = indices(n.keys(), "decoder.up_blocks.");
  check(!up.empty(), ErrorCode::not_found,
        "wan vae: no decoder blocks ('" + n.stored_name("decoder.up_blocks.0.resnets.0.conv1.weight") +
            "' and the like): not a Wan VAE");
  const int64_t levels = *up.rbegin() + 1;
  check(R > 0, ErrorCode::parse, "wan vae: no encoder residual blocks ('" +
                                     n.stored_name("encoder.down_blocks.0.conv1.weight") + "'): not a Wan VAE");
  std::vector<int64_t> dim_mult;
  std::vector<bool> temporal;
  for (int64_t i = 0; i < levels; ++i) {
    const std::string first = "encoder.down_blocks." + std::to_string(i * (R + 1)) + ".conv1.weight";
    const auto& s = n.need(first, 5);
    if (s[0] % base != 0)
      contradicts("wan vae", n.stored.at(first), s,
                  "its width is not a multiple of base_dim " + std::to_string(base) + " ('" +
                      n.stored.at("encoder.conv_in.weight") + "')");
    dim_mult.push_back(s[0] / base);
    if (i + 1 < levels)
      temporal.push_back(n.has("encoder.down_blocks." + std::to_string(i * (R + 1) + R) + ".time_conv.weight"));
  }
  j["base_dim"] = base;
  j["z_dim"] = z_dim;
  j["dim_mult"] = dim_mult;
  j["num_res_blocks"] = R;
  j["attn_scales"] = json::array();
  j["temperal_downsample"] = temporal;
  j["in_channels"] = conv_in[1];
  j["out_channels"] = conv_out[0];
  j["is_residual"] = false;
  check(z_dim == 16 || (overrides.contains("latents_mean") && overrides.contains("latents_std")), ErrorCode::parse,
        "wan vae: z_dim is " + std::to_string(z_dim) + " ('" + n.stored.at("post_quant_conv.weight") +
            "'), and a single file holds no latent statistics: give latents_mean and latents_std in the config");
  return with_overrides<VaeConfig>(j, overrides, "wan vae config");
}

UMT5Config infer_umt5_config(const Checkpoint& weights, const std::string& overrides_json) {
  const json overrides = parse_overrides(overrides_json, "umt5 config");
  const std::vector<std::string> names = weights.names();
  const detail::Umt5Layout layout = detail::Umt5Layout::detect(names);
  Names n;
  n.weights = &weights;
  n.what = "umt5 encoder";
  for (const std::string& name : names) {
    const std::string t = layout.transformers_name(name);
    if (t.empty() || starts_with(t, "decoder.") || starts_with(t, "lm_head.")) continue;
    n.stored.emplace(t, name);
  }
  // The tied embedding, when only its encoder copy is stored.
  if (!n.has("shared.weight") && n.has("encoder.embed_tokens.weight"))
    n.stored.emplace("shared.weight", n.stored.at("encoder.embed_tokens.weight"));
  n.stored_name = [&](const std::string& t) { return layout.stored_name(t); };

  check_is_a(n.has("shared.weight") || !indices(n.keys(), "encoder.block.").empty(), "umT5 encoder", weights);
  UMT5Config c;
  const auto& embed = n.need("shared.weight", 2);
  c.vocab_size = embed[0];
  c.d_model = embed[1];
  const std::set<int64_t> blocks = indices(n.keys(), "encoder.block.");
  c.num_layers = blocks.empty() ? 0 : *blocks.rbegin() + 1;
  if (c.num_layers > 0) {
    const std::string a = "encoder.block.0.layer.0.SelfAttention.", f = "encoder.block.0.layer.1.DenseReluDense.";
    check(!n.has(f + "wi.weight"), ErrorCode::unsupported,
          "umt5 encoder: '" + n.stored_name(f + "wi.weight") + "' is a T5 v1.0 feed-forward (not gated); umT5 is gated-gelu");
    const auto& bias = n.need(a + "relative_attention_bias.weight", 2);
    c.relative_attention_num_buckets = bias[0];
    c.num_heads = bias[1];
    if (c.num_layers > 1)
      check(n.has("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"), ErrorCode::unsupported,
            "umt5 encoder: only the first layer has a relative_attention_bias ('" +
                n.stored.at(a + "relative_attention_bias.weight") + "'): this is a T5 encoder, not umT5");
    const auto& q = n.need(a + "q.weight", 2);
    if (q[0] % c.num_heads != 0 || q[1] != c.d_model)
      contradicts("umt5 encoder", n.stored.at(a + "q.weight"), q,
                  std::to_string(c.num_heads) + " heads (relative_attention_bias) of d_model " +
                      std::to_string(c.d_model) + " (the embedding) do not fit it");
    c.d_kv = q[0] / c.num_heads;
    c.d_ff = n.need(f + "wi_0.weight", 2)[0];
  }
  return with_overrides<UMT5Config>(to_json(c), overrides, "umt5 config");
}

// --- single files --------------------------------------------------------------------------------------

namespace {

// Loads `file` as a single checkpoint with an inferred config; a directory goes to the
// component's own directory loader. Errors name the file.
template <typename Model, typename Infer>
Model load_single(const std::string& file, const char* what, at::ScalarType dtype, c10::Device device,
                  const std::string& overrides_json, Infer infer) {
  check(fs::exists(file), ErrorCode::file_not_found, std::string(what) + ": no such file '" + file + "'");
  if (fs::is_directory(file)) {
    check_arg(overrides_json.empty(), std::string(what) + ": '" + file +
                                          "' is a directory (with its own config.json): config overrides apply to "
                                          "single files only");
    return Model::load(file, dtype, device);
  }
  const Checkpoint weights = Checkpoint::open(file);
  try {
    return Model(infer(weights, overrides_json), weights, dtype, device);
  } catch (const Error& e) {
    throw Error(e.code(), std::string(e.what()) + " (in '" + file + "')");
  }
}

}  // namespace

Transformer load_transformer_file(const std::string& file, at::ScalarType dtype, c10::Device device,
                                  const std::string& overrides_json) {
  return load_single<Transformer>(file, "wan transformer", dtype, device, overrides_json, &infer_transformer_config);
}

Vae load_vae_file(const std::string& file, at::ScalarType dtype, c10::Device device, const std::string& overrides_json) {
  return load_single<Vae>(file, "wan vae", dtype, device, overrides_json, &infer_vae_config);
}

UMT5Encoder load_umt5_file(const std::string& file, at::ScalarType dtype, c10::Device device,
                           const std::string& overrides_json) {
  return load_single<UMT5Encoder>(file, "umt5 encoder", dtype, device, overrides_json, &infer_umt5_config);
}

// --- bundles -------------------------------------------------------------------------------------------

Bundle Bundle::load_files(const std::string& transformer, const std::string& vae, const std::string& text_encoder,
                          const std::string& tokenizer, double flow_shift, at::ScalarType dtype, c10::Device device) {
  Parts p;
  p.path = transformer;
  p.transformer = transformer;
  p.vae = vae;
  p.text_encoder = text_encoder;
  p.tokenizer = tokenizer;
  p.flow_shift = flow_shift;
  return assemble(p, dtype, device, [](const char* key) { return std::string("wan model (") + key + "): "; });
}

Bundle load_bundle_json(const std::string& json_file, at::ScalarType dtype, c10::Device device) {
  const fs::path file(json_file);
  // A diffusers directory's own index names the directory.
  if (file.filename() == "model_index.json") return Bundle::load(file.parent_path().string(), dtype, device);
  const std::string text = read_text(file, "wan model");
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::parse, "wan model: " + json_file + " is not valid JSON: " + e.what());
  }
  check(j.is_object(), ErrorCode::parse, "wan model: " + json_file + " must be a JSON object");
  const fs::path base = file.parent_path();
  const auto where = [&](const std::string& key) { return "wan model: " + json_file + ": '" + key + "'"; };
  static const std::set<std::string> known{"transformer",        "vae",        "text_encoder",
                                           "tokenizer",          "flow_shift", "scheduler",
                                           "transformer_config", "vae_config", "text_encoder_config"};
  for (const auto& [key, value] : j.items())
    check(known.count(key) != 0, ErrorCode::parse,
          where(key) + " is not a bundle key (transformer, vae, text_encoder, tokenizer, flow_shift, scheduler, "
                       "transformer_config, vae_config, text_encoder_config)");
  const auto path_of = [&](const std::string& key) {
    check(j.contains(key), ErrorCode::parse, where(key) + " is missing (the path of the " + key + ")");
    check(j[key].is_string() && !j[key].get<std::string>().empty(), ErrorCode::parse,
          where(key) + " must be a path (a non-empty string), got " + j[key].dump());
    const fs::path p(j[key].get<std::string>());
    return (p.is_absolute() ? p : base / p).string();
  };
  const auto config_of = [&](const std::string& key) -> std::string {
    if (!j.contains(key) || j[key].is_null()) return "";
    if (j[key].is_object()) return j[key].dump();
    check(j[key].is_string(), ErrorCode::parse,
          where(key) + " must be a config object or the path of a JSON file, got " + j[key].dump());
    const fs::path p(j[key].get<std::string>());
    const fs::path config = p.is_absolute() ? p : base / p;
    json c;
    try {
      c = json::parse(read_text(config, where(key)));
    } catch (const json::exception& e) {
      throw Error(ErrorCode::parse, where(key) + ": " + config.string() + " is not valid JSON: " + e.what());
    }
    check(c.is_object(), ErrorCode::parse, where(key) + ": " + config.string() + " must hold a JSON object");
    return c.dump();
  };
  Parts p;
  p.path = json_file;
  p.transformer = path_of("transformer");
  p.vae = path_of("vae");
  p.text_encoder = path_of("text_encoder");
  p.tokenizer = path_of("tokenizer");
  p.transformer_config = config_of("transformer_config");
  p.vae_config = config_of("vae_config");
  p.text_encoder_config = config_of("text_encoder_config");
  if (j.contains("flow_shift")) {
    check(j["flow_shift"].is_number() && j["flow_shift"].get<double>() > 0 &&
              std::isfinite(j["flow_shift"].get<double>()),
          ErrorCode::parse, where("flow_shift") + " must be a positive number, got " + j["flow_shift"].dump());
    p.flow_shift = j["flow_shift"].get<double>();
  }
  if (j.contains("scheduler")) {
    check(j["scheduler"].is_string(), ErrorCode::parse,
          where("scheduler") + " must be a scheduler class name, got " + j["scheduler"].dump());
    p.scheduler = j["scheduler"].get<std::string>();
  }
  return assemble(p, dtype, device, [&](const char* key) { return where(key) + ": "; });
}

}  // namespace drb::models::wan
