// Wan's text side: transformers' UMT5EncoderModel (models/umt5/modeling_umt5.py, v5.x) module by
// module, the T5 tokenizer as transformers 5.x runs it on a SentencePiece model, and the Wan
// pipeline's prompt encoding (diffusers' WanPipeline._get_t5_prompt_embeds). Each encoder
// function below reads its parameters by the transformers name, so `params_` is exactly the
// UMT5EncoderModel state dict (the tied embedding under "shared.weight").
#include "derrumbe/models/wan/text.hpp"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <nlohmann/json.hpp>
#include <dlfcn.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include "derrumbe/models/wan/single_file.hpp"
#include "weights.hpp"

namespace drb::models::wan {

namespace {

using Params = std::map<std::string, at::Tensor>;

std::string shape_str(at::IntArrayRef shape) { return c10::str(shape); }

const at::Tensor& param(const Params& p, const std::string& name) {
  const auto it = p.find(name);
  check(it != p.end(), ErrorCode::internal, "umt5 encoder: parameter '" + name + "' was not loaded");
  return it->second;
}

std::string block(int64_t i) { return "encoder.block." + std::to_string(i) + "."; }

// --- UMT5LayerNorm ---------------------------------------------------------------------------

// T5's RMS norm: no mean subtraction, no bias. The variance is computed in float32 whatever
// the stream's dtype; x * rsqrt(variance) then follows type promotion (a half/bf16 x becomes
// float32), and is rounded to the weight's dtype only when that is half or bf16 — exactly the
// reference's sequence, so half/bf16 results round where the reference rounds.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor variance = x.to(at::kFloat).pow(2).mean(-1, /*keepdim=*/true);
  at::Tensor h = x * at::rsqrt(variance + eps);
  if (weight.scalar_type() == at::kHalf || weight.scalar_type() == at::kBFloat16) h = h.to(weight.scalar_type());
  return weight * h;
}

// --- UMT5Attention -----------------------------------------------------------------------------

// _relative_position_bucket for the (bidirectional) encoder: half the buckets for keys before the
// query, half for keys after; within each half, exact buckets for small distances and
// logarithmic ones up to max_distance. The same float32 ops as the reference (the log ratio is
// truncated towards zero), so the buckets agree at the boundaries too. [L, L] int64.
at::Tensor relative_position_bucket(int64_t length, int64_t num_buckets_total, int64_t max_distance,
                                    c10::Device device) {
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor context_position = at::arange(length, i64).unsqueeze(1);
  const at::Tensor memory_position = at::arange(length, i64).unsqueeze(0);
  at::Tensor relative_position = memory_position - context_position;  // key - query

  const int64_t num_buckets = num_buckets_total / 2;
  at::Tensor buckets = (relative_position > 0).to(at::kLong) * num_buckets;
  relative_position = at::abs(relative_position);

  const int64_t max_exact = num_buckets / 2;
  const at::Tensor is_small = relative_position < max_exact;
  // log(0) = -inf on the diagonal: those entries are "small" and never read from this branch.
  at::Tensor log_ratio = at::log(relative_position.to(at::kFloat) / max_exact) /
                         std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact));
  log_ratio = log_ratio * (num_buckets - max_exact);
  at::Tensor if_large = max_exact + log_ratio.to(at::kLong);
  if_large = at::minimum(if_large, at::full_like(if_large, num_buckets - 1));
  return buckets + at::where(is_small, relative_position, if_large);
}

// torch.finfo(dtype).min: the "minus infinity" transformers puts on masked keys (finite, so a
// fully masked row gives a uniform softmax rather than NaNs).
double lowest(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return std::numeric_limits<double>::lowest();
    case at::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    case at::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest());
    default: return static_cast<double>(std::numeric_limits<float>::lowest());
  }
}

