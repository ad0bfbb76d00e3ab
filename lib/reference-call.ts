/**
 * `referenceCall(genred, args)`: what a `Genred` (or any `NodeGenred`) call should return, computed by the
 * float64 reference evaluator — plain dense loops in float64, slow and simple on purpose — for users' own tests
 * of their formulas against the compiled backends. Float32 inputs are read as they are (exactly) and the
 * result is a Float64Array (indices an Int32Array), whatever the input dtype.
 */
import { KeOpsError } from './errors';
import type { GenredArg, GenredRanges } from './backend/plan';
import type { GenredResult } from './formula/genred-reductions';
import type { NodeGenred } from './genred';
import { type ReferenceInput, referenceGenred } from './reference';

export interface ReferenceCallOptions {
  /** Block-sparse ranges, as for `call`. */
  readonly ranges?: GenredRanges;
}

export function referenceCall(
  genred: NodeGenred,
  args: readonly GenredArg[],
  options: ReferenceCallOptions = {},
): GenredResult {
  if (!Array.isArray(args) || args.length !== genred.argCount) {
    throw new KeOpsError('ERR_ARG_COUNT', `referenceCall: expected ${genred.argCount} arguments`);
  }
  const inputs: (ReferenceInput | undefined)[] = args.map(() => undefined);
  for (const v of genred.variables) {
    const arg = args[v.pos];
    inputs[v.pos] =
      arg instanceof Float32Array || arg instanceof Float64Array
        ? { data: arg, cat: v.cat, dim: v.dim }
        : { data: arg.data, cat: v.cat, shape: arg.shape };
  }
  return referenceGenred(genred.reductionName, genred.formulaNode, inputs, {
    axis: genred.axis,
    k: genred.reduction.k,
    formula2: genred.formula2Node,
    ranges: options.ranges ?? undefined,
  });
}
