// Runs a CPU kernel over row blocks on a few threads. No Node-API here: this code also runs off the JS thread.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "keops_abi.h"

namespace keops {

// One row block of a job: output rows [row_begin, row_end) reduce over `interval_count` j-intervals starting at
// `first_interval` in the job's interval list (0 intervals = write the neutral value).
struct CpuRowBlock {
  int64_t row_begin;
  int64_t row_end;
  int64_t first_interval;
  int64_t interval_count;
};

// One independent reduction (one batch entry): argument pointers in position order and output buffers.
struct CpuJob {
  std::vector<const void*> args;
  void* out_val = nullptr;
  int32_t* out_idx = nullptr;
  int64_t nx = 0;
  int64_t ny = 0;
  std::vector<CpuRowBlock> blocks;
  std::vector<int64_t> intervals;  // pairs [start, end)
};

// The kernel's tasks for `jobs` (which they point into) when at most `max_threads` threads run them, and how
// many threads are worth using (small runs use fewer). Every task polls `*cancel` (may be null) once per tile.
struct CpuTaskPlan {
  std::vector<keops_cpu_task> tasks;
  unsigned useful_threads = 1;
};
CpuTaskPlan SplitCpuJobs(const std::vector<CpuJob>& jobs, unsigned max_threads, const int* cancel);

// What a kernel status code means (0 is success).
std::string DescribeKernelStatus(int status);

// Runs every task of `jobs` on at most `max_threads` threads, the calling thread being one of them (the
// synchronous path). Returns an empty string on success, otherwise what went wrong.
std::string RunCpuJobs(keops_cpu_entry entry, const std::vector<CpuJob>& jobs, unsigned max_threads);

unsigned DefaultThreadCount();

}  // namespace keops
