// The `io` submodule: images and frames as float32 numpy arrays [H, W, C]; conversion only, the
// logic lives in derrumbe::io. drb::Error becomes ValueError/OSError/... through the translator
// module.cpp registers. module.cpp calls bind_io(m).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "derrumbe/io/exr.hpp"
#include "derrumbe/io/image.hpp"
#include "derrumbe/io/video.hpp"
#include "derrumbe/render/aovs.hpp"

namespace py = pybind11;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// [H, W] (one channel) or [H, W, C] -> Image; `channels` > 0 requires that many.
drb::io::Image image_from(const FloatArray& a, const std::string& what, int channels = 0) {
  drb::check_arg(a.ndim() == 2 || a.ndim() == 3,
                 what + " must be a float array [H, W] or [H, W, C], got " + std::to_string(a.ndim()) + " dimensions");
  const int H = int(a.shape(0)), W = int(a.shape(1)), C = a.ndim() == 3 ? int(a.shape(2)) : 1;
  drb::check_arg(channels == 0 || C == channels, what + " must have " + std::to_string(channels) +
                                                     " channels (shape [H, W, " + std::to_string(channels) +
                                                     "]), got " + std::to_string(C));
  drb::io::Image image = drb::io::Image::blank(W, H, C);
  if (!image.pixels.empty()) std::memcpy(image.pixels.data(), a.data(), image.pixels.size() * sizeof(float));
  return image;
}

py::array_t<float> array_from(const drb::io::Image& image) {
  py::array_t<float> out({py::ssize_t(image.height), py::ssize_t(image.width), py::ssize_t(image.channels)});
  if (!image.pixels.empty()) std::memcpy(out.mutable_data(), image.pixels.data(), image.pixels.size() * sizeof(float));
  return out;
}

py::list arrays_from(const std::vector<drb::io::Image>& images) {
  py::list out;
  for (const drb::io::Image& image : images) out.append(array_from(image));
  return out;
}

// A 4x4 matrix (array-like) in Imath's row-vector layout, row-major.
std::array<float, 16> matrix_from(const py::object& o, const char* what) {
  const auto a = py::cast<FloatArray>(o);
  drb::check_arg(a.size() == 16 && (a.ndim() == 1 || (a.ndim() == 2 && a.shape(0) == 4)),
                 std::string(what) + " must be a 4x4 matrix");
  std::array<float, 16> m{};
  std::memcpy(m.data(), a.data(), sizeof(float) * 16);
  return m;
}

void write_exr_frame(const std::string& path, const py::object& beauty, const std::string& color_space,
                     const py::object& aovs, const py::object& piece_names, const py::object& world_to_camera,
                     const py::object& world_to_ndc, const std::string& cryptomatte_layer) {
  drb::io::ExrFrame frame;
  std::optional<drb::io::Image> image;
  if (!beauty.is_none()) image = image_from(py::cast<FloatArray>(beauty), "beauty", 3);
  frame.beauty = image ? &*image : nullptr;
  frame.beauty_space = drb::io::color_space_from_name(color_space);
  if (!aovs.is_none()) frame.aovs = &py::cast<const drb::render::AOVs&>(aovs);
  std::vector<std::string> names;
  if (!piece_names.is_none()) {
    names = py::cast<std::vector<std::string>>(piece_names);
    frame.piece_names = &names;
  }
  drb::io::CameraMatrices camera;
  drb::check_arg(world_to_camera.is_none() == world_to_ndc.is_none(),
                 "write_exr_frame: give both world_to_camera and world_to_ndc, or neither");
  if (!world_to_camera.is_none()) {
    camera.world_to_camera = matrix_from(world_to_camera, "world_to_camera");
    camera.world_to_ndc = matrix_from(world_to_ndc, "world_to_ndc");
    frame.camera = &camera;
  }
  frame.cryptomatte_layer = cryptomatte_layer;
  py::gil_scoped_release nogil;
  drb::io::write_exr_frame(frame, path);
}

}  // namespace

