#include "derrumbe/guide/noise_warp.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "noise_warp_device.hpp"
#include "noise_warp_math.hpp"

namespace drb::guide {

using detail::WarpFrame;

namespace {

constexpr int64_t kMaxGridPixels = int64_t{1} << detail::kCopyBits;  // copy indices fit in 24 bits
// Weights halve on every split; clamping keeps long expansions from underflowing to 0.
using detail::kMaxWeight;
using detail::kMinWeight;
constexpr int64_t kChunkRows = 4;  // grid rows per parallel work item
constexpr int32_t kAhead = 32;     // prefetch distance of the targets pass, in pushes
constexpr int kBatchBlocks = 256;  // Philox blocks per Box-Muller batch

// body(begin, end) over [0, rows) in chunks of `chunk` rows handed out to the threads on
// demand. The work per row is uneven (fresh noise and copies cluster where the scene
// disoccludes or expands): at::parallel_for's even split left one core waiting. A row's
// result depends on the row only, never on the thread that computes it.
template <typename F>
void parallel_row_chunks(int64_t rows, int64_t chunk, const F& body) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), (rows + chunk - 1) / chunk);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t b = next.fetch_add(chunk); b < rows; b = next.fetch_add(chunk)) body(b, std::min(rows, b + chunk));
  });
}

// serial() on one thread while the others go through body's row chunks as above; that thread
// joins them when done (with one thread: serial() first).
template <typename S, typename F>
void parallel_row_chunks_beside(const S& serial, int64_t rows, int64_t chunk, const F& body) {
  std::atomic<bool> serial_taken{false};
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), 1 + (rows + chunk - 1) / chunk);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    if (!serial_taken.exchange(true)) serial();
    for (int64_t b = next.fetch_add(chunk); b < rows; b = next.fetch_add(chunk)) body(b, std::min(rows, b + chunk));
  });
}

// Box-Muller is most of the warp's arithmetic, so its batch loop (and the read-out) is also
// compiled for AVX2 and AVX-512, the variant picked at load time (GCC function
// multiversioning: the binary still runs on any x86-64). fp-contract=off: those instruction
// sets have FMA, and a fused a * b + c (rounded once instead of twice) would make the values
// depend on the CPU; without it every variant computes the same bits.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define DRB_WARP_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), optimize("fp-contract=off")))
#else
#define DRB_WARP_MULTIVERSION
#endif

