// A fake CUDA driver (libcuda.so.1) for testing the addon's CUDA path on machines without a GPU: it exports every
// driver function native/cuda_api.h lists, under the same (versioned) symbols and with the same signatures and
// result codes, and runs kernels compiled by the fake NVRTC (fake_nvrtc.cc) on the CPU. Built by test/fake-cuda.ts.
//
// The device: "keops-node emulated GPU", compute capability 9.0, 4 multiprocessors, 1024 threads per block, 48 KiB
// of shared memory per block (227 KiB opted in), $KEOPS_FAKE_CUDA_MEMORY bytes of memory (256 MiB by default).
//
// Deliberately strict, to catch host-side bugs a real driver would punish less legibly:
//   - every call but the error strings and the version needs cuInit first (CUDA_ERROR_NOT_INITIALIZED);
//   - every call that works in a context (memory, copies, modules, functions, launches, streams, synchronisation)
//     needs one current on the calling thread: cuCtxSetCurrent's setting is per thread, as in CUDA, and a thread
//     without one gets CUDA_ERROR_INVALID_CONTEXT. So does a thread whose context was released: when the last
//     cuDevicePrimaryCtxRetain is matched by cuDevicePrimaryCtxRelease_v2, the primary context is reset as CUDA
//     does it, freeing its memory, modules and streams;
//   - page-locked host memory (cuMemAllocHost) belongs to its context too: a reset makes it inaccessible
//     (PROT_NONE, and never reused), so that host code still using it faults at once, as with a real driver;
//   - handles (device pointers, modules, functions, streams, host allocations) are checked against what is live;
//     a copy must stay inside one allocation; new device memory is filled with 0xff bytes (NaN, -1), so that
//     reading memory nothing wrote shows;
//   - launch limits are the device's and the function's (block size, grid, dynamic shared memory opt-in).
// Everything runs synchronously, in the calling thread's call (streams are only checked handles), under one mutex:
// the driver is thread-safe, and kernels never run concurrently.
//
// Device pointers are the host addresses of the allocations: the emulated kernels dereference them directly.
//
// Environment, read at each call (tests change it at run time through process.env):
//   KEOPS_FAKE_CUDA_DEVICES             number of devices (default 1); 0: cuInit fails with CUDA_ERROR_NO_DEVICE
//   KEOPS_FAKE_CUDA_MEMORY              device memory in bytes (default 268435456)
//   KEOPS_FAKE_CUDA_KERNEL_MAX_THREADS  CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK of every function (default 1024)
//   KEOPS_FAKE_CUDA_FAIL_LAUNCH         non-empty: cuLaunchKernel returns CUDA_ERROR_LAUNCH_FAILED, runs nothing;
//                                       "sticky": moreover the context is corrupt, as after a real launch failure:
//                                       every later call made in it returns CUDA_ERROR_LAUNCH_FAILED until the
//                                       primary context is reset (its last reference released)
//   KEOPS_FAKE_CUDA_FAIL_DEVICE         a device ordinal: launches on that device only fail as with FAIL_LAUNCH=1
//   KEOPS_FAKE_CUDA_TRACE               a file to which one line per event is appended:
//                                         launch NAME grid=X,Y,Z block=X shared=BYTES   (block=X,Y,Z if Y or Z > 1)
//                                         alloc BYTES / free BYTES                      device memory
//                                         hostalloc BYTES / hostfree BYTES              page-locked host memory
//                                         resetfree BYTES / resethostfree BYTES         freed by a context reset
//                                         moduleload BYTES / moduleunload               BYTES: the image's size
//                                         ctxretain DEVICE REFS / ctxrelease DEVICE REFS   REFS: count after the call
//   TMPDIR                              where a module's shared object is written before dlopen (then unlinked)
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "cuda_api.h"
#include "fake_export.h"

using keops::CUcontext;
using keops::CUdevice;
using keops::CUdeviceptr;
using keops::CUfunction;
using keops::CUmodule;
using keops::CUresult;
using keops::CUstream;

