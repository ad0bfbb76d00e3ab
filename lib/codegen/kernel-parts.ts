/**
 * What the CPU and CUDA kernel generators share: option checks, and the formula function and reduction hooks
 * emitted once (with one name allocator) for a reduction, which each template then wraps in its own loops.
 */
import { KeOpsError } from '../errors';
import type { Node } from '../formula/node';
import type { Reduction } from '../formula/reduction';
import { type ArgPosition, type FormulaCode, generateFormulaCode } from './formula';
import { NameAllocator } from './names';
import { generateReductionHooks, type ReductionHooks, unsupportedSumScheme } from './reduction-hooks';

export type KernelDtype = 'float32' | 'float64';
export type KernelSumScheme = 'direct_sum' | 'block_sum' | 'kahan_scheme';

export const CPP_TYPE: Readonly<Record<KernelDtype, string>> = { float32: 'float', float64: 'double' };
export const BYTES: Readonly<Record<KernelDtype, number>> = { float32: 4, float64: 8 };
/** Values per output row the formula prologue may precompute (see lib/codegen/formula.ts). */
const MAX_HOISTED_BYTES = 4096;
const SUM_SCHEMES: readonly string[] = ['direct_sum', 'block_sum', 'kahan_scheme'];

export interface KernelPartsOptions {
  readonly dtype: KernelDtype;
  readonly dtypeAcc: KernelDtype;
  readonly sumScheme: KernelSumScheme;
  readonly positions: readonly ArgPosition[];
  /** The formula to emit when not the reduction's own (a rewritten equivalent, e.g. by cpu-blocked.ts). */
  readonly formulaRoot?: Node;
}

export interface KernelParts {
  readonly names: NameAllocator;
  readonly formula: FormulaCode;
  readonly hooks: ReductionHooks;
  /** The sum scheme in effect: non-sum reductions always fold directly. */
  readonly scheme: KernelSumScheme;
}

export function checkKernelOptions(red: Reduction, opts: KernelPartsOptions): void {
  for (const [what, v] of [
    ['dtype', opts.dtype],
    ['dtypeAcc', opts.dtypeAcc],
  ] as const) {
    if (v !== 'float32' && v !== 'float64') {
      throw new KeOpsError(
        'ERR_INVALID_ARGUMENT',
        `${what} must be 'float32' or 'float64', got ${String(v)}`,
      );
    }
  }
  if (!SUM_SCHEMES.includes(opts.sumScheme)) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `unknown sum scheme '${String(opts.sumScheme)}'`);
  }
  opts.positions.forEach((p, pos) => {
    if (!Number.isSafeInteger(p.dim) || p.dim < 1 || ![0, 1, 2].includes(p.cat)) {
      throw new KeOpsError(
        'ERR_INVALID_ARGUMENT',
        `argument ${pos}: invalid declaration (dim ${p.dim}, category ${p.cat})`,
      );
    }
  });
  if (red.tag !== 0 && red.tag !== 1) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `invalid reduction tag ${red.tag}`);
  }
  if (opts.sumScheme === 'kahan_scheme' && !red.def.sumType) throw unsupportedSumScheme(red, opts.sumScheme);
}

/** The formula function `keops_formula` and the hooks `keops_red_*`, over the types `keops_t` / `keops_acc_t`. */
export function generateKernelParts(red: Reduction, opts: KernelPartsOptions): KernelParts {
  checkKernelOptions(red, opts);
  const names = new NameAllocator();
  const functionName = names.reserve('keops_formula');
  names.reserve('keops_red');
  const formula = generateFormulaCode(opts.formulaRoot ?? red.fout, {
    T: 'keops_t',
    positions: opts.positions,
    tag: red.tag,
    names,
    functionName,
    maxHoistedScalars: Math.floor(MAX_HOISTED_BYTES / BYTES[opts.dtype]),
  });
  const hooks = generateReductionHooks(red, {
    T: 'keops_t',
    TAcc: 'keops_acc_t',
    names,
    prefix: 'keops_red',
    accDtype: opts.dtypeAcc,
  });
  return { names, formula, hooks, scheme: red.def.sumType ? opts.sumScheme : 'direct_sum' };
}
