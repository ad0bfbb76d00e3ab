// One CUDA device as the addon uses it: the primary context, one stream, a caching allocator and one thread that
// owns them and runs a queue of tasks (every driver call that needs the context happens on that thread, so the JS
// thread never waits for the GPU). No Node-API here; cuda_device_addon.cc turns this into Promises.
//
// Lifetime: a CudaDeviceCore is shared (shared_ptr) by the JS device handle, by every device buffer and by every
// loaded module, so freeing a buffer after the device was closed still reaches a live context. Tasks never hold a
// shared_ptr to the core (the core's destructor joins the thread, so it must not run on it).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cuda_loader.h"

namespace keops {

class CudaDeviceCore {
 public:
  CudaDeviceCore(std::shared_ptr<const CudaDriverApi> api, int ordinal);
  ~CudaDeviceCore();
  CudaDeviceCore(const CudaDeviceCore&) = delete;
  CudaDeviceCore& operator=(const CudaDeviceCore&) = delete;

  // ---- any thread ----
  // Runs `task` on the device thread, in submission order; once the thread has stopped, runs it on the calling
  // thread with the context made current there (only frees and unloads are posted that late).
  void Post(std::function<void()> task);
  // Stops the thread after the tasks already queued; idempotent; must not be called on the device thread.
  void Stop();
  bool OnDeviceThread() const { return std::this_thread::get_id() == worker_.get_id(); }
  int ordinal() const { return ordinal_; }
  const CudaDriverApi& api() const { return *api_; }

  // Memory accounting (bytes): live device allocations (cache excluded), of which user-visible arrays.
  struct Usage {
    int64_t allocated_bytes;
    int64_t cached_bytes;
    int64_t array_count;
    int64_t array_bytes;
    int64_t pinned_bytes;
  };
  Usage usage() const;
  void CountArray(int64_t bytes, int delta);

  // ---- the device thread (or any thread after Stop) ----
  // cuInit, primary context, stream; throws CodedFailure ERR_CUDA / ERR_NO_GPU.
  void Initialise();
  CUstream stream() const { return stream_; }
  // A device allocation of at least `bytes` (0 gives a null pointer); throws ERR_CUDA_OOM after emptying the cache.
  CUdeviceptr Allocate(size_t bytes);
  // Returns an allocation of `bytes` (as passed to Allocate) to the cache, or to the driver.
  void Recycle(CUdeviceptr ptr, size_t bytes);
  // Pinned host memory; null when the driver refuses (the caller then uses pageable memory).
  void* AllocatePinned(size_t bytes);
  void FreePinned(void* ptr, size_t bytes);
  // Throws ERR_CUDA (ERR_CUDA_OOM for out-of-memory) naming `what`; a sticky error marks the context lost.
  void Check(CUresult result, const std::string& what);
  // Throws when an earlier sticky error lost the context.
  void CheckUsable() const;

 private:
  void Loop();
  void MakeCurrent();
  void EmptyCache();

  std::shared_ptr<const CudaDriverApi> api_;
  const int ordinal_;
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  CUstream stream_ = nullptr;
  bool context_retained_ = false;
  std::string lost_;  // the sticky error that made the context unusable

  // Device thread's queue.
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  bool stopped_ = false;
  std::mutex inline_mutex_;  // serialises tasks run inline after Stop
  std::thread worker_;

  // Allocation cache: exact sizes (rounded to 256 bytes), device thread only.
  std::multimap<size_t, CUdeviceptr> cache_;
  std::atomic<int64_t> cached_bytes_{0};
  std::atomic<int64_t> allocated_bytes_{0};
  std::atomic<int64_t> array_count_{0};
  std::atomic<int64_t> array_bytes_{0};
  std::atomic<int64_t> pinned_bytes_{0};
};

// A device allocation owned by JS (a DeviceArray, or a reduction's output kept on the GPU). Free() is idempotent
// and may be called from any thread; the memory goes back through the device thread, after the tasks queued
// before it (so a run already submitted with this buffer still sees it).
class DeviceBuffer {
 public:
  DeviceBuffer(std::shared_ptr<CudaDeviceCore> core, CUdeviceptr ptr, size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void Free();
  bool freed() const { return freed_.load(); }
  // Throws ERR_DISPOSED once freed: the check made when a call is submitted.
  CUdeviceptr ptr() const;
  // The address without the check, for tasks submitted before Free(): the memory is returned only after them.
  CUdeviceptr address() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  const std::shared_ptr<CudaDeviceCore>& core() const { return core_; }

 private:
  std::shared_ptr<CudaDeviceCore> core_;
  const CUdeviceptr ptr_;
  const size_t bytes_;
  std::atomic<bool> freed_{false};
};

// A loaded module and the functions the runner asked for, with their limits.
class CudaModule {
 public:
  CudaModule(std::shared_ptr<CudaDeviceCore> core, CUmodule module);
  ~CudaModule();
  CudaModule(const CudaModule&) = delete;
  CudaModule& operator=(const CudaModule&) = delete;

