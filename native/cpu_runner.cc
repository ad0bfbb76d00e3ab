#include "cpu_runner.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <system_error>
#include <thread>

namespace keops {

namespace {

// Below this many (i, j) pairs a thread costs more to start than it saves.
constexpr double kPairsPerExtraThread = 65536.0;
// Tasks per thread: enough to balance uneven blocks, few enough that per-task overhead stays negligible.
constexpr double kTasksPerThread = 4.0;
// Rows below which a task is not cut further (unless that leaves a thread idle): every task sweeps all of its j
// tiles once per row block, and the register-blocked kernels re-pack each tile per row block (up to 480 rows), so
// short tasks multiply that packing (Fashion-MNIST k-NN, 1,000 x 60,000 at D = 784: 8 tasks of 125 rows).
constexpr int64_t kMinRowsPerTask = 512;

double BlockPairs(const CpuJob& job, const CpuRowBlock& block) {
  int64_t width = 0;
  for (int64_t k = 0; k < block.interval_count; ++k) {
    const int64_t* interval = &job.intervals[2 * (block.first_interval + k)];
    width += interval[1] - interval[0];
  }
  // A row costs at least its initialisation and finalisation, even with nothing to reduce.
  return static_cast<double>(block.row_end - block.row_begin) * static_cast<double>(std::max<int64_t>(width, 1));
}

keops_cpu_task MakeTask(const CpuJob& job, const CpuRowBlock& block, int64_t row_begin, int64_t row_end,
                        const int* cancel) {
  keops_cpu_task task;
  task.nx = job.nx;
  task.ny = job.ny;
  task.args = job.args.data();
  task.out_val = job.out_val;
  task.out_idx = job.out_idx;
  task.row_begin = row_begin;
  task.row_end = row_end;
  task.j_intervals = block.interval_count > 0 ? &job.intervals[2 * block.first_interval] : nullptr;
  task.n_intervals = block.interval_count;
  task.cancel = cancel;
  return task;
}

}  // namespace

unsigned DefaultThreadCount() { return std::max(1u, std::thread::hardware_concurrency()); }

CpuTaskPlan SplitCpuJobs(const std::vector<CpuJob>& jobs, unsigned max_threads, const int* cancel) {
  double total_pairs = 0;
  for (const CpuJob& job : jobs) {
    for (const CpuRowBlock& block : job.blocks) total_pairs += BlockPairs(job, block);
  }
  CpuTaskPlan plan;
  plan.useful_threads = static_cast<unsigned>(std::min<double>(
      std::max(1u, max_threads), std::max(1.0, std::floor(total_pairs / kPairsPerExtraThread))));
  const double pairs_per_task = std::max(1.0, total_pairs / (plan.useful_threads * kTasksPerThread));
  for (const CpuJob& job : jobs) {
    for (const CpuRowBlock& block : job.blocks) {
      const int64_t rows = block.row_end - block.row_begin;
      if (rows <= 0) continue;
      const double pairs_per_row = BlockPairs(job, block) / static_cast<double>(rows);
      const int64_t balanced_rows = (rows + plan.useful_threads - 1) / plan.useful_threads;
      const int64_t rows_per_task =
          std::max<int64_t>({1, static_cast<int64_t>(std::ceil(pairs_per_task / pairs_per_row)),
                             std::min<int64_t>(kMinRowsPerTask, balanced_rows)});
      for (int64_t begin = block.row_begin; begin < block.row_end; begin += rows_per_task) {
        plan.tasks.push_back(MakeTask(job, block, begin, std::min(block.row_end, begin + rows_per_task), cancel));
      }
    }
  }
  plan.useful_threads = static_cast<unsigned>(std::min<size_t>(plan.useful_threads, plan.tasks.size()));
  return plan;
}

std::string DescribeKernelStatus(int status) {
  switch (status) {
    case 0:
      return std::string();
    case 1:
      return "the kernel refused its task (status 1: null pointers or rows out of range)";
    case 2:
      return "the kernel refused its task (status 2: an interval out of range)";
    case 3:
      return "the kernel ran out of memory (status 3)";
    case 4:
      return "the kernel was cancelled (status 4)";
    default:
      return "the kernel returned status " + std::to_string(status);
  }
}

std::string RunCpuJobs(keops_cpu_entry entry, const std::vector<CpuJob>& jobs, unsigned max_threads) {
  const CpuTaskPlan plan = SplitCpuJobs(jobs, max_threads, nullptr);
  const std::vector<keops_cpu_task>& tasks = plan.tasks;

  std::atomic<size_t> next_task{0};
  std::atomic<int> first_failure{0};
  std::atomic<bool> threw{false};
  auto work = [&]() {
    try {
      for (size_t t = next_task++; t < tasks.size() && first_failure.load() == 0; t = next_task++) {
        const int status = entry(&tasks[t]);
        if (status != 0) {
          int expected = 0;
          first_failure.compare_exchange_strong(expected, status);
        }
      }
    } catch (...) {
      threw = true;
      next_task = tasks.size();
    }
  };

  std::vector<std::thread> helpers;
  try {
    for (unsigned t = 1; t < plan.useful_threads; ++t) helpers.emplace_back(work);
  } catch (const std::system_error&) {
    // Could not start every thread: the ones that did start, plus this one, still finish the work.
  }
  work();
  for (std::thread& helper : helpers) helper.join();

  if (threw) return "the kernel threw a C++ exception";
  return DescribeKernelStatus(first_failure.load());
}

}  // namespace keops