// Self-attention of block `i`. umT5, unlike T5, has a relative_attention_bias table in every
// layer (T5 only in the first, shared by the others). No 1/sqrt(d_kv) scaling: T5 folds it into
// the initialization of q. The bias and the padding mask become one additive float mask, as
// transformers' sdpa path builds it (create_position_bias_mask): where(keep, bias, finfo.min).
at::Tensor self_attention(const Params& p, const std::string& prefix, const UMT5Config& c, const at::Tensor& x,
                          const at::Tensor& buckets, const at::Tensor& keep) {
  const int64_t B = x.size(0), L = x.size(1);
  auto project = [&](const char* name) {  // [B, heads, L, d_kv]
    return at::linear(x, param(p, prefix + name + ".weight")).view({B, L, c.num_heads, c.d_kv}).transpose(1, 2);
  };
  const at::Tensor q = project("q"), k = project("k"), v = project("v");

  // embedding lookup [L, L, heads] -> [1, heads, L, L], in the model's dtype
  const at::Tensor bias =
      at::embedding(param(p, prefix + "relative_attention_bias.weight"), buckets).permute({2, 0, 1}).unsqueeze(0);
  at::Tensor mask = bias;
  if (keep.defined()) {
    mask = at::where(keep, bias, at::scalar_tensor(lowest(k.scalar_type()), bias.options()));
  }
  at::Tensor out = at::scaled_dot_product_attention(q, k, v, mask.contiguous(), /*dropout_p=*/0.0,
                                                    /*is_causal=*/false, /*scale=*/1.0);
  out = out.transpose(1, 2).reshape({B, L, c.num_heads * c.d_kv});
  return at::linear(out, param(p, prefix + "o.weight"));
}

// --- UMT5DenseGatedActDense --------------------------------------------------------------------

// gelu_new (transformers' NewGELUActivation): the tanh approximation written out op by op in
// the tensor's dtype, as the reference computes it (at::gelu(x, "tanh") rounds differently in
// half/bf16, where it keeps float intermediates).
at::Tensor gelu_new(const at::Tensor& x) {
  const double k = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + at::tanh(k * (x + 0.044715 * at::pow(x, 3.0))));
}

at::Tensor gated_ffn(const Params& p, const std::string& prefix, const at::Tensor& x) {
  const at::Tensor h = gelu_new(at::linear(x, param(p, prefix + "wi_0.weight"))) *
                       at::linear(x, param(p, prefix + "wi_1.weight"));
  // wo may be float32 in a half model (_keep_in_fp32_modules = ["wo"]): the reference casts
  // the activations to wo's dtype first, so the residual stream becomes float32 from here on.
  const at::Tensor& wo = param(p, prefix + "wo.weight");
  return at::linear(h.to(wo.scalar_type()), wo);
}

// UMT5Block's guard for float16 streams: clamp to the largest finite half value (1000 below it
// when an inf already appeared), so an overflow does not turn into NaNs downstream.
at::Tensor clamp_half(const at::Tensor& x) {
  if (x.scalar_type() != at::kHalf) return x;
  const double max_value = 65504.0;
  const double clamp_value = at::isinf(x).any().item<bool>() ? max_value - 1000.0 : max_value;
  return at::clamp(x, -clamp_value, clamp_value);
}

// --- parameters ------------------------------------------------------------------------------

// Every parameter of UMT5EncoderModel with its shape, by transformers name. The embedding is
// tied ("encoder.embed_tokens.weight" is "shared.weight"); save_pretrained writes it once as
// shared.weight, so that is the name listed here (the other is accepted on load).
std::vector<std::pair<std::string, std::vector<int64_t>>> expected_parameters(const UMT5Config& c) {
  const int64_t inner = c.num_heads * c.d_kv;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"shared.weight", {c.vocab_size, c.d_model}});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string a = block(i) + "layer.0.";
    out.push_back({a + "layer_norm.weight", {c.d_model}});
    for (const char* n : {"q", "k", "v"}) out.push_back({a + "SelfAttention." + n + ".weight", {inner, c.d_model}});
    out.push_back({a + "SelfAttention.o.weight", {c.d_model, inner}});
    out.push_back({a + "SelfAttention.relative_attention_bias.weight", {c.relative_attention_num_buckets, c.num_heads}});
    const std::string f = block(i) + "layer.1.";
    out.push_back({f + "layer_norm.weight", {c.d_model}});
    out.push_back({f + "DenseReluDense.wi_0.weight", {c.d_ff, c.d_model}});
    out.push_back({f + "DenseReluDense.wi_1.weight", {c.d_ff, c.d_model}});
    out.push_back({f + "DenseReluDense.wo.weight", {c.d_model, c.d_ff}});
  }
  out.push_back({"encoder.final_layer_norm.weight", {c.d_model}});
  return out;
}

