/**
 * pykeops' shortcuts (docs/semantics.md 4.1): `genericSum(formula, 'out = Vi(D)', ...aliases)` and friends
 * return a Genred whose output alias only fixes the axis (a Vi output has one row per i, so it reduces over j)
 * and, for genericArgKMin, K. The output alias is checked against the formula instead of being trusted.
 */
import { KeOpsError } from './errors';
import { parseAlias } from './formula/aliases';
import { Genred, type GenredOptions } from './genred';
import type { ReductionName } from './genred-types';

type ShortcutOptions = Omit<GenredOptions, 'reduction' | 'axis' | 'k'>;

/** Reads the output alias: its category gives the axis, its dim the output width. */
function outputAxis(output: string): { axis: 0 | 1; dim: number } {
  if (typeof output !== 'string') {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `the output alias must be a string such as 'out = Vi(3)'`);
  }
  const v = parseAlias(output, 0, () => false);
  if (v.cat === 2) {
    throw new KeOpsError(
      'ERR_ALIAS',
      `the output alias '${output}' must be Vi (one row per i) or Vj, not Pm`,
    );
  }
  return { axis: v.cat === 0 ? 1 : 0, dim: v.dim };
}

function shortcut<R extends ReductionName>(
  reduction: R,
  formula: string,
  output: string,
  aliases: readonly string[],
  options: ShortcutOptions,
  expectedDim: (formulaDim: number) => number,
  k?: number,
): Genred<R> {
  const { axis, dim } = outputAxis(output);
  const genred = new Genred(formula, aliases, { ...options, reduction, axis, k });
  const want = expectedDim(genred.reduction.formula.dim);
  if (dim !== want) {
    throw new KeOpsError(
      'ERR_FORMULA_DIM',
      `the output alias '${output}' declares dim ${dim}, but ${reduction} of ${formula} gives ${want} per row`,
    );
  }
  return genred;
}

/** Σ of the formula over the other index; the output alias `out = Vi(D)` (or Vj) must have D = dim(formula). */
export function genericSum(
  formula: string,
  output: string,
  aliases: readonly string[],
  options: ShortcutOptions = {},
) {
  return shortcut('Sum', formula, output, aliases, options, (d) => d);
}

/** log Σ exp(formula) (a scalar formula): the output alias has dim 1. */
export function genericLogSumExp(
  formula: string,
  output: string,
  aliases: readonly string[],
  options: ShortcutOptions = {},
) {
  return shortcut('LogSumExp', formula, output, aliases, options, () => 1);
}

/** Index of the minimum, per component: the output alias has dim(formula). */
export function genericArgMin(
  formula: string,
  output: string,
  aliases: readonly string[],
  options: ShortcutOptions = {},
) {
  return shortcut('ArgMin', formula, output, aliases, options, (d) => d);
}

/** Indices of the K smallest values of a scalar formula: the output alias `a = Vi(K)` gives K. */
export function genericArgKMin(
  formula: string,
  output: string,
  aliases: readonly string[],
  options: ShortcutOptions = {},
) {
  const { dim } = outputAxis(output);
  return shortcut('ArgKMin', formula, output, aliases, options, (d) => d * dim, dim);
}
