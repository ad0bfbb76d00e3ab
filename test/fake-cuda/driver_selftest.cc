// Drives the fake CUDA driver through its exported C API the way a runtime would, to test the fake itself (run by
// test/fake-cuda.spec.ts): the error paths a host-side bug would hit, then a real launch of a generated _1d
// kernel whose output the spec compares with the reference.
//
//   driver_selftest LIBCUDA IMAGE KERNEL INPUT OUTPUT
// IMAGE: an image of the fake NVRTC; KERNEL: the name of a float64 `_1d` kernel in it;
// INPUT: int64 nx, ny, block, shared_bytes, slots, dim_val, then `slots` element counts, then the float64 data of
// every argument slot in order; OUTPUT receives nx * dim_val float64 values.
// Exits 0 when every check passed, else prints the failed check to stderr and exits 1.
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "cuda_api.h"

using namespace keops;

namespace {

struct Api {
#define KEOPS_DECLARE(member, symbol, type) std::add_pointer_t<type> member = nullptr;
  KEOPS_CUDA_REQUIRED_FUNCTIONS(KEOPS_DECLARE)
  KEOPS_CUDA_OPTIONAL_FUNCTIONS(KEOPS_DECLARE)
#undef KEOPS_DECLARE
};

[[noreturn]] void Fail(const std::string& what) {
  fprintf(stderr, "driver_selftest: %s\n", what.c_str());
  exit(1);
}

#define EXPECT(call, expected)                                                                             \
  do {                                                                                                     \
    const CUresult got_ = (call);                                                                          \
    if (got_ != (expected)) {                                                                              \
      Fail(std::string(#call) + " returned " + std::to_string(got_) + ", expected " + std::to_string(expected) + \
           " (line " + std::to_string(__LINE__) + ")");                                                    \
    }                                                                                                      \
  } while (0)

std::vector<char> ReadAll(const char* path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) Fail(std::string("cannot read ") + path);
  return std::vector<char>(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) Fail("usage: driver_selftest LIBCUDA IMAGE KERNEL INPUT OUTPUT");
  void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) Fail(dlerror());
  Api api;
#define KEOPS_RESOLVE(member, symbol, type)                                                 \
  api.member = reinterpret_cast<std::add_pointer_t<type>>(dlsym(library, symbol));         \
  if (api.member == nullptr) Fail("the fake driver does not export " symbol);
  KEOPS_CUDA_REQUIRED_FUNCTIONS(KEOPS_RESOLVE)
  KEOPS_CUDA_OPTIONAL_FUNCTIONS(KEOPS_RESOLVE)
#undef KEOPS_RESOLVE
  const std::vector<char> image = ReadAll(argv[2]);
  const std::string kernel = argv[3];
  const std::vector<char> input = ReadAll(argv[4]);
  if (input.size() < 6 * sizeof(int64_t)) Fail("short input");
  int64_t header[6];
  memcpy(header, input.data(), sizeof header);
  const int64_t nx = header[0], ny = header[1], block = header[2], shared = header[3], slots = header[4],
                dim_val = header[5];
  std::vector<int64_t> counts(static_cast<size_t>(slots));
  memcpy(counts.data(), input.data() + sizeof header, counts.size() * sizeof(int64_t));
  const char* data = input.data() + sizeof header + counts.size() * sizeof(int64_t);

  // Before cuInit, and error strings.
  CUdeviceptr pointer = 0;
  EXPECT(api.cuMemAlloc(&pointer, 16), 3);  // CUDA_ERROR_NOT_INITIALIZED
  const char* text = nullptr;
  EXPECT(api.cuGetErrorName(201, &text), 0);
  if (std::string(text) != "CUDA_ERROR_INVALID_CONTEXT") Fail("cuGetErrorName(201)");
  EXPECT(api.cuGetErrorString(12345, &text), 1);
  EXPECT(api.cuInit(0), 0);

