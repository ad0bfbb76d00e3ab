// JS bindings of the CUDA device runtime (cuda_device.h): open a device, load modules, move arrays, run a
// reduction. Every call that touches the GPU is a task on the device's own thread; async variants settle their
// Promise through the device's thread-safe function, sync variants block the JS thread until the task ran.
// Arguments are validated in TypeScript (lib/backend/cuda/device.ts); the checks here only keep a bad call from
// crashing. Handles are tagged Externals: a device, a module, a device buffer.
#include "cuda_device_addon.h"

#include <cmath>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "coded_failure.h"
#include "cuda_device.h"
#include "cuda_loader.h"
#include "typed_array_view.h"

namespace keops {
namespace {

// Random tags (uuidgen): they prove a handle coming back from JS was made by this addon.
constexpr napi_type_tag kDeviceTag = {0x8f2a6c1e4b7d4e03ULL, 0xa51c9e7b2d6f3084ULL};
constexpr napi_type_tag kModuleTag = {0x1d94b7e25c3a4f61ULL, 0x87e2c05a9b14d3f6ULL};
constexpr napi_type_tag kBufferTag = {0x5b3e8d0f72a14c9aULL, 0xc6f41a2e8d97b053ULL};

using JsBuilder = std::function<Napi::Value(Napi::Env)>;
struct DeviceState;

// One task for the device thread and how its result reaches JS.
struct Job {
  std::function<JsBuilder()> work;  // device thread: does the GPU work, returns how to build the JS value
  JsBuilder build;
  std::unique_ptr<CodedFailure> failure;
  // JS side, touched on the JS thread only.
  struct JsSide {
    explicit JsSide(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
    Napi::Promise::Deferred deferred;
    std::vector<Napi::ObjectReference> keep_alive;
  };
  JsSide* js = nullptr;
};

void RunJob(Job* job) {
  try {
    job->build = job->work();
  } catch (const CodedFailure& failure) {
    job->failure = std::make_unique<CodedFailure>(failure);
  } catch (const std::exception& e) {
    job->failure = std::make_unique<CodedFailure>("ERR_NATIVE", e.what());
  } catch (...) {
    job->failure = std::make_unique<CodedFailure>("ERR_NATIVE", "unknown native failure");
  }
  job->work = nullptr;  // drops what the task captured (buffers, module) on the device thread
}

// Frees a job that can no longer reach JS (its environment is being torn down). The JS side is deliberately
// leaked: its references belong to a dying environment and may not be touched from here.
void DropJob(Job* job) {
  job->js = nullptr;
  delete job;
}

void Settle(Napi::Env env, Napi::Function, DeviceState* state, Job* job);
using DeviceTsfn = Napi::TypedThreadSafeFunction<DeviceState, Job, Settle>;

struct DeviceState {
  std::shared_ptr<CudaDeviceCore> core;
  DeviceTsfn tsfn;
  int pending = 0;  // async jobs not yet settled; the TSFN keeps the event loop alive only while > 0
  bool closed = false;
};

void Settle(Napi::Env env, Napi::Function, DeviceState* state, Job* job) {
  if (env == nullptr) {  // the TSFN is being torn down
    DropJob(job);
    return;
  }
  std::unique_ptr<Job> owned(job);
  std::unique_ptr<Job::JsSide> js(job->js);
  if (--state->pending == 0 && !state->closed) state->tsfn.Unref(env);
  Napi::HandleScope scope(env);
  if (job->failure != nullptr) {
    js->deferred.Reject(MakeCodedError(env, *job->failure).Value());
    return;
  }
  try {
    js->deferred.Resolve(job->build(env));
  } catch (const Napi::Error& e) {
    js->deferred.Reject(e.Value());
  } catch (const CodedFailure& e) {
    js->deferred.Reject(MakeCodedError(env, e).Value());
  } catch (const std::exception& e) {
    js->deferred.Reject(MakeCodedError(env, CodedFailure("ERR_NATIVE", e.what())).Value());
  }
}

// The TSFN's end (after close(), or when the environment goes away): no job can settle any more, so the device
// thread is stopped; the core itself lives on while buffers and modules refer to it.
void FinalizeTsfn(Napi::Env, std::shared_ptr<DeviceState>* holder, DeviceState*) {
  (*holder)->closed = true;
  (*holder)->core->Stop();
  delete holder;
}

std::shared_ptr<DeviceState> DeviceOf(const Napi::Value& value) {
  Require(value.IsExternal() && value.As<Napi::External<std::shared_ptr<DeviceState>>>().CheckTypeTag(&kDeviceTag),
          "expected a CUDA device handle");
  std::shared_ptr<DeviceState> state = *value.As<Napi::External<std::shared_ptr<DeviceState>>>().Data();
  if (state->closed) throw CodedFailure("ERR_DISPOSED", "the CUDA device was closed");
  return state;
}

std::shared_ptr<CudaModule> ModuleOf(const Napi::Value& value) {
  Require(value.IsExternal() && value.As<Napi::External<std::shared_ptr<CudaModule>>>().CheckTypeTag(&kModuleTag),
          "expected a CUDA module handle");
  return *value.As<Napi::External<std::shared_ptr<CudaModule>>>().Data();
}

std::shared_ptr<DeviceBuffer> BufferOf(const Napi::Value& value) {
  Require(value.IsExternal() && value.As<Napi::External<std::shared_ptr<DeviceBuffer>>>().CheckTypeTag(&kBufferTag),
          "expected a device buffer handle");
  return *value.As<Napi::External<std::shared_ptr<DeviceBuffer>>>().Data();
}

template <typename T>
Napi::Value MakeHandle(Napi::Env env, std::shared_ptr<T> value, const napi_type_tag* tag) {
  auto external = Napi::External<std::shared_ptr<T>>::New(env, new std::shared_ptr<T>(std::move(value)),
                                                          [](Napi::Env, std::shared_ptr<T>* p) { delete p; });
  external.TypeTag(tag);
  return external;
}

// Host bytes as an ArrayBuffer: the memory itself (external) where the runtime allows it, else a copy.
Napi::Value ToArrayBuffer(Napi::Env env, HostBytes bytes) {
  struct Owner {
    std::shared_ptr<CudaDeviceCore> core;
    size_t bytes;
    bool pinned;
  };
  const size_t size = bytes.bytes;
  if (size > 0) {
    auto* owner = new Owner{bytes.core, size, bytes.pinned};
    void* data = bytes.data;
    try {
      Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(
          env, data, size,
          [](Napi::Env, void* p, Owner* o) {
            FreeHostBytes(o->core, p, o->bytes, o->pinned);
            delete o;
          },
          owner);
      bytes.Release();
      return buffer;
    } catch (const Napi::Error&) {
      delete owner;  // external buffers refused (V8 sandbox): copy below
    }
  }
  Napi::ArrayBuffer copy = Napi::ArrayBuffer::New(env, size);
  if (size > 0) std::memcpy(copy.Data(), bytes.data, size);
  return copy;
}

int64_t ToInteger(const Napi::Value& value, const char* what) {
  Require(value.IsNumber(), std::string(what) + " must be a number");
  const double number = value.As<Napi::Number>().DoubleValue();
  Require(std::floor(number) == number && std::fabs(number) <= 9007199254740991.0,
          std::string(what) + " must be a safe integer");
  return static_cast<int64_t>(number);
}

struct HostView {
  const void* data;
  size_t bytes;
};

// The array's bytes from its backing store (real length; SharedArrayBuffer accepted; detached refused). An
// asynchronous transfer gets a copy in `copies`, made now: the device thread must never read JS memory that
// the caller may transfer, shrink or (worker teardown) free before the transfer runs.
HostView ViewOf(const Napi::Value& value, const char* what, bool async,
                std::vector<std::shared_ptr<std::vector<uint8_t>>>* copies) {
  const TypedArrayView view = ViewTypedArray(value, what);
  if (!async || view.bytes == 0) return {view.data, view.bytes};
  const auto* bytes = static_cast<const uint8_t*>(view.data);
  copies->push_back(std::make_shared<std::vector<uint8_t>>(bytes, bytes + view.bytes));
  return {copies->back()->data(), view.bytes};
}

// Runs `work` on the device thread; the Promise settles with what its builder makes.
Napi::Value Submit(Napi::Env env, const std::shared_ptr<DeviceState>& state, std::function<JsBuilder()> work,
                   std::vector<Napi::ObjectReference> keep_alive = {}) {
  auto* job = new Job();
  job->work = std::move(work);
  job->js = new Job::JsSide(env);
  job->js->keep_alive = std::move(keep_alive);
  Napi::Promise promise = job->js->deferred.Promise();
  if (state->pending++ == 0) state->tsfn.Ref(env);
  DeviceTsfn tsfn = state->tsfn;
  state->core->Post([job, tsfn]() {
    RunJob(job);
    if (tsfn.NonBlockingCall(job) != napi_ok) DropJob(job);
  });
  return promise;
}

// Runs `work` on the device thread while the JS thread waits, then builds its value here.
Napi::Value RunSync(Napi::Env env, const std::shared_ptr<DeviceState>& state, std::function<JsBuilder()> work) {
  Job job;
  job.work = std::move(work);
  std::promise<void> done;
  state->core->Post([&job, &done]() {
    RunJob(&job);
    done.set_value();
  });
  done.get_future().wait();
  if (job.failure != nullptr) throw CodedFailure(*job.failure);
  return job.build(env);
}

Napi::Value Dispatch(const Napi::CallbackInfo& info, bool async, const std::shared_ptr<DeviceState>& state,
                     std::function<JsBuilder()> work, std::vector<Napi::ObjectReference> keep_alive = {}) {
  return async ? Submit(info.Env(), state, std::move(work), std::move(keep_alive))
               : RunSync(info.Env(), state, std::move(work));
}

// ---- functions ------------------------------------------------------------------------------------------------

// cudaDeviceOpen(driverPath, ordinal) -> device: starts the device thread (cheap); cudaDeviceInit then creates
// the context on it. A device whose init failed must still be closed.
Napi::Value DeviceOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Require(info.Length() == 2 && info[0].IsString(), "cudaDeviceOpen(driverPath, ordinal)");
  const int ordinal = static_cast<int>(ToInteger(info[1], "ordinal"));
  std::string error;
  std::shared_ptr<const CudaDriverApi> api = LoadCudaDriver(info[0].As<Napi::String>().Utf8Value(), &error);
  if (api == nullptr) throw CodedFailure("ERR_NO_GPU", error);
  auto state = std::make_shared<DeviceState>();
  state->core = std::make_shared<CudaDeviceCore>(api, ordinal);
  state->tsfn = DeviceTsfn::New(env, "keops:cuda-device", 0, 1, state.get(), FinalizeTsfn,
                                new std::shared_ptr<DeviceState>(state));
  state->tsfn.Unref(env);
  return MakeHandle(env, state, &kDeviceTag);
}

// cudaDeviceInit(device) -> Promise<undefined>: cuInit, the primary context and the stream, on the device thread.
Napi::Value DeviceInit(const Napi::CallbackInfo& info, bool async) {
  Require(info.Length() == 1, "cudaDeviceInit(device)");
  std::shared_ptr<DeviceState> state = DeviceOf(info[0]);
  CudaDeviceCore* core = state->core.get();
  return Dispatch(info, async, state, [core]() -> JsBuilder {
    core->Initialise();
    return [](Napi::Env env) { return env.Undefined(); };
  });
}

// cudaDeviceClose(device): the device thread stops once its queue is empty; buffers stay freeable.
Napi::Value DeviceClose(const Napi::CallbackInfo& info) {
  std::shared_ptr<DeviceState> state = DeviceOf(info[0]);
  if (state->pending > 0) throw CodedFailure("ERR_INVALID_ARGUMENT", "the CUDA device still has calls running");
  state->closed = true;
  state->tsfn.Release();
  return info.Env().Undefined();
}

// cudaModuleLoad(device, image: Buffer, names: string[]) -> { module, functions: [{ name, maxThreadsPerBlock, numRegs }] }
Napi::Value ModuleLoad(const Napi::CallbackInfo& info, bool async) {
  Require(info.Length() == 3 && info[1].IsBuffer() && info[2].IsArray(), "cudaModuleLoad(device, image, names)");
  std::shared_ptr<DeviceState> state = DeviceOf(info[0]);
  Napi::Buffer<char> buffer = info[1].As<Napi::Buffer<char>>();
  std::string image(buffer.Data(), buffer.Length());
  std::vector<std::string> names;
  Napi::Array array = info[2].As<Napi::Array>();
  for (uint32_t k = 0; k < array.Length(); ++k) {
    Require(array.Get(k).IsString(), "names must be strings");
    names.push_back(array.Get(k).As<Napi::String>().Utf8Value());
  }
  std::shared_ptr<CudaDeviceCore> core = state->core;
  return Dispatch(info, async, state, [core, image = std::move(image), names = std::move(names)]() -> JsBuilder {
    std::shared_ptr<CudaModule> module = LoadCudaModule(core, image, names);
    return [module](Napi::Env env) -> Napi::Value {
      Napi::Object out = Napi::Object::New(env);
      out.Set("module", MakeHandle(env, module, &kModuleTag));
      Napi::Array functions = Napi::Array::New(env, module->functions().size());
      for (size_t k = 0; k < module->functions().size(); ++k) {
        const CudaModule::Function& f = module->functions()[k];
        Napi::Object entry = Napi::Object::New(env);
        entry.Set("name", f.name);
        entry.Set("maxThreadsPerBlock", f.max_threads_per_block);
        entry.Set("numRegs", f.num_regs);
        functions.Set(static_cast<uint32_t>(k), entry);
      }
      out.Set("functions", functions);
      return out;
    };
  });
}

// cudaUpload(device, typedArray) -> Promise<buffer>
Napi::Value Upload(const Napi::CallbackInfo& info, bool async) {
  Require(info.Length() == 2, "cudaUpload(device, typedArray)");
  std::shared_ptr<DeviceState> state = DeviceOf(info[0]);
  std::vector<std::shared_ptr<std::vector<uint8_t>>> copies;
  const HostView view = ViewOf(info[1], "the data", async, &copies);
  std::shared_ptr<CudaDeviceCore> core = state->core;
  return Dispatch(info, async, state, [core, view, copies]() -> JsBuilder {
    std::shared_ptr<DeviceBuffer> buffer = UploadBuffer(core, view.data, view.bytes);
    return [buffer](Napi::Env env) { return MakeHandle(env, buffer, &kBufferTag); };
  });
}

// cudaDownload(device, buffer) -> Promise<ArrayBuffer>
Napi::Value Download(const Napi::CallbackInfo& info, bool async) {
  Require(info.Length() == 2, "cudaDownload(device, buffer)");
  std::shared_ptr<DeviceState> state = DeviceOf(info[0]);
  std::shared_ptr<DeviceBuffer> buffer = BufferOf(info[1]);
  buffer->ptr();  // ERR_DISPOSED now rather than later
  std::shared_ptr<CudaDeviceCore> core = state->core;
  return Dispatch(info, async, state, [core, buffer]() -> JsBuilder {
    auto bytes = std::make_shared<HostBytes>(DownloadBuffer(core, *buffer));
    return [bytes](Napi::Env env) { return ToArrayBuffer(env, std::move(*bytes)); };
  });
}

// cudaFree(buffer): idempotent.
Napi::Value Free(const Napi::CallbackInfo& info) {
  Require(info.Length() == 1, "cudaFree(buffer)");
  BufferOf(info[0])->Free();
  return info.Env().Undefined();
}

// cudaMemoryInfo(device) -> { allocatedBytes, cachedBytes, arrays, arrayBytes, pinnedBytes }
Napi::Value MemoryInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Require(info.Length() == 1, "cudaMemoryInfo(device)");
  const CudaDeviceCore::Usage usage = DeviceOf(info[0])->core->usage();
  Napi::Object out = Napi::Object::New(env);
  out.Set("allocatedBytes", static_cast<double>(usage.allocated_bytes));
  out.Set("cachedBytes", static_cast<double>(usage.cached_bytes));
  out.Set("arrays", static_cast<double>(usage.array_count));
  out.Set("arrayBytes", static_cast<double>(usage.array_bytes));
  out.Set("pinnedBytes", static_cast<double>(usage.pinned_bytes));
  return out;
}

RunParam ReadParam(const Napi::Value& value) {
  RunParam param;
  if (value.IsNull()) {
    param.kind = RunParam::kNull;
  } else if (value.IsNumber()) {
    param.kind = RunParam::kInt64;
    param.value = ToInteger(value, "an integer parameter");
  } else {
    Require(value.IsObject(), "a launch parameter must be a number, null or an object");
    Napi::Object object = value.As<Napi::Object>();
    if (object.Has("struct")) {
      param.kind = RunParam::kPointerStruct;
      Require(object.Get("struct").IsArray(), "struct must be an array of buffer indices");
      Napi::Array items = object.Get("struct").As<Napi::Array>();
      for (uint32_t k = 0; k < items.Length(); ++k) {
        param.buffers.push_back(static_cast<int>(ToInteger(items.Get(k), "a struct entry")));
      }
    } else {
      param.kind = RunParam::kPointer;
      param.buffer = static_cast<int>(ToInteger(object.Get("buffer"), "buffer"));
      param.value = object.Has("offset") ? ToInteger(object.Get("offset"), "offset") : 0;
    }
  }
  return param;
}

// cudaRun(device, module, { buffers, launches }) -> Promise<(ArrayBuffer | buffer)[]>, one per output buffer.
Napi::Value Run(const Napi::CallbackInfo& info, bool async) {
  Require(info.Length() == 3 && info[2].IsObject(), "cudaRun(device, module, request)");
  std::shared_ptr<DeviceState> state = DeviceOf(info[0]);
  auto request = std::make_shared<RunRequest>();
  request->module = ModuleOf(info[1]);
  Napi::Object spec = info[2].As<Napi::Object>();
  Require(spec.Get("buffers").IsArray() && spec.Get("launches").IsArray(), "the request needs buffers and launches");
  std::vector<std::shared_ptr<std::vector<uint8_t>>> copies;
  Napi::Array buffers = spec.Get("buffers").As<Napi::Array>();
  for (uint32_t k = 0; k < buffers.Length(); ++k) {
    Require(buffers.Get(k).IsObject(), "buffers must be objects");
    Napi::Object item = buffers.Get(k).As<Napi::Object>();
    const std::string kind = item.Get("kind").ToString().Utf8Value();
    RunBuffer buffer;
    if (kind == "upload") {
      buffer.kind = RunBuffer::kUpload;
      const HostView view = ViewOf(item.Get("data"), "upload data", async, &copies);
      buffer.host = view.data;
      buffer.bytes = view.bytes;
    } else if (kind == "existing") {
      buffer.kind = RunBuffer::kExisting;
      buffer.existing = BufferOf(item.Get("buffer"));
      buffer.existing->ptr();  // ERR_DISPOSED now
      buffer.bytes = buffer.existing->bytes();
    } else if (kind == "scratch" || kind == "output") {
      buffer.kind = kind == "scratch" ? RunBuffer::kScratch : RunBuffer::kOutput;
      buffer.bytes = static_cast<size_t>(ToInteger(item.Get("bytes"), "bytes"));
      buffer.zero = item.Get("zero").ToBoolean();
      buffer.keep_on_device = item.Get("device").ToBoolean();
    } else {
      throw CodedFailure("ERR_INVALID_ARGUMENT", "unknown buffer kind " + kind);
    }
    request->buffers.push_back(std::move(buffer));
  }
  Napi::Array launches = spec.Get("launches").As<Napi::Array>();
  for (uint32_t k = 0; k < launches.Length(); ++k) {
    Require(launches.Get(k).IsObject(), "launches must be objects");
    Napi::Object item = launches.Get(k).As<Napi::Object>();
    RunLaunch launch;
    launch.function = static_cast<int>(ToInteger(item.Get("fn"), "fn"));
    Require(item.Get("grid").IsArray() && item.Get("grid").As<Napi::Array>().Length() == 3, "grid must be [x, y, z]");
    Napi::Array grid = item.Get("grid").As<Napi::Array>();
    for (uint32_t d = 0; d < 3; ++d) launch.grid[d] = static_cast<unsigned>(ToInteger(grid.Get(d), "grid"));
    launch.block = static_cast<unsigned>(ToInteger(item.Get("block"), "block"));
    launch.shared_bytes = static_cast<unsigned>(ToInteger(item.Get("shared"), "shared"));
    Require(item.Get("params").IsArray(), "params must be an array");
    Napi::Array params = item.Get("params").As<Napi::Array>();
    for (uint32_t p = 0; p < params.Length(); ++p) launch.params.push_back(ReadParam(params.Get(p)));
    request->launches.push_back(std::move(launch));
  }
  std::shared_ptr<CudaDeviceCore> core = state->core;
  return Dispatch(
      info, async, state,
      [core, request, copies]() -> JsBuilder {
        auto outputs = std::make_shared<std::vector<RunOutput>>(ExecuteRun(core, *request));
        return [outputs](Napi::Env env) -> Napi::Value {
          Napi::Array out = Napi::Array::New(env, outputs->size());
          for (size_t k = 0; k < outputs->size(); ++k) {
            RunOutput& output = (*outputs)[k];
            out.Set(static_cast<uint32_t>(k), output.device != nullptr ? MakeHandle(env, output.device, &kBufferTag)
                                                                       : ToArrayBuffer(env, std::move(output.host)));
          }
          return out;
        };
      });
}

template <Napi::Value (*Body)(const Napi::CallbackInfo&, bool), bool Async>
Napi::Value Entry(const Napi::CallbackInfo& info) {
  return Guarded(info.Env(), [&]() { return Body(info, Async); });
}

template <Napi::Value (*Body)(const Napi::CallbackInfo&)>
Napi::Value Plain(const Napi::CallbackInfo& info) {
  return Guarded(info.Env(), [&]() { return Body(info); });
}

}  // namespace

