// AOVs -> tensor [F, C, H, W]: the one place where the renderer meets torch.
//
// Resizing (only when the requested size differs from the render):
//   - images (N, A, R G B, dust): area interpolation (adaptive average pooling, as
//     F.interpolate(mode="area")) along an axis that shrinks, bilinear (align_corners=false)
//     along an axis that grows; the two axes are resized one after the other.
//   - id and occlusion: nearest (the pixel-centre "nearest-exact" rule), so ids stay ids and
//     occlusion stays 0/1.
//   - flow (forward/backward u, v): resized like images, then u is scaled by new_width /
//     old_width and v by new_height / old_height, so vectors stay in pixels of the new size.
//   - depth (Z): +inf marks empty pixels, and a plain average would turn every block that
//     touches the background into +inf (and bilinear weights of 0 times inf into NaN). Depth is
//     therefore resized by normalized interpolation over the finite samples: the same area or
//     bilinear weights, renormalized over the samples with a finite depth. A pixel with at
//     least one finite sample gets their weighted mean; a pixel with none stays +inf. (Any
//     non-finite depth counts as empty here.) Without a resize, values are copied as they are.
#include <ATen/ATen.h>

#include <array>
#include <limits>
#include <string>
#include <vector>

#include "derrumbe/core/error.hpp"
#include "derrumbe/render/tensor.hpp"