  // No current context: every context call fails, on any thread.
  CUdevice device = -1;
  EXPECT(api.cuDeviceGet(&device, 0), 0);
  EXPECT(api.cuDeviceGet(&device, 1), 101);
  EXPECT(api.cuMemAlloc(&pointer, 16), 201);
  CUcontext context = nullptr;
  EXPECT(api.cuDevicePrimaryCtxRetain(&context, device), 0);
  EXPECT(api.cuMemAlloc(&pointer, 16), 201);  // retained, not current
  EXPECT(api.cuCtxSetCurrent(context), 0);
  CUresult other_thread = 0;
  std::thread([&]() { other_thread = api.cuMemAlloc(&pointer, 16); }).join();
  if (other_thread != 201) Fail("a thread without a current context could allocate");

  // Memory.
  size_t free_bytes = 0, total_bytes = 0;
  EXPECT(api.cuMemGetInfo(&free_bytes, &total_bytes), 0);
  if (free_bytes != total_bytes) Fail("memory in use before any allocation");
  EXPECT(api.cuMemAlloc(&pointer, 0), 1);
  EXPECT(api.cuMemAlloc(&pointer, total_bytes + 1), 2);
  EXPECT(api.cuMemFree(12345), 1);
  void* host = nullptr;
  EXPECT(api.cuMemAllocHost(&host, 64), 0);
  EXPECT(api.cuMemFreeHost(host), 0);
  EXPECT(api.cuMemFreeHost(host), 1);

  // Modules and functions.
  CUmodule module = nullptr;
  const char not_an_image[32] = "\x7f" "ELF, but not the fake's";
  EXPECT(api.cuModuleLoadDataEx(&module, not_an_image, 0, nullptr, nullptr), 200);
  EXPECT(api.cuModuleLoadDataEx(&module, image.data(), 0, nullptr, nullptr), 0);
  CUfunction function = nullptr;
  EXPECT(api.cuModuleGetFunction(&function, module, "no_such_kernel"), 500);
  EXPECT(api.cuModuleGetFunction(&function, module, kernel.c_str()), 0);
  int value = 0;
  EXPECT(api.cuFuncGetAttribute(&value, 8, function), 0);
  if (value != 49152) Fail("default dynamic shared memory limit");
  EXPECT(api.cuFuncSetAttribute(function, 8, 232449), 1);
  EXPECT(api.cuFuncSetAttribute(function, 8, 100000), 0);

  // Buffers: the arguments (a struct of pointers, passed as an array of CUdeviceptr), the output.
  std::vector<CUdeviceptr> arguments(static_cast<size_t>(slots));
  CUstream stream = nullptr;
  EXPECT(api.cuStreamCreate(&stream, 0), 0);
  for (int64_t k = 0; k < slots; k++) {
    const size_t bytes = static_cast<size_t>(counts[k] > 0 ? counts[k] : 1) * sizeof(double);
    EXPECT(api.cuMemAlloc(&arguments[k], bytes), 0);
    EXPECT(api.cuMemcpyHtoDAsync(arguments[k], data, static_cast<size_t>(counts[k]) * sizeof(double), stream), 0);
    data += counts[k] * sizeof(double);
  }
  const size_t out_bytes = static_cast<size_t>(nx * dim_val) * sizeof(double);
  CUdeviceptr out = 0;
  EXPECT(api.cuMemAlloc(&out, out_bytes), 0);
  std::vector<double> result(static_cast<size_t>(nx * dim_val));
  EXPECT(api.cuMemcpyHtoD(out, result.data(), out_bytes + 1), 1);  // past the end of the allocation
  EXPECT(api.cuMemcpyDtoH(result.data(), out + 8, out_bytes), 1);
  EXPECT(api.cuMemsetD8Async(out, 0, out_bytes, stream), 0);

