// The keops-node native addon: loads compiled CPU kernels and runs reductions with them, synchronously or off
// the JS thread. Arguments are validated in TypeScript (lib/backend/cpu/run.ts); the checks here only keep a bad
// call from touching memory it should not. Every failure becomes a JS Error with a `code`; no C++ exception
// crosses into JS. All state lives in the per-environment addon instance (safe under worker_threads).
#include <napi.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cpu_kernel.h"
#include "cpu_pool.h"
#include "cpu_runner.h"
#include "coded_failure.h"
#include "cuda_addon.h"
#include "typed_array_view.h"

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

// Aligned heap memory owned by an asynchronous run (input copies, outputs).
std::shared_ptr<uint8_t> AllocateBytes(size_t bytes) {
  void* memory = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  if (memory == nullptr) throw CodedFailure("ERR_NATIVE", "out of memory copying the inputs of a CPU run");
  return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(memory), [](uint8_t* p) { std::free(p); });
}

// Everything one run needs, extracted on the JS thread. A synchronous run points straight into the JS arrays
// (no JS can run meanwhile). An asynchronous one owns every byte it touches: inputs are copied now, outputs are
// written to native memory and copied into the JS arrays when the run settles; so a buffer transferred, shrunk
// or freed (worker teardown) while the kernel runs can never be read or written by it.
struct PreparedRun {
  std::shared_ptr<LoadedCpuKernel> kernel;
  std::vector<CpuJob> jobs;
  unsigned threads = 1;
  bool owns_memory = false;
  std::vector<std::shared_ptr<uint8_t>> owned;
  // Asynchronous runs: where each native output goes once the run is over.
  struct Output {
    uint8_t* data;
    size_t bytes;
    size_t target;  // index in `targets`
  };
  std::vector<Output> outputs;
  std::vector<Napi::Value> targets;
};

// The JS side of an asynchronous run: touched on the JS thread only.
struct RunSettlement {
  Napi::Promise::Deferred deferred;
  std::vector<Napi::ObjectReference> targets;
  explicit RunSettlement(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
};

// A finished asynchronous run on its way back to the JS thread.
struct FinishedRun {
  std::shared_ptr<CpuRun> run;
  std::shared_ptr<PreparedRun> prepared;
  RunSettlement* js;  // leaked, not deleted, if the environment is gone (its references died with it)
};

struct CompletionChannel;
void SettleRun(Napi::Env env, Napi::Function, CompletionChannel* channel, FinishedRun* finished);
using CompletionTsfn = Napi::TypedThreadSafeFunction<CompletionChannel, FinishedRun, SettleRun>;

// How finished runs reach their environment's JS thread. `open` turns false when the environment goes away (its
// cleanup hook or the TSFN's finalizer, whichever comes first): after that nothing calls the TSFN, and the
// environment's runs are cancelled.
struct CompletionChannel {
  std::mutex mutex;
  bool open = true;
  CompletionTsfn tsfn;
  std::set<std::shared_ptr<CpuRun>> in_flight;
  int pending = 0;  // JS thread only: the TSFN keeps the event loop alive while > 0

  void Deliver(FinishedRun* finished) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      in_flight.erase(finished->run);
      if (open && tsfn.NonBlockingCall(finished) == napi_ok) return;
    }
    delete finished;
  }

  void Close() {
    std::set<std::shared_ptr<CpuRun>> runs;
    {
      std::lock_guard<std::mutex> lock(mutex);
      open = false;
      runs.swap(in_flight);
    }
    for (const std::shared_ptr<CpuRun>& run : runs) CpuPool::Shared().Cancel(run);
  }
};

void SettleRun(Napi::Env env, Napi::Function, CompletionChannel* channel, FinishedRun* finished) {
  std::unique_ptr<FinishedRun> owned(finished);
  if (env == nullptr) return;  // the TSFN is being torn down
  std::unique_ptr<RunSettlement> js(finished->js);
  if (--channel->pending == 0) channel->tsfn.Unref(env);
  Napi::HandleScope scope(env);
  auto reject = [&](const CodedFailure& failure) { js->deferred.Reject(MakeCodedError(env, failure).Value()); };
  if (finished->run->cancelled()) return reject(CodedFailure("ERR_ABORTED", "the CPU run was cancelled"));
  const std::string error = finished->run->error();
  if (!error.empty()) return reject(CodedFailure("ERR_KERNEL_RUN", error));
  try {
    for (const PreparedRun::Output& output : finished->prepared->outputs) {
      const TypedArrayView target = ViewTypedArray(js->targets[output.target].Value(), "an output array");
      Require(target.bytes == output.bytes, "an output array changed size during the run");
      if (output.bytes > 0) std::memcpy(target.data, output.data, output.bytes);
    }
  } catch (const CodedFailure& failure) {
    return reject(failure);
  } catch (const Napi::Error& e) {
    js->deferred.Reject(e.Value());
    return;
  }
  js->deferred.Resolve(env.Undefined());
}

