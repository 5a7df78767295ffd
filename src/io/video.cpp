// MP4 (H.264) writing and video decoding through libavformat/libavcodec/libswscale. Every libav
// object is held by a unique_ptr with its own free function, so each error path (a throw)
// releases everything it allocated.
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
}

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "derrumbe/io/video.hpp"
#include "detail.hpp"

namespace drb::io {
namespace {
using detail::quoted;

// Decoded frames beyond this are taken as a corrupt stream rather than allocated.
constexpr int64_t kMaxVideoPixels = int64_t(1) << 28;

struct CodecFree {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameFree {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketFree {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwsFree {
  void operator()(SwsContext* s) const { sws_freeContext(s); }
};
struct OutputFree {
  void operator()(AVFormatContext* f) const {
    avio_closep(&f->pb);
    avformat_free_context(f);
  }
};
struct InputFree {
  void operator()(AVFormatContext* f) const { avformat_close_input(&f); }
};
using CodecPtr = std::unique_ptr<AVCodecContext, CodecFree>;
using FramePtr = std::unique_ptr<AVFrame, FrameFree>;
using PacketPtr = std::unique_ptr<AVPacket, PacketFree>;
using SwsPtr = std::unique_ptr<SwsContext, SwsFree>;
using OutputPtr = std::unique_ptr<AVFormatContext, OutputFree>;
using InputPtr = std::unique_ptr<AVFormatContext, InputFree>;

struct Dictionary {
  AVDictionary* d = nullptr;
  ~Dictionary() { av_dict_free(&d); }
};

std::string av_error(int code) {
  char text[AV_ERROR_MAX_STRING_SIZE] = "";
  av_strerror(code, text, sizeof text);
  return text;
}

// Throws `code` with "<context>: <libav's message>" when a libav call returned an error.
void av_check(int result, ErrorCode code, const std::string& context) {
  if (result < 0) throw Error(code, context + ": " + av_error(result));
}

template <class T>
T* not_null(T* p, const std::string& context) {
  if (p == nullptr) throw Error(ErrorCode::io, context + ": out of memory");
  return p;
}

// ---- writing ---------------------------------------------------------------------------------

void check_frames(const std::vector<Image>& frames, const std::string& path) {
  const std::string context = "write_mp4(" + quoted(path) + ")";
  check_arg(!frames.empty(), context + ": no frames to write");
  const Image& first = frames[0];
  check_arg(first.width >= 2 && first.height >= 2 && first.width % 2 == 0 && first.height % 2 == 0,
            context + ": frames are " + std::to_string(first.width) + "x" + std::to_string(first.height) +
                "; yuv420p needs an even width and height");
  for (size_t i = 0; i < frames.size(); ++i) {
    const Image& f = frames[i];
    const std::string which = context + ": frame " + std::to_string(i);
    check_arg(f.channels == 3, which + " has " + std::to_string(f.channels) + " channels, expected 3 (RGB)");
    check_arg(f.width == first.width && f.height == first.height,
              which + " is " + std::to_string(f.width) + "x" + std::to_string(f.height) + ", frame 0 is " +
                  std::to_string(first.width) + "x" + std::to_string(first.height));
    check_arg(f.pixels.size() == size_t(f.width) * size_t(f.height) * 3,
              which + " holds " + std::to_string(f.pixels.size()) + " values, expected width * height * 3");
  }
}

void check_options(const VideoOptions& o, const std::string& path) {
  const std::string context = "write_mp4(" + quoted(path) + ")";
  check_arg(std::isfinite(o.fps) && o.fps > 0 && o.fps <= 1000, context + ": fps must be in (0, 1000], got " +
                                                                    std::to_string(o.fps));
  check_arg(o.crf >= 0 && o.crf <= 51, context + ": crf must be in [0, 51], got " + std::to_string(o.crf));
  check_arg(!o.preset.empty(), context + ": empty x264 preset");
}

void to_rgb24(const Image& image, std::vector<uint8_t>& out) {
  out.resize(image.pixels.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const float v = image.pixels[i];
    out[i] = static_cast<uint8_t>(std::lround((v > 0.0f ? std::min(v, 1.0f) : 0.0f) * 255.0f));
  }
}

// BT.709 matrix, primaries, sRGB transfer tag and limited range: what review players expect of
// display-referred sRGB frames (the ASWF encoding guidelines).
CodecPtr make_encoder(const AVCodec* codec, int width, int height, AVRational rate, bool global_header) {
  CodecPtr enc(not_null(avcodec_alloc_context3(codec), "write_mp4"));
  // The encoder's information (libx264's settings banner) one level down, to verbose: a farm log
  // keeps warnings and errors, not a banner per shot. Per context, so the host's own libav
  // logging is left as it set it.
  enc->log_level_offset = AV_LOG_VERBOSE - AV_LOG_INFO;
  enc->width = width;
  enc->height = height;
  enc->pix_fmt = AV_PIX_FMT_YUV420P;
  enc->framerate = rate;
  enc->time_base = av_inv_q(rate);
  enc->sample_aspect_ratio = AVRational{1, 1};
  enc->color_primaries = AVCOL_PRI_BT709;
  enc->colorspace = AVCOL_SPC_BT709;
  enc->color_trc = AVCOL_TRC_IEC61966_2_1;
  enc->color_range = AVCOL_RANGE_MPEG;
  if (global_header) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  return enc;
}

// RGB24 (full range) -> yuv420p with BT.709 coefficients, limited range.
SwsPtr make_rgb_to_yuv(int width, int height) {
  SwsPtr sws(not_null(sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height, AV_PIX_FMT_YUV420P,
                                     SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP, nullptr, nullptr, nullptr),
                      "write_mp4: swscale"));
  const int* bt709 = sws_getCoefficients(SWS_CS_ITU709);
  sws_setColorspaceDetails(sws.get(), bt709, 1, bt709, 0, 0, 1 << 16, 1 << 16);
  return sws;
}

struct Muxer {
  AVFormatContext* out;
  AVStream* stream;
  AVCodecContext* enc;
  AVPacket* packet;
  std::string context;

