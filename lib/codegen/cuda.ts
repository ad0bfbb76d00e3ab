/**
 * The CUDA kernel generator.
 *
 *   generateCudaKernels(red: Reduction, opts: CudaKernelOptions): CudaKernels
 *
 * One translation unit (`source`) holding the four kernels of cuda-templates/cuda_kernels.tpl (1D tiled, split
 * over j + merge, block-sparse ranges), for NVRTC: self-contained (no #include; the prelude handles
 * `__CUDACC_RTC__`), entry points `extern "C"` so their names are not mangled. The formula body and the reduction
 * hooks are those of the CPU kernel (lib/codegen/formula.ts, reduction-hooks.ts; the per-pair fold is the `fold_hot`
 * hook where the reduction has one, and KMin tests groups of pairs with `can_skip`): the formula is
 * instantiated with INNER_STRIDE = 1 (inner rows are packed records in shared memory); its prologue (the
 * sub-formulas that read no inner variable) runs once per thread, into a per-thread `hoisted` array. Two
 * CUDA-only rewrites: float32 exponents whose log2(e) scale a per-row factor absorbs become base-2 (cuda-exp2.ts),
 * and float32 k-NN searches over a wide SqDist screen pairs by the expanded form (cuda-screen.ts).
 *
 * Several reductions can share one translation unit (one NVRTC call for many kernels): give each a distinct
 * `symbolPrefix`, put `cudaPrelude()` once in front and concatenate their `body`s.
 *
 * Launch contract (the runner's side; see the template's header comment for the layouts):
 *   <p>_1d(long nx, long ny, Args args, T* out_val, int* out_idx, const long long* batch_offsets, long batch_begin)
 *       grid (ceil(nx / (B * rowsPerThread)), 1, batches), block B (whole warps when warpBlocks), dynamic shared
 *       memory B * sharedBytesPerThread + sharedBytesPerBlock
 *   <p>_split(long nx, long ny, Args args, long slice, TAcc* partial_val, int* partial_idx,
 *             const long long* batch_offsets, long batch_begin)
 *       grid (ceil(nx / (B * rowsPerThread)), ceil(ny / slice), batches), same shared memory; partials of
 *       batches * splits * partialSlots * nx accumulator values / indices
 *   <p>_split_merge(long nx, long splits, const TAcc* partial_val, const int* partial_idx, T* out_val, int* out_idx,
 *                   const long long* batch_offsets, long batch_begin)     grid (ceil(nx / B), 1, batches), no shared
 *   <p>_ranges(long nx, long ny, Args args, T* out_val, int* out_idx, const long long* lookup,
 *              const long long* intervals, const long long* batch_offsets, long batch_begin)
 *       grid (lookup entries, 1, batches), block B, B * rowsPerThread >= the rows of every entry, shared memory
 *       as for _1d
 * `Args` is a struct of `argSlots` device pointers passed by value. Output rows are the reduction's outer index.
 */
import { KeOpsError } from '../errors';
import type { Reduction, ReductionLayout } from '../formula/reduction';
import type { ArgPosition, FormulaArgument } from './formula';
import { foldExpScale } from './cuda-exp2';
import { cudaDotScreen, cudaSqDistScreen, MMA_K } from './cuda-screen';
import { BYTES, CPP_TYPE, generateKernelParts } from './kernel-parts';
import { unsupportedSumScheme } from './reduction-hooks';
import { cLiteral } from './names';
import { fillTemplate, inlineHeader, readPackageFile } from './templates';

export type CudaDtype = 'float32' | 'float64';
export type CudaSumScheme = 'direct_sum' | 'block_sum' | 'kahan_scheme';

