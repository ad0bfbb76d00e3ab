/**
 * Making plans: checks a k-NN or reduction job against its input files (opened once, for their rows, dim and
 * dtype) and cuts it into shards.
 *
 *     const plan = await createKnnPlan({ queries: 'q.fbin', base: 'b.u8bin', k: 10, querySlices: 8,
 *                                        shardDir: 'job.shards', outputs: { ids: 'ids.ibin', distances: 'd.fbin' } }, storage);
 *     await writePlan('job.plan.json', plan);
 */
import { KeOpsError } from '../errors';
import type { Dtype } from '../backend/plan';
import { argumentSlots, reductionGenred, reductionOutputs } from './kernels';
import {
  absoluteLocation,
  DEFAULT_CHUNK_ROWS,
  evenSlices,
  type JobPlan,
  type JobSpec,
  type PlanInput,
  isPlanMetric,
  type PlanMetric,
  sealPlan,
} from './plan';
import { KNN_METRICS } from '../knn/metric';
import { knnKernel } from './knn-kernel';
import type { JobStorage } from './storage';

export interface PlanLayout {
  /** Query (output-axis) slices; default 1. */
  readonly querySlices?: number;
  /** Base (reduced-axis) slices; default 1. */
  readonly baseSlices?: number;
  /** Base rows per kernel call inside a shard; default 65536. */
  readonly chunkRows?: number;
  /** Where shard results go. */
  readonly shardDir: string;
  /** Relative locations are taken from here (default: the current folder). */
  readonly baseDir?: string;
}

export interface KnnPlanRequest extends PlanLayout {
  readonly queries: string;
  readonly base: string;
  readonly k: number;
  readonly metric?: PlanMetric;
  readonly excludeSelf?: boolean;
  /** Computation dtype: float32, or float64 (the default when an input is float64). */
  readonly dtype?: Dtype;
  readonly outputs: { readonly ids?: string; readonly distances?: string };
}

export interface ReductionPlanRequest extends PlanLayout {
  readonly formula: string;
  readonly formula2?: string;
  readonly aliases: readonly string[];
  readonly reduction?: string;
  /** 1 (default here): reduce over j, one output row per i; 0: reduce over i. */
  readonly axis?: 0 | 1;
  readonly k?: number;
  readonly dtype?: Dtype;
  /** Input files by variable name (every Vi and Vj variable). */
  readonly inputs: Readonly<Record<string, string>>;
  /** Parameter values by variable name (every Pm variable). */
  readonly parameters?: Readonly<Record<string, readonly number[]>>;
  readonly outputs: { readonly values?: string; readonly indices?: string };
}

const invalid = (message: string) => new KeOpsError('ERR_INVALID_ARGUMENT', message);

function checkCount(value: unknown, what: string, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw invalid(`${what} must be an integer >= ${min}, got ${String(value)}`);
  }
  return value;
}

function checkDtype(dtype: unknown): Dtype {
  if (dtype === undefined) return 'float32';
  if (dtype !== 'float32' && dtype !== 'float64')
    throw invalid(`dtype must be float32 or float64, got ${String(dtype)}`);
  return dtype;
}

async function describeInput(
  storage: JobStorage,
  location: string,
  axis: 'query' | 'base',
): Promise<PlanInput> {
  const source = await storage.openVectors(location);
  try {
    return { location, axis, rows: source.rows, dim: source.dim, dtype: source.dtype };
  } finally {
    await source.close?.();
  }
}

function layout(request: PlanLayout, queryRows: number, baseRows: number) {
  const querySlices = checkCount(request.querySlices ?? 1, 'querySlices', 1);
  const baseSlices = checkCount(request.baseSlices ?? 1, 'baseSlices', 1);
  const chunkRows = checkCount(request.chunkRows ?? DEFAULT_CHUNK_ROWS, 'chunkRows', 1);
  if (typeof request.shardDir !== 'string' || request.shardDir.length === 0)
    throw invalid('shardDir must be a path');
  return {
    querySlices: evenSlices(queryRows, querySlices),
    baseSlices: evenSlices(baseRows, baseSlices),
    chunkRows,
    shardDir: absoluteLocation(request.shardDir, request.baseDir),
  };
}

function outputsOf(
  request: PlanLayout & { outputs: Readonly<Record<string, string | undefined>> },
  roles: readonly string[],
): Record<string, string> {
  if (typeof request.outputs !== 'object' || request.outputs === null)
    throw invalid('outputs must be an object');
  const out: Record<string, string> = {};
  for (const [role, location] of Object.entries(request.outputs)) {
    if (location === undefined) continue;
    if (!roles.includes(role)) throw invalid(`outputs.${role}: this job writes only ${roles.join(' and ')}`);
    if (typeof location !== 'string' || location.length === 0)
      throw invalid(`outputs.${role} must be a path`);
    out[role] = absoluteLocation(location, request.baseDir);
  }
  if (Object.keys(out).length === 0) throw invalid(`give at least one output (${roles.join(' or ')})`);
  return out;
}

