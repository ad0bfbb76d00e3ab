/**
 * Running one shard of a plan, merging all of them, and the same job run in one process.
 *
 *     await runShard(plan, 3, { storage });     // → <shardDir>/shard-000003.kps (temporary name, then renamed)
 *     await mergePlan(plan, { storage });       // checks every shard, writes the outputs
 *     await runPlanLocally(plan, { storage });  // the same outputs, byte for byte, without shard files
 *
 * A shard is a pure function of (plan, index): inputs are read by row ranges, the base slice is computed in
 * chunks of plan.chunkRows rows merged in order, and the partial is written whole. The merge folds each query
 * slice's shards in base-slice order and writes the outputs under temporary names, renamed once all is written.
 */
import { performance } from 'node:perf_hooks';
import { KeOpsError } from '../errors';
import type { FloatArray } from '../backend/plan';
import type { PartialResult } from '../jobs/partial';
import type { VectorSource } from '../io/vector-source';
import { type ComputeSettings, reductionKernel, type ShardKernel } from './kernels';
import { knnKernel } from './knn-kernel';
import { describeShard, type JobPlan, shardCount, shardSpec, type Slice } from './plan';
import { decodeShard, encodeShard, readShard, shardLocation } from './shard-file';
import type { JobStorage, VectorWriter } from './storage';

/** The kernel of a plan's job kind, running with `settings`. */
export function kernelFor(plan: JobPlan, settings: ComputeSettings = {}): ShardKernel {
  return plan.job.kind === 'knn' ? knnKernel(plan, settings) : reductionKernel(plan, settings);
}

export interface ShardProgress {
  readonly pairsDone: number;
  readonly pairsTotal: number;
}

export interface ShardRunOptions extends ComputeSettings {
  readonly storage: JobStorage;
  /** The plan's kernel, when the caller keeps one across shards (compiled kernels are reused). */
  readonly kernel?: ShardKernel;
  /** Recompute even when a valid result of this shard is already stored. */
  readonly force?: boolean;
  readonly onProgress?: (progress: ShardProgress) => void;
  /** Stops between chunks: ERR_ABORTED. */
  readonly signal?: AbortSignal;
}

export interface ShardRunResult {
  readonly index: number;
  readonly location: string;
  /** True when a valid result was already there (delivered twice, or a rerun of a finished job). */
  readonly reused: boolean;
  readonly pairs: number;
  readonly seconds: number;
}

interface OpenInputs {
  readonly sources: ReadonlyMap<string, { source: VectorSource; axis: 'query' | 'base' }>;
  close(): Promise<void>;
}

/** Opens the plan's inputs and checks each still has the rows, dim and dtype the plan recorded. */
async function openInputs(plan: JobPlan, storage: JobStorage): Promise<OpenInputs> {
  const sources = new Map<string, { source: VectorSource; axis: 'query' | 'base' }>();
  const close = () => Promise.all([...sources.values()].map((s) => s.source.close?.())).then(() => undefined);
  try {
    for (const [name, input] of Object.entries(plan.inputs)) {
      const source = await storage.openVectors(input.location);
      sources.set(name, { source, axis: input.axis });
      if (source.rows !== input.rows || source.dim !== input.dim || source.dtype !== input.dtype) {
        throw new KeOpsError(
          'ERR_SHARD',
          `input '${name}' (${input.location}) changed since the plan was made: it has ${source.rows} rows of ` +
            `${source.dim} ${source.dtype}, the plan expects ${input.rows} rows of ${input.dim} ${input.dtype}`,
        );
      }
    }
  } catch (e) {
    await close().catch(() => undefined);
    throw e;
  }
  return { sources, close };
}

async function readRows(
  kernel: ShardKernel,
  inputs: OpenInputs,
  axis: 'query' | 'base',
  [start, end]: Slice,
): Promise<Map<string, FloatArray>> {
  const rows = new Map<string, FloatArray>();
  for (const [name, { source, axis: a }] of inputs.sources) {
    if (a !== axis) continue;
    rows.set(name, kernel.convert(name, await source.read(start, end), source.dtype));
  }
  return rows;
}

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new KeOpsError('ERR_ABORTED', 'the shard was aborted', { cause: signal.reason });
}

/** Computes a shard's partial result in this process (no file). */
export async function computeShard(
  plan: JobPlan,
  index: number,
  options: Omit<ShardRunOptions, 'force'>,
): Promise<PartialResult> {
  const shard = shardSpec(plan, index);
  const kernel = options.kernel ?? kernelFor(plan, options);
  const inputs = await openInputs(plan, options.storage);
  try {
    const [q0, q1] = shard.querySlice;
    const [b0, b1] = shard.baseSlice;
    const pairsTotal = (q1 - q0) * (b1 - b0);
    const query = await readRows(kernel, inputs, 'query', shard.querySlice);
    const partials: PartialResult[] = [];
    // At least one chunk, so that an empty base slice still gives a (neutral) partial of the right rows.
    for (let a = b0; a < b1 || (a === b0 && b1 === b0); a += plan.chunkRows) {
      checkAbort(options.signal);
      const z = Math.min(b1, a + plan.chunkRows);
      const base = await readRows(kernel, inputs, 'base', [a, z]);
      partials.push(
        await kernel.compute(query, q0, base, a, { device: options.device, signal: options.signal }),
      );
      options.onProgress?.({ pairsDone: (q1 - q0) * (z - b0), pairsTotal });
      if (z === b1) break;
    }
    return partials.length === 1 ? partials[0] : kernel.merge(partials);
  } finally {
    await inputs.close();
  }
}