export interface CudaKernelOptions {
  readonly dtype: CudaDtype;
  /** Accumulator type (default: dtype). */
  readonly dtypeAcc?: CudaDtype;
  readonly sumScheme: CudaSumScheme;
  readonly positions: readonly ArgPosition[];
  /** Prefix of the entry points and of the namespace (a C identifier); default 'keops'. */
  readonly symbolPrefix?: string;
  /** Output rows per thread (1 to 8); default: chosen from the per-row state (see `defaultRowsPerThread`). */
  readonly rowsPerThread?: number;
  /** Screen KMin searches over a wide SqDist by the expanded form (lib/codegen/cuda-screen.ts); default true. */
  readonly screen?: boolean;
  /**
   * Compute the screening's dot products on tensor cores (mma.sync, TF32 operands, float32 sums): needs a device
   * of compute capability 8.0 or more, and blocks of whole warps (`warpBlocks` of the result). Default false.
   */
  readonly tensorCores?: boolean;
}

export interface CudaKernelEntries {
  readonly oneD: string;
  readonly split: string;
  readonly splitMerge: string;
  readonly ranges: string;
}

export interface CudaKernels {
  /** The complete translation unit: prelude + body. */
  readonly source: string;
  /** Everything but the prelude, for translation units holding several reductions. */
  readonly body: string;
  readonly entries: CudaKernelEntries;
  readonly layout: ReductionLayout;
  readonly dtype: CudaDtype;
  readonly dtypeAcc: CudaDtype;
  /** The scheme the kernels use (direct_sum for reductions that are not sum-type). */
  readonly sumScheme: CudaSumScheme;
  /** Number of pointers in the `Args` parameter (>= 1). */
  readonly argSlots: number;
  /** Bytes of dynamic shared memory per thread of a block (the packed inner record, and |y|² when screening). */
  readonly sharedBytesPerThread: number;
  /**
   * Bytes of dynamic shared memory per block on top of those (0, or the fixed tile of `tileRecords` records of the
   * tensor-core kernels that stage x in shared memory).
   */
  readonly sharedBytesPerBlock: number;
  /** j records per staged tile: 0 for blockDim.x (the launch contract above), else this fixed number. */
  readonly tileRecords: number;
  /** Accumulator values / indices per row in the split kernels' partial buffers. */
  readonly partialSlots: { readonly val: number; readonly idx: number };
  /** NVRTC flags recommended for this dtype: fast math for float32 (as KeOps), exact float64. */
  readonly fastMath: boolean;
  /** Output rows each thread of the 1D, split and ranges kernels reduces (they share every staged j record). */
  readonly rowsPerThread: number;
  /** Whether the screening runs on tensor cores (then blocks must be whole warps: see `warpBlocks`). */
  readonly tensorCores: boolean;
  /** Blocks must be a multiple of 32 threads (warp-wide mma.sync). */
  readonly warpBlocks: boolean;
  /** Dimensions each pair's tensor-core dot product covers (D padded to whole steps and chunks); 0 without. */
  readonly tensorCoreDims: number;
}

const SCHEME_CODE: Readonly<Record<CudaSumScheme, string>> = {
  direct_sum: 'KEOPS_SCHEME_DIRECT',
  block_sum: 'KEOPS_SCHEME_BLOCK',
  kahan_scheme: 'KEOPS_SCHEME_KAHAN',
};
const INDENT = '  ';
const MAX_ROWS_PER_THREAD = 8;
/** Pairs per `can_skip` test in the KMin family (one branch per group). */
const SKIP_GROUP = 4;
/** Outer values up to which the group is worth its registers (wide rows are bound by their arithmetic anyway). */
const SKIP_GROUP_MAX_OUTER = 32;
/** Unrolling of the j loop (pairs per loop step), for records of up to UNROLL_MAX_RECORD values. */
const UNROLL = 4;
const UNROLL_MAX_RECORD = 32;
/**
 * 32-bit registers of per-row state (variables, hoisted values, accumulator) up to which a thread takes 3 or 2
 * rows. Counted with ptxas for sm_90 (bench/cuda-static.ts): the Gaussian at D=3 (5 registers a row) takes 32
 * registers with 1, 2 or 3 rows; LogSumExp at D=3 (6) takes 39 with 2 and 48 with 3, for 3% fewer instructions.
 */
const THREE_ROWS_MAX_STATE = 5;
const TWO_ROWS_MAX_STATE = 16;
/**
 * Tensor-core screening: records per group (mma n-tiles of 8), 16 when x is held in registers (their accumulators
 * and dot products take registers too), 32 otherwise; the exchange buffer's rows are 4 values longer (16-byte
 * reads of consecutive rows in distinct banks).
 */