void bind_io(py::module_& m) {
  py::module_ io = m.def_submodule("io", "Images, frame sequences and videos: PNG, OpenEXR, MP4 (H.264).");
  io.def(
      "write_mp4",
      [](const std::vector<FloatArray>& frames, const std::string& path, double fps, int crf, const std::string& preset) {
        std::vector<drb::io::Image> images;
        for (size_t i = 0; i < frames.size(); ++i) images.push_back(image_from(frames[i], "frame " + std::to_string(i), 3));
        py::gil_scoped_release nogil;
        drb::io::write_mp4(images, path, drb::io::VideoOptions{fps, crf, preset});
      },
      py::arg("frames"), py::arg("path"), py::arg("fps") = 24.0, py::arg("crf") = 18, py::arg("preset") = "medium",
      "Writes RGB float frames [H, W, 3] (display sRGB in [0, 1], even size) as H.264 yuv420p MP4.");
  io.def(
      "read_video",
      [](const std::string& path, int64_t max_frames) {
        std::vector<drb::io::Image> frames;
        {
          py::gil_scoped_release nogil;
          frames = drb::io::read_video(path, max_frames);
        }
        return arrays_from(frames);
      },
      py::arg("path"), py::arg("max_frames") = 0, "The first max_frames frames (0: all) as float32 [H, W, 3] in [0, 1].");
  io.def(
      "write_png",
      [](const FloatArray& image, const std::string& path, int bit_depth) {
        const drb::io::Image img = image_from(image, "image");
        py::gil_scoped_release nogil;
        drb::io::write_png(img, path, bit_depth);
      },
      py::arg("image"), py::arg("path"), py::arg("bit_depth") = 8,
      "Writes a float image [H, W] or [H, W, C] (C = 1..4, values clamped to [0, 1]) as an 8- or 16-bit PNG.");
  io.def(
      "read_png", [](const std::string& path) { return array_from(drb::io::read_png(path)); }, py::arg("path"),
      "A PNG as float32 [H, W, C] in [0, 1], C the file's channels (palette -> RGB or RGBA).");
  io.def(
      "read_plate",
      [](const std::string& source, int64_t first_frame, int64_t count) {
        std::vector<drb::io::Image> frames;
        {
          py::gil_scoped_release nogil;
          frames = drb::io::read_plate(source, first_frame, count);
        }
        return arrays_from(frames);
      },
      py::arg("source"), py::arg("first_frame"), py::arg("count"),
      "A plate (PNG/EXR sequence pattern or video) as display sRGB float32 [H, W, 3] frames.");
  io.def("frame_path", &drb::io::frame_path, py::arg("pattern"), py::arg("frame"));
  io.def(
      "murmur3_32", [](const std::string& name, uint32_t seed) { return drb::io::murmur3_32(name, seed); },
      py::arg("name"), py::arg("seed") = 0, "MurmurHash3_x86_32 of the UTF-8 bytes, as an unsigned int.");
  io.def("cryptomatte_id", &drb::io::cryptomatte_id, py::arg("name"), "The Cryptomatte 1.1 float id of a name.");
  io.def("srgb_to_linear", &drb::io::srgb_to_linear, py::arg("encoded"));
  io.def("linear_to_srgb", &drb::io::linear_to_srgb, py::arg("linear"));
  io.def(
      "rec709_to_acescg",
      [] {
        const Eigen::Matrix3d m = drb::io::rec709_to_acescg();
        py::array_t<double> out({3, 3});
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) out.mutable_at(i, j) = m(i, j);
        return out;
      },
      "The linear Rec.709 -> ACEScg matrix (Bradford), applied as rgb' = M rgb.");
  io.def("write_exr_frame", &write_exr_frame, py::arg("path"), py::arg("beauty") = py::none(),
         py::arg("color_space") = "acescg", py::arg("aovs") = py::none(), py::arg("piece_names") = py::none(),
         py::arg("world_to_camera") = py::none(), py::arg("world_to_ndc") = py::none(),
         py::arg("cryptomatte_layer") = "CryptoObject",
         "One compositing EXR: beauty [H, W, 3] (display sRGB, converted to color_space 'acescg' or 'srgb'), "
         "AOVs with Cryptomatte ids from piece_names, and 4x4 camera matrices (Imath row-vector layout).");
}