export async function createKnnPlan(request: KnnPlanRequest, storage: JobStorage): Promise<JobPlan> {
  if (typeof request !== 'object' || request === null)
    throw invalid('the k-NN plan request must be an object');
  const k = checkCount(request.k, 'k', 1);
  const metric = request.metric ?? 'l2';
  if (!isPlanMetric(metric)) {
    throw invalid(
      `metric must be one of ${KNN_METRICS.join(', ')} or { formula }, got ${JSON.stringify(metric)}`,
    );
  }
  const excludeSelf = request.excludeSelf ?? false;
  if (typeof excludeSelf !== 'boolean') throw invalid('excludeSelf must be a boolean');
  for (const what of ['queries', 'base'] as const) {
    if (typeof request[what] !== 'string' || request[what].length === 0)
      throw invalid(`${what} must be a path`);
  }
  const queries = await describeInput(storage, absoluteLocation(request.queries, request.baseDir), 'query');
  const base = await describeInput(storage, absoluteLocation(request.base, request.baseDir), 'base');
  if (queries.dim !== base.dim) {
    throw new KeOpsError('ERR_ARG_SHAPE', `queries have dim ${queries.dim}, the base ${base.dim}`);
  }
  if (excludeSelf && queries.rows !== base.rows) {
    throw invalid(`excludeSelf needs the queries to be the base (${queries.rows} and ${base.rows} rows)`);
  }
  // As the k-NN API: float32 unless an input is float64.
  const dtype =
    request.dtype === undefined && (queries.dtype === 'float64' || base.dtype === 'float64')
      ? 'float64'
      : checkDtype(request.dtype);
  const job: JobSpec = { kind: 'knn', k, metric, excludeSelf, dtype };
  const plan = sealPlan({
    job,
    inputs: { queries, base },
    queryRows: queries.rows,
    baseRows: base.rows,
    ...layout(request, queries.rows, base.rows),
    outputs: outputsOf(request, ['ids', 'distances']),
  });
  knnKernel(plan); // k, metric formula: the search's own checks, now rather than on a worker
  return plan;
}

export async function createReductionPlan(
  request: ReductionPlanRequest,
  storage: JobStorage,
): Promise<JobPlan> {
  if (typeof request !== 'object' || request === null)
    throw invalid('the reduction plan request must be an object');
  if (!Array.isArray(request.aliases)) throw invalid('aliases must be an array of strings');
  const job: JobSpec = {
    kind: 'reduction',
    formula: request.formula,
    ...(request.formula2 === undefined ? {} : { formula2: request.formula2 }),
    aliases: [...request.aliases],
    reduction: request.reduction ?? 'Sum',
    axis: request.axis ?? 1,
    ...(request.k === undefined ? {} : { k: request.k }),
    dtype: checkDtype(request.dtype),
    parameters: {},
  };
  const genred = reductionGenred(job); // formula, aliases, reduction, K: typed errors here
  const slots = argumentSlots(genred);
  const given = request.inputs ?? {};
  const parameters: Record<string, number[]> = {};
  const inputs: Record<string, PlanInput> = {};
  const rows: Partial<Record<'query' | 'base', number>> = {};
  for (const slot of slots) {
    if (slot.kind === 'parameter') {
      const values = request.parameters?.[slot.name];
      if (!Array.isArray(values) || values.length !== slot.dim || !values.every((v) => Number.isFinite(v))) {
        throw invalid(`parameter '${slot.name}' needs ${slot.dim} finite numbers`);
      }
      parameters[slot.name] = [...values];
      continue;
    }
    const location = given[slot.name];
    if (typeof location !== 'string' || location.length === 0) {
      throw invalid(
        `input '${slot.name}' (${slot.axis === 'query' ? 'output' : 'reduced'} axis) needs a file`,
      );
    }
    const input = await describeInput(storage, absoluteLocation(location, request.baseDir), slot.axis);
    if (input.dim !== slot.dim) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `input '${slot.name}' (${location}) has dim ${input.dim}, the formula ${slot.dim}`,
      );
    }
    const known = rows[slot.axis];
    if (known !== undefined && known !== input.rows) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `input '${slot.name}' has ${input.rows} rows, another input of its axis ${known}`,
      );
    }
    rows[slot.axis] = input.rows;
    inputs[slot.name] = input;
  }
  for (const name of Object.keys(given)) {
    if (!(name in inputs)) throw invalid(`input '${name}' is not an i- or j-indexed variable of the formula`);
  }
  if (rows.query === undefined || rows.base === undefined) {
    throw invalid('a distributed reduction needs at least one i-indexed and one j-indexed input');
  }
  const sealedJob: JobSpec = { ...job, parameters };
  const roles = reductionOutputs(genred, sealedJob.dtype, rows.base).map((o) => o.role);
  return sealPlan({
    job: sealedJob,
    inputs,
    queryRows: rows.query,
    baseRows: rows.base,
    ...layout(request, rows.query, rows.base),
    outputs: outputsOf(request, roles),
  });
}