/**
 * Runs shard `index` and stores its result (temporary name, then rename). A valid result already stored is kept
 * unless `force`: delivering a shard twice costs a read, not a recomputation.
 */
export async function runShard(
  plan: JobPlan,
  index: number,
  options: ShardRunOptions,
): Promise<ShardRunResult> {
  const started = performance.now();
  const shard = shardSpec(plan, index);
  const location = shardLocation(plan, options.storage, index);
  const pairs = (shard.querySlice[1] - shard.querySlice[0]) * (shard.baseSlice[1] - shard.baseSlice[0]);
  if (options.force !== true) {
    const existing = await options.storage.readBytes(location);
    if (existing !== undefined) {
      let valid = true;
      try {
        decodeShard(plan, index, existing, location);
      } catch {
        valid = false; // damaged or stale: computed again below
      }
      if (valid)
        return { index, location, reused: true, pairs, seconds: (performance.now() - started) / 1000 };
    }
  }
  const partial = await computeShard(plan, index, options);
  await options.storage.writeBytes(location, encodeShard(plan, shard, partial));
  return { index, location, reused: false, pairs, seconds: (performance.now() - started) / 1000 };
}

export interface MergeOptions {
  readonly storage: JobStorage;
  readonly kernel?: ShardKernel;
  /** Called after each query slice is written. */
  readonly onProgress?: (progress: { slicesDone: number; slicesTotal: number }) => void;
}

export interface MergeResult {
  /** Output locations by role. */
  readonly outputs: Readonly<Record<string, string>>;
  readonly shards: number;
  readonly queryRows: number;
}

/**
 * Writes the plan's outputs from partials given per shard (`partialOf`), folding each query slice's shards in
 * base-slice order. Outputs are committed only when every slice is written; on any error they are dropped.
 */
async function writeOutputs(
  plan: JobPlan,
  options: MergeOptions,
  partialOf: (index: number) => Promise<PartialResult>,
): Promise<MergeResult> {
  const kernel = options.kernel ?? kernelFor(plan);
  const writers = new Map<string, VectorWriter>();
  const B = plan.baseSlices.length;
  try {
    for (const shape of kernel.outputs) {
      const location = plan.outputs[shape.role];
      if (location === undefined) continue;
      writers.set(
        shape.role,
        await options.storage.createVectors(location, {
          rows: plan.queryRows,
          dim: shape.dim,
          dtype: shape.dtype,
        }),
      );
    }
    for (let q = 0; q < plan.querySlices.length; q++) {
      const partials: PartialResult[] = [];
      for (let b = 0; b < B; b++) partials.push(await partialOf(q * B + b));
      const merged = partials.length === 1 ? partials[0] : kernel.merge(partials);
      const q0 = plan.querySlices[q][0];
      const rows = kernel.finish(merged, q0);
      for (const [role, writer] of writers) {
        const data = rows.get(role);
        if (data === undefined) throw new KeOpsError('ERR_INTERNAL', `the merge gave no '${role}' output`);
        await writer.writeRows(q0, data);
      }
      options.onProgress?.({ slicesDone: q + 1, slicesTotal: plan.querySlices.length });
    }
    for (const writer of writers.values()) await writer.commit();
  } catch (e) {
    await Promise.all([...writers.values()].map((w) => w.abort().catch(() => undefined)));
    throw e;
  }
  return {
    outputs: Object.fromEntries([...writers.keys()].map((role) => [role, plan.outputs[role]])),
    shards: shardCount(plan),
    queryRows: plan.queryRows,
  };
}

/**
 * Checks that every shard result is there and valid (ERR_SHARD listing the missing ones, or naming the shard and
 * file that is damaged, stale or inconsistent), then writes the outputs.
 */
export async function mergePlan(plan: JobPlan, options: MergeOptions): Promise<MergeResult> {
  const total = shardCount(plan);
  const missing: string[] = [];
  for (let index = 0; index < total; index++) {
    const location = shardLocation(plan, options.storage, index);
    if (!(await options.storage.exists(location)))
      missing.push(`${describeShard(shardSpec(plan, index))}: ${location}`);
  }
  if (missing.length > 0) {
    const shown = missing.slice(0, 10).join('\n  ');
    throw new KeOpsError(
      'ERR_SHARD',
      `${missing.length} of ${total} shard results are missing:\n  ${shown}${missing.length > 10 ? '\n  …' : ''}`,
    );
  }
  return writeOutputs(plan, options, async (index) => {
    const partial = await readShard(plan, options.storage, index);
    if (partial === undefined) {
      const location = shardLocation(plan, options.storage, index);
      throw new KeOpsError('ERR_SHARD', `${describeShard(shardSpec(plan, index))} disappeared: ${location}`);
    }
    return partial;
  });
}

/** The whole job in this process: the same shards, chunks and merge order, so the same output bytes. */
export async function runPlanLocally(
  plan: JobPlan,
  options: MergeOptions & ComputeSettings,
): Promise<MergeResult> {
  const kernel = options.kernel ?? kernelFor(plan);
  const compute = {
    storage: options.storage,
    kernel,
    backend: options.backend,
    device: options.device,
    threads: options.threads,
  };
  return writeOutputs(plan, { ...options, kernel }, (index) => computeShard(plan, index, compute));
}