void validate(const UMT5Config& c) {
  auto positive = [](int64_t v, const char* key) {
    check_arg(v > 0, std::string("umt5 config: '") + key + "' must be positive, got " + std::to_string(v));
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.d_model, "d_model");
  positive(c.d_kv, "d_kv");
  positive(c.d_ff, "d_ff");
  positive(c.num_heads, "num_heads");
  check_arg(c.num_layers >= 0, "umt5 config: 'num_layers' must be >= 0, got " + std::to_string(c.num_layers));
  // The bidirectional bucketing halves the buckets and halves again for the exact range: with
  // fewer than 4 the log branch divides by zero.
  check_arg(c.relative_attention_num_buckets >= 4,
            "umt5 config: 'relative_attention_num_buckets' must be >= 4, got " +
                std::to_string(c.relative_attention_num_buckets));
  check_arg(c.relative_attention_max_distance > c.relative_attention_num_buckets / 4,
            "umt5 config: 'relative_attention_max_distance' must exceed relative_attention_num_buckets / 4, got " +
                std::to_string(c.relative_attention_max_distance));
  check_arg(c.layer_norm_epsilon > 0 && std::isfinite(c.layer_norm_epsilon),
            "umt5 config: 'layer_norm_epsilon' must be positive and finite");
  check(c.feed_forward_proj == "gated-gelu", ErrorCode::unsupported,
        "umt5 config: feed_forward_proj '" + c.feed_forward_proj + "' is not supported (only 'gated-gelu', as umT5 uses)");
}

// Python's str.isspace() set (what re's \s matches in a str pattern), as UTF-8 code points.
bool is_python_space(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

// Decodes one UTF-8 sequence at s[i]; returns its length (1 for an invalid byte, which then
// counts as a non-space character and is copied through unchanged).
size_t utf8_next(const std::string& s, size_t i, char32_t& cp) {
  const auto b = static_cast<unsigned char>(s[i]);
  size_t n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) {
    cp = 0xFFFD;
    return 1;
  }
  cp = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
  for (size_t k = 1; k < n; ++k) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if ((c >> 6) != 0x2) {
      cp = 0xFFFD;
      return 1;
    }
    cp = (cp << 6) | (c & 0x3F);
  }
  return n;
}

// diffusers' whitespace_clean: re.sub(r"\s+", " ", text).strip(). The pipeline's prompt_clean
// also runs ftfy.fix_text and html.unescape (twice) first; those are NOT done here (no ftfy in
// C++): prompts with mojibake or HTML entities ("&amp;") tokenize differently than in diffusers.
std::string whitespace_clean(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (size_t i = 0; i < text.size();) {
    char32_t cp;
    const size_t n = utf8_next(text, i, cp);
    if (is_python_space(cp)) {
      pending_space = !out.empty();  // leading whitespace is dropped
    } else {
      if (pending_space) out.push_back(' ');
      pending_space = false;
      out.append(text, i, n);
    }
    i += n;
  }
  return out;  // trailing whitespace never flushed
}

std::string read_text_file(const std::filesystem::path& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), ErrorCode::io, std::string(what) + ": cannot read '" + path.string() + "'");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

// --- config.json ---------------------------------------------------------------------------

UMT5Config UMT5Config::from_json(const std::string& json_text) {
  using nlohmann::json;
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::parse, std::string("umt5 config: invalid JSON: ") + e.what());
  }
  check(j.is_object(), ErrorCode::parse, "umt5 config: expected a JSON object");
  UMT5Config c;
  auto bad = [](const std::string& key, const json& v, const char* what) {
    return Error(ErrorCode::parse, "umt5 config: '" + key + "' must be " + what + ", got " + v.dump());
  };
  auto get_int = [&](const char* key, int64_t& out) {
    if (!j.contains(key)) return;
    const json& v = j[key];
    if (!v.is_number_integer()) throw bad(key, v, "an integer");
    out = v.get<int64_t>();
  };
  get_int("vocab_size", c.vocab_size);
  get_int("d_model", c.d_model);
  get_int("d_kv", c.d_kv);
  get_int("d_ff", c.d_ff);
  get_int("num_layers", c.num_layers);
  get_int("num_heads", c.num_heads);
  get_int("relative_attention_num_buckets", c.relative_attention_num_buckets);
  get_int("relative_attention_max_distance", c.relative_attention_max_distance);
  if (j.contains("layer_norm_epsilon")) {
    if (!j["layer_norm_epsilon"].is_number()) throw bad("layer_norm_epsilon", j["layer_norm_epsilon"], "a number");
    c.layer_norm_epsilon = j["layer_norm_epsilon"].get<double>();
  }
  if (j.contains("feed_forward_proj")) {
    if (!j["feed_forward_proj"].is_string()) throw bad("feed_forward_proj", j["feed_forward_proj"], "a string");
    c.feed_forward_proj = j["feed_forward_proj"].get<std::string>();
  }
  // UMT5EncoderModel keeps is_decoder from the config; a decoder stack would be causal and
  // bucket one-sided, which this encoder does not implement.
  check(!j.contains("is_decoder") || !j["is_decoder"].is_boolean() || !j["is_decoder"].get<bool>(),
        ErrorCode::unsupported, "umt5 config: is_decoder = true is not supported (encoder only)");
  try {
    validate(c);
  } catch (const Error& e) {
    throw Error(e.code() == ErrorCode::unsupported ? e.code() : ErrorCode::parse, e.what());
  }
  return c;
}