void FinalizeChannel(Napi::Env, std::shared_ptr<CompletionChannel>* holder, CompletionChannel*) {
  (*holder)->Close();
  delete holder;
}

class KeOpsAddon : public Napi::Addon<KeOpsAddon> {
 public:
  KeOpsAddon(Napi::Env env, Napi::Object exports)
      : default_threads_(DefaultThreadCount()), channel_(std::make_shared<CompletionChannel>()) {
    cpu_kernel_class_ = Napi::Persistent(CpuKernel::Define(env));
    channel_->tsfn = CompletionTsfn::New(env, "keops:cpu-run", 0, 1, channel_.get(), FinalizeChannel,
                                         new std::shared_ptr<CompletionChannel>(channel_));
    channel_->tsfn.Unref(env);
    // Runs of a dying environment (worker.terminate(), exit) are cancelled, not waited for.
    NAPI_THROW_IF_FAILED_VOID(env, napi_add_env_cleanup_hook(env, CloseChannel,
                                                             new std::shared_ptr<CompletionChannel>(channel_)));
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

  static void CloseChannel(void* holder) {
    auto* channel = static_cast<std::shared_ptr<CompletionChannel>*>(holder);
    (*channel)->Close();
    delete channel;
  }

  // runCpuSync(kernel, jobs, threads): blocks the calling thread; for scripts and tiny inputs.
  Napi::Value RunCpuSync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Guarded(env, [&]() -> Napi::Value {
      Require(info.Length() == 3, "runCpuSync(kernel, jobs, threads)");
      PreparedRun run = Prepare(info, false);
      const std::string error = RunCpuJobs(run.kernel->entry(), run.jobs, run.threads);
      if (!error.empty()) throw CodedFailure("ERR_KERNEL_RUN", error);
      return env.Undefined();
    });
  }

  // runCpu(kernel, jobs, threads, control?) -> Promise<void>: the work runs on the library's thread pool. When
  // `control` (an object) is given, it receives a `cancel()` method that stops the run (ERR_ABORTED).
  Napi::Value RunCpu(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Guarded(env, [&]() -> Napi::Value {
      Require(info.Length() == 3 || (info.Length() == 4 && (info[3].IsObject() || info[3].IsUndefined())),
              "runCpu(kernel, jobs, threads, control?)");
      auto prepared = std::make_shared<PreparedRun>(Prepare(info, true));
      auto js = std::make_unique<RunSettlement>(env);
      for (const Napi::Value& target : prepared->targets) {
        js->targets.push_back(Napi::Persistent(target.As<Napi::Object>()));
      }
      prepared->targets.clear();
      Napi::Promise promise = js->deferred.Promise();

      std::shared_ptr<CompletionChannel> channel = channel_;
      RunSettlement* settlement = js.get();
      CpuTaskPlan plan = SplitCpuJobs(prepared->jobs, prepared->threads, nullptr);
      auto run = std::make_shared<CpuRun>(
          prepared->kernel->entry(), std::move(plan.tasks), plan.useful_threads,
          [channel, prepared, settlement](CpuRun& done) {
            channel->Deliver(new FinishedRun{done.shared_from_this(), prepared, settlement});
          });
      for (keops_cpu_task& task : run->tasks()) task.cancel = run->cancel_flag();

      if (info.Length() == 4 && info[3].IsObject()) {
        std::weak_ptr<CpuRun> weak = run;
        info[3].As<Napi::Object>().Set(
            "cancel", Napi::Function::New(env, [weak](const Napi::CallbackInfo& call) -> Napi::Value {
              if (std::shared_ptr<CpuRun> target = weak.lock()) CpuPool::Shared().Cancel(target);
              return call.Env().Undefined();
            }));
      }
      {
        std::lock_guard<std::mutex> lock(channel->mutex);
        if (!channel->open) throw CodedFailure("ERR_ABORTED", "this environment is shutting down");
        channel->in_flight.insert(run);
      }
      if (channel->pending++ == 0) channel->tsfn.Ref(env);
      js.release();  // owned by the run's settlement from here on
      CpuPool::Shared().Submit(run);
      return promise;
    });
  }

  PreparedRun Prepare(const Napi::CallbackInfo& info, bool owns_memory) {
    Require(info[0].IsObject() && info[1].IsArray(), "run(kernel, jobs, threads)");
    Napi::Object handle = info[0].As<Napi::Object>();
    Require(handle.CheckTypeTag(&kCpuKernelTag), "the first argument is not a CpuKernel");
    PreparedRun run;
    run.owns_memory = owns_memory;
    run.kernel = CpuKernel::Unwrap(handle)->kernel();
    if (run.kernel == nullptr) throw CodedFailure("ERR_INVALID_ARGUMENT", "this CpuKernel was disposed");
    const int64_t threads = ToCount(info[2], "threads");
    run.threads = static_cast<unsigned>(threads == 0 ? default_threads_ : std::min<int64_t>(threads, 1024));

    Napi::Array jobs = info[1].As<Napi::Array>();
    napi_typedarray_type element_type = kNoElementTypeYet;
    std::map<std::pair<const void*, size_t>, const void*> copies;  // one copy per input slice, however shared
    for (uint32_t n = 0; n < jobs.Length(); ++n) {
      Require(jobs.Get(n).IsObject(), "every job must be an object");
      run.jobs.push_back(PrepareJob(jobs.Get(n).As<Napi::Object>(), &element_type, &run, &copies));
    }
    return run;
  }