// normal4_at(seed, stream, item, index[k]) to out[4 k ... 4 k + 3] for k < n <= kBatchBlocks:
// the Philox blocks first (independent, so they overlap), then Box-Muller over all 2 n pairs
// in one loop that the compiler vectorizes.
DRB_WARP_MULTIVERSION
void normal_blocks(uint64_t seed, uint32_t stream, uint32_t item, const uint64_t* index, int n, float* out) {
  uint32_t a[2 * kBatchBlocks], b[2 * kBatchBlocks];
  for (int k = 0; k < n; ++k) {
    const philox::U32x4 r = philox::philox4x32_10(
        philox::U32x4{{static_cast<uint32_t>(index[k]), static_cast<uint32_t>(index[k] >> 32), stream, item}},
        static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    for (int j = 0; j < 2; ++j) {
      a[2 * k + j] = r.v[2 * j];
      b[2 * k + j] = r.v[2 * j + 1];
    }
  }
#pragma omp simd
  for (int k = 0; k < 2 * n; ++k) detail::box_muller(a[k], b[k], out[2 * k], out[2 * k + 1]);
}

// Normal draws requested one Philox block at a time and computed in batches (normal_blocks).
// A block's values reach their destination when the batch is computed: when it is full, or
// at flush().
class NormalBatch {
 public:
  NormalBatch(uint64_t seed, uint32_t stream, uint32_t item) : seed_(seed), stream_(stream), item_(item) {}
  // The first `count` (<= 4) normals of block `index` to out.
  void add(uint64_t index, float* out, int64_t count) {
    index_[n_] = index;
    out_[n_] = out;
    count_[n_] = static_cast<int>(count);
    if (++n_ == kBatchBlocks) flush();
  }
  // The C normals of address base `index_of`: block g = index_of(g) gives channels 4 g ... 4 g + 3.
  template <typename IndexOf>
  void add_channels(int64_t channels, IndexOf index_of, float* out) {
    for (int64_t g = 0; 4 * g < channels; ++g) add(index_of(g), out + 4 * g, std::min<int64_t>(4, channels - 4 * g));
  }
  void flush() {
    normal_blocks(seed_, stream_, item_, index_, n_, values_);
    for (int k = 0; k < n_; ++k) {
      const float* v = values_ + 4 * k;
      float* o = out_[k];
      if (count_[k] == 4) {  // spelled out: a copy of run-time length is a memmove call
        o[0] = v[0];
        o[1] = v[1];
        o[2] = v[2];
        o[3] = v[3];
      } else {
        for (int j = 0; j < count_[k]; ++j) o[j] = v[j];
      }
    }
    n_ = 0;
  }

 private:
  uint64_t seed_;
  uint32_t stream_, item_;
  int n_ = 0;
  uint64_t index_[kBatchBlocks] = {};
  float* out_[kBatchBlocks];
  int count_[kBatchBlocks];
  float values_[4 * kBatchBlocks];
};

// to[0 .. n) = from[0 .. n), one pixel's channels. In blocks of 4 floats: a copy of run-time
// length is a memmove call, costly at 16 floats.
void copy_channels(const float* from, float* to, int64_t n) {
  int64_t c = 0;
  for (; c + 4 <= n; c += 4) {
    float block[4];
    std::memcpy(block, from + c, sizeof block);
    std::memcpy(to + c, block, sizeof block);
  }
  for (; c < n; ++c) to[c] = from[c];
}

// No NaN or inf among v[0 .. n) (an exponent of all ones); an integer loop that vectorizes.
bool all_finite(const float* v, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>((detail::float_bits(v[i]) & 0x7F800000u) == 0x7F800000u);
  return bad == 0;
}

// Items p < n with key(p) >= 0 grouped by key (keys < n): list[start[k] .. start[k + 1])
// holds the items of key k in increasing order (a serial counting sort: cheap, and the order
// makes every sum independent of the thread count). No allocation once the vectors have grown.
template <typename Key>
void group_by_key(int64_t n, const Key& key, std::vector<int32_t>& start, std::vector<int32_t>& list) {
  start.assign(static_cast<size_t>(n + 1), 0);
  for (int64_t p = 0; p < n; ++p)
    if (const int32_t k = key(p); k >= 0) ++start[k + 1];
  // start[k + 1] = first slot of k (the count before k), then, as k's items are placed, the
  // end of k = first slot of k + 1; start[0] = 0.
  int32_t sum = 0;
  for (int64_t k = 1; k <= n; ++k) {
    const int32_t count = start[k];
    start[k] = sum;
    sum += count;
  }
  list.resize(static_cast<size_t>(sum));
  for (int64_t p = 0; p < n; ++p)
    if (const int32_t k = key(p); k >= 0) list[start[k + 1]++] = static_cast<int32_t>(p);
}

// One stable pass of a radix sort: in[0 .. n) to out by the 12 bits from bit `shift`.
void radix_pass(const uint64_t* in, uint64_t* out, size_t n, int shift) {
  constexpr uint64_t kMask = 4095;
  int32_t start[kMask + 2] = {};
  for (size_t i = 0; i < n; ++i) ++start[((in[i] >> shift) & kMask) + 1];
  for (uint64_t b = 0; b <= kMask; ++b) start[b + 1] += start[b];
  for (size_t i = 0; i < n; ++i) out[start[(in[i] >> shift) & kMask]++] = in[i];
}

// The read-out of latent rows [ly0, ly1) into out [C, h, w]: per latent pixel, the sum of w z
// over its factor x factor block of the grid divided by sqrt(sum w^2). Swept grid row by grid
// row (contiguous reads); each block still sums in row-major order.
DRB_WARP_MULTIVERSION
void read_out(const float* z, const float* w, int64_t channels, int64_t factor, int64_t latent_h, int64_t latent_w,
              int64_t ly0, int64_t ly1, float* out) {
  const int64_t C = channels, k = factor, width = latent_w * factor, plane = latent_h * latent_w;
  std::vector<float> acc(static_cast<size_t>(latent_w * C)), w2(static_cast<size_t>(latent_w));
  for (int64_t ly = ly0; ly < ly1; ++ly) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    std::fill(w2.begin(), w2.end(), 0.0f);
    for (int64_t y = ly * k; y < (ly + 1) * k; ++y)
      for (int64_t lx = 0; lx < latent_w; ++lx) {
        float* a = acc.data() + lx * C;
        for (int64_t p = y * width + lx * k; p < y * width + (lx + 1) * k; ++p) {
          const float* zp = z + p * C;
          for (int64_t c = 0; c < C; ++c) a[c] += w[p] * zp[c];
          w2[lx] += w[p] * w[p];
        }
      }
    for (int64_t lx = 0; lx < latent_w; ++lx) {
      const float norm = 1.0f / std::sqrt(w2[lx]);
      const int64_t l = ly * latent_w + lx;
      for (int64_t c = 0; c < C; ++c) out[c * plane + l] = acc[lx * C + c] * norm;
    }
  }
}