// --- loading -------------------------------------------------------------------------------

UMT5Encoder::UMT5Encoder(UMT5Config config, const Checkpoint& weights, at::ScalarType dtype, c10::Device device)
    : config_(std::move(config)) {
  validate(config_);
  check_arg(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf || dtype == at::kDouble,
            std::string("umt5 encoder: dtype must be a floating type (float32, bfloat16, float16, float64), got ") +
                c10::toString(dtype));

  // Checkpoint name -> our name. The tied embedding may be stored as shared.weight,
  // encoder.embed_tokens.weight or both (older exports); transformers ties the latter to the
  // former, so shared.weight wins when both are there. Keys of a full encoder-decoder
  // checkpoint (decoder.*, lm_head.*) are skipped, as transformers skips them (with a warning)
  // when it loads UMT5EncoderModel from one.
  // Single files name the tensors differently (ComfyUI: maybe without "encoder.", under a
  // prefix; the Wan repository: its own T5 names): detail::Umt5Layout maps them to ours, and
  // ComfyUI's fp8 scales are read with their weights.
  std::map<std::string, std::string> source;  // our name -> checkpoint name
  std::vector<std::string> unexpected;
  const auto expected = expected_parameters(config_);
  std::set<std::string> wanted;
  for (const auto& e : expected) wanted.insert(e.first);
  const std::vector<std::string> stored_names = weights.names();
  const detail::Umt5Layout layout = detail::Umt5Layout::detect(stored_names);
  std::map<std::string, std::string> ours;  // checkpoint name -> our name
  for (const std::string& stored : stored_names) {
    const std::string name = layout.transformers_name(stored);
    if (!name.empty()) ours[stored] = name;
  }
  const auto stored_as = [&](const std::string& name) { return layout.stored_name(name); };
  for (const auto& [stored, name] : ours) {
    if (name.rfind("decoder.", 0) == 0 || name.rfind("lm_head.", 0) == 0) continue;
    if (name == "encoder.embed_tokens.weight") {
      if (!weights.contains(stored_as("shared.weight"))) source["shared.weight"] = stored;
      else {
        const SafetensorsEntry& e = weights.entry(stored);
        check_arg(e.shape == std::vector<int64_t>{config_.vocab_size, config_.d_model},
                  "umt5 checkpoint: '" + stored + "' has shape " + shape_str(e.shape) + ", expected " +
                      shape_str({config_.vocab_size, config_.d_model}) + " for this config");
      }
      continue;
    }
    if (wanted.count(name)) {
      const auto [it, inserted] = source.emplace(name, stored);
      check_arg(inserted, "umt5 checkpoint: '" + stored + "' and '" + it->second + "' both map to '" + name + "'");
    } else {
      unexpected.push_back(stored);
    }
  }

  size_t missing = 0;
  std::string first_missing;
  for (const auto& [name, shape] : expected) {
    const auto it = source.find(name);
    if (it == source.end()) {
      if (missing++ == 0)
        first_missing = "'" + stored_as(name) + "'" +
                        (layout.is_plain() ? std::string() : " ('" + name + "' in transformers' names)") +
                        " (expected shape " + shape_str(shape) + ")";
      continue;
    }
    const SafetensorsEntry& e = weights.entry(it->second);
    check_arg(e.shape == shape, "umt5 checkpoint: '" + it->second + "' has shape " + shape_str(e.shape) +
                                    ", expected " + shape_str(shape) + " for this config");
    check_arg(detail::is_weight_dtype(e.dtype), "umt5 checkpoint: '" + it->second + "' is stored as " + e.dtype +
                                                    ", expected a floating point type (" + detail::weight_dtypes() +
                                                    ")");
  }
  if (missing > 0)
    throw Error(ErrorCode::not_found, "umt5 checkpoint: missing " + first_missing +
                                          (missing > 1 ? " and " + std::to_string(missing - 1) + " more" : "") +
                                          "; does the config (num_layers) match the weights?");
  if (!unexpected.empty()) {
    std::string extra;
    for (size_t i = 0; i < unexpected.size() && i < 5; ++i) extra += (i ? ", '" : "'") + unexpected[i] + "'";
    throw Error(ErrorCode::invalid_argument, "umt5 checkpoint: " + std::to_string(unexpected.size()) +
                                                 " unexpected key(s) for this config: " + extra +
                                                 (unexpected.size() > 5 ? ", ..." : "") + " (a larger num_layers?)");
  }

  // transformers' _keep_in_fp32_modules = ["wo"] applies when the model loads in float16 only
  // (not bfloat16): the FFN output projections stay float32 there, and so must they here.
  for (const auto& [name, shape] : expected) {
    const bool is_wo = name.size() > 9 && name.compare(name.size() - 9, 9, "wo.weight") == 0;
    const at::ScalarType t = (is_wo && dtype == at::kHalf) ? at::kFloat : dtype;
    params_.emplace(name, detail::read_weight(weights, source.at(name), t).to(device));
  }
}