  // Hands every packet the encoder has ready to the muxer.
  void drain() {
    for (;;) {
      const int r = avcodec_receive_packet(enc, packet);
      if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return;
      av_check(r, ErrorCode::io, context + ": encoding failed");
      av_packet_rescale_ts(packet, enc->time_base, stream->time_base);
      packet->stream_index = stream->index;
      av_check(av_interleaved_write_frame(out, packet), ErrorCode::io, context + ": writing failed");
    }
  }
  void send(const AVFrame* frame) {
    av_check(avcodec_send_frame(enc, frame), ErrorCode::io, context + ": encoding failed");
    drain();
  }
};

void open_encoder(AVCodecContext* enc, const AVCodec* codec, const VideoOptions& o, const std::string& context) {
  Dictionary options;
  av_dict_set(&options.d, "crf", std::to_string(o.crf).c_str(), 0);
  av_dict_set(&options.d, "preset", o.preset.c_str(), 0);
  av_dict_set(&options.d, "x264-params", "log=1", 0);  // warnings and errors only, no statistics on stderr
  const int r = avcodec_open2(enc, codec, &options.d);
  av_check(r, r == AVERROR(EINVAL) ? ErrorCode::invalid_argument : ErrorCode::io,
           context + ": cannot open the libx264 encoder (preset " + quoted(o.preset) + ", crf " +
               std::to_string(o.crf) + ")");
}

void encode_mp4(const std::vector<Image>& frames, const std::string& tmp, const VideoOptions& o, const AVCodec* codec,
                const std::string& context) {
  const int W = frames[0].width, H = frames[0].height;
  const AVRational rate = av_d2q(o.fps, 100000);
  AVFormatContext* raw = nullptr;
  av_check(avformat_alloc_output_context2(&raw, nullptr, "mp4", tmp.c_str()), ErrorCode::io, context);
  OutputPtr out(raw);
  AVStream* stream = not_null(avformat_new_stream(out.get(), nullptr), context);
  CodecPtr enc = make_encoder(codec, W, H, rate, (out->oformat->flags & AVFMT_GLOBALHEADER) != 0);
  open_encoder(enc.get(), codec, o, context);
  av_check(avcodec_parameters_from_context(stream->codecpar, enc.get()), ErrorCode::io, context);
  stream->time_base = enc->time_base;
  stream->avg_frame_rate = rate;
  av_check(avio_open(&out->pb, tmp.c_str(), AVIO_FLAG_WRITE), ErrorCode::io, context + ": cannot open the file");
  Dictionary mux;
  av_dict_set(&mux.d, "movflags", "+faststart", 0);  // index first: players start before the download ends
  av_check(avformat_write_header(out.get(), &mux.d), ErrorCode::io, context + ": cannot write the header");

  FramePtr yuv(not_null(av_frame_alloc(), context));
  yuv->format = AV_PIX_FMT_YUV420P;
  yuv->width = W;
  yuv->height = H;
  av_check(av_frame_get_buffer(yuv.get(), 0), ErrorCode::io, context);
  SwsPtr sws = make_rgb_to_yuv(W, H);
  PacketPtr packet(not_null(av_packet_alloc(), context));
  Muxer muxer{out.get(), stream, enc.get(), packet.get(), context};
  std::vector<uint8_t> rgb;
  for (size_t i = 0; i < frames.size(); ++i) {
    to_rgb24(frames[i], rgb);
    const uint8_t* src[1] = {rgb.data()};
    const int src_stride[1] = {3 * W};
    av_check(av_frame_make_writable(yuv.get()), ErrorCode::io, context);
    sws_scale(sws.get(), src, src_stride, 0, H, yuv->data, yuv->linesize);
    yuv->pts = int64_t(i);
    muxer.send(yuv.get());
  }
  muxer.send(nullptr);  // flush the encoder's delayed frames
  av_check(av_write_trailer(out.get()), ErrorCode::io, context + ": cannot finish the file");
  av_check(avio_closep(&out->pb), ErrorCode::io, context + ": cannot close the file");
}

// ---- reading ---------------------------------------------------------------------------------

int sws_colorspace(const AVFrame* f) {
  switch (f->colorspace) {
    case AVCOL_SPC_BT709: return SWS_CS_ITU709;
    case AVCOL_SPC_BT470BG:
    case AVCOL_SPC_SMPTE170M: return SWS_CS_ITU601;
    case AVCOL_SPC_SMPTE240M: return SWS_CS_SMPTE240M;
    case AVCOL_SPC_FCC: return SWS_CS_FCC;
    case AVCOL_SPC_BT2020_NCL:
    case AVCOL_SPC_BT2020_CL: return SWS_CS_BT2020;
    default: return f->height >= 720 ? SWS_CS_ITU709 : SWS_CS_ITU601;  // untagged: the HD/SD convention
  }
}

bool full_range(const AVFrame* f) {
  const auto fmt = static_cast<AVPixelFormat>(f->format);
  return f->color_range == AVCOL_RANGE_JPEG || fmt == AV_PIX_FMT_YUVJ420P || fmt == AV_PIX_FMT_YUVJ422P ||
         fmt == AV_PIX_FMT_YUVJ444P;
}

class Decoder {
 public:
  Decoder(const std::string& path, int64_t max_frames) : path_(path), max_frames_(max_frames) {}