// The flow on the CPU as float32; the push pass checks its values (it reads them all anyway).
at::Tensor checked_flow(const at::Tensor& flow, const char* name, int64_t height, int64_t width) {
  check_arg(flow.defined(), std::string("noise warp: ") + name + " flow is undefined");
  check_arg(flow.dim() == 3 && flow.size(0) == 2 && flow.size(1) == height && flow.size(2) == width,
            std::string("noise warp: ") + name + " flow must be [2, " + std::to_string(height) + ", " +
                std::to_string(width) + "] (the grid), got " + c10::str(flow.sizes()));
  check_arg(at::isFloatingType(flow.scalar_type()),
            std::string("noise warp: ") + name + " flow must be floating point, got " + c10::toString(flow.scalar_type()));
  return flow.to(at::kCPU, at::kFloat).contiguous();
}

}  // namespace

NoiseWarper::NoiseWarper(int64_t latent_height, int64_t latent_width, NoiseWarpOptions options)
    : opt_(options), latent_h_(latent_height), latent_w_(latent_width) {
  check_arg(opt_.channels >= 1 && opt_.channels <= 1024,
            "noise warp: channels must be in [1, 1024], got " + std::to_string(opt_.channels));
  check_arg(opt_.factor >= 1 && opt_.factor <= 32, "noise warp: factor must be in [1, 32], got " + std::to_string(opt_.factor));
  check_arg(latent_height >= 1 && latent_width >= 1, "noise warp: latent size must be positive, got " +
                                                          std::to_string(latent_height) + "x" + std::to_string(latent_width));
  check_arg(std::isfinite(opt_.degradation) && opt_.degradation >= 0 && opt_.degradation <= 1,
            "noise warp: degradation must be in [0, 1], got " + std::to_string(opt_.degradation));
  check_arg(std::isfinite(opt_.consistency_tolerance) && opt_.consistency_tolerance > 0,
            "noise warp: consistency_tolerance must be finite and > 0, got " + std::to_string(opt_.consistency_tolerance));
  check_arg(latent_height <= kMaxGridPixels && latent_width <= kMaxGridPixels &&
                latent_height * latent_width * opt_.factor * opt_.factor < kMaxGridPixels,
            "noise warp: grid of " + std::to_string(latent_height * opt_.factor) + "x" +
                std::to_string(latent_width * opt_.factor) + " pixels is too large (at most 2^24 pixels)");
  height_ = latent_height * opt_.factor;
  width_ = latent_width * opt_.factor;
  if (opt_.device != "cpu") {
    c10::Device device(c10::kCPU);
    try {
      device = c10::Device(opt_.device);
    } catch (const c10::Error&) {
      throw Error(ErrorCode::invalid_argument, "noise warp: unknown device '" + opt_.device + "' (cpu, cuda, cuda:N)");
    }
    check_arg(device.is_cuda(), "noise warp: device must be cpu or cuda[:N], got '" + opt_.device + "'");
    try {
      device_ = std::make_shared<detail::TensorWarper>(latent_height, latent_width, opt_, device);
    } catch (const c10::Error& e) {  // no such device, or no driver
      throw Error(ErrorCode::unsupported, "noise warp: cannot use device '" + opt_.device + "': " + e.what_without_backtrace());
    }
    return;
  }
  const int64_t P = height_ * width_, C = opt_.channels, G = detail::channel_groups(C);
  z_.resize(static_cast<size_t>(P * C));
  w_.assign(static_cast<size_t>(P), 1.0f);
  d_.assign(static_cast<size_t>(2 * P), 0.0f);
  latent_.resize(static_cast<size_t>(C * latent_h_ * latent_w_));
  // The per-frame scratch, allocated (and its pages touched) once.
  const auto sz = static_cast<size_t>(P);
  z_next_.resize(sz * static_cast<size_t>(C));
  w_next_.resize(sz);
  d_next_.resize(2 * sz);
  land_.resize(2 * sz);
  target_.resize(sz);
  source_.resize(sz);
  push_start_.resize(sz + 1);
  push_list_.resize(sz);
  pushed_.resize(sz);
  pulls_.resize(sz);
  pulls_tmp_.resize(sz);
  chunk_pulls_.resize(static_cast<size_t>((height_ + kChunkRows - 1) / kChunkRows));
  parallel_row_chunks(latent_h_, 1, [&](int64_t ly0, int64_t ly1) {
    NormalBatch fresh(opt_.seed, detail::kStreamFresh, 0);
    for (int64_t p = ly0 * opt_.factor * width_; p < ly1 * opt_.factor * width_; ++p)
      fresh.add_channels(C, [&](int64_t g) { return detail::fresh_index(G, p, g); }, z_.data() + p * C);
    fresh.flush();
    read_out(z_.data(), w_.data(), C, opt_.factor, latent_h_, latent_w_, ly0, ly1, latent_.data());
  });
}

