// The library's own threads for asynchronous CPU kernel runs, so that long kernels never occupy libuv's pool
// (fs, dns, zlib, crypto keep working while they run). One pool per process, shared by every environment
// (main thread and workers): its threads are never joined, so process.exit() and worker.terminate() never wait
// for a running kernel (a run of a dying environment is cancelled instead). Runs are served in FIFO order, each
// by at most its own thread limit; the pool has as many threads as cores, or as the largest limit asked for.
// No Node-API here.
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "keops_abi.h"

namespace keops {

class CpuRun : public std::enable_shared_from_this<CpuRun> {
 public:
  // `tasks` must stay valid (with what they point to) until `on_done` has been called.
  CpuRun(keops_cpu_entry entry, std::vector<keops_cpu_task> tasks, unsigned max_threads,
         std::function<void(CpuRun&)> on_done);

  // The flag the tasks poll (keops_cpu_task::cancel).
  const int* cancel_flag() const { return reinterpret_cast<const int*>(&cancel_); }
  std::vector<keops_cpu_task>& tasks() { return tasks_; }

  // Outcome, once on_done runs: cancelled, else an error message (empty on success).
  bool cancelled() const { return cancel_.load() != 0; }
  std::string error() const;

 private:
  friend class CpuPool;
  bool Stopped() const { return cancel_.load() != 0 || failure_.load() != 0 || threw_.load(); }
  bool Joinable() const { return !Stopped() && next_task_.load() < tasks_.size(); }
  void Drain();

  keops_cpu_entry entry_;
  std::vector<keops_cpu_task> tasks_;
  unsigned max_threads_;
  std::function<void(CpuRun&)> on_done_;
  std::atomic<int> cancel_{0};  // read by the kernels as a plain int, written atomically
  std::atomic<int> failure_{0};
  std::atomic<bool> threw_{false};
  bool unstarted_ = false;  // not a single pool thread could be created
  std::atomic<size_t> next_task_{0};
  unsigned active_ = 0;  // pool threads working on this run (guarded by the pool's mutex)
};
static_assert(sizeof(std::atomic<int>) == sizeof(int) && std::atomic<int>::is_always_lock_free,
              "kernels read the cancellation flag as an int");

class CpuPool {
 public:
  static CpuPool& Shared();

  // Queues `run`; its on_done is called once, on a pool thread (or here for an empty run), when it is over.
  void Submit(const std::shared_ptr<CpuRun>& run);
  // Stops `run` within about one tile of work per running task; a queued run ends at once. Idempotent.
  void Cancel(const std::shared_ptr<CpuRun>& run);

 private:
  CpuPool() = default;
  void Work();
  void Grow(unsigned wanted);
  std::shared_ptr<CpuRun> NextJoinable();
  void Remove(const std::shared_ptr<CpuRun>& run);

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<CpuRun>> queue_;  // runs with tasks left or threads still on them, oldest first
  unsigned threads_ = 0;
};

}  // namespace keops
