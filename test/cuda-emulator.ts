/**
 * Runs the generated CUDA kernels (lib/codegen/cuda.ts) on the CPU, to test their logic without a GPU: a few
 * macros stand for the CUDA built-ins (threadIdx, blockIdx, blockDim, gridDim, __syncthreads, __shared__; see
 * test/fake-cuda/emulation.h, shared with the fake NVRTC), the kernel source is compiled by g++, and a small driver
 * launches a grid with one POSIX thread per CUDA thread (blocks one after the other, the threads of a block in
 * parallel, synchronised by a barrier). The prelude's CPU branch supplies the math functions, so values match the
 * GPU's only to rounding; the indexing, tiling, synchronisation, split/merge, ranges and batch logic are exactly
 * the GPU's.
 */
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { CudaKernels } from '../lib/codegen/cuda';

const execFileAsync = promisify(execFile);

/** The CUDA built-ins and the grid runner, shared with the fake NVRTC (test/fake-cuda/). */
const EMULATION_HEADER = readFileSync(join(__dirname, 'fake-cuda', 'emulation.h'), 'utf8');

const DRIVER = String.raw`
using namespace keops_ns;

// Runs body() for every CUDA thread of the grid (keops_emu::run_grid, see emulation.h); exits on failure.
template <typename Body>
static void launch(keops_emu_dim3 grid, unsigned block, Body body) {
  if (keops_emu::run_grid(grid, {block, 1, 1}, body) != keops_emu::KEOPS_EMU_OK) exit(3);
}

// Input: int64 header[12] = scheme (0 1d, 1 split, 2 ranges), nx, ny, batches, block, splits, slice,
// lookup_entries, n_intervals, has_batch_offsets, dim_val, dim_idx; int64 arg_elements[kArgSlots]; lookup;
// intervals; batch offsets; argument data. Output: out_val, out_idx (batches * nx rows each).
int main(int argc, char** argv) {
  if (argc != 3) return 2;
  FILE* f = fopen(argv[1], "rb");
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char* buf = (char*)malloc(size);
  if (fread(buf, 1, size, f) != (size_t)size) return 2;
  fclose(f);
  int64_t* h = (int64_t*)buf;
  const long scheme = h[0], nx = h[1], ny = h[2], batches = h[3], block = h[4], splits = h[5], slice = h[6],
             entries = h[7], n_intervals = h[8], has_offsets = h[9], dim_val = h[10], dim_idx = h[11];
  int64_t* arg_elements = h + 12;
  long long* lookup = (long long*)(arg_elements + kArgSlots);
  long long* intervals = lookup + 4 * entries;
  long long* offsets = intervals + 2 * n_intervals;
  keops_t* data = (keops_t*)(offsets + (has_offsets ? batches * (kArgSlots + 2) : 0));
  Args args;
  for (int k = 0; k < kArgSlots; k++) {
    args.p[k] = data;
    data += arg_elements[k];
  }
  const size_t val_count = (size_t)(batches * nx * dim_val), idx_count = (size_t)(batches * nx * dim_idx);
  keops_t* out_val = (keops_t*)malloc(sizeof(keops_t) * (val_count + 1));
  int* out_idx = (int*)malloc(sizeof(int) * (idx_count + 1));
  memset(out_val, 0xff, sizeof(keops_t) * val_count);  // NaN / -1: rows a kernel forgets show up
  memset(out_idx, 0xff, sizeof(int) * idx_count);
  const long long* batch_offsets = has_offsets ? offsets : 0;
  // The row kernels take kRows rows per thread; the merge kernel one.
  const keops_emu_dim3 rows_grid = {(unsigned)((nx + block * kRows - 1) / (block * kRows)), 1, (unsigned)batches};
  const keops_emu_dim3 merge_grid = {(unsigned)((nx + block - 1) / block), 1, (unsigned)batches};
  if (scheme == 0) {
    launch(rows_grid, block, [&]() { keops_1d(nx, ny, args, out_val, out_idx, batch_offsets, 0); });
  } else if (scheme == 1) {
    keops_acc_t* partial_val = (keops_acc_t*)malloc(sizeof(keops_acc_t) * batches * splits * kValSlots * nx + 8);
    int* partial_idx = (int*)malloc(sizeof(int) * batches * splits * kIdxSlots * nx + 8);
    launch({rows_grid.x, (unsigned)splits, rows_grid.z}, block,
           [&]() { keops_split(nx, ny, args, slice, partial_val, partial_idx, batch_offsets, 0); });
    launch(merge_grid, block, [&]() {
      keops_split_merge(nx, splits, partial_val, partial_idx, out_val, out_idx, batch_offsets, 0);
    });
  } else {
    launch({(unsigned)entries, 1, (unsigned)batches}, block,
           [&]() { keops_ranges(nx, ny, args, out_val, out_idx, lookup, intervals, batch_offsets, 0); });
  }
  FILE* o = fopen(argv[2], "wb");
  fwrite(out_val, sizeof(keops_t), val_count, o);
  fwrite(out_idx, sizeof(int), idx_count, o);
  fclose(o);
  return 0;
}
`;

