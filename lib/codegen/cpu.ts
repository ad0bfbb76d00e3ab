/**
 * The CPU kernel generator.
 *
 *   generateCpuKernel(red: Reduction, opts: CpuKernelOptions): CpuKernel
 *
 *   opts = { dtype: 'float32' | 'float64', dtypeAcc: 'float32' | 'float64',
 *            sumScheme: 'direct_sum' | 'block_sum' | 'kahan_scheme',
 *            positions: readonly { dim: number; cat: 0 | 1 | 2 }[] }   // every argument position, in order
 *   result = { source, compilerFlags, layout, ... }
 *
 * `source` is one self-contained C++17 translation unit (prelude and ABI header inlined; the only #include is
 * <stdint.h>; libm through compiler builtins) exporting the ABI of native/keops_abi.h: `keops_cpu_abi_version`
 * and `keops_cpu_run`. Build it with `g++ <compilerFlags...> -o <lib>.so <source>.cpp` (about 0.2-0.4 s for a
 * Gaussian kernel on the 2-core reference machine). Thread-safe and reentrant: no global state; each call
 * allocates its own work buffer. The source is a pure
 * function of (reduction, options, this package's templates), so its hash is a sound cache key; the flags
 * contain -march=native, so a cache must also be keyed by the CPU it was built on.
 *
 * Output rows are the reduction's outer index (i for tag 0, j for tag 1): `args[pos]` of an outer-category
 * variable has nx rows, of an inner-category one ny rows, of a parameter one row (keops_abi.h). Output
 * values `out_val` (nx × layout.dimVal, data dtype) and indices `out_idx` (nx × layout.dimIdx, int32).
 * `keops_cpu_run` returns 0, or 1 (bad task: null pointer, rows out of range), 2 (bad j-interval), 3 (no memory).
 *
 * Evaluation (cuda-templates/cpu_kernel.tpl): inner rows are transposed in tiles, and the formula is evaluated
 * for 16 (float) / 8 (double) j's at a time in a loop the compiler vectorises, each lane folding into its own
 * accumulator (merged at the end; merges are exact for min/max/arg reductions, whose ties compare indices).
 * KMin-type reductions fold sequentially from a buffer of vectorised formula values; formulas with more than
 * 4 KiB of intermediate values are evaluated one j at a time; more than 1 MiB is ERR_FORMULA_TOO_LARGE.
 * Sub-formulas that read no inner variable are computed once per output row by the formula's prologue (up to
 * 4 KiB of values per row, kept with the row's accumulators).
 * Pairwise inner-dimension terms (SqDist, Scalprod, Sum(Abs(x-y)), ... of width >= 16) are computed per tile for
 * the whole row block by a register-blocked micro-kernel (cpu-blocked.ts) and reach the formula as synthetic
 * dim-1 inner variables; KMin-type searches over SqDist in float32 screen pairs in bfloat16 first
 * (cpu-blocked-filter.ts).
 *
 * `block_sum` only changes sum-type reductions (for the others every scheme gives the same result);
 * `kahan_scheme` is accepted for Sum and Max_SumShiftExp(Weight) only (KeOpsError ERR_INVALID_ARGUMENT).
 * `dtypeAcc` is the accumulator type of every reduction (exact for min/max-type ones whatever it is).
 */
import { KeOpsError } from '../errors';
import { topoOrder } from '../formula/node';
import type { Reduction, ReductionLayout } from '../formula/reduction';
import type { ArgPosition, FormulaArgument, FormulaCode } from './formula';
import { blockedSizes, generateBlockedCode, planBlockedEvaluation } from './cpu-blocked';
import { sqDistFilter } from './cpu-blocked-filter';
import { BYTES, CPP_TYPE, checkKernelOptions, generateKernelParts } from './kernel-parts';
import { unsupportedSumScheme } from './reduction-hooks';
import { fillTemplate, inlineHeader, readPackageFile } from './templates';

export type Dtype = 'float32' | 'float64';
export type SumScheme = 'direct_sum' | 'block_sum' | 'kahan_scheme';

