// Wan2.1 / Wan2.2 video transformer, following diffusers' WanTransformer3DModel
// (diffusers/models/transformers/transformer_wan.py) module by module. Each function below is
// one diffusers module and reads its parameters by the diffusers name, so `params_` is exactly
// the diffusers state dict. The numbered "pitfall" comments refer to REFERENCES.md §3 (Wan in diffusers).
#include "derrumbe/models/wan/transformer.hpp"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "derrumbe/models/wan/single_file.hpp"
#include "weights.hpp"

namespace drb::models::wan {

namespace {

using Params = std::map<std::string, at::Tensor>;

std::string shape_str(at::IntArrayRef shape) { return c10::str(shape); }

const at::Tensor& param(const Params& p, const std::string& name) {
  const auto it = p.find(name);
  check(it != p.end(), ErrorCode::internal, "wan transformer: parameter '" + name + "' was not loaded");
  return it->second;
}

// nn.Linear named `prefix` (every Linear in Wan has a bias).
at::Tensor linear(const Params& p, const std::string& prefix, const at::Tensor& x) {
  return at::linear(x, param(p, prefix + ".weight"), param(p, prefix + ".bias"));
}

// FP32LayerNorm: layer norm computed in float32 whatever the stream's dtype; the result stays
// float32 here because every caller passes `x.float()` and casts back itself (type_as), as the
// reference does.
at::Tensor fp32_layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  return at::layer_norm(x.to(at::kFloat), {x.size(-1)}, weight, bias, eps);
}

// The modulation chunks: `table` (float32, [1, n, dim]) plus `temb` ([B, n, dim], or per-token
// [B, S, n, dim] for Wan2.2-TI2V), each chunk broadcastable against the stream [B, L, dim].
// The sum is float32 (pitfall 3: modulation in fp32; the reference casts temb with .float()).
std::vector<at::Tensor> modulation(const at::Tensor& table, const at::Tensor& temb, int64_t n) {
  const bool per_token = temb.dim() == 4;
  const at::Tensor sum = (per_token ? table.unsqueeze(0) : table) + temb.to(at::kFloat);
  std::vector<at::Tensor> chunks = sum.chunk(n, per_token ? 2 : 1);  // [B, 1, dim] or [B, S, 1, dim]
  if (per_token)
    for (auto& c : chunks) c = c.squeeze(2);
  return chunks;
}

// --- WanRotaryPosEmbed ---------------------------------------------------------------------

// cos and sin of the rotation angles for every token, [L, 1, head_dim / 2] float32 on `device`.
// Pitfall 2: the head dim splits into t/h/w = d - 4 (d / 6), 2 (d / 6), 2 (d / 6) (44/42/42
// for 128); the frequencies theta^(-2i/dim) and the angles are computed in float64 (as the
// reference's buffers are, on the CPU) and only then rounded to float32. The reference stores
// each value twice (repeat_interleave) and reads cos[0::2], sin[1::2]: one copy is enough.
struct Rope {
  at::Tensor cos, sin;
};

Rope rotary_pos_embed(const TransformerConfig& c, int64_t ppf, int64_t pph, int64_t ppw, c10::Device device) {
  const int64_t d = c.attention_head_dim;
  const int64_t h_dim = 2 * (d / 6), w_dim = h_dim, t_dim = d - h_dim - w_dim;
  const double theta = 10000.0;
  auto angles = [&](int64_t dim, int64_t positions) {  // [positions, dim / 2] float64, CPU
    const auto f64 = at::TensorOptions().dtype(at::kDouble);
    const at::Tensor freqs = 1.0 / at::pow(theta, at::arange(0, dim, 2, f64) / static_cast<double>(dim));
    return at::outer(at::arange(positions, f64), freqs);
  };
  const int64_t L = ppf * pph * ppw;
  auto table = [&](at::Tensor (*fn)(const at::Tensor&)) {
    const auto to_dev = [&](const at::Tensor& a) { return fn(a).to(at::kFloat).to(device); };
    const at::Tensor f = to_dev(angles(t_dim, ppf)), h = to_dev(angles(h_dim, pph)), w = to_dev(angles(w_dim, ppw));
    // token order f, h, w (row-major over the patch grid), as patch_embedding.flatten(2) lays them out
    return at::cat({f.view({ppf, 1, 1, -1}).expand({ppf, pph, ppw, f.size(1)}),
                    h.view({1, pph, 1, -1}).expand({ppf, pph, ppw, h.size(1)}),
                    w.view({1, 1, ppw, -1}).expand({ppf, pph, ppw, w.size(1)})},
                   -1)
        .reshape({L, 1, d / 2});
  };
  return {table(&at::cos), table(&at::sin)};
}

// apply_rotary_emb of WanAttnProcessor on [B, L, heads, head_dim]: pairs (x[2i], x[2i+1]) are
// rotated (pitfall 2, not the half-split convention). The products run in float32 (the tables
// are float32, so type promotion makes them so in the reference) and the result is rounded back
// to x's dtype.
at::Tensor apply_rotary_emb(const at::Tensor& x, const Rope& rope) {
  const at::Tensor pairs = x.unflatten(-1, {-1, 2});
  const at::Tensor x1 = pairs.select(-1, 0), x2 = pairs.select(-1, 1);
  return at::stack({x1 * rope.cos - x2 * rope.sin, x1 * rope.sin + x2 * rope.cos}, -1).flatten(-2).to(x.scalar_type());
}

// --- WanAttention (WanAttnProcessor) -------------------------------------------------------

// Self-attention when `context` is undefined (with RoPE), cross-attention to `context` else.
at::Tensor attention(const Params& p, const std::string& prefix, const TransformerConfig& c, const at::Tensor& x,
                     const at::Tensor& context, const Rope* rope) {
  const at::Tensor& kv_input = context.defined() ? context : x;
  const int64_t inner = c.num_attention_heads * c.attention_head_dim;
  // Pitfall 1: RMSNorm over all heads together (inner_dim = heads x head_dim), before the
  // split into heads; torch.nn.RMSNorm with an affine weight and the config's eps.
  at::Tensor query = at::rms_norm(linear(p, prefix + ".to_q", x), {inner}, param(p, prefix + ".norm_q.weight"), c.eps);
  at::Tensor key =
      at::rms_norm(linear(p, prefix + ".to_k", kv_input), {inner}, param(p, prefix + ".norm_k.weight"), c.eps);
  at::Tensor value = linear(p, prefix + ".to_v", kv_input);

  query = query.unflatten(2, {c.num_attention_heads, -1});  // [B, L, heads, head_dim]
  key = key.unflatten(2, {c.num_attention_heads, -1});
  value = value.unflatten(2, {c.num_attention_heads, -1});
  if (rope != nullptr) {
    query = apply_rotary_emb(query, *rope);
    key = apply_rotary_emb(key, *rope);
  }
  // SDPA takes [B, heads, L, head_dim]. Pitfall 4: no mask — the zero-padded text rows are
  // attended to, as in the reference.
  at::Tensor out = at::scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2));
  out = out.transpose(1, 2).flatten(2, 3).to(query.scalar_type());
  // to_out.1 is a Dropout placeholder (pitfall 7): only to_out.0 has parameters.
  return linear(p, prefix + ".to_out.0", out);
}