namespace drb::render {
namespace {

enum class Buffer { depth, piece_id, normal, alpha, rgb, dust, flow_forward, flow_backward, occlusion };
enum class Resize { smooth, nearest, depth };
enum class FlowAxis { none, u, v };

struct ChannelSpec {
  const char* name;
  Buffer buffer;
  int component;  // index along the last axis of a [H, W, K] buffer
  Resize resize;
  FlowAxis flow;
};

// Same names and order as aov_channel_names().
constexpr std::array<ChannelSpec, 15> kChannels{{
    {"Z", Buffer::depth, 0, Resize::depth, FlowAxis::none},
    {"id", Buffer::piece_id, 0, Resize::nearest, FlowAxis::none},
    {"N.x", Buffer::normal, 0, Resize::smooth, FlowAxis::none},
    {"N.y", Buffer::normal, 1, Resize::smooth, FlowAxis::none},
    {"N.z", Buffer::normal, 2, Resize::smooth, FlowAxis::none},
    {"A", Buffer::alpha, 0, Resize::smooth, FlowAxis::none},
    {"R", Buffer::rgb, 0, Resize::smooth, FlowAxis::none},
    {"G", Buffer::rgb, 1, Resize::smooth, FlowAxis::none},
    {"B", Buffer::rgb, 2, Resize::smooth, FlowAxis::none},
    {"dust", Buffer::dust, 0, Resize::smooth, FlowAxis::none},
    {"forward.u", Buffer::flow_forward, 0, Resize::smooth, FlowAxis::u},
    {"forward.v", Buffer::flow_forward, 1, Resize::smooth, FlowAxis::v},
    {"backward.u", Buffer::flow_backward, 0, Resize::smooth, FlowAxis::u},
    {"backward.v", Buffer::flow_backward, 1, Resize::smooth, FlowAxis::v},
    {"occlusion", Buffer::occlusion, 0, Resize::nearest, FlowAxis::none},
}};

constexpr int kMaxSide = 16384;

std::string known_names() {
  std::string out;
  for (const ChannelSpec& c : kChannels) {
    if (!out.empty()) out += ", ";
    out += c.name;
  }
  return out;
}

const ChannelSpec& find_channel(const std::string& name) {
  for (const ChannelSpec& c : kChannels)
    if (name == c.name) return c;
  throw Error(ErrorCode::invalid_argument, "aovs_to_tensor: unknown channel '" + name + "'; known: " + known_names());
}

const char* buffer_name(Buffer b) {
  switch (b) {
    case Buffer::depth: return "depth";
    case Buffer::piece_id: return "piece_id";
    case Buffer::normal: return "normal";
    case Buffer::alpha: return "alpha";
    case Buffer::rgb: return "rgb";
    case Buffer::dust: return "dust";
    case Buffer::flow_forward: return "flow_forward";
    case Buffer::flow_backward: return "flow_backward";
    case Buffer::occlusion: return "occlusion";
  }
  return "?";
}

template <class A>
std::string shape_string(const A& a) {
  std::string s = "[";
  for (size_t i = 0; i < a.shape().size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(a.shape()[i]);
  }
  return s + "]";
}

// Checks that a frame's buffer has shape [H, W] or [H, W, K] and returns (data, pixel stride).
template <class T, size_t N>
std::pair<const T*, size_t> plane(const xt::xtensor<T, N>& a, size_t K, const AOVs& frame, Buffer b, size_t index) {
  bool ok = a.shape()[0] == size_t(frame.height) && a.shape()[1] == size_t(frame.width);
  if constexpr (N == 3) ok = ok && a.shape()[2] == K;
  check_arg(ok, "aovs_to_tensor: frame " + std::to_string(index) + ": AOV '" + buffer_name(b) + "' has shape " +
                    shape_string(a) + ", expected [" + std::to_string(frame.height) + ", " +
                    std::to_string(frame.width) + (N == 3 ? ", " + std::to_string(K) : std::string()) + "]");
  return {a.data(), N == 3 ? K : 1};
}

// Copies one channel of one frame into dst (H * W floats, row-major).
void copy_channel(const AOVs& frame, const ChannelSpec& c, size_t index, float* dst) {
  const size_t n = size_t(frame.width) * size_t(frame.height);
  auto copy_float = [&](std::pair<const float*, size_t> p) {
    const float* src = p.first + c.component;
    for (size_t i = 0; i < n; ++i) dst[i] = src[i * p.second];
  };
  switch (c.buffer) {
    case Buffer::depth: return copy_float(plane(frame.depth, 1, frame, c.buffer, index));
    case Buffer::piece_id: {
      const int32_t* ids = plane(frame.piece_id, 1, frame, c.buffer, index).first;
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(ids[i]);
      return;
    }
    case Buffer::normal: return copy_float(plane(frame.normal, 3, frame, c.buffer, index));
    case Buffer::alpha: return copy_float(plane(frame.alpha, 1, frame, c.buffer, index));
    case Buffer::rgb: return copy_float(plane(frame.rgb, 3, frame, c.buffer, index));
    case Buffer::dust: return copy_float(plane(frame.dust, 1, frame, c.buffer, index));
    case Buffer::flow_forward: return copy_float(plane(frame.flow_forward, 2, frame, c.buffer, index));
    case Buffer::flow_backward: return copy_float(plane(frame.flow_backward, 2, frame, c.buffer, index));
    case Buffer::occlusion: return copy_float(plane(frame.occlusion, 1, frame, c.buffer, index));
  }
}

// Area along a shrinking axis, bilinear along a growing one; x is [N, 1, H, W].
at::Tensor resize_smooth(at::Tensor x, int64_t height, int64_t width) {
  const int64_t h0 = x.size(2), w0 = x.size(3);
  if (height < h0) x = at::adaptive_avg_pool2d(x, {height, w0});
  if (height > h0) x = at::upsample_bilinear2d(x, {height, w0}, false, std::nullopt, std::nullopt);
  if (width < w0) x = at::adaptive_avg_pool2d(x, {height, width});
  if (width > w0) x = at::upsample_bilinear2d(x, {height, width}, false, std::nullopt, std::nullopt);
  return x;
}

at::Tensor resize(const at::Tensor& x, Resize mode, int64_t height, int64_t width) {
  switch (mode) {
    case Resize::smooth: return resize_smooth(x, height, width);
    case Resize::nearest: return at::_upsample_nearest_exact2d(x, {height, width}, std::nullopt, std::nullopt);
    case Resize::depth: {
      const at::Tensor finite = at::isfinite(x);
      const at::Tensor weight = resize_smooth(finite.to(at::kFloat), height, width);
      const at::Tensor sum = resize_smooth(at::where(finite, x, at::zeros_like(x)), height, width);
      return at::where(weight > 0, sum / weight, at::full_like(sum, std::numeric_limits<float>::infinity()));
    }
  }
  return x;
}

}  // namespace

at::Tensor aovs_to_tensor(const std::vector<AOVs>& frames, const std::vector<std::string>& channels, int height,
                          int width) {
  check_arg(!frames.empty(), "aovs_to_tensor: no frames");
  check_arg(!channels.empty(), "aovs_to_tensor: no channels; known: " + known_names());
  std::vector<const ChannelSpec*> specs;
  for (const std::string& name : channels) specs.push_back(&find_channel(name));
  check_arg(height >= 0 && height <= kMaxSide && width >= 0 && width <= kMaxSide,
            "aovs_to_tensor: size " + std::to_string(width) + "x" + std::to_string(height) +
                " is outside [0, " + std::to_string(kMaxSide) + "] (0 keeps the render's size)");

  const int W0 = frames[0].width, H0 = frames[0].height;
  check_arg(W0 > 0 && H0 > 0, "aovs_to_tensor: frame 0 has size " + std::to_string(W0) + "x" + std::to_string(H0) +
                                  ", expected a positive size");
  for (size_t f = 1; f < frames.size(); ++f)
    check_arg(frames[f].width == W0 && frames[f].height == H0,
              "aovs_to_tensor: frame " + std::to_string(f) + " has size " + std::to_string(frames[f].width) + "x" +
                  std::to_string(frames[f].height) + ", frame 0 has " + std::to_string(W0) + "x" +
                  std::to_string(H0) + "; all frames must have the same size");

  const int64_t F = int64_t(frames.size()), C = int64_t(specs.size());
  at::Tensor out = at::empty({F, C, H0, W0}, at::TensorOptions().dtype(at::kFloat));
  float* data = out.data_ptr<float>();
  const size_t plane_size = size_t(W0) * size_t(H0);
  for (size_t f = 0; f < frames.size(); ++f)
    for (size_t c = 0; c < specs.size(); ++c) copy_channel(frames[f], *specs[c], f, data + (f * specs.size() + c) * plane_size);

  const int64_t H1 = height > 0 ? height : H0, W1 = width > 0 ? width : W0;
  if (H1 == H0 && W1 == W0) return out;

  at::Tensor resized = at::empty({F, C, H1, W1}, out.options());
  for (int64_t c = 0; c < C; ++c) {
    const ChannelSpec& spec = *specs[size_t(c)];
    at::Tensor x = resize(out.narrow(1, c, 1).contiguous(), spec.resize, H1, W1);
    if (spec.flow == FlowAxis::u && W1 != W0) x = x * (double(W1) / double(W0));
    if (spec.flow == FlowAxis::v && H1 != H0) x = x * (double(H1) / double(H0));
    resized.narrow(1, c, 1).copy_(x);
  }
  return resized;
}

}  // namespace drb::render
