// CUDA built-ins emulated on the CPU, so that the generated kernels (lib/codegen/cuda.ts) compile with g++ and run
// on host threads. Used in two places, always as the first thing of one translation unit:
//   - test/cuda-emulator.ts concatenates it with the kernels and a small main() (one test program per kernel set);
//   - the fake NVRTC (fake_nvrtc.cc) #includes it in front of the program's source and builds a shared object whose
//     keops_emu_entry_<kernel> trampolines call keops_emu::launch below; the fake driver runs those.
//
// Model: the threads of a block run in parallel as real threads, __syncthreads is a pthread barrier, the blocks of
// the grid run one after the other (so a single static array can be the dynamic shared memory). threadIdx and
// blockIdx are thread_local; blockDim and gridDim are set before the threads start. The prelude's CPU branch
// supplies the math functions (no __CUDACC__ here), so values match the GPU's only to rounding; indexing, tiling,
// synchronisation and memory layouts are exactly the GPU's.
//
// Warps: threads 32w to 32w + 31 of a block (in linear order) form warp w. keops_emu::syncwarp is a barrier of the
// warp's threads, and keops_emu::mma_m16n8k8_tf32 is mma.sync.m16n8k8.row.col.f32.tf32.tf32.f32 with the PTX
// fragment layouts, its operands truncated to TF32 and its sums rounded toward zero: the least accurate reading
// of the hardware that the tensor-core screening's error bound allows for (lib/codegen/cuda-screen.ts).
//
// Limits: one launch at a time per translation unit (a mutex below), no other warp-level primitives (__shfl,
// atomics), no static __shared__ arrays beyond what a plain static variable gives (one copy shared by every block,
// which is right only because blocks do not overlap), and a kernel in which some threads return before a
// __syncthreads the others reach desynchronises the barrier (the generated kernels never do that).
#ifndef KEOPS_EMULATION_H
#define KEOPS_EMULATION_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct keops_emu_dim3 {
  unsigned x, y, z;
};
static thread_local keops_emu_dim3 threadIdx, blockIdx;
static keops_emu_dim3 blockDim, gridDim;
static pthread_barrier_t keops_emu_barrier;
static inline void __syncthreads() { pthread_barrier_wait(&keops_emu_barrier); }

// CUDA's vector types (the fields the kernels use).
struct __attribute__((aligned(8))) float2 {
  float x, y;
};
struct __attribute__((aligned(16))) float4 {
  float x, y, z, w;
};
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__
#define __constant__
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __restrict__ __restrict

// The dynamic shared memory. The kernels declare it at block scope inside their extern "C" definitions
// (`extern __shared__ __align__(16) unsigned char keops_shared[];`), which gives the declaration C linkage: it names
// this array whatever namespace the kernel is in. Hidden, so that two kernel modules loaded in one process keep
// their own. 1 MiB: more than any GPU's opt-in maximum per block (227 KiB on sm_90).
#define KEOPS_EMU_SHARED_BYTES (1u << 20)
extern "C" {
__attribute__((aligned(16), visibility("hidden"))) unsigned char keops_shared[KEOPS_EMU_SHARED_BYTES];
}

// Internal linkage (the unnamed namespace): the header is in one translation unit per program or kernel module, and
// this keeps the std::thread instantiations of two modules that were compiled from the same header (same mangled
// names) from being exported, and thus from ever being bound to each other.
namespace keops_emu {
namespace {

// One barrier per warp of the block (1024 threads at most: 32 warps), sized to the threads the warp has.
static pthread_barrier_t warp_barriers[32];
static unsigned warp_count;

static unsigned linear_thread() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

static void syncwarp() { pthread_barrier_wait(&warp_barriers[linear_thread() / 32]); }

// Tensor-core kernels need whole warps (the GPU's mma.sync is undefined otherwise; the generated kernels __trap).
static void require_warp_blocks() {
  if (blockDim.x % 32 != 0) {
    fprintf(stderr, "keops_emu: a tensor-core kernel was launched with %u threads per block, not whole warps\n",
            blockDim.x);
    abort();
  }
}

// The fragments every lane of each warp hands to mma_m16n8k8_tf32.
static float mma_a[32][32][4], mma_b[32][32][2], mma_c[32][32][4];

// The value the tensor cores read from float32 bits as TF32, at worst: the 13 low mantissa bits dropped.
static double tf32(float v) {
  uint32_t bits;
  memcpy(&bits, &v, sizeof bits);
  bits &= 0xffffe000u;
  float t;
  memcpy(&t, &bits, sizeof t);
  return (double)t;
}

// d = c + A B for the warp's m16n8k8 tile; lane (g, c) = (lane / 4, lane % 4) holds a: A[g][c], A[g+8][c],
// A[g][c+4], A[g+8][c+4]; b: B[c][g], B[c+4][g]; c and d: C[g][2c], C[g][2c+1], C[g+8][2c], C[g+8][2c+1]. The
// products of TF32 values are exact in double, and so is their sum here up to a double rounding; the result is
// rounded toward zero to float.
static void mma_m16n8k8_tf32(float (&d)[4], const float (&a)[4], float b0, float b1) {
  const unsigned warp = linear_thread() / 32, lane = linear_thread() % 32;
  for (int q = 0; q < 4; q++) {
    mma_a[warp][lane][q] = a[q];
    mma_c[warp][lane][q] = d[q];
  }
  mma_b[warp][lane][0] = b0;
  mma_b[warp][lane][1] = b1;
  syncwarp();
  const unsigned g = lane / 4, tig = lane % 4;
  float out[4];
  for (int q = 0; q < 4; q++) {
    const unsigned row = g + 8 * (q / 2), col = 2 * tig + q % 2;
    double sum = mma_c[warp][lane][q];
    for (unsigned k = 0; k < 8; k++) {
      const double x = tf32(mma_a[warp][4 * (row % 8) + k % 4][row / 8 + 2 * (k / 4)]);
      const double y = tf32(mma_b[warp][4 * col + k % 4][k / 4]);
      sum += x * y;
    }
    float f = (float)sum;
    if (std::isfinite(sum) && std::fabs((double)f) > std::fabs(sum)) f = std::nextafter(f, 0.0f);
    out[q] = f;
  }
  syncwarp();  // every lane has read the fragments before any lane's next mma overwrites them
  for (int q = 0; q < 4; q++) d[q] = out[q];
}

// Results of run_grid / launch; the fake driver maps them to CUresult values.
enum Status : int {
  KEOPS_EMU_OK = 0,
  KEOPS_EMU_BAD_GEOMETRY = 1,     // a zero grid or block dimension
  KEOPS_EMU_TOO_MUCH_SHARED = 2,  // more dynamic shared memory than keops_shared holds
  KEOPS_EMU_NO_PARAMS = 3,        // a kernel with parameters launched with a null parameter array
  KEOPS_EMU_NO_THREADS = 4,       // the threads of a block could not be created
};

// Globals above (blockDim, gridDim, the barrier, keops_shared) belong to one launch at a time.
static std::mutex launch_mutex;

// Runs body() once per CUDA thread of the grid. The block's threads are created once for the whole launch (creating
// them per block would dominate the run time) and each walks the blocks in z, y, x order; the barrier at the end of
// every block keeps a block's threads from starting the next block while others still use the shared memory, and
// is also met by threads that returned early from the kernel.
template <typename Body>
int run_grid(keops_emu_dim3 grid, keops_emu_dim3 block, const Body& body) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0) {
    return KEOPS_EMU_BAD_GEOMETRY;
  }
  const unsigned threads = block.x * block.y * block.z;
  std::lock_guard<std::mutex> lock(launch_mutex);
  gridDim = grid;
  blockDim = block;
  if (pthread_barrier_init(&keops_emu_barrier, nullptr, threads) != 0) return KEOPS_EMU_NO_THREADS;
  warp_count = (threads + 31) / 32;
  for (unsigned w = 0; w < warp_count && w < 32; w++) {
    const unsigned lanes = threads - 32 * w < 32 ? threads - 32 * w : 32;
    pthread_barrier_init(&warp_barriers[w], nullptr, lanes);
  }