  // Launches: refused geometries, an injected failure, then the real one.
  long nx_param = static_cast<long>(nx), ny_param = static_cast<long>(ny), batch_begin = 0;
  CUdeviceptr out_idx = 0, batch_offsets = 0;
  void* params[] = {&nx_param, &ny_param, arguments.data(), &out, &out_idx, &batch_offsets, &batch_begin};
  const unsigned grid = static_cast<unsigned>((nx + block - 1) / block);
  const unsigned threads = static_cast<unsigned>(block);
  const unsigned shared_bytes = static_cast<unsigned>(shared);
  EXPECT(api.cuLaunchKernel(function, 0, 1, 1, threads, 1, 1, shared_bytes, stream, params, nullptr), 1);
  EXPECT(api.cuLaunchKernel(function, grid, 65536, 1, threads, 1, 1, shared_bytes, stream, params, nullptr), 1);
  EXPECT(api.cuLaunchKernel(function, grid, 1, 1, 1025, 1, 1, shared_bytes, stream, params, nullptr), 1);
  EXPECT(api.cuLaunchKernel(function, grid, 1, 1, threads, 1, 1, 100001, stream, params, nullptr), 1);
  EXPECT(api.cuLaunchKernel(function, grid, 1, 1, threads, 1, 1, shared_bytes, stream, params, params), 1);
  setenv("KEOPS_FAKE_CUDA_FAIL_LAUNCH", "1", 1);
  EXPECT(api.cuLaunchKernel(function, grid, 1, 1, threads, 1, 1, shared_bytes, stream, params, nullptr), 719);
  unsetenv("KEOPS_FAKE_CUDA_FAIL_LAUNCH");
  setenv("KEOPS_FAKE_CUDA_KERNEL_MAX_THREADS", "4", 1);
  EXPECT(api.cuFuncGetAttribute(&value, 0, function), 0);
  if (value != 4) Fail("KEOPS_FAKE_CUDA_KERNEL_MAX_THREADS is not read at each call");
  if (threads > 4) {
    EXPECT(api.cuLaunchKernel(function, grid, 1, 1, threads, 1, 1, shared_bytes, stream, params, nullptr), 1);
  }
  unsetenv("KEOPS_FAKE_CUDA_KERNEL_MAX_THREADS");
  EXPECT(api.cuLaunchKernel(function, grid, 1, 1, threads, 1, 1, shared_bytes, stream, params, nullptr), 0);
  EXPECT(api.cuStreamSynchronize(stream), 0);
  EXPECT(api.cuMemcpyDtoHAsync(result.data(), out, out_bytes, stream), 0);
  EXPECT(api.cuCtxSynchronize(), 0);
  std::ofstream output(argv[5], std::ios::binary);
  output.write(reinterpret_cast<const char*>(result.data()), static_cast<std::streamsize>(out_bytes));
  output.close();
  if (!output) Fail("cannot write the output");

  // Teardown, with double frees and stale handles.
  for (CUdeviceptr argument : arguments) EXPECT(api.cuMemFree(argument), 0);
  EXPECT(api.cuMemFree(arguments[0]), 1);
  EXPECT(api.cuStreamDestroy(stream), 0);
  EXPECT(api.cuStreamSynchronize(stream), 400);
  void* pinned = nullptr;
  EXPECT(api.cuMemAllocHost(&pinned, 100), 0);

  // A sticky failure: every call in the context fails until the context is reset.
  setenv("KEOPS_FAKE_CUDA_FAIL_LAUNCH", "sticky", 1);
  EXPECT(api.cuLaunchKernel(function, grid, 1, 1, threads, 1, 1, shared_bytes, nullptr, params, nullptr), 719);
  unsetenv("KEOPS_FAKE_CUDA_FAIL_LAUNCH");
  EXPECT(api.cuMemGetInfo(&free_bytes, &total_bytes), 719);
  EXPECT(api.cuCtxSynchronize(), 719);

  // Releasing the last reference resets the context: `out`, the module and `pinned` go with it, and the context
  // is unusable until retained again.
  EXPECT(api.cuDevicePrimaryCtxRelease(device), 0);
  EXPECT(api.cuDevicePrimaryCtxRelease(device), 201);
  EXPECT(api.cuMemFree(out), 201);
  EXPECT(api.cuDevicePrimaryCtxRetain(&context, device), 0);
  EXPECT(api.cuCtxSynchronize(), 0);
  EXPECT(api.cuMemFree(out), 1);
  EXPECT(api.cuMemFreeHost(pinned), 1);
  EXPECT(api.cuModuleUnload(module), 400);
  EXPECT(api.cuLaunchKernel(function, grid, 1, 1, threads, 1, 1, shared_bytes, nullptr, params, nullptr), 400);
  EXPECT(api.cuMemGetInfo(&free_bytes, &total_bytes), 0);
  if (free_bytes != total_bytes) Fail("memory still in use after the context was reset");
  EXPECT(api.cuDevicePrimaryCtxRelease(device), 0);
  return 0;
}
