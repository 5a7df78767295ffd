# The torch-free modules (core errors and hashes, the safetensors header, physics, render, io):
# their dependencies and sources. The library compiles them once without the ATen header; the
# fuzz build (tests/fuzz) compiles them again with libFuzzer, ASan and UBSan.
# Expects DRB_ROOT (the source root); sets DRB_TORCHFREE_SOURCES and DRB_TORCHFREE_LIBS.
find_package(Eigen3 REQUIRED NO_MODULE)
find_package(xtensor REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(BULLET REQUIRED IMPORTED_TARGET bullet)
pkg_check_modules(LIBAV REQUIRED IMPORTED_TARGET libavformat libavcodec libswscale libavutil)
find_package(OpenEXR REQUIRED)
find_package(PNG REQUIRED)
find_package(Threads REQUIRED)
file(GLOB DRB_TORCHFREE_SOURCES CONFIGURE_DEPENDS ${DRB_ROOT}/src/physics/*.cpp ${DRB_ROOT}/src/render/*.cpp
     ${DRB_ROOT}/src/io/*.cpp)
list(APPEND DRB_TORCHFREE_SOURCES ${DRB_ROOT}/src/core/error.cpp ${DRB_ROOT}/src/core/hash.cpp
     ${DRB_ROOT}/src/models/safetensors_header.cpp)
set(DRB_TORCHFREE_LIBS Eigen3::Eigen xtensor nlohmann_json::nlohmann_json PkgConfig::BULLET OpenEXR::OpenEXR PNG::PNG
    PkgConfig::LIBAV Threads::Threads)
