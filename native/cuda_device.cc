#include "cuda_device.h"

#include <cstdlib>
#include <cstring>
#include <utility>

#include "coded_failure.h"

namespace keops {
namespace {

// Allocations are rounded up so that similar sizes share cache entries; 256 bytes is also cudaMalloc's alignment.
constexpr size_t kAllocationGranule = 256;
// The cache keeps freed blocks up to this size and this total: repeated calls of one shape then allocate nothing.
constexpr size_t kMaxCachedBlock = size_t{64} << 20;
constexpr int64_t kMaxCachedBytes = int64_t{256} << 20;
// Results at least this large land in pinned memory handed to JS as is; smaller ones are copied (cuMemAllocHost
// costs more than copying a few hundred KiB).
constexpr size_t kPinnedThreshold = size_t{1} << 20;

size_t RoundUp(size_t bytes) { return (bytes + kAllocationGranule - 1) / kAllocationGranule * kAllocationGranule; }

}  // namespace

// ---- CudaDeviceCore ------------------------------------------------------------------------------------------

CudaDeviceCore::CudaDeviceCore(std::shared_ptr<const CudaDriverApi> api, int ordinal)
    : api_(std::move(api)), ordinal_(ordinal) {
  worker_ = std::thread([this]() { Loop(); });
}

CudaDeviceCore::~CudaDeviceCore() {
  Stop();
  std::lock_guard<std::mutex> lock(inline_mutex_);
  if (context_ != nullptr && lost_.empty()) {
    MakeCurrent();
    EmptyCache();
    if (stream_ != nullptr && api_->cuStreamDestroy != nullptr) api_->cuStreamDestroy(stream_);
  }
  if (context_retained_ && api_->cuDevicePrimaryCtxRelease != nullptr) api_->cuDevicePrimaryCtxRelease(device_);
}

void CudaDeviceCore::Loop() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this]() { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping, and everything queued has run
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();  // tasks catch their own failures
  }
}

void CudaDeviceCore::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!stopped_) {
      tasks_.push_back(std::move(task));
      wake_.notify_one();
      return;
    }
  }
  std::lock_guard<std::mutex> lock(inline_mutex_);
  if (context_ != nullptr) MakeCurrent();
  task();
}

void CudaDeviceCore::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopped_) return;
    stopping_ = true;
    wake_.notify_one();
  }
  if (worker_.joinable()) worker_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  stopped_ = true;
}

CudaDeviceCore::Usage CudaDeviceCore::usage() const {
  return {allocated_bytes_.load(), cached_bytes_.load(), array_count_.load(), array_bytes_.load(),
          pinned_bytes_.load()};
}

void CudaDeviceCore::CountArray(int64_t bytes, int delta) {
  array_count_ += delta;
  array_bytes_ += delta * bytes;
}

void CudaDeviceCore::MakeCurrent() {
  if (context_ != nullptr) api_->cuCtxSetCurrent(context_);
}

void CudaDeviceCore::Check(CUresult result, const std::string& what) {
  if (result == CUDA_SUCCESS) return;
  const std::string described = api_->Describe(result);
  if (result == CUDA_ERROR_OUT_OF_MEMORY) {
    throw CodedFailure("ERR_CUDA_OOM", what + ": " + described);
  }
  if (IsStickyCudaError(result)) {
    lost_ = described;
    throw CodedFailure("ERR_CUDA", what + ": " + described +
                                       " (the GPU context is now unusable: restart the process to use this GPU)");
  }
  throw CodedFailure("ERR_CUDA", what + ": " + described);
}

void CudaDeviceCore::CheckUsable() const {
  if (!lost_.empty()) {
    throw CodedFailure("ERR_CUDA", "GPU " + std::to_string(ordinal_) + " is unusable since an earlier error (" +
                                       lost_ + "); restart the process to use it");
  }
}