void NoiseWarper::step(const at::Tensor& forward, const at::Tensor& backward) {
  if (device_) {
    device_->step(forward, backward);
    ++frame_;
    return;
  }
  const at::Tensor fwd = checked_flow(forward, "forward", height_, width_);
  const at::Tensor bwd = backward.defined() ? checked_flow(backward, "backward", height_, width_) : at::Tensor();
  const int64_t P = height_ * width_, C = opt_.channels, G = detail::channel_groups(C), W = width_;
  const WarpFrame f{height_,
                    width_,
                    C,
                    fwd.data_ptr<float>(),
                    bwd.defined() ? bwd.data_ptr<float>() : nullptr,
                    static_cast<float>(opt_.consistency_tolerance),
                    opt_.seed,
                    static_cast<uint32_t>(frame_ + 1)};

  // Contraction candidates: where each pixel's value lands, and its offset there. The pass also
  // marks the targets receiving a push and checks the flow values (it reads them all); the
  // state is still untouched when it throws.
  std::fill(pushed_.begin(), pushed_.end(), uint8_t{0});
  std::atomic<bool> forward_bad{false}, backward_bad{false};
  parallel_row_chunks(height_, kChunkRows, [&](int64_t y0, int64_t y1) {
    const int64_t n = (y1 - y0) * W;
    if (!all_finite(f.forward + y0 * W, n) || !all_finite(f.forward + P + y0 * W, n)) forward_bad = true;
    if (f.backward != nullptr && (!all_finite(f.backward + y0 * W, n) || !all_finite(f.backward + P + y0 * W, n)))
      backward_bad = true;
    // Two sweeps: the landing pixels first, fetching the backward flow there (scattered reads)
    // ahead of the consistency checks.
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const int64_t p = y * W + x;
        const int64_t q = detail::push_landing(f, x, y, d_.data(), land_.data() + 2 * p);
        target_[p] = static_cast<int32_t>(q);
        if (q >= 0 && f.backward != nullptr) {
          __builtin_prefetch(f.backward + q);
          __builtin_prefetch(f.backward + P + q);
        }
      }
    for (int64_t p = y0 * W; p < y1 * W; ++p)
      if (const int64_t q = target_[p]; q >= 0) {
        if (!detail::consistent(f, p, q))
          target_[p] = -1;
        else  // several threads may mark one target: all store the same 1
          std::atomic_ref<uint8_t>(pushed_[q]).store(1, std::memory_order_relaxed);
      }
  });
  check_arg(!forward_bad, "noise warp: forward flow has NaN or inf values");
  check_arg(!backward_bad, "noise warp: backward flow has NaN or inf values");

  // Expansion candidates for the targets that received no push (and the pulled values' new
  // offsets). Two sweeps again: the nearest pixels first, fetching the flow and offset there.
  // Each chunk lists its pulls, as source << 32 | target, at the front of its own rows' range
  // of pulls_.
  const auto n_chunks = static_cast<int64_t>(chunk_pulls_.size());
  parallel_row_chunks(height_, kChunkRows, [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const int64_t q = y * W + x;
        const int64_t p = pushed_[q] ? -1 : detail::pull_nearest(f, x, y);
        source_[q] = static_cast<int32_t>(p);
        if (p >= 0) {
          __builtin_prefetch(f.forward + p);
          __builtin_prefetch(f.forward + P + p);
          __builtin_prefetch(d_.data() + 2 * p);
        }
      }
    int64_t n = 0;
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const int64_t q = y * W + x;
        if (source_[q] < 0) continue;
        const int64_t p = detail::pull_source(f, x, y, d_.data(), d_next_.data() + 2 * q);
        source_[q] = static_cast<int32_t>(p);
        if (p >= 0) pulls_[y0 * W + n++] = static_cast<uint64_t>(p) << 32 | static_cast<uint64_t>(q);
      }
    chunk_pulls_[y0 / kChunkRows] = n;
  });
  // All pulls grouped by source, in target order (a pull's copy index is its position there):
  // the chunks' lists joined in order, then a stable radix sort on the source (< 2^24: two
  // 12-bit passes).
  size_t n_pulls = 0;
  for (int64_t c = 0; c < n_chunks; ++c) {
    std::memmove(pulls_.data() + n_pulls, pulls_.data() + c * kChunkRows * W, sizeof(uint64_t) * chunk_pulls_[c]);
    n_pulls += static_cast<size_t>(chunk_pulls_[c]);
  }
  radix_pass(pulls_.data(), pulls_tmp_.data(), n_pulls, 32);
  radix_pass(pulls_tmp_.data(), pulls_.data(), n_pulls, 44);
  const auto pull_target = [](uint64_t pull) { return static_cast<int64_t>(static_cast<uint32_t>(pull)); };

  // Sources with pulls (the others are used at most once, by their push): a source used n
  // times (its push, if any, is copy 0, then its pulls) gives each use weight w / n. Pulled
  // copies are written to their targets here; the push copy replaces z and w / n replaces w in
  // place (the targets pass reads them; nothing else reads this source's state any more). For
  // n >= 2 the draws e_j (copy j >= 1) go straight to copy j's slot, then each source's copies
  // are combined from the last one down (the Helmert suffix sum grows as i decreases, see
  // copy_value). Meanwhile one thread groups the pushes by target, for the targets pass.
  parallel_row_chunks_beside(
      [&] { group_by_key(P, [&](int64_t s) { return target_[s]; }, push_start_, push_list_); }, height_, kChunkRows,
      [&](int64_t y0, int64_t y1) {
        const uint64_t* const pulls_begin = pulls_.data();
        const uint64_t* const pulls_end = pulls_begin + n_pulls;
        const uint64_t* const first = std::lower_bound(pulls_begin, pulls_end, static_cast<uint64_t>(y0 * W) << 32);
        const uint64_t* const last = std::lower_bound(first, pulls_end, static_cast<uint64_t>(y1 * W) << 32);
        // body(s, its pulls, their count) for each source of the chunk that has pulls.
        const auto for_each_source = [&](const auto& body) {
          for (const uint64_t* run = first; run < last;) {
            const uint64_t* run_end = run + 1;
            while (run_end < last && (*run_end >> 32) == (*run >> 32)) ++run_end;
            body(static_cast<int64_t>(*run >> 32), run, run_end - run);
            run = run_end;
          }
        };
        const auto slot = [&](int64_t s, const uint64_t* pulls, int64_t i) {
          const int64_t first_pull = int64_t{target_[s] >= 0};
          return i < first_pull ? z_.data() + s * C : z_next_.data() + pull_target(pulls[i - first_pull]) * C;
        };
        NormalBatch draws(f.seed, detail::kStreamCopy, f.frame);
        for_each_source([&](int64_t s, const uint64_t* pulls, int64_t n_pulled) {
          __builtin_prefetch(z_.data() + s * C);  // read below, after the draws
          const int64_t n = int64_t{target_[s] >= 0} + n_pulled;
          for (int64_t j = 1; j < n; ++j)
            draws.add_channels(C, [&](int64_t g) { return detail::copy_index(G, s, j, g); }, slot(s, pulls, j));
        });
        draws.flush();
        std::vector<float> tail(static_cast<size_t>(C));
        for_each_source([&](int64_t s, const uint64_t* pulls, int64_t n_pulled) {
          const int64_t n = int64_t{target_[s] >= 0} + n_pulled;
          const float share = w_[s] / static_cast<float>(n);
          for (int64_t k = 0; k < n_pulled; ++k) w_next_[pull_target(pulls[k])] = std::clamp(share, kMinWeight, kMaxWeight);
          const float* zs = z_.data() + s * C;
          if (n == 1) {
            copy_channels(zs, z_next_.data() + pull_target(pulls[0]) * C, C);
            return;
          }
          w_[s] = share;
          const float inv_sqrt_n = 1.0f / std::sqrt(static_cast<float>(n));
          std::fill(tail.begin(), tail.end(), 0.0f);
          for (int64_t i = n - 1; i > 0; --i) {
            float* out = slot(s, pulls, i);  // holds e_i
            const float own = detail::own_weight(i), h = detail::helmert_weight(i);
            for (int64_t c = 0; c < C; ++c) {
              const float e = out[c];
              out[c] = detail::copy_value(zs[c], inv_sqrt_n, tail[c], e, own);
              tail[c] += h * e;
            }
          }
          float* out = slot(s, pulls, 0);  // may be zs itself: each channel is read before it is written
          for (int64_t c = 0; c < C; ++c) out[c] = detail::copy_value(zs[c], inv_sqrt_n, tail[c], 0.0f, 0.0f);
        });
      });

  // Targets: merged pushes (sources in increasing order), pulled copies (written above), else
  // fresh noise. In chunks of whole latent rows: once a chunk's grid rows are final (and still
  // in cache), its latent rows are read out for latent().
  parallel_row_chunks(latent_h_, std::max<int64_t>(1, kChunkRows / opt_.factor), [&](int64_t ly0, int64_t ly1) {
    // Plain pointers: the compiler cannot keep vector members in registers across the stores.
    const float *const z = z_.data(), *const w = w_.data(), *const land = land_.data();
    const int32_t *const push_start = push_start_.data(), *const push_list = push_list_.data();
    float *const z_next = z_next_.data(), *const w_next = w_next_.data(), *const d_next = d_next_.data();
    const int32_t n_pushes = push_start[P];
    int32_t prefetched = 0;
    NormalBatch fresh(f.seed, detail::kStreamFresh, f.frame);
    for (int64_t q = ly0 * opt_.factor * W; q < ly1 * opt_.factor * W; ++q) {
      float* zq = z_next + q * C;
      const int32_t k0 = push_start[q], k1 = push_start[q + 1];
      if (k1 == k0) {
        if (source_[q] < 0) {
          fresh.add_channels(C, [&](int64_t g) { return detail::fresh_index(G, q, g); }, zq);
          w_next[q] = 1.0f;
          d_next[2 * q] = d_next[2 * q + 1] = 0.0f;
        }
        continue;
      }
      // The sources' state is read in push order, near but not quite sequential: fetch it
      // kAhead pushes ahead.
      for (prefetched = std::max(prefetched, k0 + kAhead); prefetched < std::min(k1 + kAhead, n_pushes); ++prefetched) {
        const int64_t ahead = push_list[prefetched];
        __builtin_prefetch(z + ahead * C);
        __builtin_prefetch(w + ahead);
        __builtin_prefetch(land + 2 * ahead);
      }
      if (k1 - k0 == 1) {  // the usual single push: the merge keeps its value, weight and offset
        const int64_t s = push_list[k0];
        copy_channels(z + s * C, zq, C);
        w_next[q] = std::clamp(w[s], kMinWeight, kMaxWeight);
        d_next[2 * q] = land[2 * s];
        d_next[2 * q + 1] = land[2 * s + 1];
        continue;
      }
      // z = sum w_i z_i / sqrt(sum w_i^2), w = sum w_i, d = sum w_i d_i / w.
      float w1 = 0, w2 = 0, dx = 0, dy = 0;
      for (int32_t k = k0; k < k1; ++k) {
        const int64_t s = push_list[k];
        const float ws = w[s];
        const float* zs = z + s * C;
        if (k == k0)
          for (int64_t c = 0; c < C; ++c) zq[c] = ws * zs[c];
        else
          for (int64_t c = 0; c < C; ++c) zq[c] += ws * zs[c];
        w1 += ws;
        w2 += ws * ws;
        dx += ws * land[2 * s];
        dy += ws * land[2 * s + 1];
      }
      const float norm = 1.0f / std::sqrt(w2);
      for (int64_t c = 0; c < C; ++c) zq[c] *= norm;
      w_next[q] = std::clamp(w1, kMinWeight, kMaxWeight);
      d_next[2 * q] = dx / w1;
      d_next[2 * q + 1] = dy / w1;
    }
    fresh.flush();
    read_out(z_next, w_next, C, opt_.factor, latent_h_, latent_w_, ly0, ly1, latent_.data());
  });
  z_.swap(z_next_);
  w_.swap(w_next_);
  d_.swap(d_next_);
  ++frame_;
}

