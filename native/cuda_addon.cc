// JS bindings of the CUDA loader and of NVRTC compilation (see lib/backend/cuda/). Arguments are validated in
// TypeScript; the checks here only keep a bad call from crashing. Every failure becomes a JS Error with a string
// `code` (ERR_NO_NVRTC, ERR_COMPILE with a `log` property, ERR_CUDA, ERR_INVALID_ARGUMENT); no C++ exception
// crosses into JS. Slow work (opening the 100 MB NVRTC library, compiling) has async variants that run on the
// libuv pool, like the g++ compilations of the CPU backend.
#include "cuda_addon.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "coded_failure.h"
#include "cuda_device_addon.h"
#include "cuda_loader.h"
#include "nvrtc_compile.h"

namespace keops {
namespace {

// Per-environment state: the NVRTC loaded for the last candidate list, so that repeated compilations skip the
// process-wide table (and its mutex).
struct CudaEnvironment {
  std::vector<std::string> nvrtc_candidates;
  std::shared_ptr<const NvrtcApi> nvrtc;
};

std::vector<std::string> ReadStrings(const Napi::Value& value, const char* what) {
  Require(value.IsArray(), std::string(what) + " must be an array of strings");
  Napi::Array array = value.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t k = 0; k < array.Length(); ++k) {
    Napi::Value item = array.Get(k);
    Require(item.IsString(), std::string(what) + " must be an array of strings");
    out.push_back(item.As<Napi::String>().Utf8Value());
  }
  return out;
}

// ---- probing --------------------------------------------------------------------------------------------------

struct DeviceInfo {
  std::string name;
  int major = 0, minor = 0;
  size_t total_memory = 0;
  int multiprocessors = 0, max_threads_per_block = 0, shared_memory_per_block = 0, shared_memory_per_block_optin = 0;
  int max_grid_dim_y = 0;
};

struct ProbeResult {
  // Driver: loaded, then initialised, then devices listed; the first failure stops and is explained.
  bool driver_loaded = false;
  std::string driver_error;
  std::string driver_path;
  int driver_version = 0;
  std::string init_error;
  std::vector<DeviceInfo> devices;
  // NVRTC.
  std::shared_ptr<const NvrtcApi> nvrtc;
  std::string nvrtc_error;
};

ProbeResult Probe(const std::string& driver_path, const std::vector<std::string>& nvrtc_candidates) {
  ProbeResult result;
  result.nvrtc = LoadNvrtc(nvrtc_candidates, &result.nvrtc_error);
  std::shared_ptr<const CudaDriverApi> driver = LoadCudaDriver(driver_path, &result.driver_error);
  if (driver == nullptr) return result;
  result.driver_loaded = true;
  result.driver_path = driver->path;
  driver->cuDriverGetVersion(&result.driver_version);
  CUresult status = driver->cuInit(0);
  if (status != CUDA_SUCCESS) {
    result.init_error = "cuInit failed: " + driver->Describe(status);
    return result;
  }
  int count = 0;
  status = driver->cuDeviceGetCount(&count);
  if (status != CUDA_SUCCESS) {
    result.init_error = "cuDeviceGetCount failed: " + driver->Describe(status);
    return result;
  }
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    CUdevice device = 0;
    DeviceInfo info;
    char name[256] = {0};
    status = driver->cuDeviceGet(&device, ordinal);
    if (status == CUDA_SUCCESS) status = driver->cuDeviceGetName(name, sizeof name - 1, device);
    if (status == CUDA_SUCCESS) status = driver->cuDeviceTotalMem(&info.total_memory, device);
    const std::pair<int, int*> attributes[] = {
        {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, &info.major},
        {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, &info.minor},
        {CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, &info.multiprocessors},
        {CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, &info.max_threads_per_block},
        {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, &info.shared_memory_per_block},
        {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, &info.shared_memory_per_block_optin},
        {CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y, &info.max_grid_dim_y},
    };
    for (const auto& attribute : attributes) {
      if (status == CUDA_SUCCESS) status = driver->cuDeviceGetAttribute(attribute.second, attribute.first, device);
    }
    if (status != CUDA_SUCCESS) {
      result.init_error = "cannot query device " + std::to_string(ordinal) + ": " + driver->Describe(status);
      return result;
    }
    info.name = name;
    result.devices.push_back(info);
  }
  return result;
}