const MMA_GROUP_X_IN_REGISTERS = 16;
const MMA_GROUP = 32;
/**
 * Steps of 8 dimensions up to which each lane holds its A fragments (x) in registers (8 per step; ptxas for sm_90:
 * 187 registers at D = 64, 238 at D = 96, 255 and spills at D = 128). Beyond, the kernels go GEMM-like: the
 * dimensions by chunks of MMA_CHUNK_STEPS steps, staged for the warps' rows of x and for a tile of
 * MMA_TILE_RECORDS records shared by the block's warps, the products of each group accumulated in registers.
 */
const MMA_REGISTER_STEPS = 8;
const MMA_CHUNK_STEPS = 16;
const MMA_TILE_RECORDS = 64;
/** Partial sums of |y|^2 per record in the chunked kernels (so that the whole block computes them). */
const MMA_NORM_PARTS = 8;

interface MmaLayout {
  readonly steps: number;
  readonly xInRegisters: boolean;
  /** Steps per staged chunk (all of them when x is in registers). */
  readonly chunkSteps: number;
  /** Values from one staged record to the next, and from one staged row of x to the next (0: in registers). */
  readonly record: number;
  readonly x: number;
  readonly group: number;
  readonly exchange: number;
  readonly unroll: number;
  /** Records per tile (0: blockDim.x) and shared bytes per block (the chunked kernels' tile and |y|^2 sums). */
  readonly tileRecords: number;
  readonly sharedPerBlock: number;
  readonly sharedPerThread: number;
}

/**
 * Layout of the tensor-core screening. Strides (values) are chosen for conflict-free fragment loads: a staged
 * record (lane (g, c) reads dimension 8s + c of record g: stride ≡ 4 mod 8 puts the 32 lanes in 32 banks) and a
 * staged row of x (lane (g, c) reads the pair 8s + 2c of row g: stride ≡ 8 mod 16). Staged values past D are zero.
 */
function mmaLayout(dim: number): MmaLayout {
  const steps = Math.ceil(dim / MMA_K);
  const xInRegisters = steps <= MMA_REGISTER_STEPS;
  // As few chunks as MMA_CHUNK_STEPS allows, of equal size (98 steps: 7 chunks of 14, no padding chunk).
  const chunkSteps = xInRegisters ? steps : Math.ceil(steps / Math.ceil(steps / MMA_CHUNK_STEPS));
  const group = xInRegisters ? MMA_GROUP_X_IN_REGISTERS : MMA_GROUP;
  const record = chunkSteps * MMA_K + 4;
  const x = xInRegisters ? 0 : chunkSteps * MMA_K + 8;
  const exchange = group + 4;
  const tileRecords = xInRegisters ? 0 : MMA_TILE_RECORDS;
  const f32 = BYTES.float32;
  return {
    steps,
    xInRegisters,
    chunkSteps,
    record,
    x,
    group,
    exchange,
    unroll: xInRegisters ? steps : ([8, 4, 2, 1].find((u) => chunkSteps % u === 0) ?? 1),
    tileRecords,
    // x in registers: per thread a tile record, its |y|^2 and the exchange row; chunked: per thread the staged row
    // of x and the exchange row, per block the tile, |y|^2 and its partial sums.
    sharedPerThread: xInRegisters ? (record + 1 + exchange) * f32 : (x + exchange) * f32,
    sharedPerBlock: xInRegisters ? 0 : tileRecords * (record + 1 + MMA_NORM_PARTS) * f32,
  };
}

/**
 * Output rows per thread: 3 or 2 when the per-row state is small (a few registers) in float32, so that each
 * shared-memory record and each loop step serves several pairs at the cost of a few registers; 1 otherwise (KMin's K
 * values and indices, wide variables: a second row would cost occupancy or spill; float64 loops are bound by the
 * FP64 units, where the shared overhead matters less than the occupancy a second row costs).
 */