export interface CpuKernelOptions {
  readonly dtype: Dtype;
  readonly dtypeAcc: Dtype;
  readonly sumScheme: SumScheme;
  readonly positions: readonly ArgPosition[];
}

/** How the kernel evaluates a tile (see cuda-templates/cpu_kernel.tpl). */
export type CpuEvaluation = 'lanes' | 'buffer' | 'scalar';

export interface CpuKernel {
  readonly source: string;
  /** g++ flags (also fine for clang++): `g++ ...compilerFlags -o out.so source.cpp`. */
  readonly compilerFlags: readonly string[];
  readonly layout: ReductionLayout;
  /** The exported symbols and the ABI version the kernel reports. */
  readonly entry: 'keops_cpu_run';
  readonly abiVersionSymbol: 'keops_cpu_abi_version';
  readonly abiVersion: number;
  /** Diagnostics: the evaluation strategy and sizes chosen. */
  readonly evaluation: CpuEvaluation;
  readonly lanes: number;
  readonly tile: number;
  readonly rowBlock: number;
  /** Pairwise inner-dimension terms computed by the register-blocked micro-kernel (0: none, see cpu-blocked.ts). */
  readonly blockedTerms: number;
  /** Whether the kernel screens a KMin-type SqDist in bfloat16 where the CPU allows (cpu-blocked-filter.ts). */
  readonly bf16Screening: boolean;
}

/**
 * No -ffast-math: inf/NaN must behave (Min reductions start at +inf, KMin fills +inf). -fno-math-errno and
 * -fno-trapping-math do not change any result but let sqrt and conditionals vectorise; -ffp-contract=fast
 * allows FMA.
 */
export const CPU_COMPILER_FLAGS: readonly string[] = Object.freeze([
  '-std=c++17',
  '-O3',
  '-march=native',
  '-fno-math-errno',
  '-fno-trapping-math',
  '-ffp-contract=fast',
  '-fno-exceptions',
  '-fno-rtti',
  '-fvisibility=hidden',
  '-fPIC',
  '-shared',
]);

/**
 * Lane evaluation only vectorises once GCC has fully unrolled the formula's per-component loops, which it does
 * by default up to 16 iterations. Wider formulas (up to MAX_UNROLLED_DIM) get a higher limit, and
 * pressure-aware scheduling so that the unrolled code does not spill (measured for a D=100 Gaussian sum: 0.01 ->
 * 0.15 Gpairs per CPU-second, compile 0.3 -> 1.1 s). Not for every kernel: it slows down the compilation of
 * loop-heavy formulas (KMin hooks, SoftDTW...) for nothing.
 */
const DEFAULT_UNROLLED_DIM = 16;
const MAX_UNROLLED_DIM = 128;
function unrollFlags(maxDim: number): string[] {
  if (maxDim <= DEFAULT_UNROLLED_DIM || maxDim > MAX_UNROLLED_DIM) return [];
  return [
    `--param=max-completely-peel-times=${maxDim}`,
    '--param=max-completely-peeled-insns=4000',
    '-fschedule-insns',
    '-fsched-pressure',
  ];
}

/** Local storage (bytes) a formula may use per evaluation before the kernel stops replicating it per lane. */
const MAX_LANE_LOCAL_BYTES = 4096;
/** Local storage (bytes) beyond which a formula is refused: it would not fit a worker thread's stack. */
export const MAX_FORMULA_LOCAL_BYTES = 1 << 20;
/** Accumulator slots beyond which lanes are not worth it (the per-lane state would not stay in cache). */
const MAX_LANE_ACCUMULATOR_SLOTS = 64;
const TILE_BYTES = 65536;
const MAX_TILE = 1024;
const ROW_STATE_BYTES = 32768;
const MAX_ROW_BLOCK = 64;
/**
 * With blocked terms, every tile is packed once per row block: larger blocks amortise the packing (their
 * per-row state is small, and the terms' values per block are written once and read once).
 */