namespace {

constexpr CUresult kSuccess = 0;
constexpr CUresult kInvalidValue = 1;
constexpr CUresult kOutOfMemory = 2;
constexpr CUresult kNotInitialized = 3;
constexpr CUresult kNoDevice = 100;
constexpr CUresult kInvalidDevice = 101;
constexpr CUresult kInvalidImage = 200;
constexpr CUresult kInvalidContext = 201;
constexpr CUresult kInvalidHandle = 400;
constexpr CUresult kNotFound = 500;
constexpr CUresult kLaunchOutOfResources = 701;
constexpr CUresult kLaunchFailed = 719;
constexpr CUresult kUnknown = 999;

struct ErrorText {
  CUresult code;
  const char* name;
  const char* text;
};
// cuGetErrorName / cuGetErrorString of a CUDA 13 driver.
constexpr ErrorText kErrors[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {4, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {200, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {209, "CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"},
    {218, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "the provided PTX was compiled with an unsupported toolchain."},
    {300, "CUDA_ERROR_INVALID_SOURCE", "device kernel image is invalid"},
    {400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {702, "CUDA_ERROR_LAUNCH_TIMEOUT", "the launch timed out and was terminated"},
    {719, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {801, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

// The device's properties.
constexpr const char* kDeviceName = "keops-node emulated GPU";
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kSharedPerBlock = 49152;
constexpr int kSharedPerBlockOptin = 232448;
constexpr unsigned kMaxGridX = 2147483647u;
constexpr unsigned kMaxGridYZ = 65535u;
constexpr size_t kDefaultMemory = size_t{256} << 20;
constexpr size_t kAllocationAlignment = 256;  // cuMemAlloc's guarantee
constexpr unsigned char kPoison = 0xff;       // fills new device memory

// CUfunction_attribute values.
constexpr int kFuncMaxThreadsPerBlock = 0;
constexpr int kFuncSharedSizeBytes = 1;
constexpr int kFuncConstSizeBytes = 2;
constexpr int kFuncLocalSizeBytes = 3;
constexpr int kFuncNumRegs = 4;
constexpr int kFuncPtxVersion = 5;
constexpr int kFuncBinaryVersion = 6;
constexpr int kFuncCacheModeCa = 7;
constexpr int kFuncMaxDynamicSharedSizeBytes = 8;
constexpr int kFuncPreferredSharedMemoryCarveout = 9;

// CUjit_option values whose buffers cuModuleLoadDataEx fills.
constexpr int kJitInfoLogBuffer = 3;
constexpr int kJitInfoLogBufferSizeBytes = 4;
constexpr int kJitErrorLogBuffer = 5;
constexpr int kJitErrorLogBufferSizeBytes = 6;

// The image the fake NVRTC produces: magic, little-endian uint64 size, shared object.
constexpr char kImageMagic[8] = {'K', 'E', 'O', 'P', 'S', 'E', 'M', 'U'};
constexpr uint64_t kMaxImageBytes = uint64_t{1} << 31;  // anything larger is a corrupt size field

// The trampoline a module exports per kernel (see fake_nvrtc.cc); returns a keops_emu::Status.
using Entry = int (*)(const unsigned grid[3], const unsigned block[3], unsigned shared_bytes, void** params);
constexpr int kEmuTooMuchShared = 2;
constexpr int kEmuNoParams = 3;
constexpr int kEmuNoThreads = 4;

// ---- environment --------------------------------------------------------------------------------------------------

// A non-negative integer from the environment, or `fallback` when unset or malformed.
unsigned long long EnvNumber(const char* name, unsigned long long fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || text[0] == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text, &end, 10);
  return errno != 0 || *end != '\0' || text[0] == '-' ? fallback : value;
}

int DeviceCount() { return static_cast<int>(std::min<unsigned long long>(EnvNumber("KEOPS_FAKE_CUDA_DEVICES", 1), 64)); }
size_t TotalMemory() { return static_cast<size_t>(EnvNumber("KEOPS_FAKE_CUDA_MEMORY", kDefaultMemory)); }
int KernelMaxThreads() {
  const unsigned long long value = EnvNumber("KEOPS_FAKE_CUDA_KERNEL_MAX_THREADS", kMaxThreadsPerBlock);
  return value < 1 || value > kMaxThreadsPerBlock ? kMaxThreadsPerBlock : static_cast<int>(value);
}
// 0: launch; 1: fail; 2: fail and corrupt the context.
int FailLaunches(int device) {
  const char* failing = std::getenv("KEOPS_FAKE_CUDA_FAIL_DEVICE");
  if (failing != nullptr && failing[0] != '\0' && EnvNumber("KEOPS_FAKE_CUDA_FAIL_DEVICE", ~0ull) == static_cast<unsigned long long>(device)) {
    return 1;
  }
  const char* value = std::getenv("KEOPS_FAKE_CUDA_FAIL_LAUNCH");
  if (value == nullptr || value[0] == '\0') return 0;
  return strcmp(value, "sticky") == 0 ? 2 : 1;
}

// Appends one line to $KEOPS_FAKE_CUDA_TRACE (called with the driver's mutex held, so lines never interleave).
void Trace(const std::string& line) {
  const char* path = std::getenv("KEOPS_FAKE_CUDA_TRACE");
  if (path == nullptr || path[0] == '\0') return;
  const int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  const std::string text = line + "\n";
  const ssize_t written = write(fd, text.data(), text.size());
  (void)written;  // tracing is best effort
  close(fd);
}

// ---- state --------------------------------------------------------------------------------------------------------

struct Module {
  CUcontext context = nullptr;
  void* library = nullptr;  // dlopen handle
  std::map<std::string, CUfunction> functions;
};

struct Allocation {
  size_t bytes = 0;
  CUcontext context = nullptr;
};

struct HostAllocation {
  size_t bytes = 0;   // as requested
  size_t mapped = 0;  // whole pages
  CUcontext context = nullptr;
};

}  // namespace

// The objects behind the opaque handle types of cuda_api.h (keops::CUctx_st*...).
struct keops::CUctx_st {
  CUdevice device = 0;
  int references = 0;  // cuDevicePrimaryCtxRetain minus cuDevicePrimaryCtxRelease; 0: reset, unusable
  CUresult sticky = 0;  // a sticky error (KEOPS_FAKE_CUDA_FAIL_LAUNCH=sticky) every call returns until a reset
};
struct keops::CUmod_st {
  Module module;
};
struct keops::CUfunc_st {
  CUmodule module = nullptr;
  std::string name;
  Entry entry = nullptr;
  int max_dynamic_shared = kSharedPerBlock;  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
};
struct keops::CUstream_st {
  CUcontext context = nullptr;
};

namespace {

struct Driver {
  std::mutex mutex;
  bool initialized = false;
  std::map<CUdevice, std::unique_ptr<keops::CUctx_st>> primary;  // created on first retain, never destroyed
  std::map<uintptr_t, Allocation> allocations;                   // device memory, by address
  size_t used = 0;                                               // bytes of `allocations`
  std::map<void*, HostAllocation> host_allocations;
  std::set<CUmodule> modules;
  std::set<CUfunction> functions;
  std::set<CUstream> streams;
};

Driver& State() {
  static auto* driver = new Driver();  // never destroyed: a call may come from a thread during exit
  return *driver;
}

thread_local CUcontext t_current = nullptr;  // cuCtxSetCurrent's per-thread setting

bool IsActive(CUcontext context) { return context != nullptr && context->references > 0; }

// The checks at the top of a call made in a context. Called with the mutex held.
CUresult NeedContext(const Driver& driver) {
  if (!driver.initialized) return kNotInitialized;
  if (!IsActive(t_current)) return kInvalidContext;
  return t_current->sticky;
}

// The null stream, the legacy / per-thread default handles (1, 2) or a live stream of the current context.
bool ValidStream(const Driver& driver, CUstream stream) {
  const uintptr_t raw = reinterpret_cast<uintptr_t>(stream);
  if (raw == 0 || raw == 1 || raw == 2) return true;
  return driver.streams.count(stream) != 0 && stream->context == t_current;
}

// Whether `device` names a device; with the mutex held.
CUresult CheckDevice(const Driver& driver, CUdevice device) {
  if (!driver.initialized) return kNotInitialized;
  return device >= 0 && device < DeviceCount() ? kSuccess : kInvalidDevice;
}

// Whether [address, address + bytes) lies inside one live allocation.
bool InsideAllocation(const Driver& driver, CUdeviceptr address, size_t bytes) {
  const uintptr_t begin = static_cast<uintptr_t>(address);
  if (begin == 0 || bytes > UINTPTR_MAX - begin) return false;
  auto next = driver.allocations.upper_bound(begin);
  if (next == driver.allocations.begin()) return false;
  const auto& [base, allocation] = *std::prev(next);
  return begin + bytes <= base + allocation.bytes;
}

// The copies and memset, synchronous whatever the stream.
CUresult CopyToDevice(CUdeviceptr destination, const void* source, size_t bytes, CUstream stream) {
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  if (!ValidStream(driver, stream)) return kInvalidHandle;
  if (bytes == 0) return kSuccess;
  if (source == nullptr || !InsideAllocation(driver, destination, bytes)) return kInvalidValue;
  memcpy(reinterpret_cast<void*>(static_cast<uintptr_t>(destination)), source, bytes);
  return kSuccess;
}

CUresult CopyToHost(void* destination, CUdeviceptr source, size_t bytes, CUstream stream) {
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  if (!ValidStream(driver, stream)) return kInvalidHandle;
  if (bytes == 0) return kSuccess;
  if (destination == nullptr || !InsideAllocation(driver, source, bytes)) return kInvalidValue;
  memcpy(destination, reinterpret_cast<const void*>(static_cast<uintptr_t>(source)), bytes);
  return kSuccess;
}

void FreeAllocation(Driver& driver, std::map<uintptr_t, Allocation>::iterator it, const char* trace = "free ") {
  Trace(trace + std::to_string(it->second.bytes));
  driver.used -= it->second.bytes;
  std::free(reinterpret_cast<void*>(it->first));
  driver.allocations.erase(it);
}

// Module, function and stream objects are never deleted, only dropped from the live sets: a stale handle must not
// be taken for a new one that got the same address (a few bytes each, for the life of a test process).
void UnloadModule(Driver& driver, CUmodule module) {
  for (const auto& named : module->module.functions) driver.functions.erase(named.second);
  dlclose(module->module.library);
  module->module.library = nullptr;
  driver.modules.erase(module);
  Trace("moduleunload");
}

// What resetting a primary context destroys: its device and page-locked host memory, modules and streams; it also
// clears a sticky error.
void ResetContext(Driver& driver, CUcontext context) {
  for (auto it = driver.allocations.begin(); it != driver.allocations.end();) {
    auto current = it++;
    if (current->second.context == context) FreeAllocation(driver, current, "resetfree ");
  }
  for (auto it = driver.host_allocations.begin(); it != driver.host_allocations.end();) {
    auto current = it++;
    if (current->second.context != context) continue;
    // Left mapped but inaccessible (leaked on purpose): a stale use faults instead of hitting reused memory.
    mprotect(current->first, current->second.mapped, PROT_NONE);
    Trace("resethostfree " + std::to_string(current->second.bytes));
    driver.host_allocations.erase(current);
  }
  context->sticky = kSuccess;
  for (auto it = driver.modules.begin(); it != driver.modules.end();) {
    CUmodule module = *it++;
    if (module->module.context == context) UnloadModule(driver, module);
  }
  for (auto it = driver.streams.begin(); it != driver.streams.end();) {
    CUstream stream = *it++;
    if (stream->context == context) driver.streams.erase(stream);  // not deleted, see UnloadModule
  }
}

// Copies `message` into a JIT log buffer option pair of cuModuleLoadDataEx, when the caller gave one.
void FillJitLog(unsigned count, const int* options, void** values, int buffer_option, int size_option,
                const std::string& message) {
  if (options == nullptr || values == nullptr) return;
  int buffer_index = -1;
  int size_index = -1;
  for (unsigned k = 0; k < count; k++) {
    if (options[k] == buffer_option) buffer_index = static_cast<int>(k);
    if (options[k] == size_option) size_index = static_cast<int>(k);
  }
  if (buffer_index < 0 || size_index < 0 || values[buffer_index] == nullptr) return;
  const size_t capacity = static_cast<size_t>(reinterpret_cast<uintptr_t>(values[size_index]));
  if (capacity == 0) return;
  const size_t length = std::min(message.size(), capacity - 1);
  memcpy(values[buffer_index], message.data(), length);
  static_cast<char*>(values[buffer_index])[length] = '\0';
  values[size_index] = reinterpret_cast<void*>(static_cast<uintptr_t>(length));  // OUT: bytes written
}

// Writes the shared object to a temporary file and opens it; the file is unlinked at once (the mapping stays).
void* OpenSharedObject(const char* bytes, size_t size, std::string* error) {
  const char* tmp = std::getenv("TMPDIR");
  std::string path = std::string(tmp != nullptr && tmp[0] != '\0' ? tmp : "/tmp") + "/keops-fake-cuda-XXXXXX.so";
  const int fd = mkstemps(&path[0], 3);
  if (fd < 0) {
    *error = std::string("cannot create a temporary file: ") + strerror(errno);
    return nullptr;
  }
  size_t done = 0;
  while (done < size) {
    const ssize_t written = write(fd, bytes + done, size - done);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) break;
    done += static_cast<size_t>(written);
  }
  close(fd);
  void* library = nullptr;
  if (done == size) {
    library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
      const char* why = dlerror();
      *error = why != nullptr ? why : "dlopen failed";
    }
  } else {
    *error = "cannot write " + path;
  }
  unlink(path.c_str());
  return library;
}

}  // namespace

// ---- the driver API -------------------------------------------------------------------------------------------------

extern "C" {

#define KEOPS_FAKE_API __attribute__((visibility("hidden")))

KEOPS_FAKE_API CUresult fake_cuInit(unsigned int flags) {
  if (flags != 0) return kInvalidValue;
  if (DeviceCount() == 0) return kNoDevice;  // what a driver without a GPU answers
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  driver.initialized = true;
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuDriverGetVersion(int* version) {
  if (version == nullptr) return kInvalidValue;
  *version = 13000;
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuGetErrorName(CUresult error, const char** name) {
  if (name == nullptr) return kInvalidValue;
  for (const ErrorText& known : kErrors) {
    if (known.code == error) {
      *name = known.name;
      return kSuccess;
    }
  }
  *name = nullptr;
  return kInvalidValue;
}

KEOPS_FAKE_API CUresult fake_cuGetErrorString(CUresult error, const char** text) {
  if (text == nullptr) return kInvalidValue;
  for (const ErrorText& known : kErrors) {
    if (known.code == error) {
      *text = known.text;
      return kSuccess;
    }
  }
  *text = nullptr;
  return kInvalidValue;
}

KEOPS_FAKE_API CUresult fake_cuDeviceGetCount(int* count) {
  if (count == nullptr) return kInvalidValue;
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (!driver.initialized) return kNotInitialized;
  *count = DeviceCount();
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuDeviceGet(CUdevice* device, int ordinal) {
  if (device == nullptr) return kInvalidValue;
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (!driver.initialized) return kNotInitialized;
  if (ordinal < 0 || ordinal >= DeviceCount()) return kInvalidDevice;
  *device = ordinal;
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuDeviceGetName(char* name, int length, CUdevice device) {
  if (name == nullptr || length <= 0) return kInvalidValue;
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = CheckDevice(driver, device); status != kSuccess) return status;
  const size_t copied = std::min(strlen(kDeviceName), static_cast<size_t>(length) - 1);
  memcpy(name, kDeviceName, copied);
  name[copied] = '\0';
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuDeviceGetAttribute(int* value, int attribute, CUdevice device) {
  if (value == nullptr) return kInvalidValue;
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = CheckDevice(driver, device); status != kSuccess) return status;
  // CUdevice_attribute values; any other is refused (extend the table when the addon needs one).
  static const std::map<int, int> kAttributes = {
      {1, kMaxThreadsPerBlock},    // MAX_THREADS_PER_BLOCK
      {2, 1024},                   // MAX_BLOCK_DIM_X
      {3, 1024},                   // MAX_BLOCK_DIM_Y
      {4, 64},                     // MAX_BLOCK_DIM_Z
      {5, static_cast<int>(kMaxGridX)},   // MAX_GRID_DIM_X
      {6, static_cast<int>(kMaxGridYZ)},  // MAX_GRID_DIM_Y
      {7, static_cast<int>(kMaxGridYZ)},  // MAX_GRID_DIM_Z
      {8, kSharedPerBlock},        // MAX_SHARED_MEMORY_PER_BLOCK
      {9, 65536},                  // TOTAL_CONSTANT_MEMORY
      {10, 32},                    // WARP_SIZE
      {12, 65536},                 // MAX_REGISTERS_PER_BLOCK
      {16, 4},                     // MULTIPROCESSOR_COUNT
      {39, 2048},                  // MAX_THREADS_PER_MULTIPROCESSOR
      {41, 1},                     // UNIFIED_ADDRESSING
      {75, 9},                     // COMPUTE_CAPABILITY_MAJOR
      {76, 0},                     // COMPUTE_CAPABILITY_MINOR
      {81, 233472},                // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
      {82, 65536},                 // MAX_REGISTERS_PER_MULTIPROCESSOR
      {97, kSharedPerBlockOptin},  // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
  };
  const auto known = kAttributes.find(attribute);
  if (known == kAttributes.end()) return kInvalidValue;
  *value = known->second;
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuDeviceTotalMem(size_t* bytes, CUdevice device) {
  if (bytes == nullptr) return kInvalidValue;
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = CheckDevice(driver, device); status != kSuccess) return status;
  *bytes = TotalMemory();
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuDevicePrimaryCtxRetain(CUcontext* context, CUdevice device) {
  if (context == nullptr) return kInvalidValue;
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = CheckDevice(driver, device); status != kSuccess) return status;
  std::unique_ptr<keops::CUctx_st>& primary = driver.primary[device];
  if (primary == nullptr) {
    primary = std::make_unique<keops::CUctx_st>();
    primary->device = device;
  }
  primary->references++;
  Trace("ctxretain " + std::to_string(device) + " " + std::to_string(primary->references));
  *context = primary.get();
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuDevicePrimaryCtxRelease(CUdevice device) {
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = CheckDevice(driver, device); status != kSuccess) return status;
  auto found = driver.primary.find(device);
  if (found == driver.primary.end() || found->second->references == 0) return kInvalidContext;  // not retained
  CUcontext context = found->second.get();
  if (--context->references == 0) ResetContext(driver, context);
  Trace("ctxrelease " + std::to_string(device) + " " + std::to_string(context->references));
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuCtxSetCurrent(CUcontext context) {
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (!driver.initialized) return kNotInitialized;
  if (context != nullptr) {
    bool known = false;
    for (const auto& primary : driver.primary) known = known || primary.second.get() == context;
    if (!known) return kInvalidContext;
  }
  t_current = context;  // a released context may be set; calls made in it fail
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuCtxSynchronize() {
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  return NeedContext(driver);  // nothing is ever pending
}

KEOPS_FAKE_API CUresult fake_cuMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (free_bytes == nullptr || total_bytes == nullptr) return kInvalidValue;
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  const size_t total = TotalMemory();
  *total_bytes = total;
  *free_bytes = driver.used < total ? total - driver.used : 0;
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuMemAlloc(CUdeviceptr* pointer, size_t bytes) {
  if (pointer == nullptr || bytes == 0) return kInvalidValue;
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  const size_t total = TotalMemory();
  if (bytes > total || driver.used > total - bytes) return kOutOfMemory;
  const size_t rounded = (bytes + kAllocationAlignment - 1) / kAllocationAlignment * kAllocationAlignment;
  void* memory = rounded < bytes ? nullptr : std::aligned_alloc(kAllocationAlignment, rounded);
  if (memory == nullptr) return kOutOfMemory;
  memset(memory, kPoison, bytes);
  driver.allocations[reinterpret_cast<uintptr_t>(memory)] = {bytes, t_current};
  driver.used += bytes;
  Trace("alloc " + std::to_string(bytes));
  *pointer = static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(memory));
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuMemFree(CUdeviceptr pointer) {
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  auto found = driver.allocations.find(static_cast<uintptr_t>(pointer));
  if (found == driver.allocations.end()) return kInvalidValue;  // never allocated, already freed, or interior
  FreeAllocation(driver, found);
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuMemAllocHost(void** pointer, size_t bytes) {
  if (pointer == nullptr || bytes == 0) return kInvalidValue;
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  // Whole pages of their own, like real page-locked memory, so that a context reset can revoke them.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t mapped = (bytes + page - 1) / page * page;
  if (mapped < bytes) return kOutOfMemory;
  void* memory = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return kOutOfMemory;
  driver.host_allocations[memory] = {bytes, mapped, t_current};
  Trace("hostalloc " + std::to_string(bytes));
  *pointer = memory;
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuMemFreeHost(void* pointer) {
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  auto found = driver.host_allocations.find(pointer);
  if (found == driver.host_allocations.end()) return kInvalidValue;
  Trace("hostfree " + std::to_string(found->second.bytes));
  munmap(pointer, found->second.mapped);
  driver.host_allocations.erase(found);
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuMemcpyHtoD(CUdeviceptr destination, const void* source, size_t bytes) {
  return CopyToDevice(destination, source, bytes, nullptr);
}

KEOPS_FAKE_API CUresult fake_cuMemcpyDtoH(void* destination, CUdeviceptr source, size_t bytes) {
  return CopyToHost(destination, source, bytes, nullptr);
}

KEOPS_FAKE_API CUresult fake_cuMemcpyHtoDAsync(CUdeviceptr destination, const void* source, size_t bytes,
                                               CUstream stream) {
  return CopyToDevice(destination, source, bytes, stream);
}

KEOPS_FAKE_API CUresult fake_cuMemcpyDtoHAsync(void* destination, CUdeviceptr source, size_t bytes,
                                               CUstream stream) {
  return CopyToHost(destination, source, bytes, stream);
}

KEOPS_FAKE_API CUresult fake_cuMemsetD8Async(CUdeviceptr destination, unsigned char value, size_t count,
                                             CUstream stream) {
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  if (!ValidStream(driver, stream)) return kInvalidHandle;
  if (count == 0) return kSuccess;
  if (!InsideAllocation(driver, destination, count)) return kInvalidValue;
  memset(reinterpret_cast<void*>(static_cast<uintptr_t>(destination)), value, count);
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuStreamCreate(CUstream* stream, unsigned int flags) {
  if (stream == nullptr || flags > 1) return kInvalidValue;  // CU_STREAM_DEFAULT or CU_STREAM_NON_BLOCKING
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  auto* created = new keops::CUstream_st();
  created->context = t_current;
  driver.streams.insert(created);
  *stream = created;
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuStreamDestroy(CUstream stream) {
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  return driver.streams.erase(stream) == 0 ? kInvalidHandle : kSuccess;  // not deleted, see UnloadModule
}

KEOPS_FAKE_API CUresult fake_cuStreamSynchronize(CUstream stream) {
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  return ValidStream(driver, stream) ? kSuccess : kInvalidHandle;
}

KEOPS_FAKE_API CUresult fake_cuModuleLoadDataEx(CUmodule* module, const void* image, unsigned int option_count,
                                                int* options, void** option_values) {
  if (module == nullptr || image == nullptr) return kInvalidValue;
  if (option_count > 0 && (options == nullptr || option_values == nullptr)) return kInvalidValue;
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  auto fail = [&](CUresult status, const std::string& why) {
    FillJitLog(option_count, options, option_values, kJitErrorLogBuffer, kJitErrorLogBufferSizeBytes,
               "keops fake CUDA driver: " + why);
    FillJitLog(option_count, options, option_values, kJitInfoLogBuffer, kJitInfoLogBufferSizeBytes, "");
    return status;
  };
  // Compared byte by byte, stopping at the first difference: a short image (a PTX string) is not read past its end.
  const auto* bytes = static_cast<const unsigned char*>(image);
  for (size_t k = 0; k < sizeof kImageMagic; k++) {
    if (bytes[k] != static_cast<unsigned char>(kImageMagic[k])) {
      return fail(kInvalidImage, "not an image of the keops fake NVRTC (no KEOPSEMU header)");
    }
  }
  uint64_t size = 0;
  for (int k = 7; k >= 0; k--) size = (size << 8) | bytes[8 + k];
  if (size == 0 || size > kMaxImageBytes) return fail(kInvalidImage, "corrupt KEOPSEMU image size");
  std::string error;
  void* library = OpenSharedObject(reinterpret_cast<const char*>(bytes + 16), static_cast<size_t>(size), &error);
  if (library == nullptr) return fail(kInvalidImage, error);
  auto* loaded = new keops::CUmod_st();
  loaded->module.context = t_current;
  loaded->module.library = library;
  driver.modules.insert(loaded);
  FillJitLog(option_count, options, option_values, kJitErrorLogBuffer, kJitErrorLogBufferSizeBytes, "");
  FillJitLog(option_count, options, option_values, kJitInfoLogBuffer, kJitInfoLogBufferSizeBytes, "");
  Trace("moduleload " + std::to_string(size + 16));
  *module = loaded;
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuModuleUnload(CUmodule module) {
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  if (driver.modules.count(module) == 0) return kInvalidHandle;
  UnloadModule(driver, module);
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuModuleGetFunction(CUfunction* function, CUmodule module, const char* name) {
  if (function == nullptr || name == nullptr) return kInvalidValue;
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  if (driver.modules.count(module) == 0) return kInvalidHandle;
  auto known = module->module.functions.find(name);
  if (known != module->module.functions.end()) {
    *function = known->second;
    return kSuccess;
  }
  const std::string symbol = std::string("keops_emu_entry_") + name;
  void* entry = dlsym(module->module.library, symbol.c_str());
  if (entry == nullptr) return kNotFound;
  auto* created = new keops::CUfunc_st();
  created->module = module;
  created->name = name;
  created->entry = reinterpret_cast<Entry>(entry);
  module->module.functions[name] = created;
  driver.functions.insert(created);
  *function = created;
  return kSuccess;
}

KEOPS_FAKE_API CUresult fake_cuFuncGetAttribute(int* value, int attribute, CUfunction function) {
  if (value == nullptr) return kInvalidValue;
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  if (driver.functions.count(function) == 0) return kInvalidHandle;
  switch (attribute) {
    case kFuncMaxThreadsPerBlock:
      *value = KernelMaxThreads();
      return kSuccess;
    case kFuncSharedSizeBytes:
    case kFuncConstSizeBytes:
    case kFuncLocalSizeBytes:
    case kFuncCacheModeCa:
      *value = 0;
      return kSuccess;
    case kFuncNumRegs:
      *value = 32;
      return kSuccess;
    case kFuncPtxVersion:
    case kFuncBinaryVersion:
      *value = 90;
      return kSuccess;
    case kFuncMaxDynamicSharedSizeBytes:
      *value = function->max_dynamic_shared;
      return kSuccess;
    case kFuncPreferredSharedMemoryCarveout:
      *value = -1;
      return kSuccess;
    default:
      return kInvalidValue;
  }
}

KEOPS_FAKE_API CUresult fake_cuFuncSetAttribute(CUfunction function, int attribute, int value) {
  Driver& driver = State();
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  if (driver.functions.count(function) == 0) return kInvalidHandle;
  if (attribute == kFuncMaxDynamicSharedSizeBytes) {
    if (value < 0 || value > kSharedPerBlockOptin) return kInvalidValue;  // no static shared memory to subtract
    function->max_dynamic_shared = value;
    return kSuccess;
  }
  if (attribute == kFuncPreferredSharedMemoryCarveout) return value >= -1 && value <= 100 ? kSuccess : kInvalidValue;
  return kInvalidValue;
}

KEOPS_FAKE_API CUresult fake_cuLaunchKernel(CUfunction function, unsigned grid_x, unsigned grid_y, unsigned grid_z,
                                            unsigned block_x, unsigned block_y, unsigned block_z,
                                            unsigned shared_bytes, CUstream stream, void** params, void** extra) {
  Driver& driver = State();
  // Held while the kernel runs: the launch is synchronous, and memory cannot be freed under a running kernel.
  std::lock_guard<std::mutex> lock(driver.mutex);
  if (const CUresult status = NeedContext(driver); status != kSuccess) return status;
  if (driver.functions.count(function) == 0) return kInvalidHandle;
  if (function->module->module.context != t_current) return kInvalidHandle;  // a function of another context
  if (!ValidStream(driver, stream)) return kInvalidHandle;
  if (grid_x < 1 || grid_x > kMaxGridX || grid_y < 1 || grid_y > kMaxGridYZ || grid_z < 1 || grid_z > kMaxGridYZ) {
    return kInvalidValue;
  }
  const unsigned long long threads = 1ull * block_x * block_y * block_z;
  if (block_x < 1 || block_y < 1 || block_z < 1 || block_x > 1024 || block_y > 1024 || block_z > 64 ||
      threads > static_cast<unsigned long long>(KernelMaxThreads())) {
    return kInvalidValue;
  }
  if (shared_bytes > static_cast<unsigned>(function->max_dynamic_shared)) return kInvalidValue;
  if (extra != nullptr) return kInvalidValue;  // CU_LAUNCH_PARAM_* packing is not emulated
  if (const int fail = FailLaunches(t_current->device); fail != 0) {
    if (fail == 2) t_current->sticky = kLaunchFailed;
    return kLaunchFailed;
  }
  const unsigned grid[3] = {grid_x, grid_y, grid_z};
  const unsigned block[3] = {block_x, block_y, block_z};
  const int status = function->entry(grid, block, shared_bytes, params);
  if (status == kEmuTooMuchShared || status == kEmuNoParams) return kInvalidValue;
  if (status == kEmuNoThreads) return kLaunchOutOfResources;
  if (status != 0) return kUnknown;
  const bool flat = block_y == 1 && block_z == 1;
  Trace("launch " + function->name + " grid=" + std::to_string(grid_x) + "," + std::to_string(grid_y) + "," +
        std::to_string(grid_z) + " block=" + std::to_string(block_x) +
        (flat ? "" : "," + std::to_string(block_y) + "," + std::to_string(block_z)) +
        " shared=" + std::to_string(shared_bytes));
  return kSuccess;
}

}  // extern "C"

namespace keops {
KEOPS_CUDA_REQUIRED_FUNCTIONS(KEOPS_FAKE_EXPORT)
KEOPS_CUDA_OPTIONAL_FUNCTIONS(KEOPS_FAKE_EXPORT)
}  // namespace keops