at::Tensor NoiseWarper::latent() const {
  if (device_) return device_->latent();
  const int64_t C = opt_.channels, G = detail::channel_groups(C), plane = latent_h_ * latent_w_;
  at::Tensor out = at::empty({C, latent_h_, latent_w_}, at::kFloat);
  float* o = out.data_ptr<float>();
  const auto g = static_cast<float>(opt_.degradation);
  if (g == 0) {
    std::copy(latent_.begin(), latent_.end(), o);
    return out;
  }
  parallel_row_chunks(latent_h_, 1, [&](int64_t ly0, int64_t ly1) {
    const int64_t l0 = ly0 * latent_w_, l1 = ly1 * latent_w_;
    std::vector<float> fresh(static_cast<size_t>((l1 - l0) * C));
    NormalBatch draws(opt_.seed, detail::kStreamDegrade, static_cast<uint32_t>(frame_));
    for (int64_t l = l0; l < l1; ++l)
      draws.add_channels(C, [&](int64_t grp) { return detail::degrade_index(G, l, grp); }, fresh.data() + (l - l0) * C);
    draws.flush();
    for (int64_t l = l0; l < l1; ++l)
      for (int64_t c = 0; c < C; ++c) o[c * plane + l] = detail::degrade(latent_[c * plane + l], fresh[(l - l0) * C + c], g);
  });
  return out;
}