UMT5Encoder UMT5Encoder::load(const std::string& directory, at::ScalarType dtype, c10::Device device) {
  namespace fs = std::filesystem;
  // A single file (ComfyUI's umt5_xxl_fp16.safetensors, ...): the config comes from the shapes.
  if (fs::is_regular_file(directory)) return load_umt5_file(directory, dtype, device);
  check(fs::is_directory(directory), ErrorCode::file_not_found, "umt5 encoder: no directory '" + directory + "'");
  const fs::path config_path = fs::path(directory) / "config.json";
  check(fs::is_regular_file(config_path), ErrorCode::file_not_found,
        "umt5 encoder: no config.json in '" + directory + "'");
  UMT5Config config;
  try {
    config = UMT5Config::from_json(read_text_file(config_path, "umt5 encoder"));
  } catch (const Error& e) {
    throw Error(e.code(), config_path.string() + ": " + e.what());
  }
  const Checkpoint weights = Checkpoint::open(directory);
  try {
    return UMT5Encoder(std::move(config), weights, dtype, device);
  } catch (const Error& e) {
    throw Error(e.code(), std::string(e.what()) + " (in '" + directory + "')");
  }
}

// --- forward -------------------------------------------------------------------------------

at::Tensor UMT5Encoder::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask) const {
  const UMT5Config& c = config_;
  const at::Tensor& embed = param(params_, "shared.weight");
  const c10::Device device = embed.device();

  check_arg(input_ids.defined() && input_ids.dim() == 2,
            "umt5 encoder: input_ids must be [B, L], got " +
                (input_ids.defined() ? shape_str(input_ids.sizes()) : std::string("(none)")));
  check_arg(at::isIntegralType(input_ids.scalar_type(), /*includeBool=*/false),
            std::string("umt5 encoder: input_ids must be an integer tensor (int64), got ") +
                c10::toString(input_ids.scalar_type()));
  const int64_t B = input_ids.size(0), L = input_ids.size(1);
  check_arg(B > 0 && L > 0, "umt5 encoder: input_ids must be non-empty, got " + shape_str(input_ids.sizes()));
  if (attention_mask.defined()) {
    check_arg(attention_mask.sizes() == input_ids.sizes(), "umt5 encoder: attention_mask must have the shape of input_ids " +
                                                               shape_str(input_ids.sizes()) + ", got " +
                                                               shape_str(attention_mask.sizes()));
    check_arg(!at::isComplexType(attention_mask.scalar_type()), "umt5 encoder: attention_mask must be real (0/1)");
  }

  c10::NoGradGuard no_grad;
  const at::Tensor ids = input_ids.to(device, at::kLong);
  // An out-of-range id would read outside the embedding (a crash on the CPU, a device assert
  // on CUDA): name the first one instead.
  const at::Tensor bad = (ids < 0) | (ids >= c.vocab_size);
  if (bad.any().item<bool>()) {
    const at::Tensor where = bad.nonzero()[0].cpu();
    const int64_t b = where[0].item<int64_t>(), t = where[1].item<int64_t>();
    throw Error(ErrorCode::invalid_argument, "umt5 encoder: input_ids[" + std::to_string(b) + ", " +
                                                 std::to_string(t) + "] = " +
                                                 std::to_string(ids[b][t].item<int64_t>()) + " is out of range [0, " +
                                                 std::to_string(c.vocab_size) + ")");
  }
  // Keys the queries may attend to, [B, 1, 1, L] (transformers' bidirectional mask: padding
  // masks keys only; padded query rows are computed anyway and come out as in the reference).
  at::Tensor keep;
  if (attention_mask.defined()) keep = (attention_mask.to(device) != 0).view({B, 1, 1, L});

  const at::Tensor buckets =
      relative_position_bucket(L, c.relative_attention_num_buckets, c.relative_attention_max_distance, device);

  at::Tensor x = at::embedding(embed, ids);  // dropout is the identity at inference
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string attn = block(i) + "layer.0.", ffn = block(i) + "layer.1.";
    // Residual adds follow type promotion like the reference: with a float32 wo (half models)
    // the stream turns float32 after the first FFN and stays so.
    x = x + self_attention(params_, attn + "SelfAttention.", c,
                           rms_norm(x, param(params_, attn + "layer_norm.weight"), c.layer_norm_epsilon), buckets,
                           keep);
    x = clamp_half(x);
    x = x + gated_ffn(params_, ffn + "DenseReluDense.",
                      rms_norm(x, param(params_, ffn + "layer_norm.weight"), c.layer_norm_epsilon));
    x = clamp_half(x);
  }
  return rms_norm(x, param(params_, "encoder.final_layer_norm.weight"), c.layer_norm_epsilon);
}

