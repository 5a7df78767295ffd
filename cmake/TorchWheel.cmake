# Finds LibTorch inside the pip `torch` wheel of the Python interpreter found by CMake.
# We do not use the wheel's TorchConfig.cmake: for a CUDA wheel it insists on locating a
# CUDA toolkit that matches the wheel's, which is irrelevant to CPU builds and fragile.
# Defines the imported target drb::torch and, when the wheel was built with CUDA,
# DRB_TORCH_CUDA=ON and drb::torch_cuda.
execute_process(
  COMMAND "${Python3_EXECUTABLE}" -c
    "import os, torch; print(os.path.dirname(torch.__file__)); print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); print(torch.version.cuda or ''); print(torch.__version__)"
  OUTPUT_VARIABLE _drb_torch_out RESULT_VARIABLE _drb_torch_rc ERROR_QUIET
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _drb_torch_rc EQUAL 0)
  message(FATAL_ERROR "derrumbe needs the pip `torch` wheel in ${Python3_EXECUTABLE}: "
                      "pip install -r requirements.txt")
endif()
string(REPLACE "\n" ";" _drb_torch_out "${_drb_torch_out}")
list(GET _drb_torch_out 0 DRB_TORCH_DIR)
list(GET _drb_torch_out 1 _drb_abi)
list(GET _drb_torch_out 2 DRB_TORCH_CUDA_VERSION)
list(GET _drb_torch_out 3 DRB_TORCH_VERSION)
message(STATUS "derrumbe: torch ${DRB_TORCH_VERSION} from ${DRB_TORCH_DIR}")

set(DRB_TORCH_LIB_DIR "${DRB_TORCH_DIR}/lib")
add_library(drb::torch INTERFACE IMPORTED)
target_include_directories(drb::torch SYSTEM INTERFACE
  "${DRB_TORCH_DIR}/include" "${DRB_TORCH_DIR}/include/torch/csrc/api/include")
target_compile_definitions(drb::torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${_drb_abi})
target_link_libraries(drb::torch INTERFACE
  "${DRB_TORCH_LIB_DIR}/libtorch.so" "${DRB_TORCH_LIB_DIR}/libtorch_cpu.so"
  "${DRB_TORCH_LIB_DIR}/libc10.so")

set(DRB_TORCH_CUDA OFF)
if(DRB_TORCH_CUDA_VERSION AND EXISTS "${DRB_TORCH_LIB_DIR}/libtorch_cuda.so")
  set(DRB_TORCH_CUDA ON)
  add_library(drb::torch_cuda INTERFACE IMPORTED)
  target_link_libraries(drb::torch_cuda INTERFACE
    "${DRB_TORCH_LIB_DIR}/libtorch_cuda.so" "${DRB_TORCH_LIB_DIR}/libc10_cuda.so")
endif()
