// The one interface between a compiled CPU kernel (generated C++, see lib/codegen/) and the addon
// (native/*.cc) that loads it with dlopen and calls it from worker threads. Plain C so that any compiler's
// output can be loaded. Changing this struct means bumping KEOPS_CPU_ABI_VERSION (part of every cache key).
#pragma once
#include <stdint.h>

#define KEOPS_CPU_ABI_VERSION 2

typedef struct keops_cpu_task {
  int64_t nx;                  // number of output rows (the outer index: i for tag 0, j for tag 1)
  int64_t ny;                  // number of reduced rows (the inner index)
  const void* const* args;     // one pointer per argument position, row-major data of the kernel's dtype;
                               // outer-category args have nx rows, inner-category ny rows, parameters 1 row
  void* out_val;               // nx * dimVal values of the kernel's dtype (null when dimVal == 0)
  int32_t* out_idx;            // nx * dimIdx indices (null when dimIdx == 0)
  int64_t row_begin;           // this call computes output rows [row_begin, row_end)
  int64_t row_end;
  const int64_t* j_intervals;  // n_intervals pairs [start, end) of inner rows, sorted, reduced over for
  int64_t n_intervals;         // every row of this call; 0 intervals = the neutral value
  const int* cancel;           // null, or a flag the caller sets (atomically) to stop the task: the kernel
                               // polls it once per tile and then returns 4 without finishing its rows
} keops_cpu_task;

// Exported by every generated kernel as extern "C" under the name "keops_cpu_run"; returns 0 on success.
typedef int (*keops_cpu_entry)(const keops_cpu_task* task);
// Exported as "keops_cpu_abi_version"; the addon refuses a kernel whose version differs.
typedef int (*keops_cpu_abi_version_fn)(void);
