/**
 * What a shard computes, per job kind: the partial result of some query rows over some base rows, the merge of
 * partials, and the output arrays of a merged query slice. Reductions run on PartialReducer (lib/jobs); k-NN
 * jobs on the k-NN search object (knn-kernel.ts).
 */
import { KeOpsError } from '../errors';
import type { Dtype, FloatArray } from '../backend/plan';
import type { Backend } from '../backend/runner';
import { Genred } from '../genred';
import type { ReductionName } from '../genred-types';
import { INT32_INDEX_LIMIT, PartialReducer, type PartialResult } from '../jobs/partial';
import { allocateFloat, convertToFloat, type StorageArray, type StorageDtype } from '../io/vector-source';
import type { JobPlan, ReductionJobSpec } from './plan';

/** Where a worker runs its shards. */
export interface ComputeSettings {
  readonly backend?: Backend;
  /** GPU ordinal (with backend 'cuda' or 'auto'). */
  readonly device?: number;
  readonly threads?: number;
}

/** One output file's rows: `dim` values per row of `dtype`. */
export interface OutputShape {
  readonly role: string;
  readonly dim: number;
  readonly dtype: StorageDtype;
}

export interface ShardKernel {
  /** The output files (by role) and their row shapes. */
  readonly outputs: readonly OutputShape[];
  /** Stored rows of an input in the compute dtype. */
  convert(input: string, stored: StorageArray, storageDtype: StorageDtype): FloatArray;
  /** The partial of the query rows (starting at q0) over the base rows starting at b0, by input name. */
  compute(
    query: ReadonlyMap<string, FloatArray>,
    q0: number,
    base: ReadonlyMap<string, FloatArray>,
    b0: number,
    options: { readonly device?: number; readonly signal?: AbortSignal },
  ): Promise<PartialResult>;
  /** Merges partials in the given order. */
  merge(partials: readonly PartialResult[]): PartialResult;
  /** The output rows of a merged query slice starting at query row q0, by role. */
  finish(partial: PartialResult, q0: number): ReadonlyMap<string, StorageArray>;
}

/** The Genred of a reduction job, with its arguments mapped to plan inputs and parameters. */
export function reductionGenred(job: ReductionJobSpec): Genred {
  return new Genred(job.formula, job.aliases, {
    reduction: job.reduction as ReductionName,
    axis: job.axis,
    ...(job.k === undefined ? {} : { k: job.k }),
    ...(job.formula2 === undefined ? {} : { formula2: job.formula2 }),
  });
}

/** For each argument position: a parameter, or the input (by variable name) and its axis. */
export type ArgumentSlot =
  | { readonly kind: 'parameter'; readonly name: string; readonly dim: number }
  | { readonly kind: 'input'; readonly name: string; readonly dim: number; readonly axis: 'query' | 'base' };

export function argumentSlots(genred: Genred): ArgumentSlot[] {
  const runner = genred.runner;
  const outputCat = runner.reduction.tag === 0 ? 0 : 1;
  const byPos = new Map(runner.variables.map((v) => [v.pos, v]));
  const slots: ArgumentSlot[] = [];
  for (let pos = 0; pos < runner.argCount; pos++) {
    const v = byPos.get(pos);
    if (v === undefined || v.name === undefined) {
      throw new KeOpsError(
        'ERR_INVALID_ARGUMENT',
        `argument ${pos} of the reduction has no named variable: a distributed job needs a name for every input`,
      );
    }
    slots.push(
      v.cat === 2
        ? { kind: 'parameter', name: v.name, dim: v.dim }
        : { kind: 'input', name: v.name, dim: v.dim, axis: v.cat === outputCat ? 'query' : 'base' },
    );
  }
  return slots;
}

const floatArray = (dtype: Dtype, values: readonly number[]): FloatArray =>
  dtype === 'float32' ? Float32Array.from(values) : Float64Array.from(values);

/** The output files of a reduction: values, indices, or both (indices int64 past 2^31 reduced rows). */
export function reductionOutputs(genred: Genred, dtype: Dtype, baseRows: number): OutputShape[] {
  const { outputKind, dimOut } = genred.runner.resolved;
  const outputs: OutputShape[] = [];
  if (outputKind !== 'indices') outputs.push({ role: 'values', dim: dimOut, dtype });
  if (outputKind !== 'values') {
    outputs.push({ role: 'indices', dim: dimOut, dtype: baseRows > INT32_INDEX_LIMIT ? 'int64' : 'int32' });
  }
  return outputs;
}

/** The shard kernel of a reduction plan, running with `settings`. */
export function reductionKernel(plan: JobPlan, settings: ComputeSettings = {}): ShardKernel {
  const job = plan.job;
  if (job.kind !== 'reduction') throw new KeOpsError('ERR_INTERNAL', 'reductionKernel: not a reduction plan');
  const genred = reductionGenred(job);
  const reducer = new PartialReducer(genred);
  const slots = argumentSlots(genred);
  const parameters = new Map(
    slots.flatMap((s) =>
      s.kind === 'parameter' ? [[s.name, floatArray(job.dtype, job.parameters[s.name])]] : [],
    ),
  );
  const kind = reducer.resolved.outputKind;
  const outputs = reductionOutputs(genred, job.dtype, plan.baseRows);
  return {
    outputs,
    convert: (_input, stored, storageDtype) =>
      convertToFloat(stored, storageDtype, allocateFloat(job.dtype, stored.length)),
    compute(query, _q0, base, b0, options) {
      const args = slots.map((s) => {
        if (s.kind === 'parameter') return parameters.get(s.name) as FloatArray;
        return (s.axis === 'query' ? query : base).get(s.name) as FloatArray;
      });
      return reducer.compute(args, {
        start: b0,
        backend: settings.backend,
        threads: settings.threads,
        device: options.device ?? settings.device,
      });
    },
    merge: (partials) => reducer.merge(partials),
    finish(partial) {
      const result = reducer.finalize(partial);
      const out = new Map<string, StorageArray>();
      if (ArrayBuffer.isView(result)) out.set(kind === 'indices' ? 'indices' : 'values', result);
      else {
        out.set('values', result.values);
        out.set('indices', result.indices);
      }
      return out;
    },
  };
}