at::Tensor NoiseWarper::grid_noise() const {
  if (device_) return device_->grid_noise();
  const int64_t C = opt_.channels;
  return at::from_blob(const_cast<float*>(z_.data()), {height_, width_, C}, at::kFloat).permute({2, 0, 1}).clone();
}

TemporalReduction temporal_reduction_from_name(const std::string& name) {
  if (name == "pick") return TemporalReduction::pick;
  if (name == "blend") return TemporalReduction::blend;
  if (name == "blend_normalized") return TemporalReduction::blend_normalized;
  throw Error(ErrorCode::invalid_argument,
              "unknown temporal reduction '" + name + "' (known: pick, blend, blend_normalized)");
}

at::Tensor reduce_frames(const at::Tensor& noise, int64_t temporal_factor, TemporalReduction reduction) {
  check_arg(noise.defined() && noise.dim() == 4 && noise.numel() > 0,
            "reduce_frames: noise must be a non-empty [C, F, h, w] tensor, got " +
                (noise.defined() ? c10::str(noise.sizes()) : std::string("undefined")));
  check_arg(temporal_factor >= 1, "reduce_frames: temporal_factor must be >= 1, got " + std::to_string(temporal_factor));
  const int64_t frames = noise.size(1);
  check_arg((frames - 1) % temporal_factor == 0, "reduce_frames: " + std::to_string(frames) +
                                                     " frames do not make 1 + k * " + std::to_string(temporal_factor));
  if (temporal_factor == 1) return noise;
  std::vector<at::Tensor> out{noise.select(1, 0)};
  for (int64_t start = 1; start < frames; start += temporal_factor) {
    const at::Tensor group = noise.narrow(1, start, temporal_factor);
    if (reduction == TemporalReduction::pick) {
      out.push_back(group.select(1, temporal_factor - 1));
      continue;
    }
    at::Tensor mean = group.mean(1);
    if (reduction == TemporalReduction::blend_normalized) mean = mean / mean.square().mean().sqrt().clamp_min(1e-12);
    out.push_back(mean);
  }
  return at::stack(out, 1);
}