// --- WanTimeTextImageEmbedding -------------------------------------------------------------

// get_timestep_embedding(flip_sin_to_cos=True, downscale_freq_shift=0): [N] -> [N, dim] float32,
// cos half first.
at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim) {
  const int64_t half = dim / 2;
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(t.device());
  const at::Tensor exponent = -std::log(10000.0) * at::arange(half, f32) / static_cast<double>(half);
  const at::Tensor args = t.to(at::kFloat).unsqueeze(1) * at::exp(exponent).unsqueeze(0);
  at::Tensor emb = at::cat({at::cos(args), at::sin(args)}, -1);
  if (dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1});
  return emb;
}

struct Conditions {
  at::Tensor temb;            // [B, dim] or [B, S, dim], model dtype
  at::Tensor timestep_proj;   // [B, 6, dim] or [B, S, 6, dim], model dtype
  at::Tensor context;         // [B, L_text, dim]
};

// `timestep` is [B] or [B, S] (per-token, Wan2.2-TI2V); `context` already in the model dtype.
Conditions condition_embedder(const Params& p, const TransformerConfig& c, const at::Tensor& timestep,
                              const at::Tensor& context) {
  const std::string pre = "condition_embedder.";
  at::Tensor t = timestep_embedding(timestep.flatten(), c.freq_dim);
  if (timestep.dim() == 2) t = t.unflatten(0, {timestep.size(0), timestep.size(1)});
  // time_embedder is kept in float32 (_keep_in_fp32_modules), so t stays float32 into it;
  // temb is then cast to the text's dtype (type_as(encoder_hidden_states)).
  const at::Tensor& w1 = param(p, pre + "time_embedder.linear_1.weight");
  at::Tensor temb = linear(p, pre + "time_embedder.linear_1", t.to(w1.scalar_type()));
  temb = linear(p, pre + "time_embedder.linear_2", at::silu(temb)).to(context.scalar_type());
  const int64_t dim = temb.size(-1);
  at::Tensor timestep_proj = linear(p, pre + "time_proj", at::silu(temb));
  timestep_proj = timestep_proj.unflatten(-1, {6, dim});
  // PixArtAlphaTextProjection with gelu tanh. Pitfall 4: padded rows go through it too (bias).
  at::Tensor text = linear(p, pre + "text_embedder.linear_1", context);
  text = linear(p, pre + "text_embedder.linear_2", at::gelu(text, "tanh"));
  return {temb, timestep_proj, text};
}