function defaultRowsPerThread(
  red: Reduction,
  formula: { readonly dimOut: number; readonly prologue?: { readonly hoistedScalars: number } },
  dtype: CudaDtype,
  dtypeAcc: CudaDtype,
  scheme: CudaSumScheme,
  dimOuter: number,
): number {
  const words = (n: number, t: CudaDtype): number => n * (BYTES[t] / 4);
  const accumulator =
    words(red.layout.dimredVal, dtypeAcc) * (scheme === 'kahan_scheme' ? 2 : 1) + red.layout.dimredIdx;
  const state =
    words(dimOuter + (formula.prologue?.hoistedScalars ?? 0) + formula.dimOut, dtype) + accumulator;
  if (dtype !== 'float32' || dtypeAcc !== 'float32') return 1;
  return state <= THREE_ROWS_MAX_STATE ? 3 : state <= TWO_ROWS_MAX_STATE ? 2 : 1;
}

/** The prelude shared by every kernel of a translation unit (include it once). */
export function cudaPrelude(): string {
  return inlineHeader('cuda-templates/keops_prelude.h');
}

/** The prefix names the kernels' extern "C" symbols, so it must be a plain identifier. */
function checkSymbolPrefix(prefix: string | undefined): void {
  if (prefix !== undefined && !/^[A-Za-z][A-Za-z0-9]*$/.test(prefix)) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `symbolPrefix must be letters and digits, got '${prefix}'`);
  }
}

/** Copies `dim` values of `src` into `dst + offset` (unrolled by NVRTC: the bounds are constants). */
function copyLoop(dst: string, offset: number, src: string, dim: number): string {
  return `${INDENT}for (int k = 0; k < ${dim}; k++) ${dst}[${offset} + k] = ${src}[k];`;
}

