#include "cpu_pool.h"

#include <algorithm>
#include <system_error>
#include <thread>
#include <utility>

#include "cpu_runner.h"

namespace keops {

namespace {

// More threads than this would only thrash: a run asking for more gets this many.
constexpr unsigned kMaxPoolThreads = 256;

}  // namespace

CpuRun::CpuRun(keops_cpu_entry entry, std::vector<keops_cpu_task> tasks, unsigned max_threads,
               std::function<void(CpuRun&)> on_done)
    : entry_(entry), tasks_(std::move(tasks)), max_threads_(std::max(1u, max_threads)), on_done_(std::move(on_done)) {}

std::string CpuRun::error() const {
  if (unstarted_) return "no thread could be started for the CPU run";
  if (threw_.load()) return "the kernel threw a C++ exception";
  return DescribeKernelStatus(failure_.load());
}

void CpuRun::Drain() {
  try {
    for (size_t t = next_task_++; t < tasks_.size() && !Stopped(); t = next_task_++) {
      const int status = entry_(&tasks_[t]);
      if (status != 0 && cancel_.load() == 0) {
        int expected = 0;
        failure_.compare_exchange_strong(expected, status);
      }
    }
  } catch (...) {
    threw_ = true;
  }
}

CpuPool& CpuPool::Shared() {
  // Never destroyed: its threads are detached and may still be finishing a tile when the process exits.
  static CpuPool* pool = new CpuPool();
  return *pool;
}

void CpuPool::Submit(const std::shared_ptr<CpuRun>& run) {
  if (run->tasks_.empty()) {
    run->on_done_(*run);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    try {
      static const unsigned cores = DefaultThreadCount();  // hardware_concurrency() reads /sys: ask once
      Grow(std::min(std::max(cores, run->max_threads_), kMaxPoolThreads));
      queue_.push_back(run);
    } catch (const std::system_error&) {
      run->unstarted_ = true;
    }
  }
  if (run->unstarted_) {
    run->on_done_(*run);
    return;
  }
  wake_.notify_all();
}

void CpuPool::Cancel(const std::shared_ptr<CpuRun>& run) {
  bool end_now = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (run->cancel_.exchange(1) != 0) return;
    // No thread is on it: nobody else will notice that it is over.
    auto queued = std::find(queue_.begin(), queue_.end(), run);
    if (queued != queue_.end() && run->active_ == 0) {
      queue_.erase(queued);
      end_now = true;
    }
  }
  if (end_now) run->on_done_(*run);
}

void CpuPool::Grow(unsigned wanted) {
  while (threads_ < wanted) {
    try {
      std::thread(&CpuPool::Work, this).detach();
    } catch (const std::system_error&) {
      if (threads_ > 0) return;  // the threads there are will serve every run
      throw;
    }
    ++threads_;
  }
}

std::shared_ptr<CpuRun> CpuPool::NextJoinable() {
  for (const std::shared_ptr<CpuRun>& run : queue_) {
    if (run->active_ < run->max_threads_ && run->Joinable()) return run;
  }
  return nullptr;
}

void CpuPool::Remove(const std::shared_ptr<CpuRun>& run) {
  auto queued = std::find(queue_.begin(), queue_.end(), run);
  if (queued != queue_.end()) queue_.erase(queued);
}

void CpuPool::Work() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    std::shared_ptr<CpuRun> run;
    wake_.wait(lock, [&]() { return (run = NextJoinable()) != nullptr; });
    ++run->active_;
    lock.unlock();
    run->Drain();
    lock.lock();
    // Once no task is left to start it never becomes joinable again, so exactly one thread sees it end.
    if (--run->active_ == 0 && !run->Joinable()) {
      Remove(run);
      lock.unlock();
      run->on_done_(*run);
      run.reset();
      lock.lock();
    }
  }
}

}  // namespace keops