// --- WanTransformerBlock -------------------------------------------------------------------

at::Tensor transformer_block(const Params& p, const std::string& prefix, const TransformerConfig& c, at::Tensor x,
                             const at::Tensor& context, const at::Tensor& timestep_proj, const Rope& rope) {
  // Pitfall 3: order shift, scale, gate (self-attention), then c_shift, c_scale, c_gate (FFN).
  const auto m = modulation(param(p, prefix + ".scale_shift_table"), timestep_proj, 6);
  const at::Tensor &shift_msa = m[0], &scale_msa = m[1], &gate_msa = m[2];
  const at::Tensor &c_shift_msa = m[3], &c_scale_msa = m[4], &c_gate_msa = m[5];
  const at::Tensor none;

  // 1. Self-attention: norm1 has no affine; norm(x) * (1 + scale) + shift in float32, then the
  // gated residual added in float32 and rounded to the stream's dtype.
  at::Tensor norm_x = (fp32_layer_norm(x, none, none, c.eps) * (1 + scale_msa) + shift_msa).to(x.scalar_type());
  at::Tensor out = attention(p, prefix + ".attn1", c, norm_x, none, &rope);
  x = (x.to(at::kFloat) + out * gate_msa).to(x.scalar_type());

  // 2. Cross-attention: norm2 is the affine FP32LayerNorm (Identity without cross_attn_norm);
  // this residual is NOT done in float32 — the reference adds in the stream's dtype.
  norm_x = c.cross_attn_norm
               ? fp32_layer_norm(x, param(p, prefix + ".norm2.weight"), param(p, prefix + ".norm2.bias"), c.eps)
                     .to(x.scalar_type())
               : x;
  x = x + attention(p, prefix + ".attn2", c, norm_x, context, nullptr);

  // 3. Feed-forward: norm3 without affine, modulated; FeedForward = net.0.proj, gelu tanh,
  // net.1 Dropout placeholder (pitfall 7), net.2; gated residual in float32.
  norm_x = (fp32_layer_norm(x, none, none, c.eps) * (1 + c_scale_msa) + c_shift_msa).to(x.scalar_type());
  out = linear(p, prefix + ".ffn.net.2", at::gelu(linear(p, prefix + ".ffn.net.0.proj", norm_x), "tanh"));
  return (x.to(at::kFloat) + out.to(at::kFloat) * c_gate_msa).to(x.scalar_type());
}

// A patch embedding (`name`: patch_embedding or vace_patch_embedding): Conv3d with stride =
// kernel = patch, then [B, tokens, dim].
at::Tensor patch_embed(const Params& p, const TransformerConfig& c, const std::string& name, const at::Tensor& input) {
  const auto& ps = c.patch_size;
  const at::Tensor x = at::conv3d(input, param(p, name + ".weight"), param(p, name + ".bias"), {ps[0], ps[1], ps[2]});
  return x.flatten(2).transpose(1, 2).contiguous();
}

// WanVACETransformer3DModel's control branch: the context patch-embedded, the first VACE block
// adding its proj_in to the embedded stream `x`, each block's proj_out kept as the hint for its
// layer. Every VACE block sees the stream before the main blocks, as in the reference.
std::vector<at::Tensor> vace_hints(const Params& p, const TransformerConfig& c, const at::Tensor& x,
                                   const at::Tensor& control, const Conditions& cond, const Rope& rope) {
  at::Tensor h = patch_embed(p, c, "vace_patch_embedding", control);
  std::vector<at::Tensor> hints;
  for (size_t i = 0; i < c.vace_layers.size(); ++i) {
    const std::string prefix = "vace_blocks." + std::to_string(i);
    if (i == 0) h = linear(p, prefix + ".proj_in", h) + x;
    h = transformer_block(p, prefix, c, std::move(h), cond.context, cond.timestep_proj, rope);
    hints.push_back(linear(p, prefix + ".proj_out", h));
  }
  return hints;
}

// --- parameters ------------------------------------------------------------------------------

int64_t inner_dim(const TransformerConfig& c) { return c.num_attention_heads * c.attention_head_dim; }