export function generateCudaKernels(red: Reduction, opts: CudaKernelOptions): CudaKernels {
  checkSymbolPrefix(opts.symbolPrefix);
  const dtypeAcc = opts.dtypeAcc ?? opts.dtype;
  const prefix = opts.symbolPrefix ?? 'keops';
  // float32: exponents whose log2(e) scale a per-row factor can absorb become base-2 (lib/codegen/cuda-exp2.ts).
  const formulaRoot = opts.dtype === 'float32' ? foldExpScale(red.fout, opts.positions, red.tag) : undefined;
  const { names, formula, hooks, scheme } = generateKernelParts(red, { ...opts, dtypeAcc, formulaRoot });
  const formulaName = formula.functionName;
  if (scheme === 'kahan_scheme' && hooks.kahan === undefined) throw unsupportedSumScheme(red, opts.sumScheme);

  // Offsets of the outer variables in the packed outer array and of the inner ones in a shared-memory record.
  const packedOffset = new Map<FormulaArgument, number>();
  let dimOuter = 0;
  let dimInner = 0;
  for (const a of formula.args) {
    if (a.role === 'outer') {
      packedOffset.set(a, dimOuter);
      dimOuter += a.dim;
    } else if (a.role === 'inner') {
      packedOffset.set(a, dimInner);
      dimInner += a.dim;
    }
  }
  const argPointer = (a: FormulaArgument): string => `args.p[${a.pos}]`;
  const loadOuter = formula.args
    .filter((a) => a.role === 'outer')
    .map((a) => copyLoop('outer', packedOffset.get(a) as number, `(${argPointer(a)} + i * ${a.dim})`, a.dim))
    .join('\n');
  // Records are `recordStride` values apart (the record, then padding for the tensor-core layout).
  const tileLoader = (recordStride: number): string =>
    formula.args
      .filter((a) => a.role === 'inner')
      .map((a) => {
        const offset = packedOffset.get(a) as number;
        const place =
          a.dim === 1
            ? `e * ${recordStride} + ${offset}`
            : `(e / ${a.dim}) * ${recordStride} + ${offset} + e % ${a.dim}`;
        const scalarCopy = `for (int e = threadIdx.x; e < len * ${a.dim}; e += blockDim.x) tile[${place}] = src[e];`;
        // 16-byte copies when the variable's rows and its place in the records are made of whole 16-byte chunks
        // (and the rows start on a 16-byte boundary: checked at run time, views into arrays may not).
        const lanes = 16 / BYTES[opts.dtype];
        if (a.dim % lanes !== 0 || recordStride % lanes !== 0 || offset % lanes !== 0) {
          return `${INDENT}{ const keops_t* src = ${argPointer(a)} + j0 * ${a.dim};\n${INDENT}  ${scalarCopy} }`;
        }
        const chunks = a.dim / lanes;
        const vectorPlace =
          chunks === 1
            ? `e * ${recordStride} + ${offset}`
            : `(e / ${chunks}) * ${recordStride} + ${offset} + (e % ${chunks}) * ${lanes}`;
        return (
          `${INDENT}{ const keops_t* src = ${argPointer(a)} + j0 * ${a.dim};\n` +
          `${INDENT}  if ((reinterpret_cast<unsigned long long>(src) & 15) == 0) {\n` +
          `${INDENT}    const keops_chunk* chunk = reinterpret_cast<const keops_chunk*>(src);\n` +
          `${INDENT}    for (int e = threadIdx.x; e < len * ${chunks}; e += blockDim.x)\n` +
          `${INDENT}      *reinterpret_cast<keops_chunk*>(tile + ${vectorPlace}) = chunk[e];\n` +
          `${INDENT}  } else {\n${INDENT}    ${scalarCopy}\n${INDENT}  } }`
        );
      })
      .join('\n');
  const pointerOf = (a: FormulaArgument): string => {
    if (a.role === 'param') return argPointer(a);
    return `${a.role === 'outer' ? 'outer' : 'inner'} + ${packedOffset.get(a) as number}`;
  };
  const { prologue } = formula;
  const callArgs = formula.args.map(pointerOf);
  if (prologue !== undefined) callArgs.push('hoisted');
  const formulaCall = `${formulaName}<1>(${[...callArgs, 'fout'].join(', ')})`;
  const prologueCall =
    prologue === undefined
      ? ''
      : `${INDENT}${prologue.functionName}(${[...prologue.args.map(pointerOf), 'hoisted'].join(', ')});`;

  // Kernels name the Kahan hooks in a branch the scheme constant disables: give them a body when absent.
  const noKahan = { fold: 'keops_no_kahan_fold', settle: 'keops_no_kahan_settle' };
  const kahanStubs =
    hooks.kahan === undefined
      ? `KEOPS_HD void ${names.reserve(noKahan.fold)}(keops_acc_t*, int*, keops_acc_t*, const keops_t*, long) {}\n` +
        `KEOPS_HD void ${names.reserve(noKahan.settle)}(keops_acc_t*, keops_acc_t*) {}\n`
      : '';
  const kahan = hooks.kahan ?? noKahan;
  // Without a hot-path fold, the per-pair fold is the full one and there is no hot state.
  const noHot = {
    fold: 'keops_no_hot_fold',
    sync: 'keops_no_hot_sync',
    settle: 'keops_no_hot_settle',
    slots: 0,
  };
  const hotStubs =
    hooks.hot === undefined
      ? `KEOPS_HD void ${names.reserve(noHot.fold)}(keops_acc_t* val, int* idx, keops_acc_t*, const keops_t* fout, ` +
        `long j) { ${hooks.fold}(val, idx, fout, j); }\n` +
        `KEOPS_HD void ${names.reserve(noHot.sync)}(const keops_acc_t*, keops_acc_t*) {}\n` +
        `KEOPS_HD void ${names.reserve(noHot.settle)}(keops_acc_t*, keops_acc_t*) {}\n`
      : '';
  const hot = hooks.hot ?? noHot;
  const noSkip = 'keops_no_skip_test';
  const skipStub =
    hooks.canSkip === undefined
      ? `KEOPS_HD bool ${names.reserve(noSkip)}(const keops_acc_t*, const keops_t*) { return false; }\n`
      : '';
  const rowsPerThread =
    opts.rowsPerThread ?? defaultRowsPerThread(red, formula, opts.dtype, dtypeAcc, scheme, dimOuter);
  if (!Number.isSafeInteger(rowsPerThread) || rowsPerThread < 1 || rowsPerThread > MAX_ROWS_PER_THREAD) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `rowsPerThread must be an integer from 1 to ${MAX_ROWS_PER_THREAD}, got ${String(rowsPerThread)}`,
    );
  }
  // One guarded group of SKIP_GROUP pairs (KMin family) when the group's values stay in few registers.
  const skipGroup =
    hooks.canSkip !== undefined && formula.dimOut * rowsPerThread <= 4 && dimOuter <= SKIP_GROUP_MAX_OUTER
      ? SKIP_GROUP
      : 1;

  const screenable = opts.dtype === 'float32' && dtypeAcc === 'float32' && opts.screen !== false;
  // Tensor cores when the formula reads x and y alone (the exact path then reads x from global memory, the
  // per-warp staged copy being in the permuted fragment layout) and each thread has one row.
  // Dot-product rankings (-(x|y), 1-(x|y), (x|y)) are screened on tensor cores only.
  const dotScreen = screenable && opts.tensorCores === true ? cudaDotScreen(red, opts.positions) : undefined;
  const tensorCores =
    screenable &&
    opts.tensorCores === true &&
    rowsPerThread === 1 &&
    prologue === undefined &&
    formula.args.length === 2 &&
    (cudaSqDistScreen(red, opts.positions) !== undefined || dotScreen !== undefined);
  const sqDistScreen = screenable ? cudaSqDistScreen(red, opts.positions, { tensorCores }) : undefined;
  const dot = tensorCores && sqDistScreen === undefined ? dotScreen : undefined;
  const screen = sqDistScreen ?? dot;
  const mma = tensorCores && screen !== undefined ? mmaLayout(screen.dim) : undefined;
  const recordStride = mma?.record ?? dimInner;
  const outerArg = formula.args.find((a) => a.role === 'outer');
  const loadTile = tileLoader(recordStride);
  const innerArg = formula.args.find((a) => a.role === 'inner');
  const screenOffset = (pos: number): number =>
    packedOffset.get(formula.args.find((a) => a.pos === pos) as FormulaArgument) as number;
  const accLiteral = (v: number): string => cLiteral(v, 'keops_acc_t');

  const namespace = `${prefix}_ns`;
  const entries: CudaKernelEntries = {
    oneD: `${prefix}_1d`,
    split: `${prefix}_split`,
    splitMerge: `${prefix}_split_merge`,
    ranges: `${prefix}_ranges`,
  };
  const argSlots = Math.max(1, opts.positions.length);
  const template = readPackageFile('cuda-templates/cuda_kernels.tpl');
  const fill = (prelude: string): string =>
    fillTemplate(template, {
      DESCRIPTION:
        `${red.def.name}, tag ${red.tag}, formula sha256 ${red.fout.hash.slice(0, 16)}, ` +
        `${opts.dtype} (accumulator ${dtypeAcc}), ${scheme}`,
      PRELUDE: prelude,
      PREFIX: prefix,
      NAMESPACE: namespace,
      T: CPP_TYPE[opts.dtype],
      TACC: CPP_TYPE[dtypeAcc],
      FORMULA: formula.source,
      HOOKS: hooks.source + kahanStubs + skipStub + hotStubs,
      SCHEME: SCHEME_CODE[scheme],
      SKIP_INNER_LOOP: red.def.name === 'Zero_Reduction' ? 'true' : 'false',
      DIM_FOUT: String(formula.dimOut),
      DIMRED_VAL: String(red.layout.dimredVal),
      DIMRED_IDX: String(red.layout.dimredIdx),
      DIM_VAL: String(red.layout.dimVal),
      DIM_IDX: String(red.layout.dimIdx),
      DIM_OUTER: String(dimOuter),
      DIM_INNER: String(dimInner),
      ARG_SLOTS: String(argSlots),
      HOOK_INIT: hooks.init,
      HOOK_FOLD_HOT: hot.fold,
      HOOK_HOT_SYNC: hot.sync,
      HOOK_HOT_SETTLE: hot.settle,
      HOT_SLOTS: String(hot.slots),
      HOOK_CAN_SKIP: hooks.canSkip ?? noSkip,
      ROWS_PER_THREAD: String(rowsPerThread),
      SKIP_GROUP: String(skipGroup),
      UNROLL: String(dimInner <= UNROLL_MAX_RECORD ? UNROLL : 1),
      SCREEN: screen === undefined ? 'false' : 'true',
      SCREEN_DIM: String(screen?.dim ?? 0),
      SCREEN_OUTER: String(screen === undefined ? 0 : screenOffset(screen.outerPos)),
      SCREEN_INNER: String(screen === undefined ? 0 : screenOffset(screen.innerPos)),
      SCREEN_SLOT: String(screen?.slot ?? 0),
      SCREEN_ALPHA: accLiteral(sqDistScreen?.alpha ?? 0),
      SCREEN_BETA: accLiteral(sqDistScreen?.beta ?? 0),
      SCREEN_TAU: accLiteral(sqDistScreen?.tau ?? 0),
      SCREEN_ETA: accLiteral(sqDistScreen?.eta ?? 0),
      SCREEN_DOT: dot === undefined ? '0' : '1',
      SCREEN_DOT_C: accLiteral(dot?.c ?? 0),
      SCREEN_DOT_SIGN: accLiteral(dot?.sign ?? 1),
      SCREEN_DOT_B: accLiteral(dot?.b ?? 0),
      SCREEN_DOT_KAPPA: accLiteral(dot?.kappa ?? 0),
      SCREEN_DOT_OFFSET: accLiteral(dot?.offset ?? 0),
      RECORD_STRIDE: String(recordStride),
      MMA: mma === undefined ? '0' : '1',
      MMA_STEPS: String(mma?.steps ?? 0),
      MMA_X_STRIDE: String(mma?.x ?? 0),
      MMA_A_IN_REGISTERS: mma?.xInRegisters === true ? '1' : '0',
      MMA_UNROLL: String(mma?.unroll ?? 1),
      TILE_RECORDS: String(mma?.tileRecords ?? 0),
      MMA_CHUNK_STEPS: String(mma?.chunkSteps ?? 0),
      MMA_NORM_PARTS: String(MMA_NORM_PARTS),
      MMA_Y_ARG: String(innerArg?.pos ?? 0),
      MMA_GROUP: String(mma?.group ?? MMA_GROUP),
      MMA_EXCHANGE_STRIDE: String(mma?.exchange ?? 0),
      MMA_X_ARG: String(outerArg?.pos ?? 0),
      HOOK_MERGE: hooks.merge,
      HOOK_FINALIZE: hooks.finalize,
      HOOK_FOLD_KAHAN: kahan.fold,
      HOOK_SETTLE_KAHAN: kahan.settle,
      LOAD_OUTER: loadOuter,
      LOAD_TILE: loadTile === '' ? `${INDENT}(void)args; (void)j0; (void)len; (void)tile;` : loadTile,
      HOISTED_SCALARS: String(prologue?.hoistedScalars ?? 0),
      PROLOGUE_CALL: prologueCall,
      FORMULA_CALL: formulaCall,
    });
  return {
    source: fill(cudaPrelude()),
    body: fill(''),
    entries,
    layout: red.layout,
    dtype: opts.dtype,
    dtypeAcc,
    sumScheme: scheme,
    argSlots,
    // The tile (a record per thread) and |y|^2 of each record, or the tensor-core layout's bytes.
    sharedBytesPerThread:
      mma?.sharedPerThread ?? recordStride * BYTES[opts.dtype] + (screen === undefined ? 0 : BYTES[dtypeAcc]),
    sharedBytesPerBlock: mma?.sharedPerBlock ?? 0,
    tileRecords: mma?.tileRecords ?? 0,
    partialSlots: { val: Math.max(1, red.layout.dimredVal), idx: Math.max(1, red.layout.dimredIdx) },
    fastMath: opts.dtype === 'float32',
    rowsPerThread,
    tensorCores: mma !== undefined,
    warpBlocks: mma !== undefined,
    tensorCoreDims: mma === undefined ? 0 : Math.ceil(mma.steps / mma.chunkSteps) * mma.chunkSteps * MMA_K,
  };
}