void RegisterCudaDeviceBindings(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaDeviceOpen", Napi::Function::New(env, Plain<DeviceOpen>, "cudaDeviceOpen"));
  exports.Set("cudaDeviceInit", Napi::Function::New(env, Entry<DeviceInit, true>, "cudaDeviceInit"));
  exports.Set("cudaDeviceInitSync", Napi::Function::New(env, Entry<DeviceInit, false>, "cudaDeviceInitSync"));
  exports.Set("cudaDeviceClose", Napi::Function::New(env, Plain<DeviceClose>, "cudaDeviceClose"));
  exports.Set("cudaModuleLoad", Napi::Function::New(env, Entry<ModuleLoad, true>, "cudaModuleLoad"));
  exports.Set("cudaModuleLoadSync", Napi::Function::New(env, Entry<ModuleLoad, false>, "cudaModuleLoadSync"));
  exports.Set("cudaUpload", Napi::Function::New(env, Entry<Upload, true>, "cudaUpload"));
  exports.Set("cudaUploadSync", Napi::Function::New(env, Entry<Upload, false>, "cudaUploadSync"));
  exports.Set("cudaDownload", Napi::Function::New(env, Entry<Download, true>, "cudaDownload"));
  exports.Set("cudaDownloadSync", Napi::Function::New(env, Entry<Download, false>, "cudaDownloadSync"));
  exports.Set("cudaFree", Napi::Function::New(env, Plain<Free>, "cudaFree"));
  exports.Set("cudaMemoryInfo", Napi::Function::New(env, Plain<MemoryInfo>, "cudaMemoryInfo"));
  exports.Set("cudaRun", Napi::Function::New(env, Entry<Run, true>, "cudaRun"));
  exports.Set("cudaRunSync", Napi::Function::New(env, Entry<Run, false>, "cudaRunSync"));
}

}  // namespace keops