// Every parameter of WanTransformer3DModel (text-to-video) with its shape, by diffusers name.
std::vector<std::pair<std::string, std::vector<int64_t>>> expected_parameters(const TransformerConfig& c) {
  const int64_t dim = inner_dim(c);
  const auto& ps = c.patch_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  auto lin = [&](const std::string& name, int64_t in, int64_t o) {
    out.push_back({name + ".weight", {o, in}});
    out.push_back({name + ".bias", {o}});
  };
  out.push_back({"patch_embedding.weight", {dim, c.in_channels, ps[0], ps[1], ps[2]}});
  out.push_back({"patch_embedding.bias", {dim}});
  lin("condition_embedder.time_embedder.linear_1", c.freq_dim, dim);
  lin("condition_embedder.time_embedder.linear_2", dim, dim);
  lin("condition_embedder.time_proj", dim, 6 * dim);
  lin("condition_embedder.text_embedder.linear_1", c.text_dim, dim);
  lin("condition_embedder.text_embedder.linear_2", dim, dim);
  // A WanTransformerBlock (WanVACETransformerBlock has the same parameters, plus its projections).
  auto block = [&](const std::string& b) {
    out.push_back({b + "scale_shift_table", {1, 6, dim}});
    for (const char* attn : {"attn1", "attn2"}) {
      for (const char* proj : {".to_q", ".to_k", ".to_v", ".to_out.0"}) lin(b + attn + proj, dim, dim);
      out.push_back({b + attn + ".norm_q.weight", {dim}});
      out.push_back({b + attn + ".norm_k.weight", {dim}});
    }
    if (c.cross_attn_norm) {
      out.push_back({b + "norm2.weight", {dim}});
      out.push_back({b + "norm2.bias", {dim}});
    }
    lin(b + "ffn.net.0.proj", dim, c.ffn_dim);
    lin(b + "ffn.net.2", c.ffn_dim, dim);
  };
  for (int64_t i = 0; i < c.num_layers; ++i) block("blocks." + std::to_string(i) + ".");
  if (!c.vace_layers.empty()) {
    out.push_back({"vace_patch_embedding.weight", {dim, c.vace_in_channels, ps[0], ps[1], ps[2]}});
    out.push_back({"vace_patch_embedding.bias", {dim}});
  }
  for (size_t i = 0; i < c.vace_layers.size(); ++i) {
    const std::string b = "vace_blocks." + std::to_string(i) + ".";
    if (i == 0) lin(b + "proj_in", dim, dim);  // only the first VACE block takes the stream in
    block(b);
    lin(b + "proj_out", dim, dim);
  }
  lin("proj_out", dim, c.out_channels * ps[0] * ps[1] * ps[2]);
  out.push_back({"scale_shift_table", {1, 2, dim}});
  return out;
}

// diffusers' _keep_in_fp32_modules ("time_embedder", "scale_shift_table", "norm1", "norm2",
// "norm3"; matched against the dotted name's components): these stay float32 whatever dtype
// the model is loaded in, which is what makes the modulation and the time embedding fp32.
bool keep_in_fp32(const std::string& name) {
  static const std::set<std::string> modules{"time_embedder", "scale_shift_table", "norm1", "norm2", "norm3"};
  std::stringstream ss(name);
  for (std::string part; std::getline(ss, part, '.');)
    if (modules.count(part)) return true;
  return false;
}

void validate(const TransformerConfig& c) {
  auto positive = [](int64_t v, const char* key) {
    check_arg(v > 0, std::string("wan transformer config: '") + key + "' must be positive, got " + std::to_string(v));
  };
  for (int64_t p : c.patch_size) positive(p, "patch_size");
  positive(c.num_attention_heads, "num_attention_heads");
  positive(c.attention_head_dim, "attention_head_dim");
  positive(c.in_channels, "in_channels");
  positive(c.out_channels, "out_channels");
  positive(c.text_dim, "text_dim");
  positive(c.freq_dim, "freq_dim");
  positive(c.ffn_dim, "ffn_dim");
  check_arg(c.num_layers >= 0, "wan transformer config: 'num_layers' must be >= 0, got " + std::to_string(c.num_layers));
  positive(c.rope_max_seq_len, "rope_max_seq_len");
  // RoPE rotates pairs: the t part (d - 4 (d / 6)) must be even, i.e. d even.
  check_arg(c.attention_head_dim % 2 == 0,
            "wan transformer config: 'attention_head_dim' must be even for the rotary embedding, got " +
                std::to_string(c.attention_head_dim));
  check_arg(c.eps > 0 && std::isfinite(c.eps), "wan transformer config: 'eps' must be positive and finite");
  if (c.vace_layers.empty()) return;
  // diffusers requires layer 0 and layers below num_layers; hints are added in block order, so
  // the list is taken strictly increasing (an unsorted list would be a different model there).
  std::string layers;
  for (int64_t l : c.vace_layers) layers += (layers.empty() ? "" : ", ") + std::to_string(l);
  check_arg(c.vace_layers.front() == 0, "wan transformer config: 'vace_layers' must start at layer 0, got [" + layers + "]");
  for (size_t i = 1; i < c.vace_layers.size(); ++i)
    check_arg(c.vace_layers[i] > c.vace_layers[i - 1],
              "wan transformer config: 'vace_layers' must be strictly increasing, got [" + layers + "]");
  check_arg(c.vace_layers.back() < c.num_layers, "wan transformer config: 'vace_layers' [" + layers +
                                                     "] exceed the " + std::to_string(c.num_layers) + " layers");
  positive(c.vace_in_channels, "vace_in_channels");
}

}  // namespace

