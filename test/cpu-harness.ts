/**
 * Test / benchmark harness for generated CPU kernels, independent of the addon: compiles a kernel with g++ and
 * runs it through a tiny C driver that dlopens it, calls `keops_cpu_run` on row blocks from a few pthreads and
 * writes the outputs back.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

const DRIVER_SOURCE = String.raw`
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "keops_abi.h"

/* Input: int64 header[11] = dtype_bytes, nx, ny, nargs, n_intervals, row_begin, row_end, threads, repeats,
   dim_val, dim_idx; int64 arg_bytes[nargs]; int64 intervals[2 n_intervals]; argument data.
   Output: int32 rc, double best_seconds (wall), double cpu_seconds (of that run, all threads), out_val bytes,
   out_idx bytes. */
typedef struct { keops_cpu_entry entry; keops_cpu_task task; int rc; double cpu_seconds; } job;

static void* run_job(void* p) {
  job* j = (job*)p;
  struct timespec c0, c1;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
  j->rc = j->entry(&j->task);
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
  j->cpu_seconds = (c1.tv_sec - c0.tv_sec) + 1e-9 * (c1.tv_nsec - c0.tv_nsec);
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 4) { fprintf(stderr, "usage: driver kernel.so input output\n"); return 2; }
  FILE* f = fopen(argv[2], "rb");
  if (!f) { perror("input"); return 2; }
  fseek(f, 0, SEEK_END); long size = ftell(f); fseek(f, 0, SEEK_SET);
  char* buf = (char*)malloc(size);
  if (fread(buf, 1, size, f) != (size_t)size) { perror("read"); return 2; }
  fclose(f);
  int64_t* h = (int64_t*)buf;
  int64_t dtype_bytes = h[0], nx = h[1], ny = h[2], nargs = h[3], n_intervals = h[4], row_begin = h[5],
          row_end = h[6], threads = h[7], repeats = h[8], dim_val = h[9], dim_idx = h[10];
  int64_t* arg_bytes = h + 11;
  int64_t* intervals = arg_bytes + nargs;
  char* data = (char*)(intervals + 2 * n_intervals);
  const void** args = (const void**)malloc(sizeof(void*) * (nargs + 1));
  for (int64_t a = 0; a < nargs; a++) { args[a] = data; data += arg_bytes[a]; }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 3; }
  keops_cpu_entry entry = (keops_cpu_entry)dlsym(lib, "keops_cpu_run");
  keops_cpu_abi_version_fn version = (keops_cpu_abi_version_fn)dlsym(lib, "keops_cpu_abi_version");
  if (!entry || !version || version() != KEOPS_CPU_ABI_VERSION) { fprintf(stderr, "bad kernel ABI\n"); return 3; }
  size_t val_bytes = (size_t)(nx * dim_val * dtype_bytes), idx_bytes = (size_t)(nx * dim_idx * 4);
  void* out_val = malloc(val_bytes + 1);
  int32_t* out_idx = (int32_t*)malloc(idx_bytes + 4);
  memset(out_val, 0xff, val_bytes); /* NaN / -1: rows the kernel forgets show up */
  memset(out_idx, 0xff, idx_bytes);
  job* jobs = (job*)malloc(sizeof(job) * threads);
  pthread_t* tids = (pthread_t*)malloc(sizeof(pthread_t) * threads);
  double best = 1e300, best_cpu = 0;
  int rc = 0;
  for (int64_t rep = 0; rep < repeats; rep++) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int64_t rows = row_end - row_begin;
    for (int64_t t = 0; t < threads; t++) {
      keops_cpu_task* k = &jobs[t].task;
      jobs[t].entry = entry;
      k->nx = nx; k->ny = ny; k->args = args;
      k->out_val = dim_val > 0 ? out_val : 0;
      k->out_idx = dim_idx > 0 ? out_idx : 0;
      k->row_begin = row_begin + rows * t / threads;
      k->row_end = row_begin + rows * (t + 1) / threads;
      k->j_intervals = intervals; k->n_intervals = n_intervals; k->cancel = 0;
      if (threads == 1) run_job(&jobs[t]); else pthread_create(&tids[t], 0, run_job, &jobs[t]);
    }
    double cpu = 0;
    for (int64_t t = 0; t < threads; t++) {
      if (threads > 1) pthread_join(tids[t], 0);
      if (jobs[t].rc != 0) rc = jobs[t].rc;
      cpu += jobs[t].cpu_seconds;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    if (s < best) { best = s; best_cpu = cpu; }
  }
  FILE* o = fopen(argv[3], "wb");
  int32_t rc32 = rc;
  fwrite(&rc32, 4, 1, o);
  fwrite(&best, 8, 1, o);
  fwrite(&best_cpu, 8, 1, o);
  fwrite(out_val, 1, val_bytes, o);
  fwrite(out_idx, 1, idx_bytes, o);
  fclose(o);
  return 0;
}
`;

export type Dtype = 'float32' | 'float64';

export interface HarnessRun {
  /** Argument arrays in position order (row-major), already of the kernel's dtype. */
  args: readonly (Float32Array | Float64Array)[];
  nx: number;
  ny: number;
  dtype: Dtype;
  dimVal: number;
  dimIdx: number;
  /** [start, end) pairs; default: one interval [0, ny). */
  intervals?: readonly (readonly [number, number])[];
  rows?: readonly [number, number];
  threads?: number;
  repeats?: number;
}

export interface HarnessResult {
  rc: number;
  /** Wall time of the fastest repeat, and the CPU time all threads spent in it. */
  seconds: number;
  cpuSeconds: number;
  val: Float64Array;
  idx: Int32Array;
}

export class CpuHarness {
  readonly dir: string;
  private readonly driver: string;
  private counter = 0;

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'keops-codegen-'));
    const src = join(this.dir, 'driver.c');
    writeFileSync(src, DRIVER_SOURCE);
    this.driver = join(this.dir, 'driver');
    const include = resolve(__dirname, '..', 'native');
    execFileSync('cc', ['-O2', `-I${include}`, '-o', this.driver, src, '-ldl', '-lpthread']);
  }

  /** Compiles a kernel source; resolves to the .so path and the compile time in seconds. */
  async compile(
    source: string,
    flags: readonly string[],
    name = 'kernel',
  ): Promise<{ so: string; seconds: number }> {
    const id = `${name}-${this.counter++}`;
    const cpp = join(this.dir, `${id}.cpp`);
    const so = join(this.dir, `${id}.so`);
    writeFileSync(cpp, source);
    const t0 = process.hrtime.bigint();
    await execFileAsync('g++', [...flags, '-o', so, cpp], { maxBuffer: 64 << 20 });
    return { so, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
  }

  run(so: string, r: HarnessRun): HarnessResult {
    const intervals = r.intervals ?? [[0, r.ny]];
    const [rowBegin, rowEnd] = r.rows ?? [0, r.nx];
    const header = BigInt64Array.from(
      [
        r.dtype === 'float32' ? 4 : 8,
        r.nx,
        r.ny,
        r.args.length,
        intervals.length,
        rowBegin,
        rowEnd,
        r.threads ?? 1,
        r.repeats ?? 1,
        r.dimVal,
        r.dimIdx,
        ...r.args.map((a) => a.byteLength),
        ...intervals.flat(),
      ].map((x) => BigInt(x)),
    );
    const id = this.counter++;
    const input = join(this.dir, `in-${id}.bin`);
    const output = join(this.dir, `out-${id}.bin`);
    writeFileSync(
      input,
      Buffer.concat([
        Buffer.from(header.buffer),
        ...r.args.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)),
      ]),
    );
    execFileSync(this.driver, [so, input, output], { stdio: ['ignore', 'inherit', 'inherit'] });
    const out = readFileSync(output);
    rmSync(input);
    rmSync(output);
    const bytes = r.dtype === 'float32' ? 4 : 8;
    const valBytes = r.nx * r.dimVal * bytes;
    const body = out.buffer.slice(out.byteOffset + 20, out.byteOffset + out.byteLength);
    const valView =
      r.dtype === 'float32'
        ? new Float32Array(body, 0, r.nx * r.dimVal)
        : new Float64Array(body, 0, r.nx * r.dimVal);
    return {
      rc: out.readInt32LE(0),
      seconds: out.readDoubleLE(4),
      cpuSeconds: out.readDoubleLE(12),
      val: Float64Array.from(valView),
      idx: new Int32Array(body.slice(valBytes, valBytes + r.nx * r.dimIdx * 4)),
    };
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
