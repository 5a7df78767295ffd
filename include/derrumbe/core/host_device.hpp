// DRB_HOST_DEVICE marks functions whose math runs both in CUDA kernels and on the CPU, so
// the CPU tests check the exact arithmetic the GPU runs.
#pragma once
#if defined(__CUDACC__)
#define DRB_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DRB_HOST_DEVICE inline
#endif
