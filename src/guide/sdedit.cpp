#include "derrumbe/guide/sdedit.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <string>

#include "derrumbe/sample/schedules.hpp"

namespace drb::guide {

namespace {

void check_input(const at::Tensor& t, const std::string& name) {
  check_arg(t.defined(), "sdedit_start: " + name + " is undefined");
  check_arg(at::isFloatingType(t.scalar_type()), "sdedit_start: " + name + " must be floating point, got " +
                                                     std::string(c10::toString(t.scalar_type())));
  check_arg(t.numel() > 0, "sdedit_start: " + name + " is empty (shape " + c10::str(t.sizes()) + ")");
  check_arg(at::isfinite(t).all().item<bool>(),
            "sdedit_start: " + name + " (shape " + c10::str(t.sizes()) + ") contains NaN or inf");
}

}  // namespace

SDEditStart sdedit_start(const at::Tensor& encoded, const at::Tensor& noise, const at::Tensor& sigmas,
                         double strength) {
  check_input(encoded, "encoded");
  check_input(noise, "noise");
  check_arg(noise.sizes() == encoded.sizes(), "sdedit_start: noise shape " + c10::str(noise.sizes()) +
                                                  " differs from the encoded shape " + c10::str(encoded.sizes()));
  check_arg(std::isfinite(strength) && strength >= 0 && strength <= 1,
            "sdedit_start: strength must be in [0, 1], got " + std::to_string(strength));
  SDEditStart out;
  out.sigmas = schedules::split_for_strength(sigmas, strength);
  // The tail must end at the clean sample, or strength 0 (x = encoded) would not be a finished run.
  const double last = out.sigmas[-1].item<double>();
  check_arg(last == 0, "sdedit_start: sigmas must end in 0, got " + std::to_string(last));
  // Nothing to run: the start is the encoded input itself, bit for bit (not encoded + 0 * noise,
  // which could turn -0 into 0 and promotes to noise's dtype).
  if (out.sigmas.numel() == 1) {
    out.x = encoded.clone();
    return out;
  }
  const double sigma_start = out.sigmas[0].item<double>();
  out.x = encoded + sigma_start * noise.to(encoded.options());
  return out;
}

SDEditStart sdedit_start(const Encoder& encoder, const at::Tensor& frames, const at::Tensor& noise,
                         const at::Tensor& sigmas, double strength) {
  check_arg(static_cast<bool>(encoder), "sdedit_start: the encoder is empty");
  const at::Tensor encoded = encoder(frames);
  check(encoded.defined(), ErrorCode::model, "sdedit_start: the encoder returned an undefined tensor");
  check(at::isFloatingType(encoded.scalar_type()), ErrorCode::model,
        "sdedit_start: the encoder returned a " + std::string(c10::toString(encoded.scalar_type())) +
            " tensor of shape " + c10::str(encoded.sizes()) + ", expected floating point");
  return sdedit_start(encoded, noise, sigmas, strength);
}

}  // namespace drb::guide