  // Stands for "not seen yet" while checking that every float array of a run has one element type.
  static constexpr napi_typedarray_type kNoElementTypeYet = napi_int8_array;

  static CpuJob PrepareJob(Napi::Object spec, napi_typedarray_type* element_type, PreparedRun* run,
                           std::map<std::pair<const void*, size_t>, const void*>* copies) {
    CpuJob job;
    job.nx = ToCount(spec.Get("nx"), "nx");
    job.ny = ToCount(spec.Get("ny"), "ny");

    auto float_view = [&](Napi::Value value, const std::string& what) -> TypedArrayView {
      Require(value.IsTypedArray(), what + " must be a Float32Array or Float64Array");
      const TypedArrayView view = ViewTypedArray(value, what);
      Require(view.type == napi_float32_array || view.type == napi_float64_array,
              what + " must be a Float32Array or Float64Array");
      if (*element_type == kNoElementTypeYet) *element_type = view.type;
      Require(view.type == *element_type, "all float arrays of a run must have the same type");
      return view;
    };

    // The planner's count of the values the kernel reads from each argument (rows x dim): checked against what
    // the arrays really hold, so no JS-visible `length` can make the kernel read past a buffer.
    const std::vector<double> needed = ReadFloat64(spec.Get("argElements"), "argElements");
    Napi::Value args_value = spec.Get("args");
    Require(args_value.IsArray(), "job.args must be an array");
    Napi::Array args = args_value.As<Napi::Array>();
    Require(needed.size() == args.Length(), "argElements must hold one count per argument");
    for (uint32_t k = 0; k < args.Length(); ++k) {
      const std::string what = "argument " + std::to_string(k);
      const TypedArrayView view = float_view(args.Get(k), what);
      Require(std::floor(needed[k]) == needed[k] && needed[k] >= 0, "argElements must be counts");
      if (static_cast<double>(view.elements) < needed[k]) {
        throw CodedFailure("ERR_ARG_SHAPE", what + " holds " + std::to_string(view.elements) +
                                                " values in its buffer, the call reads " +
                                                std::to_string(static_cast<int64_t>(needed[k])));
      }
      const size_t bytes = static_cast<size_t>(needed[k]) * ElementBytes(view.type);
      job.args.push_back(bytes == 0 ? NoElements() : run->owns_memory ? CopyOf(view.data, bytes, run, copies)
                                                                      : view.data);
    }

    auto output = [&](Napi::Value value, const std::string& what) -> void* {
      const TypedArrayView view = ViewTypedArray(value, what);
      if (view.bytes == 0) return NoElements();
      if (!run->owns_memory) return view.data;
      std::shared_ptr<uint8_t> memory = AllocateBytes(view.bytes);
      // Starts as the JS array does, so rows a run does not write come back unchanged, as in a synchronous run.
      std::memcpy(memory.get(), view.data, view.bytes);
      run->owned.push_back(memory);
      run->outputs.push_back({memory.get(), view.bytes, run->targets.size()});
      run->targets.push_back(value);
      return memory.get();
    };
    Napi::Value out_val = spec.Get("outVal");
    if (!out_val.IsNull() && !out_val.IsUndefined()) {
      float_view(out_val, "outVal");
      job.out_val = output(out_val, "outVal");
    }
    Napi::Value out_idx = spec.Get("outIdx");
    if (!out_idx.IsNull() && !out_idx.IsUndefined()) {
      Require(out_idx.IsTypedArray() && out_idx.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array,
              "outIdx must be an Int32Array");
      job.out_idx = static_cast<int32_t*>(output(out_idx, "outIdx"));
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

  // Kernels refuse null argument pointers, and an empty array may have none: nothing is read from it anyway.
  static void* NoElements() {
    alignas(64) static const unsigned char kNoElements[64] = {};
    return const_cast<unsigned char*>(kNoElements);
  }

  static const void* CopyOf(const void* data, size_t bytes, PreparedRun* run,
                            std::map<std::pair<const void*, size_t>, const void*>* copies) {
    auto known = copies->find({data, bytes});
    if (known != copies->end()) return known->second;
    std::shared_ptr<uint8_t> memory = AllocateBytes(bytes);
    std::memcpy(memory.get(), data, bytes);
    run->owned.push_back(memory);
    copies->emplace(std::make_pair(data, bytes), memory.get());
    return memory.get();
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
  std::shared_ptr<CompletionChannel> channel_;
  // Loaded kernels of this environment, by path; weak so that a library closes once no handle or run needs it.
  std::map<std::string, std::weak_ptr<LoadedCpuKernel>> loaded_;
};

}  // namespace
}  // namespace keops

using keops::KeOpsAddon;
NODE_API_ADDON(KeOpsAddon)