// --- config.json ---------------------------------------------------------------------------

TransformerConfig TransformerConfig::from_json(const std::string& json_text) {
  using nlohmann::json;
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::parse, std::string("wan transformer config: invalid JSON: ") + e.what());
  }
  check(j.is_object(), ErrorCode::parse, "wan transformer config: expected a JSON object");
  TransformerConfig c;
  auto bad = [](const std::string& key, const json& v, const char* what) {
    return Error(ErrorCode::parse, "wan transformer config: '" + key + "' must be " + what + ", got " + v.dump());
  };
  auto get_int = [&](const char* key, int64_t& out) {
    if (!j.contains(key)) return;
    const json& v = j[key];
    if (!v.is_number_integer()) throw bad(key, v, "an integer");
    out = v.get<int64_t>();
  };
  if (j.contains("patch_size")) {
    const json& v = j["patch_size"];
    if (!v.is_array() || v.size() != 3) throw bad("patch_size", v, "a list of 3 integers");
    for (size_t i = 0; i < 3; ++i) {
      if (!v[i].is_number_integer()) throw bad("patch_size", v, "a list of 3 integers");
      c.patch_size[i] = v[i].get<int64_t>();
    }
  }
  get_int("num_attention_heads", c.num_attention_heads);
  get_int("attention_head_dim", c.attention_head_dim);
  get_int("in_channels", c.in_channels);
  // diffusers: out_channels = out_channels or in_channels (null and 0 mean "as in_channels")
  if (j.contains("out_channels")) {
    if (j["out_channels"].is_null()) c.out_channels = 0;
    else get_int("out_channels", c.out_channels);
    if (c.out_channels == 0) c.out_channels = c.in_channels;
  }
  get_int("text_dim", c.text_dim);
  get_int("freq_dim", c.freq_dim);
  get_int("ffn_dim", c.ffn_dim);
  get_int("num_layers", c.num_layers);
  get_int("rope_max_seq_len", c.rope_max_seq_len);
  if (j.contains("vace_layers")) {
    const json& v = j["vace_layers"];
    if (!v.is_array() || v.empty()) throw bad("vace_layers", v, "a non-empty list of integers");
    for (const json& l : v) {
      if (!l.is_number_integer()) throw bad("vace_layers", v, "a non-empty list of integers");
      c.vace_layers.push_back(l.get<int64_t>());
    }
    get_int("vace_in_channels", c.vace_in_channels);
  }
  if (j.contains("cross_attn_norm")) {
    if (!j["cross_attn_norm"].is_boolean()) throw bad("cross_attn_norm", j["cross_attn_norm"], "a boolean");
    c.cross_attn_norm = j["cross_attn_norm"].get<bool>();
  }
  if (j.contains("qk_norm")) {
    // diffusers' WanTransformerBlock ignores the value: the blocks always have RMS qk-norms
    // across heads, so any string (or null) loads the same parameters.
    const json& v = j["qk_norm"];
    if (!v.is_null() && !v.is_string()) throw bad("qk_norm", v, "a string or null");
    c.qk_norm = v.is_string() ? v.get<std::string>() : std::string();
  }
  if (j.contains("eps")) {
    if (!j["eps"].is_number()) throw bad("eps", j["eps"], "a number");
    c.eps = j["eps"].get<double>();
  }
  for (const char* key : {"image_dim", "added_kv_proj_dim"})
    check(!j.contains(key) || j[key].is_null(), ErrorCode::unsupported,
          std::string("wan transformer config: '") + key + "' = " + j[key].dump() +
              " (image-to-video) is not supported; only text-to-video models load");
  try {
    validate(c);
  } catch (const Error& e) {
    throw Error(ErrorCode::parse, e.what());
  }
  return c;
}