const BLOCKED_ROW_STATE_BYTES = 131072;
const MAX_BLOCKED_ROW_BLOCK = 480;

function readAbiVersion(): number {
  const m = /#define\s+KEOPS_CPU_ABI_VERSION\s+(\d+)/.exec(readPackageFile('native/keops_abi.h'));
  if (m === null) throw new KeOpsError('ERR_INTERNAL', 'native/keops_abi.h defines no KEOPS_CPU_ABI_VERSION');
  return Number(m[1]);
}

function chooseEvaluation(red: Reduction, formula: FormulaCode, dataBytes: number): CpuEvaluation {
  const localBytes = (formula.localScalars + formula.dimOut) * dataBytes;
  const prologueBytes = (formula.prologue?.localScalars ?? 0) * dataBytes;
  if (Math.max(localBytes, prologueBytes) > MAX_FORMULA_LOCAL_BYTES) {
    throw new KeOpsError(
      'ERR_FORMULA_TOO_LARGE',
      `the formula needs ${Math.max(localBytes, prologueBytes)} bytes of intermediate values per evaluation ` +
        `(limit ${MAX_FORMULA_LOCAL_BYTES})`,
    );
  }
  if (localBytes > MAX_LANE_LOCAL_BYTES) return 'scalar';
  const { dimredVal, dimredIdx } = red.layout;
  // KMin-type folds are insertion sorts with data-dependent loops: they do not vectorise.
  if (red.def.syntax === 'k_tag' || dimredVal + dimredIdx > MAX_LANE_ACCUMULATOR_SLOTS) return 'buffer';
  return 'lanes';
}

const INDENT = '        ';