// --- tokenizer -----------------------------------------------------------------------------

namespace {

// libsentencepiece through libderrumbe_sentencepiece.so (sentencepiece_shim.cpp), opened once
// with RTLD_DEEPBIND from the directory this library was loaded from (see the shim for why).
// AddressSanitizer aborts on RTLD_DEEPBIND: in a sanitized process the shim gets a link namespace
// of its own (dlmopen), which keeps its protobuf apart from LibTorch's in the same way (the shim's
// interface is plain C, so nothing crosses the namespaces but pointers, sizes and ints).
void* open_isolated(const std::string& path) {
  if (dlsym(RTLD_DEFAULT, "__asan_init") != nullptr) return dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
  return dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
}

struct SentencePieceApi {
  void* (*load)(const char*, size_t, char*, size_t);
  void (*free)(void*);
  int (*id)(const void*, int);
  int (*is_byte)(const void*, int);
  size_t (*piece)(const void*, int, char*, size_t);
  int (*encode)(const void*, const char*, size_t, int*, size_t, size_t*, char*, size_t);
};

const SentencePieceApi& sentencepiece_api() {
  static const SentencePieceApi api = [] {
    Dl_info self{};
    check(dladdr(reinterpret_cast<const void*>(&sentencepiece_api), &self) != 0 && self.dli_fname != nullptr,
          ErrorCode::internal, "tokenizer: cannot locate libderrumbe");
    const std::string path =
        (std::filesystem::path(self.dli_fname).parent_path() / "libderrumbe_sentencepiece.so").string();
    void* handle = open_isolated(path);
    if (handle == nullptr) throw Error(ErrorCode::io, "tokenizer: cannot load '" + path + "': " + dlerror());
    const auto symbol = [&](const char* name) {
      void* f = dlsym(handle, name);
      check(f != nullptr, ErrorCode::internal, std::string("tokenizer: '") + path + "' has no " + name);
      return f;
    };
    SentencePieceApi a;
    a.load = reinterpret_cast<decltype(a.load)>(symbol("drb_spm_load"));
    a.free = reinterpret_cast<decltype(a.free)>(symbol("drb_spm_free"));
    a.id = reinterpret_cast<decltype(a.id)>(symbol("drb_spm_id"));
    a.is_byte = reinterpret_cast<decltype(a.is_byte)>(symbol("drb_spm_is_byte"));
    a.piece = reinterpret_cast<decltype(a.piece)>(symbol("drb_spm_piece"));
    a.encode = reinterpret_cast<decltype(a.encode)>(symbol("drb_spm_encode"));
    return a;
  }();
  return api;
}

// A loaded SentencePiece model, with the calls the tokenizer needs.
class Processor {
 public:
  explicit Processor(void* handle) : handle_(handle) {}
  ~Processor() { sentencepiece_api().free(handle_); }
  Processor(const Processor&) = delete;
  Processor& operator=(const Processor&) = delete;
  int pad_id() const { return sentencepiece_api().id(handle_, 0); }
  int eos_id() const { return sentencepiece_api().id(handle_, 1); }
  int unk_id() const { return sentencepiece_api().id(handle_, 2); }
  int GetPieceSize() const { return sentencepiece_api().id(handle_, 3); }
  bool IsByte(int id) const { return sentencepiece_api().is_byte(handle_, id) != 0; }
  std::string IdToPiece(int id) const {
    std::string piece(sentencepiece_api().piece(handle_, id, nullptr, 0), '\0');
    sentencepiece_api().piece(handle_, id, piece.data(), piece.size() + 1);
    return piece;
  }
  std::vector<int> Encode(const std::string& text) const {
    std::vector<int> ids(text.size() + 16);
    size_t count = 0;
    char error[512] = "";
    check(sentencepiece_api().encode(handle_, text.data(), text.size(), ids.data(), ids.size(), &count, error,
                                     sizeof error) == 0,
          ErrorCode::internal, std::string("tokenizer: SentencePiece failed: ") + error);
    if (count > ids.size()) {  // more pieces than bytes (cannot happen with UTF-8 pieces; be safe)
      ids.resize(count);
      sentencepiece_api().encode(handle_, text.data(), text.size(), ids.data(), ids.size(), &count, error,
                                 sizeof error);
    }
    ids.resize(count);
    return ids;
  }