at::Tensor warp_noise(const at::Tensor& forward, const at::Tensor& backward, const NoiseWarpOptions& options,
                      int64_t latent_height, int64_t latent_width, int64_t temporal_factor,
                      TemporalReduction reduction) {
  check_arg(forward.defined() && forward.dim() == 4 && forward.size(1) == 2 && forward.size(0) >= 1,
            "warp_noise: forward flow must be [F, 2, H, W], got " +
                (forward.defined() ? c10::str(forward.sizes()) : std::string("undefined")));
  check_arg(!backward.defined() || backward.sizes() == forward.sizes(),
            "warp_noise: backward flow " + (backward.defined() ? c10::str(backward.sizes()) : std::string()) +
                " must have the forward flow's shape " + c10::str(forward.sizes()));
  check_arg(at::isFloatingType(forward.scalar_type()) && (!backward.defined() || at::isFloatingType(backward.scalar_type())),
            "warp_noise: flows must be floating point");
  const int64_t frames = forward.size(0);
  check_arg(options.factor >= 1, "warp_noise: factor must be >= 1, got " + std::to_string(options.factor));
  const int64_t h = latent_height > 0 ? latent_height : forward.size(2) / options.factor;
  const int64_t w = latent_width > 0 ? latent_width : forward.size(3) / options.factor;
  check_arg(temporal_factor >= 1 && (frames - 1) % temporal_factor == 0,
            "warp_noise: " + std::to_string(frames) + " frames do not make 1 + k * " + std::to_string(temporal_factor));
  NoiseWarper warper(h, w, options);
  // Flows on the grid: bilinear resize, vectors scaled by the size ratio.
  const auto to_grid = [&](const at::Tensor& flow) {
    at::Tensor fl = flow.to(at::kCPU, at::kFloat);
    if (fl.size(2) == warper.grid_height() && fl.size(3) == warper.grid_width()) return fl;
    const double sy = static_cast<double>(warper.grid_height()) / static_cast<double>(fl.size(2));
    const double sx = static_cast<double>(warper.grid_width()) / static_cast<double>(fl.size(3));
    fl = at::upsample_bilinear2d(fl, {warper.grid_height(), warper.grid_width()}, false);
    return at::stack({fl.select(1, 0) * sx, fl.select(1, 1) * sy}, 1);
  };
  const at::Tensor fwd = to_grid(forward);
  const at::Tensor bwd = backward.defined() ? to_grid(backward) : at::Tensor();
  std::vector<at::Tensor> latents{warper.latent()};
  for (int64_t t = 1; t < frames; ++t) {
    warper.step(fwd[t - 1], bwd.defined() ? bwd[t] : at::Tensor());
    latents.push_back(warper.latent());
  }
  return reduce_frames(at::stack(latents, 1), temporal_factor, reduction).unsqueeze(0);
}

}  // namespace drb::guide
