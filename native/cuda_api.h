// The slice of the CUDA driver API and of NVRTC that keops-node uses, declared by hand so that the addon builds
// without CUDA headers and loads without CUDA libraries (both are opened with dlopen at run time, see
// cuda_loader.h). Values and signatures are those of cuda.h / nvrtc.h 13.0; the driver entry points are the
// versioned ones the headers' macros map to (cuMemAlloc -> cuMemAlloc_v2...), which exist since CUDA 3.2/4.0.
#pragma once
#include <cstddef>
#include <cstdint>

namespace keops {
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st*;
using CUmodule = struct CUmod_st*;
using CUfunction = struct CUfunc_st*;
using CUstream = struct CUstream_st*;
using CUevent = struct CUevent_st*;

constexpr CUresult CUDA_SUCCESS = 0;
constexpr CUresult CUDA_ERROR_INVALID_VALUE = 1;
constexpr CUresult CUDA_ERROR_OUT_OF_MEMORY = 2;
constexpr CUresult CUDA_ERROR_NO_DEVICE = 100;

// CUdevice_attribute values.
constexpr int CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y = 6;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK = 8;
constexpr int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;

// CUfunction_attribute values.
constexpr int CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0;
constexpr int CU_FUNC_ATTRIBUTE_NUM_REGS = 4;
constexpr int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

// Errors after which the context is corrupt and every later call fails (cuda.h: "the process must be terminated
// and relaunched" / "the context cannot be used"): illegal address, launch timeout, hardware stack error, illegal
// instruction, misaligned address, invalid address space, invalid PC, launch failed.
inline bool IsStickyCudaError(CUresult result) {
  return result == 700 || result == 702 || (result >= 714 && result <= 719);
}

// The driver entry points: `name` is the exported symbol. Required ones are needed to probe devices; the
// others (module loading, memory, launch) are resolved when present, for the GPU runner. Each entry is
// X(member, exported symbol, function type).
#define KEOPS_CUDA_REQUIRED_FUNCTIONS(X)                                              \
  X(cuInit, "cuInit", CUresult (unsigned int))                                     \
  X(cuDriverGetVersion, "cuDriverGetVersion", CUresult (int*))                     \
  X(cuGetErrorName, "cuGetErrorName", CUresult (CUresult, const char**))           \
  X(cuGetErrorString, "cuGetErrorString", CUresult (CUresult, const char**))       \
  X(cuDeviceGetCount, "cuDeviceGetCount", CUresult (int*))                         \
  X(cuDeviceGet, "cuDeviceGet", CUresult (CUdevice*, int))                         \
  X(cuDeviceGetName, "cuDeviceGetName", CUresult (char*, int, CUdevice))           \
  X(cuDeviceGetAttribute, "cuDeviceGetAttribute", CUresult (int*, int, CUdevice)) \
  X(cuDeviceTotalMem, "cuDeviceTotalMem_v2", CUresult (size_t*, CUdevice))

#define KEOPS_CUDA_OPTIONAL_FUNCTIONS(X)                                                                         \
  X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", CUresult (CUcontext*, CUdevice))                    \
  X(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", CUresult (CUdevice))                           \
  X(cuCtxSetCurrent, "cuCtxSetCurrent", CUresult (CUcontext))                                                 \
  X(cuCtxSynchronize, "cuCtxSynchronize", CUresult ())                                                        \
  X(cuMemGetInfo, "cuMemGetInfo_v2", CUresult (size_t*, size_t*))                                             \
  X(cuModuleLoadDataEx, "cuModuleLoadDataEx", CUresult (CUmodule*, const void*, unsigned int, int*, void**))  \
  X(cuModuleUnload, "cuModuleUnload", CUresult (CUmodule))                                                    \
  X(cuModuleGetFunction, "cuModuleGetFunction", CUresult (CUfunction*, CUmodule, const char*))                \
  X(cuFuncGetAttribute, "cuFuncGetAttribute", CUresult (int*, int, CUfunction))                               \
  X(cuFuncSetAttribute, "cuFuncSetAttribute", CUresult (CUfunction, int, int))                                \
  X(cuLaunchKernel, "cuLaunchKernel",                                                                            \
    CUresult (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,     \
                 void**, void**))                                                                                \
  X(cuMemAlloc, "cuMemAlloc_v2", CUresult (CUdeviceptr*, size_t))                                             \
  X(cuMemFree, "cuMemFree_v2", CUresult (CUdeviceptr))                                                        \
  X(cuMemAllocHost, "cuMemAllocHost_v2", CUresult (void**, size_t))                                           \
  X(cuMemFreeHost, "cuMemFreeHost", CUresult (void*))                                                         \
  X(cuMemcpyHtoD, "cuMemcpyHtoD_v2", CUresult (CUdeviceptr, const void*, size_t))                             \
  X(cuMemcpyDtoH, "cuMemcpyDtoH_v2", CUresult (void*, CUdeviceptr, size_t))                                   \
  X(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", CUresult (CUdeviceptr, const void*, size_t, CUstream))         \
  X(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", CUresult (void*, CUdeviceptr, size_t, CUstream))               \
  X(cuMemsetD8Async, "cuMemsetD8Async", CUresult (CUdeviceptr, unsigned char, size_t, CUstream))              \
  X(cuStreamCreate, "cuStreamCreate", CUresult (CUstream*, unsigned int))                                     \
  X(cuStreamDestroy, "cuStreamDestroy_v2", CUresult (CUstream))                                               \
  X(cuStreamSynchronize, "cuStreamSynchronize", CUresult (CUstream))