 private:
  void* handle_;
};

const Processor& processor(const std::shared_ptr<void>& p) {
  check(p != nullptr, ErrorCode::invalid_argument, "tokenizer: not loaded (use Tokenizer::load)");
  return *static_cast<const Processor*>(p.get());
}

// The special tokens transformers' T5 tokenizer matches in the raw text before anything else
// ("a </s> b" gives ▁a, </s>, ▁b, not the characters '<', '/', ...): the pad, eos and unk
// pieces of the model. T5's sentinels (<extra_id_N>) are added tokens beyond the SentencePiece
// vocabulary, with ids this tokenizer does not know: they are encoded as plain text.
std::vector<std::pair<std::string, int>> special_pieces(const Processor& sp) {
  std::vector<std::pair<std::string, int>> out;
  for (int id : {sp.pad_id(), sp.eos_id(), sp.unk_id()})
    if (id >= 0 && id < sp.GetPieceSize()) out.push_back({sp.IdToPiece(id), id});
  return out;
}

// One text segment without special tokens, as transformers 5.x's T5 tokenizer encodes it: its
// backend (tokenizers' Unigram on the model's pieces, SentencePiece's precompiled normalizer,
// whitespace split, "▁" prepended to every word) segments exactly as SentencePiece's own Viterbi
// does with T5's normalizer settings (add_dummy_prefix, remove_extra_whitespaces), except that
// it never falls back to bytes: a model trained with byte_fallback spells an unknown span as
// <0xNN> pieces where transformers gives one <unk>. Runs of byte pieces become one unk id here.
void encode_segment(const Processor& sp, const std::string& text, std::vector<int64_t>& out) {
  bool in_bytes = false;
  for (int id : sp.Encode(text)) {
    if (sp.IsByte(id)) {
      if (!in_bytes) out.push_back(sp.unk_id());
      in_bytes = true;
      continue;
    }
    in_bytes = false;
    out.push_back(id);
  }
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path file = path;
  check(fs::exists(file), ErrorCode::file_not_found, "tokenizer: no such file or directory '" + path + "'");
  if (fs::is_directory(file)) {
    // The names diffusers/transformers repositories use (spiece.model for T5/umT5).
    bool found = false;
    for (const char* name : {"spiece.model", "tokenizer.model"})
      if (fs::is_regular_file(file / name)) {
        file /= name;
        found = true;
        break;
      }
    check(found, ErrorCode::file_not_found, "tokenizer: no spiece.model or tokenizer.model in '" + path + "'");
  }
  // Load from bytes we read ourselves, so a missing/unreadable file is an io error and a file
  // that is not a SentencePiece model is a parse error (Load(path) mixes the two).
  const std::string bytes = read_text_file(file, "tokenizer");
  char error[512] = "";
  void* handle = sentencepiece_api().load(bytes.data(), bytes.size(), error, sizeof error);
  check(handle != nullptr, ErrorCode::parse,
        "tokenizer: '" + file.string() + "' is not a SentencePiece model (" + error + ")");
  auto sp = std::make_shared<Processor>(handle);
  check(sp->GetPieceSize() > 0, ErrorCode::parse, "tokenizer: '" + file.string() + "' has an empty vocabulary");
  check(sp->eos_id() >= 0, ErrorCode::unsupported,
        "tokenizer: '" + file.string() + "' defines no end-of-sequence piece (T5 tokenizers append </s>)");
  Tokenizer t;
  t.processor_ = std::move(sp);
  return t;
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, int64_t max_length) const {
  const Processor& sp = processor(processor_);
  check_arg(max_length >= 0, "tokenizer: max_length must be >= 0 (0: no truncation), got " + std::to_string(max_length));
  std::vector<int64_t> ids;
  // Split at the special tokens' literal text; each piece between is its own segment.
  const auto specials = special_pieces(sp);
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t best = std::string::npos, best_len = 0;
    int best_id = -1;
    for (const auto& [piece, id] : specials) {
      const size_t at = text.find(piece, pos);
      if (at != std::string::npos && (at < best || (at == best && piece.size() > best_len))) {
        best = at;
        best_len = piece.size();
        best_id = id;
      }
    }
    encode_segment(sp, text.substr(pos, best == std::string::npos ? std::string::npos : best - pos), ids);
    if (best == std::string::npos) break;
    ids.push_back(best_id);
    pos = best + best_len;
  }
  // transformers truncates the text's tokens to max_length - 1 so that EOS still fits.
  if (max_length > 0 && static_cast<int64_t>(ids.size()) > max_length - 1) ids.resize(max_length - 1);
  ids.push_back(sp.eos_id());
  return ids;
}