  // The threads wait at this gate until all exist: if creating one fails, the others must not reach the barrier
  // (they would wait forever for the missing one), so they are told to leave instead.
  std::mutex gate_mutex;
  std::condition_variable gate;
  enum { WAIT, GO, ABORT } state = WAIT;
  auto worker = [&](unsigned t) {
    {
      std::unique_lock<std::mutex> wait(gate_mutex);
      gate.wait(wait, [&] { return state != WAIT; });
      if (state == ABORT) return;
    }
    threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    for (unsigned z = 0; z < grid.z; z++) {
      for (unsigned y = 0; y < grid.y; y++) {
        for (unsigned x = 0; x < grid.x; x++) {
          blockIdx = {x, y, z};
          body();
          pthread_barrier_wait(&keops_emu_barrier);
        }
      }
    }
  };
  std::vector<std::thread> pool;
  int status = KEOPS_EMU_OK;
  try {
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; t++) pool.emplace_back(worker, t);
  } catch (...) {  // std::system_error (no more threads) or std::bad_alloc
    status = KEOPS_EMU_NO_THREADS;
  }
  {
    std::lock_guard<std::mutex> open(gate_mutex);
    state = status == KEOPS_EMU_OK ? GO : ABORT;
  }
  gate.notify_all();
  for (std::thread& thread : pool) thread.join();
  pthread_barrier_destroy(&keops_emu_barrier);
  for (unsigned w = 0; w < warp_count && w < 32; w++) pthread_barrier_destroy(&warp_barriers[w]);
  return status;
}

// Parameter k of a launch, copied from the bytes params[k] points to: the launching code fills them with the
// parameter's layout (a struct of pointers may come from an array of CUdeviceptr), so they are copied rather than
// read through a pointer of the parameter's type. CUDA requires kernel parameters to be trivially copyable.
template <typename T>
T parameter(const void* bytes) {
  static_assert(std::is_trivially_copyable<T>::value, "kernel parameters must be trivially copyable");
  T value;
  memcpy(static_cast<void*>(&value), bytes, sizeof value);
  return value;
}

// Calls `kernel` with its parameters read from `params` the way cuLaunchKernel reads them: params[k] points to the
// value of parameter k (a struct passed by value, a long, a pointer...). Each call makes its own copies, so every
// CUDA thread gets its own parameters, as on the GPU.
template <typename... A, size_t... I>
void call(void (*kernel)(A...), void* const* params, std::index_sequence<I...>) {
  kernel(parameter<std::remove_cv_t<std::remove_reference_t<A>>>(params[I])...);
}

// The launch of one kernel, as the fake driver's cuLaunchKernel asks for it.
template <typename... A>
int launch(void (*kernel)(A...), const unsigned grid[3], const unsigned block[3], unsigned shared_bytes,
           void* const* params) {
  if (shared_bytes > KEOPS_EMU_SHARED_BYTES) return KEOPS_EMU_TOO_MUCH_SHARED;
  if (sizeof...(A) > 0 && params == nullptr) return KEOPS_EMU_NO_PARAMS;
  return run_grid({grid[0], grid[1], grid[2]}, {block[0], block[1], block[2]},
                  [&]() { call(kernel, params, std::index_sequence_for<A...>()); });
}

}  // namespace
}  // namespace keops_emu

#endif  // KEOPS_EMULATION_H