// --- original / ComfyUI keys -----------------------------------------------------------------

std::string diffusers_key(const std::string& key) {
  // The renames of diffusers' convert_wan_transformer_to_diffusers (single_file_utils.py), in
  // its order, each replacing every occurrence. Pitfall 7: the original layout calls the
  // cross-attention's affine norm "norm3" and diffusers "norm2". The reference swaps
  // norm2 <-> norm3 through a placeholder; only norm3 -> norm2 is kept here, because the
  // original's norm2 has no parameters (so that half never fires on a real original file)
  // while diffusers' norm2 does: leaving it out makes diffusers keys fixed points.
  static const std::pair<const char*, const char*> renames[] = {
      {"model.diffusion_model.", ""},
      {"time_embedding.0", "condition_embedder.time_embedder.linear_1"},
      {"time_embedding.2", "condition_embedder.time_embedder.linear_2"},
      {"text_embedding.0", "condition_embedder.text_embedder.linear_1"},
      {"text_embedding.2", "condition_embedder.text_embedder.linear_2"},
      {"time_projection.1", "condition_embedder.time_proj"},
      {"cross_attn", "attn2"},
      {"self_attn", "attn1"},
      {".o.", ".to_out.0."},
      {".q.", ".to_q."},
      {".k.", ".to_k."},
      {".v.", ".to_v."},
      {".k_img.", ".add_k_proj."},
      {".v_img.", ".add_v_proj."},
      {".norm_k_img.", ".norm_added_k."},
      {"head.modulation", "scale_shift_table"},
      {"head.head", "proj_out"},
      {"modulation", "scale_shift_table"},
      {"ffn.0", "ffn.net.0.proj"},
      {"ffn.2", "ffn.net.2"},
      {"norm3", "norm2"},
      // image-to-video names (not loadable yet: they end up as "unexpected keys" with their
      // diffusers names) and VACE's
      {"img_emb.proj.0", "condition_embedder.image_embedder.norm1"},
      {"img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"},
      {"img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"},
      {"img_emb.proj.4", "condition_embedder.image_embedder.norm2"},
      {"before_proj", "proj_in"},
      {"after_proj", "proj_out"},
  };
  std::string k = key;
  for (const auto& [from, to] : renames) {
    const std::string f(from), t(to);
    for (size_t pos = k.find(f); pos != std::string::npos; pos = k.find(f, pos + t.size())) k.replace(pos, f.size(), t);
  }
  return k;
}

// --- loading -------------------------------------------------------------------------------

Transformer::Transformer(TransformerConfig config, const Checkpoint& weights, at::ScalarType dtype, c10::Device device)
    : config_(std::move(config)) {
  validate(config_);
  check_arg(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf || dtype == at::kDouble,
            std::string("wan transformer: dtype must be a floating type (float32, bfloat16, float16, float64), got ") +
                c10::toString(dtype));

  // Checkpoint name -> diffusers name (the original/ComfyUI layout is renamed on the fly).
  std::map<std::string, std::string> source;  // diffusers name -> checkpoint name
  bool original = false;                      // some key was renamed: name missing ones the same way
  std::string prefix;
  for (const std::string& name : weights.names()) {
    // diffusers' _keys_to_ignore_on_load_unexpected: some exports carry an unused norm_added_q.
    if (name.find("norm_added_q") != std::string::npos) continue;
    // ComfyUI's fp8 scales and markers are read with their weights (detail::read_weight).
    if (detail::is_quantization_key(name)) continue;
    const std::string d = diffusers_key(name);
    original = original || d != name;
    if (name.rfind("model.diffusion_model.", 0) == 0) prefix = "model.diffusion_model.";
    const auto [it, inserted] = source.emplace(d, name);
    check_arg(inserted, "wan transformer checkpoint: '" + name + "' and '" + it->second + "' both map to '" + d + "'");
  }

  const auto expected = expected_parameters(config_);
  size_t missing = 0;
  std::string first_missing;
  for (const auto& [name, shape] : expected) {
    const auto it = source.find(name);
    if (it == source.end()) {
      if (missing++ == 0)
        first_missing = "'" + name + "'" +
                        (original ? " ('" + prefix + detail::original_transformer_key(name) + "' in the original layout)"
                                  : std::string()) +
                        " (expected shape " + shape_str(shape) + ")";
      continue;
    }
    const SafetensorsEntry& e = weights.entry(it->second);
    check_arg(e.shape == shape, "wan transformer checkpoint: '" + it->second + "' has shape " + shape_str(e.shape) +
                                    ", expected " + shape_str(shape) + " for this config");
    check_arg(detail::is_weight_dtype(e.dtype), "wan transformer checkpoint: '" + it->second + "' is stored as " +
                                                    e.dtype + ", expected a floating point type (" +
                                                    detail::weight_dtypes() + ")");
  }
  if (missing > 0)
    throw Error(ErrorCode::not_found, "wan transformer checkpoint: missing " + first_missing +
                                          (missing > 1 ? " and " + std::to_string(missing - 1) + " more" : "") +
                                          "; does the config (num_layers, cross_attn_norm) match the weights?");
  if (source.size() != expected.size()) {
    std::set<std::string> wanted;
    for (const auto& e : expected) wanted.insert(e.first);
    std::string extra;
    size_t count = 0;
    for (const auto& [d, name] : source) {
      if (wanted.count(d)) continue;
      if (count++ < 5) extra += (extra.empty() ? "'" : ", '") + name + "'";
    }
    throw Error(ErrorCode::invalid_argument, "wan transformer checkpoint: " + std::to_string(count) +
                                                 " unexpected key(s) for this config: " + extra +
                                                 (count > 5 ? ", ..." : "") +
                                                 " (a larger num_layers, or an image-to-video model?)");
  }

  // On the CPU in the stored dtype the tensors stay views on the copy-on-write mapping (no copy).
  for (const auto& [name, shape] : expected) {
    const at::ScalarType t = keep_in_fp32(name) ? at::kFloat : dtype;
    params_.emplace(name, detail::read_weight(weights, source.at(name), t).to(device));
  }
}