  void open() {
    AVFormatContext* raw = nullptr;
    av_check(avformat_open_input(&raw, path_.c_str(), nullptr, nullptr), ErrorCode::parse,
             "read_video: cannot open " + quoted(path_) + " as a video");
    in_.reset(raw);
    av_check(avformat_find_stream_info(in_.get(), nullptr), ErrorCode::parse,
             "read_video: cannot read the streams of " + quoted(path_));
    const int index = av_find_best_stream(in_.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
    av_check(index, ErrorCode::parse,
             "read_video: " + quoted(path_) + " has no readable video stream (not a video, or truncated or corrupt)");
    stream_ = in_->streams[index];
    // A cut-off header can leave a stream whose codec is unknown: damage, not a missing decoder.
    const AVCodecID id = stream_->codecpar->codec_id;
    check(id != AV_CODEC_ID_NONE, ErrorCode::parse,
          "read_video: the video stream of " + quoted(path_) + " names no codec (truncated or corrupt)");
    const AVCodec* codec = avcodec_find_decoder(id);
    check(codec != nullptr, ErrorCode::unsupported, "read_video: no decoder in this build for the " +
                                                         std::string(avcodec_get_name(id)) + " video of " + quoted(path_));
    dec_.reset(not_null(avcodec_alloc_context3(codec), "read_video"));
    av_check(avcodec_parameters_to_context(dec_.get(), stream_->codecpar), ErrorCode::parse,
             "read_video: " + quoted(path_));
    av_check(avcodec_open2(dec_.get(), codec, nullptr), ErrorCode::parse,
             "read_video: cannot open the decoder for " + quoted(path_));
    packet_.reset(not_null(av_packet_alloc(), "read_video"));
    frame_.reset(not_null(av_frame_alloc(), "read_video"));
  }

  // Reads packets to the end (or max_frames); a read error that is not the end of the file, a
  // packet the demuxer marks corrupt (cut short) or fewer frames than the stream declares all
  // mean the file is truncated or damaged.
  std::vector<Image> run() {
    for (;;) {
      const int r = av_read_frame(in_.get(), packet_.get());
      if (r == AVERROR_EOF) break;
      av_check(r, ErrorCode::parse, "read_video: " + quoted(path_) + " is truncated or corrupt (read error)");
      const bool ours = packet_->stream_index == stream_->index;
      const bool corrupt = (packet_->flags & AV_PKT_FLAG_CORRUPT) != 0;
      if (ours) check(!corrupt, ErrorCode::parse, "read_video: " + quoted(path_) + " is truncated or corrupt (packet " +
                                                      "cut short at byte " + std::to_string(packet_->pos) + ")");
      const int s = ours ? avcodec_send_packet(dec_.get(), packet_.get()) : 0;
      av_packet_unref(packet_.get());
      av_check(s, ErrorCode::parse, "read_video: cannot decode " + quoted(path_));
      if (receive()) return std::move(frames_);
    }
    av_check(avcodec_send_packet(dec_.get(), nullptr), ErrorCode::parse, "read_video: cannot decode " + quoted(path_));
    if (receive()) return std::move(frames_);
    check_complete();
    return std::move(frames_);
  }

 private:
  // Converts every frame the decoder has ready; true once max_frames are in.
  bool receive() {
    for (;;) {
      const int r = avcodec_receive_frame(dec_.get(), frame_.get());
      if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return false;
      av_check(r, ErrorCode::parse, "read_video: cannot decode " + quoted(path_));
      frames_.push_back(convert(frame_.get()));
      av_frame_unref(frame_.get());
      if (max_frames_ > 0 && int64_t(frames_.size()) >= max_frames_) return true;
    }
  }

  Image convert(const AVFrame* f) {
    check(f->width > 0 && f->height > 0 && int64_t(f->width) * f->height <= kMaxVideoPixels, ErrorCode::parse,
          "read_video: " + quoted(path_) + " has an implausible frame size " + std::to_string(f->width) + "x" +
              std::to_string(f->height));
    sws_.reset(sws_getCachedContext(sws_.release(), f->width, f->height, static_cast<AVPixelFormat>(f->format),
                                    f->width, f->height, AV_PIX_FMT_RGB24, SWS_BICUBIC |
                                    SWS_FULL_CHR_H_INT, nullptr, nullptr, nullptr));
    check(sws_ != nullptr, ErrorCode::unsupported,
          "read_video: cannot convert the pixel format of " + quoted(path_) + " to RGB");
    const int* table = sws_getCoefficients(sws_colorspace(f));
    sws_setColorspaceDetails(sws_.get(), table, full_range(f) ? 1 : 0, table, 1, 0, 1 << 16, 1 << 16);
    rgb_.resize(size_t(f->width) * size_t(f->height) * 3);
    uint8_t* dst[1] = {rgb_.data()};
    const int dst_stride[1] = {3 * f->width};
    sws_scale(sws_.get(), f->data, f->linesize, 0, f->height, dst, dst_stride);
    Image image = Image::blank(f->width, f->height, 3);
    for (size_t i = 0; i < rgb_.size(); ++i) image.pixels[i] = float(rgb_[i] / 255.0);
    return image;
  }

  void check_complete() const {
    const int64_t declared = stream_->nb_frames;
    check(declared <= 0 || int64_t(frames_.size()) >= declared, ErrorCode::parse,
          "read_video: " + quoted(path_) + " ends after " + std::to_string(frames_.size()) + " of its " +
              std::to_string(declared) + " frames (truncated or corrupt)");
    check(!frames_.empty(), ErrorCode::parse, "read_video: " + quoted(path_) + " holds no decodable frame");
  }

  std::string path_;
  int64_t max_frames_;
  InputPtr in_;
  AVStream* stream_ = nullptr;
  CodecPtr dec_;
  PacketPtr packet_;
  FramePtr frame_;
  SwsPtr sws_;
  std::vector<uint8_t> rgb_;
  std::vector<Image> frames_;
};

}  // namespace

void write_mp4(const std::vector<Image>& frames, const std::string& path, const VideoOptions& options) {
  const std::string context = "write_mp4(" + quoted(path) + ")";
  check_frames(frames, path);
  check_options(options, path);
  const AVCodec* codec = avcodec_find_encoder_by_name("libx264");
  check(codec != nullptr, ErrorCode::unsupported, context + ": this FFmpeg has no libx264 encoder");
  write_atomically(path, [&](const std::string& tmp) { encode_mp4(frames, tmp, options, codec, context); });
}

std::vector<Image> read_video(const std::string& path, int64_t max_frames) {
  check_arg(max_frames >= 0, "read_video(" + quoted(path) + "): max_frames must be >= 0, got " +
                                 std::to_string(max_frames));
  detail::check_readable_file(path, "read_video");
  Decoder decoder(path, max_frames);
  decoder.open();
  return decoder.run();
}

}  // namespace drb::io