using nvrtcResult = int;
using nvrtcProgram = struct _nvrtcProgram*;

constexpr nvrtcResult NVRTC_SUCCESS = 0;
constexpr nvrtcResult NVRTC_ERROR_OUT_OF_MEMORY = 1;
constexpr nvrtcResult NVRTC_ERROR_INVALID_OPTION = 5;
constexpr nvrtcResult NVRTC_ERROR_COMPILATION = 6;

#define KEOPS_NVRTC_REQUIRED_FUNCTIONS(X)                                                                  \
  X(nvrtcGetErrorString, "nvrtcGetErrorString", const char* (nvrtcResult))                              \
  X(nvrtcVersion, "nvrtcVersion", nvrtcResult (int*, int*))                                             \
  X(nvrtcCreateProgram, "nvrtcCreateProgram",                                                              \
    nvrtcResult (nvrtcProgram*, const char*, const char*, int, const char* const*, const char* const*)) \
  X(nvrtcDestroyProgram, "nvrtcDestroyProgram", nvrtcResult (nvrtcProgram*))                           \
  X(nvrtcCompileProgram, "nvrtcCompileProgram", nvrtcResult (nvrtcProgram, int, const char* const*))   \
  X(nvrtcGetPTXSize, "nvrtcGetPTXSize", nvrtcResult (nvrtcProgram, size_t*))                            \
  X(nvrtcGetPTX, "nvrtcGetPTX", nvrtcResult (nvrtcProgram, char*))                                      \
  X(nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize", nvrtcResult (nvrtcProgram, size_t*))              \
  X(nvrtcGetProgramLog, "nvrtcGetProgramLog", nvrtcResult (nvrtcProgram, char*))

// Absent before NVRTC 11.1 / 11.2: without them there is no CUBIN output and no list of supported archs.
#define KEOPS_NVRTC_OPTIONAL_FUNCTIONS(X)                                                  \
  X(nvrtcGetCUBINSize, "nvrtcGetCUBINSize", nvrtcResult (nvrtcProgram, size_t*))        \
  X(nvrtcGetCUBIN, "nvrtcGetCUBIN", nvrtcResult (nvrtcProgram, char*))                  \
  X(nvrtcGetNumSupportedArchs, "nvrtcGetNumSupportedArchs", nvrtcResult (int*))         \
  X(nvrtcGetSupportedArchs, "nvrtcGetSupportedArchs", nvrtcResult (int*))

}  // namespace keops
