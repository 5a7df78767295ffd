// A C interface to libsentencepiece, built as its own module (libderrumbe_sentencepiece.so)
// that the library dlopen()s with RTLD_DEEPBIND (text.cpp). Why: libsentencepiece bundles a
// protobuf whose symbols it exports, and so does LibTorch; linked normally, sentencepiece's
// own protobuf calls bound to torch's copy and its load-time initializers corrupted torch's
// memory (a TorchScript call then hung on a clobbered mutex). Deep binding keeps each on its own.
#include <sentencepiece_processor.h>

#include <cstring>
#include <string>
#include <vector>

namespace {

using Processor = sentencepiece::SentencePieceProcessor;

void write_error(const std::string& message, char* error, size_t capacity) {
  if (error == nullptr || capacity == 0) return;
  const size_t n = std::min(message.size(), capacity - 1);
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}

}  // namespace

extern "C" {

// A processor for the serialized model, or null with the reason in `error`.
__attribute__((visibility("default"))) void* drb_spm_load(const char* bytes, size_t size, char* error, size_t capacity) {
  try {
    auto* sp = new Processor();
    const auto status = sp->LoadFromSerializedProto(std::string_view(bytes, size));
    if (!status.ok()) {
      write_error(status.ToString(), error, capacity);
      delete sp;
      return nullptr;
    }
    return sp;
  } catch (const std::exception& e) {
    write_error(e.what(), error, capacity);
    return nullptr;
  }
}

__attribute__((visibility("default"))) void drb_spm_free(void* sp) { delete static_cast<Processor*>(sp); }

// which: 0 pad, 1 eos, 2 unk, 3 the vocabulary size.
__attribute__((visibility("default"))) int drb_spm_id(const void* sp, int which) {
  const auto& p = *static_cast<const Processor*>(sp);
  switch (which) {
    case 0: return p.pad_id();
    case 1: return p.eos_id();
    case 2: return p.unk_id();
    default: return p.GetPieceSize();
  }
}

__attribute__((visibility("default"))) int drb_spm_is_byte(const void* sp, int id) {
  return static_cast<const Processor*>(sp)->IsByte(id) ? 1 : 0;
}

// The piece's text into out (capacity bytes, NUL-terminated); returns its length.
__attribute__((visibility("default"))) size_t drb_spm_piece(const void* sp, int id, char* out, size_t capacity) {
  const std::string piece = static_cast<const Processor*>(sp)->IdToPiece(id);
  write_error(piece, out, capacity);
  return piece.size();
}

// Token ids of text into ids (capacity entries); *count receives how many there are (also
// when capacity is too small). Returns 0, or -1 with the reason in `error`.
__attribute__((visibility("default"))) int drb_spm_encode(const void* sp, const char* text, size_t size, int* ids,
                                                          size_t capacity, size_t* count, char* error,
                                                          size_t error_capacity) {
  try {
    std::vector<int> out;
    const auto status = static_cast<const Processor*>(sp)->Encode(std::string_view(text, size), &out);
    if (!status.ok()) {
      write_error(status.ToString(), error, error_capacity);
      return -1;
    }
    *count = out.size();
    std::memcpy(ids, out.data(), sizeof(int) * std::min(out.size(), capacity));
    return 0;
  } catch (const std::exception& e) {
    write_error(e.what(), error, error_capacity);
    return -1;
  }
}

}  // extern "C"