Napi::Object ProbeToJs(Napi::Env env, const ProbeResult& probe) {
  Napi::Object driver = Napi::Object::New(env);
  driver.Set("loaded", probe.driver_loaded);
  if (!probe.driver_error.empty()) driver.Set("error", probe.driver_error);
  if (probe.driver_loaded) {
    driver.Set("path", probe.driver_path);
    driver.Set("version", probe.driver_version);
  }
  if (!probe.init_error.empty()) driver.Set("initError", probe.init_error);
  Napi::Array devices = Napi::Array::New(env, probe.devices.size());
  for (size_t k = 0; k < probe.devices.size(); ++k) {
    const DeviceInfo& d = probe.devices[k];
    Napi::Object device = Napi::Object::New(env);
    device.Set("name", d.name);
    device.Set("major", d.major);
    device.Set("minor", d.minor);
    device.Set("totalMemory", static_cast<double>(d.total_memory));
    device.Set("multiprocessors", d.multiprocessors);
    device.Set("maxThreadsPerBlock", d.max_threads_per_block);
    device.Set("sharedMemoryPerBlock", d.shared_memory_per_block);
    device.Set("sharedMemoryPerBlockOptin", d.shared_memory_per_block_optin);
    device.Set("maxGridDimY", d.max_grid_dim_y);
    devices.Set(static_cast<uint32_t>(k), device);
  }
  driver.Set("devices", devices);

  Napi::Object nvrtc = Napi::Object::New(env);
  nvrtc.Set("loaded", probe.nvrtc != nullptr);
  if (probe.nvrtc != nullptr) {
    nvrtc.Set("path", probe.nvrtc->path);
    nvrtc.Set("builtinsPath", probe.nvrtc->builtins_path);
    nvrtc.Set("major", probe.nvrtc->major);
    nvrtc.Set("minor", probe.nvrtc->minor);
    Napi::Array archs = Napi::Array::New(env, probe.nvrtc->supported_archs.size());
    for (size_t k = 0; k < probe.nvrtc->supported_archs.size(); ++k) {
      archs.Set(static_cast<uint32_t>(k), probe.nvrtc->supported_archs[k]);
    }
    nvrtc.Set("supportedArchs", archs);
    nvrtc.Set("cubin", probe.nvrtc->nvrtcGetCUBIN != nullptr);
  } else {
    nvrtc.Set("error", probe.nvrtc_error);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("driver", driver);
  out.Set("nvrtc", nvrtc);
  return out;
}

class ProbeWorker : public Napi::AsyncWorker {
 public:
  ProbeWorker(Napi::Env env, std::string driver_path, std::vector<std::string> candidates)
      : Napi::AsyncWorker(env, "keops:cuda-probe"),
        driver_path_(std::move(driver_path)),
        candidates_(std::move(candidates)),
        deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      result_ = Probe(driver_path_, candidates_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    try {
      deferred_.Resolve(ProbeToJs(Env(), result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& error) override {
    deferred_.Reject(MakeCodedError(Env(), CodedFailure("ERR_NATIVE", error.Message())).Value());
  }

 private:
  std::string driver_path_;
  std::vector<std::string> candidates_;
  Napi::Promise::Deferred deferred_;
  ProbeResult result_;
};

// ---- compiling ------------------------------------------------------------------------------------------------

NvrtcCompileRequest ReadRequest(const Napi::Value& value) {
  Require(value.IsObject(), "the compile request must be an object");
  Napi::Object spec = value.As<Napi::Object>();
  NvrtcCompileRequest request;
  Require(spec.Get("source").IsString() && spec.Get("name").IsString() && spec.Get("arch").IsString(),
          "the compile request needs string source, name and arch");
  request.source = spec.Get("source").As<Napi::String>().Utf8Value();
  request.program_name = spec.Get("name").As<Napi::String>().Utf8Value();
  request.arch = spec.Get("arch").As<Napi::String>().Utf8Value();
  request.options = ReadStrings(spec.Get("options"), "options");
  return request;
}

// Throws the CodedFailure describing a failed compilation.
void CheckCompiled(const NvrtcCompileResult& result) {
  if (result.status == NVRTC_SUCCESS) return;
  if (result.status == NVRTC_ERROR_COMPILATION) {
    throw CodedFailure("ERR_COMPILE", "NVRTC rejected the generated CUDA source", result.log);
  }
  const std::string code = result.status == NVRTC_ERROR_OUT_OF_MEMORY ? "ERR_CUDA_OOM" : "ERR_CUDA";
  throw CodedFailure(code, result.error, result.log);
}

Napi::Object CompiledToJs(Napi::Env env, const NvrtcCompileResult& result, const NvrtcApi& api) {
  Napi::Object out = Napi::Object::New(env);
  // A copy rather than an external buffer: external ArrayBuffers are refused where V8's sandbox is on.
  out.Set("image", Napi::Buffer<char>::Copy(env, result.image.data(), result.image.size()));
  out.Set("log", result.log);
  out.Set("output", result.cubin ? "cubin" : "ptx");
  out.Set("arch", result.arch);
  if (!result.rejected_arch.empty()) out.Set("rejectedArch", result.rejected_arch);
  out.Set("nvrtcVersion", std::to_string(api.major) + "." + std::to_string(api.minor));
  return out;
}

class CompileWorker : public Napi::AsyncWorker {
 public:
  // `api` may be null: NVRTC is then loaded on the worker thread (a cold load reads ~100 MB).
  CompileWorker(Napi::Env env, CudaEnvironment* state, std::vector<std::string> candidates,
                std::shared_ptr<const NvrtcApi> api, NvrtcCompileRequest request)
      : Napi::AsyncWorker(env, "keops:nvrtc-compile"),
        state_(state),
        candidates_(std::move(candidates)),
        api_(std::move(api)),
        request_(std::move(request)),
        deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      if (api_ == nullptr) {
        std::string error;
        api_ = LoadNvrtc(candidates_, &error);
        if (api_ == nullptr) {
          failure_ = std::make_unique<CodedFailure>("ERR_NO_NVRTC", error);
          return;
        }
      }
      const NvrtcCompileResult result = CompileWithNvrtc(*api_, request_);
      CheckCompiled(result);
      result_ = result;
    } catch (const CodedFailure& failure) {
      failure_ = std::make_unique<CodedFailure>(failure);
    } catch (const std::exception& e) {
      failure_ = std::make_unique<CodedFailure>("ERR_NATIVE", e.what());
    }
  }

  // Runs on the JS thread of the environment, which is therefore alive, and so is `state_`.
  void OnOK() override {
    Napi::Env env = Env();
    if (api_ != nullptr) {
      state_->nvrtc_candidates = candidates_;
      state_->nvrtc = api_;
    }
    if (failure_ != nullptr) {
      deferred_.Reject(MakeCodedError(env, *failure_).Value());
      return;
    }
    try {
      deferred_.Resolve(CompiledToJs(env, result_, *api_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

 private:
  CudaEnvironment* state_;
  std::vector<std::string> candidates_;
  std::shared_ptr<const NvrtcApi> api_;
  NvrtcCompileRequest request_;
  Napi::Promise::Deferred deferred_;
  NvrtcCompileResult result_;
  std::unique_ptr<CodedFailure> failure_;
};

std::shared_ptr<const NvrtcApi> NvrtcFor(CudaEnvironment* state, const std::vector<std::string>& candidates) {
  if (state->nvrtc != nullptr && state->nvrtc_candidates == candidates) return state->nvrtc;
  std::string error;
  std::shared_ptr<const NvrtcApi> api = LoadNvrtc(candidates, &error);
  if (api == nullptr) throw CodedFailure("ERR_NO_NVRTC", error);
  state->nvrtc_candidates = candidates;
  state->nvrtc = api;
  return api;
}

CudaEnvironment* StateOf(const Napi::CallbackInfo& info) { return static_cast<CudaEnvironment*>(info.Data()); }

// cudaProbeSync(driverPath, nvrtcCandidates) -> probe object
Napi::Value CudaProbeSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guarded(env, [&]() -> Napi::Value {
    Require(info.Length() == 2 && info[0].IsString(), "cudaProbeSync(driverPath, nvrtcCandidates)");
    return ProbeToJs(env, Probe(info[0].As<Napi::String>().Utf8Value(), ReadStrings(info[1], "nvrtcCandidates")));
  });
}

// cudaProbe(driverPath, nvrtcCandidates) -> Promise<probe object>
Napi::Value CudaProbe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guarded(env, [&]() -> Napi::Value {
    Require(info.Length() == 2 && info[0].IsString(), "cudaProbe(driverPath, nvrtcCandidates)");
    auto* worker =
        new ProbeWorker(env, info[0].As<Napi::String>().Utf8Value(), ReadStrings(info[1], "nvrtcCandidates"));
    Napi::Promise promise = worker->Promise();
    worker->Queue();  // deletes itself once settled
    return promise;
  });
}

// nvrtcCompileSync(nvrtcCandidates, { source, name, arch, options }) -> { image, log, output, arch, ... }
Napi::Value NvrtcCompileSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guarded(env, [&]() -> Napi::Value {
    Require(info.Length() == 2, "nvrtcCompileSync(nvrtcCandidates, request)");
    std::shared_ptr<const NvrtcApi> api = NvrtcFor(StateOf(info), ReadStrings(info[0], "nvrtcCandidates"));
    const NvrtcCompileResult result = CompileWithNvrtc(*api, ReadRequest(info[1]));
    CheckCompiled(result);
    return CompiledToJs(env, result, *api);
  });
}

// nvrtcCompile(nvrtcCandidates, request) -> Promise<same>; NVRTC is loaded and run on a libuv worker thread.
Napi::Value NvrtcCompile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guarded(env, [&]() -> Napi::Value {
    Require(info.Length() == 2, "nvrtcCompile(nvrtcCandidates, request)");
    CudaEnvironment* state = StateOf(info);
    std::vector<std::string> candidates = ReadStrings(info[0], "nvrtcCandidates");
    std::shared_ptr<const NvrtcApi> api = state->nvrtc_candidates == candidates ? state->nvrtc : nullptr;
    auto* worker = new CompileWorker(env, state, std::move(candidates), std::move(api), ReadRequest(info[1]));
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  });
}

}  // namespace

void RegisterCudaBindings(Napi::Env env, Napi::Object exports) {
  auto* state = new CudaEnvironment();
  env.AddCleanupHook([state]() { delete state; });
  exports.Set("cudaProbe", Napi::Function::New(env, CudaProbe, "cudaProbe", state));
  exports.Set("cudaProbeSync", Napi::Function::New(env, CudaProbeSync, "cudaProbeSync", state));
  exports.Set("nvrtcCompile", Napi::Function::New(env, NvrtcCompile, "nvrtcCompile", state));
  exports.Set("nvrtcCompileSync", Napi::Function::New(env, NvrtcCompileSync, "nvrtcCompileSync", state));
  RegisterCudaDeviceBindings(env, exports);
}

}  // namespace keops