Transformer Transformer::load(const std::string& directory, at::ScalarType dtype, c10::Device device) {
  namespace fs = std::filesystem;
  // A single file (ComfyUI, the Wan repository): the config comes from the shapes.
  if (fs::is_regular_file(directory)) return load_transformer_file(directory, dtype, device);
  const fs::path config_path = fs::path(directory) / "config.json";
  check(fs::is_regular_file(config_path), ErrorCode::file_not_found,
        "wan transformer: no config.json in '" + directory + "'");
  std::ifstream in(config_path);
  check(in.good(), ErrorCode::io, "wan transformer: cannot read '" + config_path.string() + "'");
  std::stringstream text;
  text << in.rdbuf();
  TransformerConfig config;
  // The Wan repository's own config.json (WanModel: dim, num_heads, in_dim, ...) describes
  // weights in the original layout: the shapes give the config, its num_heads the head width.
  std::string original_heads;
  try {
    const nlohmann::json j = nlohmann::json::parse(text.str());
    if (j.is_object() && j.contains("num_heads") && j.contains("dim") && !j.contains("num_attention_heads"))
      original_heads = nlohmann::json{{"num_attention_heads", j["num_heads"]}}.dump();
  } catch (const nlohmann::json::exception&) {
    // from_json reports it below
  }
  if (original_heads.empty()) {
    try {
      config = TransformerConfig::from_json(text.str());
    } catch (const Error& e) {
      throw Error(e.code(), config_path.string() + ": " + e.what());
    }
  }
  const Checkpoint weights = Checkpoint::open(directory);
  try {
    if (!original_heads.empty()) config = infer_transformer_config(weights, original_heads);
    return Transformer(std::move(config), weights, dtype, device);
  } catch (const Error& e) {
    throw Error(e.code(), std::string(e.what()) + " (in '" + directory + "')");
  }
}

// --- forward -------------------------------------------------------------------------------