void CudaDeviceCore::Initialise() {
  const CudaDriverApi& api = *api_;
  if (api.cuDevicePrimaryCtxRetain == nullptr || api.cuCtxSetCurrent == nullptr || api.cuLaunchKernel == nullptr ||
      api.cuMemAlloc == nullptr || api.cuStreamCreate == nullptr || api.cuModuleLoadDataEx == nullptr) {
    throw CodedFailure("ERR_NO_GPU", "the CUDA driver " + api.path + " lacks the entry points kernels need");
  }
  CUresult status = api.cuInit(0);
  if (status != CUDA_SUCCESS) throw CodedFailure("ERR_NO_GPU", "cuInit failed: " + api.Describe(status));
  int count = 0;
  Check(api.cuDeviceGetCount(&count), "cuDeviceGetCount");
  if (ordinal_ < 0 || ordinal_ >= count) {
    throw CodedFailure("ERR_NO_GPU", "there is no GPU " + std::to_string(ordinal_) + " (the driver reports " +
                                         std::to_string(count) + ")");
  }
  Check(api.cuDeviceGet(&device_, ordinal_), "cuDeviceGet");
  Check(api.cuDevicePrimaryCtxRetain(&context_, device_), "cuDevicePrimaryCtxRetain");
  context_retained_ = true;
  MakeCurrent();
  Check(api.cuStreamCreate(&stream_, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate");
}

CUdeviceptr CudaDeviceCore::Allocate(size_t bytes) {
  if (bytes == 0) return 0;
  CheckUsable();
  const size_t size = RoundUp(bytes);
  auto cached = cache_.find(size);
  if (cached != cache_.end()) {
    const CUdeviceptr ptr = cached->second;
    cache_.erase(cached);
    cached_bytes_ -= static_cast<int64_t>(size);
    allocated_bytes_ += static_cast<int64_t>(size);
    return ptr;
  }
  CUdeviceptr ptr = 0;
  CUresult status = api_->cuMemAlloc(&ptr, size);
  if (status == CUDA_ERROR_OUT_OF_MEMORY && !cache_.empty()) {
    EmptyCache();
    status = api_->cuMemAlloc(&ptr, size);
  }
  if (status == CUDA_ERROR_OUT_OF_MEMORY) {
    size_t free_bytes = 0, total_bytes = 0;
    if (api_->cuMemGetInfo != nullptr) api_->cuMemGetInfo(&free_bytes, &total_bytes);
    throw CodedFailure("ERR_CUDA_OOM", "out of GPU memory: cannot allocate " + std::to_string(size) +
                                           " bytes on GPU " + std::to_string(ordinal_) + " (" +
                                           std::to_string(free_bytes) + " of " + std::to_string(total_bytes) +
                                           " bytes free; keops-node holds " +
                                           std::to_string(allocated_bytes_.load()) + ")");
  }
  Check(status, "cuMemAlloc(" + std::to_string(size) + " bytes)");
  allocated_bytes_ += static_cast<int64_t>(size);
  return ptr;
}

void CudaDeviceCore::Recycle(CUdeviceptr ptr, size_t bytes) {
  if (ptr == 0) return;
  const size_t size = RoundUp(bytes);
  allocated_bytes_ -= static_cast<int64_t>(size);
  if (lost_.empty() && size <= kMaxCachedBlock && cached_bytes_.load() + static_cast<int64_t>(size) <= kMaxCachedBytes) {
    cache_.emplace(size, ptr);
    cached_bytes_ += static_cast<int64_t>(size);
    return;
  }
  api_->cuMemFree(ptr);
}

void CudaDeviceCore::EmptyCache() {
  for (const auto& entry : cache_) api_->cuMemFree(entry.second);
  cache_.clear();
  cached_bytes_ = 0;
}

void* CudaDeviceCore::AllocatePinned(size_t bytes) {
  void* ptr = nullptr;
  if (api_->cuMemAllocHost == nullptr || api_->cuMemAllocHost(&ptr, bytes) != CUDA_SUCCESS) return nullptr;
  pinned_bytes_ += static_cast<int64_t>(bytes);
  return ptr;
}

void CudaDeviceCore::FreePinned(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  pinned_bytes_ -= static_cast<int64_t>(bytes);
  api_->cuMemFreeHost(ptr);
}

// ---- DeviceBuffer ----------------------------------------------------------------------------------------------

DeviceBuffer::DeviceBuffer(std::shared_ptr<CudaDeviceCore> core, CUdeviceptr ptr, size_t bytes)
    : core_(std::move(core)), ptr_(ptr), bytes_(bytes) {
  core_->CountArray(static_cast<int64_t>(bytes_), +1);
}

DeviceBuffer::~DeviceBuffer() { Free(); }

void DeviceBuffer::Free() {
  if (freed_.exchange(true)) return;
  core_->CountArray(static_cast<int64_t>(bytes_), -1);
  CudaDeviceCore* core = core_.get();
  const CUdeviceptr ptr = ptr_;
  const size_t bytes = bytes_;
  if (core->OnDeviceThread()) {
    core->Recycle(ptr, bytes);
  } else {
    core->Post([core, ptr, bytes]() { core->Recycle(ptr, bytes); });
  }
}

CUdeviceptr DeviceBuffer::ptr() const {
  if (freed_.load()) throw CodedFailure("ERR_DISPOSED", "a DeviceArray was used after dispose()");
  return ptr_;
}

// ---- modules --------------------------------------------------------------------------------------------------

CudaModule::CudaModule(std::shared_ptr<CudaDeviceCore> core, CUmodule module)
    : core_(std::move(core)), module_(module) {}

CudaModule::~CudaModule() {
  CudaDeviceCore* core = core_.get();
  CUmodule module = module_;
  auto unload = [core, module]() { core->api().cuModuleUnload(module); };
  if (core->OnDeviceThread()) {
    unload();
  } else {
    core->Post(unload);
  }
}

void CudaModule::AddFunction(const std::string& name) {
  const CudaDriverApi& api = core_->api();
  Function function;
  function.name = name;
  core_->Check(api.cuModuleGetFunction(&function.handle, module_, name.c_str()), "cuModuleGetFunction(" + name + ")");
  core_->Check(api.cuFuncGetAttribute(&function.max_threads_per_block, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
                                      function.handle),
               "cuFuncGetAttribute(" + name + ")");
  core_->Check(api.cuFuncGetAttribute(&function.num_regs, CU_FUNC_ATTRIBUTE_NUM_REGS, function.handle),
               "cuFuncGetAttribute(" + name + ")");
  core_->Check(api.cuFuncGetAttribute(&function.dynamic_shared_limit, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                      function.handle),
               "cuFuncGetAttribute(" + name + ")");
  functions_.push_back(function);
}

std::shared_ptr<CudaModule> LoadCudaModule(const std::shared_ptr<CudaDeviceCore>& core, const std::string& image,
                                           const std::vector<std::string>& names) {
  core->CheckUsable();
  CUmodule module = nullptr;
  // PTX must be NUL-terminated; a cubin is read by its ELF header, and a NUL after it is harmless.
  const std::string terminated = image + '\0';
  core->Check(core->api().cuModuleLoadDataEx(&module, terminated.data(), 0, nullptr, nullptr),
              "cuModuleLoadDataEx");
  auto loaded = std::make_shared<CudaModule>(core, module);
  for (const std::string& name : names) loaded->AddFunction(name);
  return loaded;
}

// ---- host bytes -----------------------------------------------------------------------------------------------

void FreeHostBytes(const std::shared_ptr<CudaDeviceCore>& core, void* data, size_t bytes, bool pinned) {
  if (data == nullptr) return;
  if (!pinned) {
    std::free(data);
    return;
  }
  CudaDeviceCore* raw = core.get();
  if (raw->OnDeviceThread()) {
    raw->FreePinned(data, bytes);
  } else {
    raw->Post([raw, data, bytes]() { raw->FreePinned(data, bytes); });
  }
}

HostBytes::HostBytes(HostBytes&& other) noexcept
    : core(std::move(other.core)), data(other.data), bytes(other.bytes), pinned(other.pinned) {
  other.data = nullptr;
}

HostBytes& HostBytes::operator=(HostBytes&& other) noexcept {
  if (this != &other) {
    FreeHostBytes(core, data, bytes, pinned);
    core = std::move(other.core);
    data = other.data;
    bytes = other.bytes;
    pinned = other.pinned;
    other.data = nullptr;
  }
  return *this;
}

HostBytes::~HostBytes() { FreeHostBytes(core, data, bytes, pinned); }

void* HostBytes::Release() {
  void* out = data;
  data = nullptr;
  return out;
}

namespace {

HostBytes AllocateHost(const std::shared_ptr<CudaDeviceCore>& core, size_t bytes) {
  HostBytes out;
  out.bytes = bytes;
  if (bytes >= kPinnedThreshold) {
    out.data = core->AllocatePinned(bytes);
    if (out.data != nullptr) {
      out.pinned = true;
      out.core = core;
      return out;
    }
  }
  out.data = std::malloc(bytes == 0 ? 1 : bytes);
  if (out.data == nullptr) throw CodedFailure("ERR_NATIVE", "out of host memory for a " + std::to_string(bytes) + "-byte result");
  return out;
}

// Device allocations of one run, recycled when it ends (unless moved into an output).
class Temporaries {
 public:
  explicit Temporaries(CudaDeviceCore* core) : core_(core) {}
  ~Temporaries() {
    for (const auto& entry : owned_) core_->Recycle(entry.first, entry.second);
  }
  CUdeviceptr Allocate(size_t bytes) {
    const CUdeviceptr ptr = core_->Allocate(bytes);
    if (ptr != 0) owned_.emplace_back(ptr, bytes);
    return ptr;
  }
  // Stops owning `ptr` (it becomes an output buffer).
  void Keep(CUdeviceptr ptr) {
    for (auto it = owned_.begin(); it != owned_.end(); ++it) {
      if (it->first == ptr) {
        owned_.erase(it);
        return;
      }
    }
  }

 private:
  CudaDeviceCore* core_;
  std::vector<std::pair<CUdeviceptr, size_t>> owned_;
};

}  // namespace

std::vector<RunOutput> ExecuteRun(const std::shared_ptr<CudaDeviceCore>& core, const RunRequest& request) {
  core->CheckUsable();
  const CudaDriverApi& api = core->api();
  CudaModule& module = *request.module;
  if (module.core() != core) {
    throw CodedFailure("ERR_DEVICE_MISMATCH", "the kernel module was loaded on another GPU");
  }
  const CUstream stream = core->stream();
  Temporaries temporaries(core.get());

  std::vector<CUdeviceptr> pointers(request.buffers.size(), 0);
  for (size_t k = 0; k < request.buffers.size(); ++k) {
    const RunBuffer& buffer = request.buffers[k];
    switch (buffer.kind) {
      case RunBuffer::kExisting:
        if (buffer.existing->core() != core) {
          throw CodedFailure("ERR_DEVICE_MISMATCH", "a DeviceArray argument lives on GPU " +
                                                        std::to_string(buffer.existing->core()->ordinal()) +
                                                        ", this call runs on GPU " + std::to_string(core->ordinal()));
        }
        pointers[k] = buffer.existing->address();
        break;
      case RunBuffer::kUpload:
        pointers[k] = temporaries.Allocate(buffer.bytes);
        if (buffer.bytes > 0) {
          core->Check(api.cuMemcpyHtoDAsync(pointers[k], buffer.host, buffer.bytes, stream), "uploading an argument");
        }
        break;
      case RunBuffer::kScratch:
        pointers[k] = temporaries.Allocate(buffer.bytes);
        if (buffer.zero && buffer.bytes > 0) {
          core->Check(api.cuMemsetD8Async(pointers[k], 0, buffer.bytes, stream), "clearing a scratch buffer");
        }
        break;
      case RunBuffer::kOutput:
        pointers[k] = temporaries.Allocate(buffer.bytes);
        break;
    }
  }

  for (const RunLaunch& launch : request.launches) {
    if (launch.function < 0 || static_cast<size_t>(launch.function) >= module.functions().size()) {
      throw CodedFailure("ERR_INVALID_ARGUMENT", "launch of an unknown function");
    }
    CudaModule::Function& function = module.functions()[launch.function];
    if (static_cast<int>(launch.shared_bytes) > function.dynamic_shared_limit) {
      core->Check(api.cuFuncSetAttribute(function.handle, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                         static_cast<int>(launch.shared_bytes)),
                  "raising the shared memory limit of " + function.name);
      function.dynamic_shared_limit = static_cast<int>(launch.shared_bytes);
    }
    // Storage for the parameter values; `slots` points into it (sized first, so it never moves).
    std::vector<int64_t> scalars(launch.params.size(), 0);
    std::vector<std::vector<CUdeviceptr>> structs(launch.params.size());
    std::vector<void*> slots(launch.params.size(), nullptr);
    for (size_t p = 0; p < launch.params.size(); ++p) {
      const RunParam& param = launch.params[p];
      switch (param.kind) {
        case RunParam::kInt64:
          scalars[p] = param.value;
          break;
        case RunParam::kNull:
          scalars[p] = 0;
          break;
        case RunParam::kPointer: {
          const CUdeviceptr base = pointers.at(param.buffer);
          scalars[p] = base == 0 ? 0 : static_cast<int64_t>(base + param.value);
          break;
        }
        case RunParam::kPointerStruct:
          for (int b : param.buffers) structs[p].push_back(b < 0 ? 0 : pointers.at(b));
          break;
      }
      slots[p] = param.kind == RunParam::kPointerStruct ? static_cast<void*>(structs[p].data())
                                                         : static_cast<void*>(&scalars[p]);
    }
    core->Check(api.cuLaunchKernel(function.handle, launch.grid[0], launch.grid[1], launch.grid[2], launch.block, 1,
                                   1, launch.shared_bytes, stream, slots.data(), nullptr),
                "launching " + function.name);
  }

  std::vector<RunOutput> outputs;
  for (size_t k = 0; k < request.buffers.size(); ++k) {
    const RunBuffer& buffer = request.buffers[k];
    if (buffer.kind != RunBuffer::kOutput) continue;
    RunOutput output;
    if (buffer.keep_on_device) {
      temporaries.Keep(pointers[k]);
      output.device = std::make_shared<DeviceBuffer>(core, pointers[k], buffer.bytes);
    } else {
      output.host = AllocateHost(core, buffer.bytes);
      if (buffer.bytes > 0) {
        core->Check(api.cuMemcpyDtoHAsync(output.host.data, pointers[k], buffer.bytes, stream),
                    "downloading a result");
      }
    }
    outputs.push_back(std::move(output));
  }
  // Launch failures surface here (kernels run asynchronously).
  core->Check(api.cuStreamSynchronize(stream), "running the reduction kernels");
  return outputs;
}

HostBytes DownloadBuffer(const std::shared_ptr<CudaDeviceCore>& core, const DeviceBuffer& buffer) {
  core->CheckUsable();
  if (buffer.core() != core) throw CodedFailure("ERR_DEVICE_MISMATCH", "the DeviceArray lives on another GPU");
  const CUdeviceptr ptr = buffer.address();
  HostBytes out = AllocateHost(core, buffer.bytes());
  if (buffer.bytes() > 0) {
    core->Check(core->api().cuMemcpyDtoHAsync(out.data, ptr, buffer.bytes(), core->stream()), "downloading a DeviceArray");
  }
  core->Check(core->api().cuStreamSynchronize(core->stream()), "downloading a DeviceArray");
  return out;
}

std::shared_ptr<DeviceBuffer> UploadBuffer(const std::shared_ptr<CudaDeviceCore>& core, const void* host,
                                           size_t bytes) {
  const CUdeviceptr ptr = core->Allocate(bytes);
  auto buffer = std::make_shared<DeviceBuffer>(core, ptr, bytes);
  if (bytes > 0) {
    core->Check(core->api().cuMemcpyHtoDAsync(ptr, host, bytes, core->stream()), "uploading a DeviceArray");
    core->Check(core->api().cuStreamSynchronize(core->stream()), "uploading a DeviceArray");
  }
  return buffer;
}

}  // namespace keops