  struct Function {
    std::string name;
    CUfunction handle = nullptr;
    int max_threads_per_block = 0;
    int num_regs = 0;
    int dynamic_shared_limit = 48 * 1024;  // raised on demand (opt-in above 48 KiB)
  };
  // Device thread: resolves `name` and reads its attributes; throws ERR_CUDA.
  void AddFunction(const std::string& name);
  std::vector<Function>& functions() { return functions_; }
  const std::shared_ptr<CudaDeviceCore>& core() const { return core_; }

 private:
  std::shared_ptr<CudaDeviceCore> core_;
  CUmodule module_;
  std::vector<Function> functions_;
};

// Device thread: loads a PTX (NUL-terminated) or cubin image; throws ERR_CUDA.
std::shared_ptr<CudaModule> LoadCudaModule(const std::shared_ptr<CudaDeviceCore>& core, const std::string& image,
                                           const std::vector<std::string>& names);

// ---- one coarse reduction call: buffers, launches, results -----------------------------------------------------

struct RunBuffer {
  enum Kind { kUpload, kExisting, kScratch, kOutput };
  Kind kind = kScratch;
  size_t bytes = 0;
  const void* host = nullptr;               // kUpload: the bytes to copy (held alive by the caller)
  std::shared_ptr<DeviceBuffer> existing;   // kExisting
  bool zero = false;                        // kScratch: cleared before the launches
  bool keep_on_device = false;              // kOutput: returned as a DeviceBuffer instead of host memory
};

struct RunParam {
  enum Kind { kInt64, kPointer, kNull, kPointerStruct };
  Kind kind = kNull;
  int64_t value = 0;            // kInt64; kPointer: byte offset into the buffer
  int buffer = -1;              // kPointer
  std::vector<int> buffers;     // kPointerStruct: a struct of device pointers passed by value (-1 = null)
};

struct RunLaunch {
  int function = 0;  // index into the module's functions
  unsigned grid[3] = {1, 1, 1};
  unsigned block = 1;
  unsigned shared_bytes = 0;
  std::vector<RunParam> params;
};

struct RunRequest {
  std::shared_ptr<CudaModule> module;
  std::vector<RunBuffer> buffers;
  std::vector<RunLaunch> launches;
};

// A result bound for JS: host bytes (pinned, or plain heap memory when pinning failed or the result is small)
// or a device buffer.
struct HostBytes {
  std::shared_ptr<CudaDeviceCore> core;  // set when `data` is pinned (freed through the device)
  void* data = nullptr;
  size_t bytes = 0;
  bool pinned = false;
  HostBytes() = default;
  HostBytes(const HostBytes&) = delete;
  HostBytes& operator=(const HostBytes&) = delete;
  HostBytes(HostBytes&& other) noexcept;
  HostBytes& operator=(HostBytes&& other) noexcept;
  ~HostBytes();
  void* Release();  // gives up ownership (the caller frees with FreeHostBytes)
};
void FreeHostBytes(const std::shared_ptr<CudaDeviceCore>& core, void* data, size_t bytes, bool pinned);

struct RunOutput {
  HostBytes host;
  std::shared_ptr<DeviceBuffer> device;
};

// Device thread: executes the request and returns one output per kOutput buffer, in order. Temporaries are
// recycled whatever happens; throws CodedFailure (ERR_CUDA_OOM, ERR_CUDA, ERR_DISPOSED, ERR_DEVICE_MISMATCH).
std::vector<RunOutput> ExecuteRun(const std::shared_ptr<CudaDeviceCore>& core, const RunRequest& request);

// Device thread: copies a device buffer to host memory (pinned when large).
HostBytes DownloadBuffer(const std::shared_ptr<CudaDeviceCore>& core, const DeviceBuffer& buffer);

// Device thread: a new buffer holding `bytes` bytes copied from `host`.
std::shared_ptr<DeviceBuffer> UploadBuffer(const std::shared_ptr<CudaDeviceCore>& core, const void* host,
                                           size_t bytes);

}  // namespace keops
