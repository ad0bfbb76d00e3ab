// The keops-node native addon: loads compiled CPU kernels and runs reductions with them, synchronously or off
// the JS thread. Arguments are validated in TypeScript (lib/backend/cpu/run.ts); the checks here only keep a bad
// call from touching memory it should not. Every failure becomes a JS Error with a `code`; no C++ exception
// crosses into JS. All state lives in the per-environment addon instance (safe under worker_threads).
#include <napi.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cpu_kernel.h"
#include "cpu_runner.h"
#include "coded_failure.h"
#include "cuda_addon.h"

namespace keops {
namespace {

// Random tags (uuidgen): they prove a handle coming back from JS was made by this addon.
constexpr napi_type_tag kCpuKernelTag = {0x6c1d3f0a2b8e4c57ULL, 0x9a41e0d2c7b35f18ULL};
constexpr napi_type_tag kKernelPointerTag = {0x3e7b9c21d5f04a86ULL, 0xb2c84f17e69d0a35ULL};

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message) {
  return MakeCodedError(env, CodedFailure(code, message));
}

int64_t ToCount(const Napi::Value& value, const char* what) {
  Require(value.IsNumber(), std::string(what) + " must be a number");
  const double number = value.As<Napi::Number>().DoubleValue();
  Require(number >= 0 && number <= 9007199254740991.0 && std::floor(number) == number,
          std::string(what) + " must be a non-negative integer");
  return static_cast<int64_t>(number);
}

class CpuKernel : public Napi::ObjectWrap<CpuKernel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "CpuKernel",
                       {InstanceAccessor<&CpuKernel::Path>("path"), InstanceMethod<&CpuKernel::Dispose>("dispose")});
  }

  // Only the addon constructs these, passing the loaded kernel through a tagged External.
  explicit CpuKernel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CpuKernel>(info) {
    Napi::Env env = info.Env();
    using KernelPointer = Napi::External<std::shared_ptr<LoadedCpuKernel>>;
    if (info.Length() != 1 || !info[0].IsExternal() || !info[0].As<KernelPointer>().CheckTypeTag(&kKernelPointerTag)) {
      MakeError(env, "ERR_INVALID_ARGUMENT", "CpuKernel handles are created by loadCpuKernel()")
          .ThrowAsJavaScriptException();
      return;
    }
    kernel_ = *info[0].As<KernelPointer>().Data();
    path_ = kernel_->path();
    Value().TypeTag(&kCpuKernelTag);
  }

  std::shared_ptr<LoadedCpuKernel> kernel() const { return kernel_; }

 private:
  Napi::Value Path(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), path_); }

  // Drops this handle's share now rather than at GC; runs in flight keep the library open until they finish.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    kernel_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<LoadedCpuKernel> kernel_;
  std::string path_;
};

// Everything one run needs, extracted on the JS thread; `keep_alive` pins the JS arrays whose memory it points to.
struct PreparedRun {
  std::shared_ptr<LoadedCpuKernel> kernel;
  std::vector<CpuJob> jobs;
  unsigned threads = 1;
  std::vector<Napi::ObjectReference> keep_alive;
};

class CpuRunWorker : public Napi::AsyncWorker {
 public:
  CpuRunWorker(Napi::Env env, PreparedRun run)
      : Napi::AsyncWorker(env, "keops:cpu-run"), run_(std::move(run)), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      error_ = RunCpuJobs(run_.kernel->entry(), run_.jobs, run_.threads);
    } catch (const std::exception& e) {
      error_ = e.what();
    } catch (...) {
      error_ = "unknown native failure";
    }
    if (!error_.empty()) SetError(error_);
  }

  void OnOK() override { deferred_.Resolve(Env().Undefined()); }

  void OnError(const Napi::Error&) override {
    deferred_.Reject(MakeError(Env(), "ERR_KERNEL_RUN", error_).Value());
  }

 private:
  PreparedRun run_;
  Napi::Promise::Deferred deferred_;
  std::string error_;
};

class KeOpsAddon : public Napi::Addon<KeOpsAddon> {
 public:
  KeOpsAddon(Napi::Env env, Napi::Object exports) : default_threads_(DefaultThreadCount()) {
    cpu_kernel_class_ = Napi::Persistent(CpuKernel::Define(env));
    DefineAddon(exports, {
                             InstanceMethod<&KeOpsAddon::LoadCpuKernel>("loadCpuKernel"),
                             InstanceMethod<&KeOpsAddon::RunCpuSync>("runCpuSync"),
                             InstanceMethod<&KeOpsAddon::RunCpu>("runCpu"),
                             InstanceValue("abiVersion", Napi::Number::New(env, KEOPS_CPU_ABI_VERSION)),
                             InstanceValue("defaultThreads", Napi::Number::New(env, default_threads_)),
                         });
    // CUDA: probing the driver and NVRTC, NVRTC compilation (native/cuda_addon.cc).
    RegisterCudaBindings(env, exports);
  }