export interface EmulatedLaunch {
  readonly scheme: '1d' | 'split' | 'ranges';
  readonly nx: number;
  readonly ny: number;
  readonly batches?: number;
  readonly blockSize: number;
  readonly splits?: number;
  readonly slice?: number;
  /** Ranges: the lookup table and the intervals. */
  readonly lookup?: BigInt64Array;
  readonly intervals?: readonly number[];
  /** batches × (argSlots + 2) element offsets, or none (one batch entry). */
  readonly batchOffsets?: readonly number[];
  /** One array per argument slot, of the kernel's dtype (all batch entries). */
  readonly args: readonly (Float32Array | Float64Array)[];
}

export class CudaEmulator {
  private readonly dir = mkdtempSync(join(tmpdir(), 'keops-cuda-emu-'));
  private counter = 0;

  /** Compiles the kernels into an emulation program; resolves to its path. */
  async compile(kernels: CudaKernels): Promise<string> {
    const id = this.counter++;
    const cpp = join(this.dir, `emu-${id}.cpp`);
    const exe = join(this.dir, `emu-${id}`);
    writeFileSync(cpp, EMULATION_HEADER + kernels.source + DRIVER);
    await execFileAsync('g++', ['-std=c++17', '-O1', '-pthread', '-w', '-o', exe, cpp], {
      maxBuffer: 64 << 20,
    });
    return exe;
  }

  async run(
    exe: string,
    kernels: CudaKernels,
    launch: EmulatedLaunch,
  ): Promise<{ val: Float64Array; idx: Int32Array }> {
    const batches = launch.batches ?? 1;
    const { dimVal, dimIdx } = kernels.layout;
    const intervals = launch.intervals ?? [];
    const lookup = launch.lookup ?? new BigInt64Array(0);
    const header = [
      { '1d': 0, split: 1, ranges: 2 }[launch.scheme],
      launch.nx,
      launch.ny,
      batches,
      launch.blockSize,
      launch.splits ?? 1,
      launch.slice ?? launch.ny,
      lookup.length / 4,
      intervals.length / 2,
      launch.batchOffsets === undefined ? 0 : 1,
      dimVal,
      dimIdx,
      ...Array.from({ length: kernels.argSlots }, (_, k) => launch.args[k]?.length ?? 0),
    ];
    const ints = BigInt64Array.from(
      [...header, ...intervals, ...(launch.batchOffsets ?? [])].map((x) => BigInt(x)),
    );
    const head = BigInt64Array.from([
      ...ints.subarray(0, header.length),
      ...lookup,
      ...ints.subarray(header.length),
    ]);
    const id = this.counter++;
    const input = join(this.dir, `in-${id}.bin`);
    const output = join(this.dir, `out-${id}.bin`);
    writeFileSync(
      input,
      Buffer.concat([
        Buffer.from(head.buffer),
        ...launch.args.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)),
      ]),
    );
    await execFileAsync(exe, [input, output]);
    const out = readFileSync(output);
    rmSync(input);
    rmSync(output);
    const bytes = kernels.dtype === 'float32' ? 4 : 8;
    const valCount = batches * launch.nx * dimVal;
    const raw = out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength);
    const val = Float64Array.from(
      kernels.dtype === 'float32' ? new Float32Array(raw, 0, valCount) : new Float64Array(raw, 0, valCount),
    );
    const idx = new Int32Array(raw.slice(valCount * bytes), 0, batches * launch.nx * dimIdx);
    return { val, idx };
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A CudaEmulator for one describe block: the suite is skipped (saying why) where there is no g++ to compile the
 * emulated kernels, and the emulator's files are removed after it.
 */
export function useCudaEmulator(): CudaEmulator {
  const emulator = new CudaEmulator();
  before(function () {
    if (spawnSync('g++', ['--version']).status !== 0) {
      console.log('      (skipped: no g++ to compile the emulated kernels)');
      this.skip();
    }
  });
  after(() => emulator.dispose());
  return emulator;
}