std::pair<at::Tensor, at::Tensor> Tokenizer::batch(const std::vector<std::string>& texts, int64_t max_length) const {
  const Processor& sp = processor(processor_);
  check_arg(max_length > 0, "tokenizer: batch max_length must be positive, got " + std::to_string(max_length));
  const int64_t B = static_cast<int64_t>(texts.size());
  // T5's pad id is 0; a model that names another pad piece pads with it (as transformers does).
  const int64_t pad = sp.pad_id() >= 0 ? sp.pad_id() : 0;
  at::Tensor ids = at::full({B, max_length}, pad, at::kLong);
  at::Tensor mask = at::zeros({B, max_length}, at::kLong);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int64_t> row = encode(texts[b], max_length);
    for (size_t t = 0; t < row.size(); ++t) {
      ids_a[b][t] = row[t];
      mask_a[b][t] = 1;
    }
  }
  return {ids, mask};
}

int64_t Tokenizer::vocab_size() const { return processor(processor_).GetPieceSize(); }

// --- the Wan pipeline's prompt encoding ------------------------------------------------------

at::Tensor encode_prompts(const Tokenizer& tokenizer, const UMT5Encoder& encoder,
                          const std::vector<std::string>& prompts, int64_t max_length) {
  check_arg(!prompts.empty(), "encode_prompts: no prompts");
  check_arg(max_length > 0, "encode_prompts: max_length must be positive, got " + std::to_string(max_length));
  std::vector<std::string> cleaned;
  cleaned.reserve(prompts.size());
  for (const std::string& p : prompts) cleaned.push_back(whitespace_clean(p));
  const auto [ids, mask] = tokenizer.batch(cleaned, max_length);

  c10::NoGradGuard no_grad;
  const at::Tensor hidden = encoder.forward(ids, mask).to(at::kFloat);  // [B, max_length, d_model]
  // u[:seq_len] then zero-padded back to max_length: the mask is a prefix of ones, so this is the
  // mask itself; where() writes exact zeros (the padded rows hold real values before).
  const at::Tensor keep = mask.to(hidden.device()).to(at::kBool).unsqueeze(-1);
  return at::where(keep, hidden, at::zeros({}, hidden.options()));
}

}  // namespace drb::models::wan