at::Tensor Transformer::forward(const at::Tensor& hidden_states, const at::Tensor& timestep, const at::Tensor& context,
                                const at::Tensor& control, double control_scale) const {
  const TransformerConfig& c = config_;
  const at::Tensor& patch_w = param(params_, "patch_embedding.weight");
  const at::ScalarType dtype = patch_w.scalar_type();
  const c10::Device device = patch_w.device();

  check_arg(hidden_states.defined() && hidden_states.dim() == 5,
            "wan transformer: hidden_states must be [B, C, F, H, W], got " +
                (hidden_states.defined() ? shape_str(hidden_states.sizes()) : std::string("(none)")));
  check_arg(at::isFloatingType(hidden_states.scalar_type()), "wan transformer: hidden_states must be floating point");
  const int64_t B = hidden_states.size(0), C = hidden_states.size(1);
  check_arg(C == c.in_channels, "wan transformer: hidden_states has " + std::to_string(C) +
                                    " channels, the model takes in_channels = " + std::to_string(c.in_channels));
  const auto& ps = c.patch_size;
  std::array<int64_t, 3> grid{};  // post-patch F, H, W
  const char* axis_names[3] = {"frames (F)", "height (H)", "width (W)"};
  for (int i = 0; i < 3; ++i) {
    const int64_t n = hidden_states.size(2 + i);
    check_arg(n > 0 && n % ps[i] == 0, std::string("wan transformer: hidden_states ") + axis_names[i] + " = " +
                                           std::to_string(n) + " is not a positive multiple of the patch size " +
                                           std::to_string(ps[i]));
    grid[i] = n / ps[i];
    // Pitfall 2: the reference slices a rope_max_seq_len-row table per axis.
    check_arg(grid[i] <= c.rope_max_seq_len, std::string("wan transformer: hidden_states ") + axis_names[i] +
                                                 " gives " + std::to_string(grid[i]) +
                                                 " patches, more than rope_max_seq_len = " +
                                                 std::to_string(c.rope_max_seq_len));
  }
  const int64_t tokens = grid[0] * grid[1] * grid[2];
  check_arg(timestep.defined() && ((timestep.dim() == 1 && timestep.size(0) == B) ||
                                   (timestep.dim() == 2 && timestep.size(0) == B && timestep.size(1) == tokens)),
            "wan transformer: timestep must be [B] = [" + std::to_string(B) + "] or per-token [B, tokens] = [" +
                std::to_string(B) + ", " + std::to_string(tokens) + "], got " +
                (timestep.defined() ? shape_str(timestep.sizes()) : std::string("(none)")));
  check_arg(context.defined() && context.dim() == 3 && context.size(0) == B && context.size(1) > 0 &&
                context.size(2) == c.text_dim,
            "wan transformer: context must be [B, L, text_dim] = [" + std::to_string(B) + ", L>0, " +
                std::to_string(c.text_dim) + "], got " +
                (context.defined() ? shape_str(context.sizes()) : std::string("(none)")));
  check_arg(at::isFloatingType(context.scalar_type()), "wan transformer: context must be floating point");
  if (control.defined()) {
    check_arg(!c.vace_layers.empty(), "wan transformer: a control context was given, but the model has no VACE blocks "
                                      "(a channel-concatenation control model takes it in hidden_states' channels)");
    const std::vector<int64_t> want{B, c.vace_in_channels, hidden_states.size(2), hidden_states.size(3),
                                    hidden_states.size(4)};
    check_arg(control.sizes() == at::IntArrayRef(want) && at::isFloatingType(control.scalar_type()),
              "wan transformer: control must be floating point [B, vace_in_channels, F, H, W] = " + shape_str(want) +
                  ", got " + shape_str(control.sizes()));
    check_arg(std::isfinite(control_scale), "wan transformer: control_scale must be finite");
  }

  c10::NoGradGuard no_grad;
  const at::Tensor x_in = hidden_states.to(device, dtype);
  const at::Tensor t_in = timestep.to(device);
  const at::Tensor ctx_in = context.to(device, dtype);

  const Rope rope = rotary_pos_embed(c, grid[0], grid[1], grid[2], device);

  at::Tensor x = patch_embed(params_, c, "patch_embedding", x_in);

  const Conditions cond = condition_embedder(params_, c, t_in, ctx_in);
  const std::vector<at::Tensor> hints =
      control.defined() ? vace_hints(params_, c, x, control.to(device, dtype), cond, rope) : std::vector<at::Tensor>{};
  size_t next_hint = 0;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    x = transformer_block(params_, "blocks." + std::to_string(i), c, std::move(x), cond.context, cond.timestep_proj,
                          rope);
    if (next_hint < hints.size() && c.vace_layers[next_hint] == i) x = x + hints[next_hint++] * control_scale;
  }

  // Output head: its own (1, 2, dim) table plus temb (pitfall 3), shift then scale; norm_out has
  // no affine.
  const auto m = modulation(param(params_, "scale_shift_table"), cond.temb.unsqueeze(-2), 2);
  const at::Tensor &shift = m[0], &scale = m[1];
  x = (fp32_layer_norm(x, {}, {}, c.eps) * (1 + scale) + shift).to(x.scalar_type());
  x = linear(params_, "proj_out", x);  // [B, tokens, p_t p_h p_w C_out]

  // Unpatchify: [B, F', H', W', p_t, p_h, p_w, C] -> [B, C, F' p_t, H' p_h, W' p_w].
  x = x.reshape({B, grid[0], grid[1], grid[2], ps[0], ps[1], ps[2], -1}).permute({0, 7, 1, 4, 2, 5, 3, 6});
  x = x.reshape({B, c.out_channels, grid[0] * ps[0], grid[1] * ps[1], grid[2] * ps[2]});
  return x.to(hidden_states.options());
}

}  // namespace drb::models::wan