export function generateCpuKernel(red: Reduction, opts: CpuKernelOptions): CpuKernel {
  checkKernelOptions(red, opts);
  const blocked = planBlockedEvaluation(red.fout, opts.positions, red.tag);
  const { names, formula, hooks, scheme } = generateKernelParts(red, {
    ...opts,
    positions: blocked?.positions ?? opts.positions,
    formulaRoot: blocked?.root,
  });
  // Synthetic inner variables carrying the blocked terms' values, by position.
  const termOfPos = new Map((blocked?.terms ?? []).map((t, s) => [t.pos, s]));
  const T = CPP_TYPE[opts.dtype];
  const TAcc = CPP_TYPE[opts.dtypeAcc];
  if (scheme === 'kahan_scheme' && hooks.kahan === undefined) throw unsupportedSumScheme(red, opts.sumScheme);

  const evaluation = chooseEvaluation(red, formula, BYTES[opts.dtype]);
  const lanes = opts.dtype === 'float32' ? 16 : 8;
  // One j at a time, the formula reads inner rows where they are (contiguous components, which GCC vectorises
  // along); otherwise from the transposed tile.
  const transposed = evaluation !== 'scalar';
  const inner = formula.args.filter((a) => a.role === 'inner' && transposed && !termOfPos.has(a.pos));
  const tileScalars = inner.reduce((s, a) => s + a.dim, 0);
  const scalarsPerJ = tileScalars + (evaluation === 'buffer' ? formula.dimOut : 0);
  const bytesPerJ = scalarsPerJ * BYTES[opts.dtype];
  // KMin-type searches over SqDist screen pairs in bfloat16 first (cpu-blocked-filter.ts).
  const filter =
    blocked !== undefined && opts.dtype === 'float32' && hooks.canSkip !== undefined && red.k !== undefined
      ? sqDistFilter(blocked, red.k)
      : undefined;
  const tile =
    blocked !== undefined
      ? blockedSizes(blocked, BYTES[opts.dtype], scalarsPerJ, filter).tile
      : Math.max(lanes, Math.min(MAX_TILE, Math.floor(TILE_BYTES / Math.max(1, bytesPerJ) / lanes) * lanes));
  const valSlots = Math.max(1, red.layout.dimredVal);
  const idxSlots = Math.max(1, red.layout.dimredIdx);
  const laneCopies = evaluation === 'lanes' ? lanes : 0;
  // Must match kAccUnits / kIdxUnits of the template.
  const hoistedScalars = formula.prologue?.hoistedScalars ?? 0;
  const rowStateBytes =
    (4 + 2 * laneCopies) * valSlots * BYTES[opts.dtypeAcc] +
    (2 + laneCopies) * idxSlots * 4 +
    hoistedScalars * BYTES[opts.dtype];
  const rowBlock =
    blocked !== undefined
      ? Math.max(1, Math.min(MAX_BLOCKED_ROW_BLOCK, Math.floor(BLOCKED_ROW_STATE_BYTES / rowStateBytes)))
      : Math.max(1, Math.min(MAX_ROW_BLOCK, Math.floor(ROW_STATE_BYTES / rowStateBytes)));
  const blockedCode =
    blocked !== undefined
      ? generateBlockedCode(blocked, { dataBytes: BYTES[opts.dtype], tile, rowBlock, filter })
      : undefined;

  const tileOffset = new Map<FormulaArgument, number>();
  let offset = 0;
  for (const a of inner) {
    tileOffset.set(a, offset);
    offset += a.dim;
  }
  const argPointer = (a: FormulaArgument): string => `(const keops_t*)task->args[${a.pos}]`;
  const loadTile = inner
    .map((a) => {
      const off = tileOffset.get(a) as number;
      return (
        `${INDENT}{\n` +
        `${INDENT}  const keops_t* const src = ${argPointer(a)} + tile_start * ${a.dim};\n` +
        `${INDENT}  keops_t* const dst = tile + ${off} * kTile;\n` +
        `${INDENT}  for (long t = 0; t < len; t++)\n` +
        `${INDENT}    for (int k = 0; k < ${a.dim}; k++) dst[k * kTile + t] = src[t * ${a.dim} + k];\n` +
        `${INDENT}  for (int k = 0; k < ${a.dim}; k++)\n` +
        `${INDENT}    for (long t = len; t < padded; t++) dst[k * kTile + t] = 0;\n` +
        `${INDENT}}`
      );
    })
    .join('\n');
  const pointerName = new Map<FormulaArgument, string>();
  const rowPointerLines = formula.args
    .filter((a) => a.role !== 'inner')
    .map((a) => {
      const name = names.fresh(`p${a.pos}`);
      pointerName.set(a, name);
      const rowOffset = a.role === 'outer' ? ` + i * ${a.dim}` : '';
      return `const keops_t* const ${name} = ${argPointer(a)}${rowOffset};`;
    });
  const rowPointers = rowPointerLines.map((line) => `${INDENT}  ${line}`).join('\n');
  const callArgs = formula.args.map((a) => {
    if (a.role !== 'inner') return pointerName.get(a) as string;
    const term = termOfPos.get(a.pos);
    if (term !== undefined) return `${blockedCode?.termValue(term)} + t`;
    return transposed
      ? `tile + ${tileOffset.get(a)} * kTile + t`
      : `${argPointer(a)} + (tile_start + t) * ${a.dim}`;
  });
  const { prologue } = formula;
  if (prologue !== undefined) callArgs.push('row_hoisted');
  const formulaCall = `${formula.functionName}<${transposed ? 'kTile' : '1'}>(${[...callArgs, 'fout'].join(', ')})`;
  // The row pointers are declared again, in their own block, where the rows of a block are reset.
  const rowPrologue =
    prologue === undefined
      ? ''
      : `      {\n        const long i = block_begin + r;\n        (void)i;\n` +
        rowPointerLines.map((line) => `        ${line}\n`).join('') +
        `        ${prologue.functionName}(${[
          ...prologue.args.map((a) => pointerName.get(a) as string),
          'hoisted_area + r * kHoistedSlots',
        ].join(', ')});\n      }`;
  const readPositions = new Set([
    ...formula.args.map((a) => a.pos).filter((pos) => !termOfPos.has(pos)),
    ...(blocked?.packed.map((p) => p.pos) ?? []),
    ...(blocked?.direct ?? []),
  ]);
  const checkArgs = [...readPositions]
    .sort((a, b) => a - b)
    .map((pos) => `  if (task->args[${pos}] == 0) return kBadTask;`)
    .join('\n');

  const source = fillTemplate(readPackageFile('cuda-templates/cpu_kernel.tpl'), {
    DESCRIPTION:
      `${red.def.name}, tag ${red.tag}, formula sha256 ${red.fout.hash.slice(0, 16)}, ` +
      `${opts.dtype} (accumulator ${opts.dtypeAcc}), ${scheme}, ${evaluation} evaluation` +
      (blocked !== undefined ? `, ${blocked.terms.length} register-blocked pairwise term(s)` : ''),
    PRELUDE: inlineHeader('cuda-templates/keops_prelude.h'),
    ABI: inlineHeader('native/keops_abi.h'),
    EVAL: { lanes: 'KEOPS_EVAL_LANES', buffer: 'KEOPS_EVAL_BUFFER', scalar: 'KEOPS_EVAL_SCALAR' }[evaluation],
    SCHEME: {
      direct_sum: 'KEOPS_SCHEME_DIRECT',
      block_sum: 'KEOPS_SCHEME_BLOCK',
      kahan_scheme: 'KEOPS_SCHEME_KAHAN',
    }[scheme],
    SKIP_INNER_LOOP: red.def.name === 'Zero_Reduction' ? '1' : '0',
    HAS_SKIP_TEST: hooks.canSkip !== undefined ? '1' : '0',
    T,
    TACC: TAcc,
    FORMULA: formula.source + (blockedCode?.source ?? ''),
    HOOKS: hooks.source,
    LANES: String(lanes),
    TILE: String(tile),
    ROW_BLOCK: String(rowBlock),
    DIM_FOUT: String(formula.dimOut),
    DIMRED_VAL: String(red.layout.dimredVal),
    DIMRED_IDX: String(red.layout.dimredIdx),
    DIM_VAL: String(red.layout.dimVal),
    DIM_IDX: String(red.layout.dimIdx),
    TILE_SCALARS: String(tileScalars),
    HOISTED_SCALARS: String(hoistedScalars),
    ROW_PROLOGUE: rowPrologue + (blockedCode !== undefined ? `\n      ${blockedCode.rowCall}` : ''),
    HOOK_INIT: hooks.init,
    HOOK_FOLD: hooks.fold,
    HOOK_MERGE: hooks.merge,
    HOOK_FINALIZE: hooks.finalize,
    // Only referenced under KEOPS_SCHEME_KAHAN; any identifier will do otherwise.
    HOOK_FOLD_KAHAN: hooks.kahan?.fold ?? 'keops_no_kahan_fold',
    HOOK_SETTLE_KAHAN: hooks.kahan?.settle ?? 'keops_no_kahan_settle',
    HOOK_CAN_SKIP: hooks.canSkip ?? 'keops_no_skip_test',
    CHECK_ARGS: checkArgs,
    LOAD_TILE: loadTile,
    BLOCKED_SCALARS: String(blockedCode?.scratchScalars ?? 0),
    BLOCKED_TILE: blockedCode !== undefined ? `${INDENT}${blockedCode.tileCall}` : '',
    ROW_POINTERS: rowPointers,
    FORMULA_CALL: formulaCall,
  });
  return {
    source,
    compilerFlags:
      evaluation !== 'scalar'
        ? [
            ...CPU_COMPILER_FLAGS,
            ...unrollFlags(Math.max(...topoOrder(blocked?.root ?? red.fout).map((n) => n.dim))),
          ]
        : CPU_COMPILER_FLAGS,
    layout: red.layout,
    entry: 'keops_cpu_run',
    abiVersionSymbol: 'keops_cpu_abi_version',
    abiVersion: readAbiVersion(),
    evaluation,
    lanes,
    tile,
    rowBlock,
    blockedTerms: blocked?.terms.length ?? 0,
    bf16Screening: filter !== undefined,
  };
}