 private:
  // loadCpuKernel(path) -> CpuKernel. The same path gives the same loaded library while this env holds it.
  Napi::Value LoadCpuKernel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Guarded(env, [&]() -> Napi::Value {
      Require(info.Length() == 1 && info[0].IsString(), "loadCpuKernel(path: string)");
      const std::string path = info[0].As<Napi::String>().Utf8Value();
      auto known = loaded_.find(path);
      std::shared_ptr<LoadedCpuKernel> kernel = known == loaded_.end() ? nullptr : known->second.lock();
      if (kernel == nullptr) {
        std::string error;
        kernel = LoadedCpuKernel::Open(path, &error);
        if (kernel == nullptr) throw CodedFailure("ERR_KERNEL_LOAD", error);
        ForgetClosedKernels();
        loaded_[path] = kernel;
      }
      auto* slot = new std::shared_ptr<LoadedCpuKernel>(kernel);
      Napi::External<std::shared_ptr<LoadedCpuKernel>> external =
          Napi::External<std::shared_ptr<LoadedCpuKernel>>::New(
              env, slot, [](Napi::Env, std::shared_ptr<LoadedCpuKernel>* data) { delete data; });
      external.TypeTag(&kKernelPointerTag);
      return cpu_kernel_class_.New({external});
    });
  }

  void ForgetClosedKernels() {
    for (auto entry = loaded_.begin(); entry != loaded_.end();) {
      entry = entry->second.expired() ? loaded_.erase(entry) : std::next(entry);
    }
  }

  // runCpuSync(kernel, jobs, threads): blocks the calling thread; for scripts and tiny inputs.
  Napi::Value RunCpuSync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Guarded(env, [&]() -> Napi::Value {
      PreparedRun run = Prepare(info);
      const std::string error = RunCpuJobs(run.kernel->entry(), run.jobs, run.threads);
      if (!error.empty()) throw CodedFailure("ERR_KERNEL_RUN", error);
      return env.Undefined();
    });
  }

  // runCpu(kernel, jobs, threads) -> Promise<void>: the work runs off the JS thread.
  Napi::Value RunCpu(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Guarded(env, [&]() -> Napi::Value {
      auto* worker = new CpuRunWorker(env, Prepare(info));
      Napi::Promise promise = worker->Promise();
      worker->Queue();  // the worker deletes itself after settling
      return promise;
    });
  }

  PreparedRun Prepare(const Napi::CallbackInfo& info) {
    Require(info.Length() == 3 && info[0].IsObject() && info[1].IsArray(), "run(kernel, jobs, threads)");
    Napi::Object handle = info[0].As<Napi::Object>();
    Require(handle.CheckTypeTag(&kCpuKernelTag), "the first argument is not a CpuKernel");
    PreparedRun run;
    run.kernel = CpuKernel::Unwrap(handle)->kernel();
    if (run.kernel == nullptr) throw CodedFailure("ERR_INVALID_ARGUMENT", "this CpuKernel was disposed");
    const int64_t threads = ToCount(info[2], "threads");
    run.threads = static_cast<unsigned>(threads == 0 ? default_threads_ : std::min<int64_t>(threads, 1024));

    Napi::Array jobs = info[1].As<Napi::Array>();
    napi_typedarray_type element_type = kNoElementTypeYet;
    for (uint32_t n = 0; n < jobs.Length(); ++n) {
      Require(jobs.Get(n).IsObject(), "every job must be an object");
      run.jobs.push_back(PrepareJob(jobs.Get(n).As<Napi::Object>(), &element_type, &run.keep_alive));
    }
    return run;
  }

  // Stands for "not seen yet" while checking that every float array of a run has one element type.
  static constexpr napi_typedarray_type kNoElementTypeYet = napi_int8_array;

  static CpuJob PrepareJob(Napi::Object spec, napi_typedarray_type* element_type,
                           std::vector<Napi::ObjectReference>* keep_alive) {
    CpuJob job;
    job.nx = ToCount(spec.Get("nx"), "nx");
    job.ny = ToCount(spec.Get("ny"), "ny");

    auto float_pointer = [&](Napi::Value value, const char* what) -> void* {
      Require(value.IsTypedArray(), std::string(what) + " must be a Float32Array or Float64Array");
      Napi::TypedArray array = value.As<Napi::TypedArray>();
      const napi_typedarray_type type = array.TypedArrayType();
      Require(type == napi_float32_array || type == napi_float64_array,
              std::string(what) + " must be a Float32Array or Float64Array");
      if (*element_type == kNoElementTypeYet) *element_type = type;
      Require(type == *element_type, "all float arrays of a run must have the same type");
      return PinnedData(array, keep_alive);
    };

    Napi::Value args_value = spec.Get("args");
    Require(args_value.IsArray(), "job.args must be an array");
    Napi::Array args = args_value.As<Napi::Array>();
    for (uint32_t k = 0; k < args.Length(); ++k) job.args.push_back(float_pointer(args.Get(k), "args"));

    Napi::Value out_val = spec.Get("outVal");
    if (!out_val.IsNull() && !out_val.IsUndefined()) job.out_val = float_pointer(out_val, "outVal");
    Napi::Value out_idx = spec.Get("outIdx");
    if (!out_idx.IsNull() && !out_idx.IsUndefined()) {
      Require(out_idx.IsTypedArray() && out_idx.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array,
              "outIdx must be an Int32Array");
      job.out_idx = static_cast<int32_t*>(PinnedData(out_idx.As<Napi::TypedArray>(), keep_alive));
    }

    const std::vector<double> intervals = ReadFloat64(spec.Get("intervals"), "intervals");
    Require(intervals.size() % 2 == 0, "intervals must hold [start, end) pairs");
    for (size_t k = 0; k < intervals.size(); k += 2) {
      const double start = intervals[k], end = intervals[k + 1];
      Require(std::floor(start) == start && std::floor(end) == end && 0 <= start && start <= end &&
                  end <= static_cast<double>(job.ny),
              "every interval must satisfy 0 <= start <= end <= ny");
      job.intervals.push_back(static_cast<int64_t>(start));
      job.intervals.push_back(static_cast<int64_t>(end));
    }
    const int64_t interval_count = static_cast<int64_t>(intervals.size() / 2);

    const std::vector<double> blocks = ReadFloat64(spec.Get("blocks"), "blocks");
    Require(blocks.size() % 4 == 0, "blocks must hold (rowBegin, rowEnd, firstInterval, intervalCount) quads");
    for (size_t k = 0; k < blocks.size(); k += 4) {
      for (size_t m = 0; m < 4; ++m) Require(std::floor(blocks[k + m]) == blocks[k + m] && blocks[k + m] >= 0,
                                             "block entries must be non-negative integers");
      CpuRowBlock block{static_cast<int64_t>(blocks[k]), static_cast<int64_t>(blocks[k + 1]),
                        static_cast<int64_t>(blocks[k + 2]), static_cast<int64_t>(blocks[k + 3])};
      Require(block.row_begin <= block.row_end && block.row_end <= job.nx, "block rows must lie in [0, nx)");
      Require(block.first_interval + block.interval_count <= interval_count, "block intervals out of range");
      job.blocks.push_back(block);
    }
    return job;
  }

  // The array's memory, kept alive (and its address stable) for as long as `keep_alive` holds the reference.
  static void* PinnedData(Napi::TypedArray array, std::vector<Napi::ObjectReference>* keep_alive) {
    // Kernels refuse null argument pointers, and an empty array may have none: nothing is read from it anyway.
    alignas(64) static const unsigned char kNoElements[64] = {};
    if (array.ByteLength() == 0) return const_cast<unsigned char*>(kNoElements);
    void* base = array.ArrayBuffer().Data();
    Require(base != nullptr, "an array's buffer was detached");
    keep_alive->push_back(Napi::Persistent(static_cast<Napi::Object>(array)));
    return static_cast<uint8_t*>(base) + array.ByteOffset();
  }

  static std::vector<double> ReadFloat64(Napi::Value value, const char* what) {
    Require(value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_float64_array,
            std::string(what) + " must be a Float64Array");
    Napi::Float64Array array = value.As<Napi::Float64Array>();
    return std::vector<double>(array.Data(), array.Data() + array.ElementLength());
  }

  // Asked once: hardware_concurrency() reads /sys on Linux, which costs more than a tiny reduction.
  const unsigned default_threads_;
  Napi::FunctionReference cpu_kernel_class_;
  // Loaded kernels of this environment, by path; weak so that a library closes once no handle or run needs it.
  std::map<std::string, std::weak_ptr<LoadedCpuKernel>> loaded_;
};

}  // namespace
}  // namespace keops

using keops::KeOpsAddon;
NODE_API_ADDON(KeOpsAddon)
