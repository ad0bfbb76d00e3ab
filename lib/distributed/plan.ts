/**
 * Job plans: a k-NN job or a reduction job over vector files, cut into shards (query slices × base slices), as a
 * JSON file every worker reads. A plan is a pure description: the same inputs and options give the same plan,
 * byte for byte, and its content hash names it in every shard result, so a result of another plan (or of an older
 * version of this one) is never merged by mistake.
 *
 *     { "format": "keops-node-plan", "version": 1, "hash": "…sha256…",
 *       "job": { "kind": "knn", "k": 10, "metric": "l2", "excludeSelf": false, "dtype": "float32" },
 *       "inputs": { "queries": { "location": "/data/q.fbin", "axis": "query", "rows": 10000, "dim": 784, "dtype": "uint8" }, … },
 *       "queryRows": 10000, "baseRows": 60000,
 *       "querySlices": [[0, 5000], [5000, 10000]], "baseSlices": [[0, 60000]], "chunkRows": 65536,
 *       "shardDir": "/data/job.shards", "outputs": { "ids": "/data/ids.ibin", "distances": "/data/d.fbin" } }
 *
 * "query" is the output axis (one result row per query row; for a reduction over j, the i axis) and "base" the
 * reduced axis. Shard s covers query slice ⌊s / B⌋ and base slice s mod B (B base slices). Inside a shard, the
 * base slice is computed in chunks of `chunkRows` rows and merged in order, and the merge folds a query slice's
 * shards in base-slice order: the plan fixes every order, so the result never depends on who ran what when.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { KeOpsError } from '../errors';
import type { Dtype } from '../backend/plan';
import { type StorageDtype, STORAGE_DTYPES } from '../io/vector-source';
import { KNN_METRICS, type KnnMetric } from '../knn/metric';
import { writeFileAtomic } from './storage';

export const PLAN_FORMAT = 'keops-node-plan';
export const PLAN_VERSION = 1;

/** A [start, end) range of rows. */
export type Slice = readonly [number, number];

/** A k-NN metric as the k-NN API takes it: a name, or { formula } over x (query row) and y (base row). */
export type PlanMetric = KnnMetric;

export function isPlanMetric(metric: unknown): metric is PlanMetric {
  if (typeof metric === 'string') return (KNN_METRICS as readonly string[]).includes(metric);
  return (
    typeof metric === 'object' &&
    metric !== null &&
    Object.keys(metric).length === 1 &&
    typeof (metric as { formula?: unknown }).formula === 'string'
  );
}

export interface KnnJobSpec {
  readonly kind: 'knn';
  readonly k: number;
  readonly metric: PlanMetric;
  readonly excludeSelf: boolean;
  /** The dtype the distances are computed (and written) in. */
  readonly dtype: Dtype;
}

export interface ReductionJobSpec {
  readonly kind: 'reduction';
  readonly formula: string;
  readonly formula2?: string;
  /** Variable declarations, e.g. ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(1)', 'g = Pm(1)']. */
  readonly aliases: readonly string[];
  /** A reduction name of Genred (Sum, LogSumExp, ArgKMin, …). */
  readonly reduction: string;
  /** 1: reduce over j (one output row per i); 0: reduce over i. */
  readonly axis: 0 | 1;
  readonly k?: number;
  readonly dtype: Dtype;
  /** Parameter (Pm) values by variable name, inline. */
  readonly parameters: Readonly<Record<string, readonly number[]>>;
}

export type JobSpec = KnnJobSpec | ReductionJobSpec;

/** One input file as the plan saw it: workers check that theirs still matches. */
export interface PlanInput {
  readonly location: string;
  readonly axis: 'query' | 'base';
  readonly rows: number;
  readonly dim: number;
  readonly dtype: StorageDtype;
}

/** Output files by role: `ids` / `distances` for k-NN, `values` / `indices` for reductions. */
export type PlanOutputs = Readonly<Record<string, string>>;

export interface JobPlan {
  readonly format: typeof PLAN_FORMAT;
  readonly version: typeof PLAN_VERSION;
  /** sha256 (hex) of the canonical JSON of every other field. */
  readonly hash: string;
  readonly job: JobSpec;
  /** Inputs by name: `queries` / `base` for k-NN, variable names for reductions. */
  readonly inputs: Readonly<Record<string, PlanInput>>;
  readonly queryRows: number;
  readonly baseRows: number;
  readonly querySlices: readonly Slice[];
  readonly baseSlices: readonly Slice[];
  /** Base rows per kernel call inside a shard. */
  readonly chunkRows: number;
  /** Where shard results go (a folder every worker can write). */
  readonly shardDir: string;
  readonly outputs: PlanOutputs;
}

/** A shard's place in its plan. */
export interface ShardSpec {
  readonly index: number;
  readonly querySlice: Slice;
  readonly baseSlice: Slice;
  /** Index of its query slice (the merge group) and base slice (the merge order inside the group). */
  readonly queryPart: number;
  readonly basePart: number;
}

/** Default base rows per kernel call in a shard: a few seconds of CPU work at most for typical sizes. */
export const DEFAULT_CHUNK_ROWS = 65536;

const invalid = (message: string) => new KeOpsError('ERR_INVALID_ARGUMENT', message);

/** `parts` contiguous slices of [0, n), sizes differing by at most one (one empty slice when n = 0). */
export function evenSlices(n: number, parts: number): Slice[] {
  const count = Math.max(1, Math.min(parts, n));
  const out: Slice[] = [];
  for (let p = 0; p < count; p++) {
    out.push([Math.floor((p * n) / count), Math.floor(((p + 1) * n) / count)]);
  }
  return out;
}

export function shardCount(plan: JobPlan): number {
  return plan.querySlices.length * plan.baseSlices.length;
}

export function shardSpec(plan: JobPlan, index: number): ShardSpec {
  const total = shardCount(plan);
  if (!Number.isSafeInteger(index) || index < 0 || index >= total) {
    throw invalid(`shard index ${String(index)} is out of range: the plan has shards 0 to ${total - 1}`);
  }
  const B = plan.baseSlices.length;
  const queryPart = Math.floor(index / B);
  const basePart = index % B;
  return {
    index,
    querySlice: plan.querySlices[queryPart],
    baseSlice: plan.baseSlices[basePart],
    queryPart,
    basePart,
  };
}

/** How a shard is named in messages: "shard 3 (query rows [0, 500), base rows [1000, 2000))". */
export function describeShard(shard: ShardSpec): string {
  const [q0, q1] = shard.querySlice;
  const [b0, b1] = shard.baseSlice;
  return `shard ${shard.index} (query rows [${q0}, ${q1}), base rows [${b0}, ${b1}))`;
}

/** JSON with object keys sorted at every level: the text the plan hash is taken of. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function planHashOf(plan: Omit<JobPlan, 'hash'> & { hash?: string }): string {
  const { hash: _ignored, ...rest } = plan;
  void _ignored;
  return createHash('sha256').update(canonicalJson(rest)).digest('hex');
}

/** The plan with its hash filled in (fields in a fixed order, so the JSON text is deterministic too). */
export function sealPlan(plan: Omit<JobPlan, 'hash' | 'format' | 'version'>): JobPlan {
  const body = {
    format: PLAN_FORMAT,
    version: PLAN_VERSION,
    job: plan.job,
    inputs: plan.inputs,
    queryRows: plan.queryRows,
    baseRows: plan.baseRows,
    querySlices: plan.querySlices,
    baseSlices: plan.baseSlices,
    chunkRows: plan.chunkRows,
    shardDir: plan.shardDir,
    outputs: plan.outputs,
  } as const;
  const { format, version, ...rest } = body;
  const sealed: JobPlan = { format, version, hash: planHashOf(body), ...rest };
  checkPlan(sealed, 'the plan');
  return sealed;
}

/** The plan's JSON text (what `writePlan` stores). */
export function planJson(plan: JobPlan): string {
  return `${JSON.stringify(plan, null, 2)}\n`;
}

/** Writes the plan file (temporary name, then rename). */
export async function writePlan(path: string, plan: JobPlan): Promise<void> {
  await writeFileAtomic(path, Buffer.from(planJson(plan), 'utf8'));
}

/** Reads and checks a plan file: ERR_FILE_IO when unreadable, ERR_FILE_FORMAT when it is not a valid plan. */
export async function readPlan(path: string): Promise<JobPlan> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new KeOpsError('ERR_FILE_IO', `cannot read the plan ${path}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new KeOpsError('ERR_FILE_FORMAT', `${path}: not a JSON plan (${(e as Error).message})`, {
      cause: e,
    });
  }
  checkPlan(parsed, path);
  return parsed;
}

/** A location as stored in a plan: URLs (scheme://…) as given, paths made absolute against `base`. */
export function absoluteLocation(location: string, base = process.cwd()): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location) || isAbsolute(location)) return location;
  return resolve(base, location);
}

/** The default shard folder of a plan file: next to it. */
export const defaultShardDir = (planPath: string): string => `${resolve(planPath)}.shards`;

// ---- validation ----

function fail(where: string, message: string): never {
  throw new KeOpsError('ERR_FILE_FORMAT', `${where}: not a valid keops-node plan: ${message}`);
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isText = (v: unknown): v is string => typeof v === 'string' && v.length > 0;

function checkSlices(where: string, what: string, slices: unknown, total: number): void {
  if (!Array.isArray(slices) || slices.length === 0) fail(where, `${what} must be a non-empty list`);
  let at = 0;
  for (const s of slices) {
    if (
      !Array.isArray(s) ||
      s.length !== 2 ||
      !isCount(s[0]) ||
      !isCount(s[1]) ||
      s[0] !== at ||
      s[1] < s[0]
    ) {
      fail(where, `${what} must be consecutive [start, end) ranges from 0`);
    }
    at = s[1] as number;
  }
  if (at !== total) fail(where, `${what} end at row ${at}, the inputs have ${total}`);
}

function checkJob(where: string, job: unknown): void {
  if (!isObject(job)) fail(where, 'job must be an object');
  if (job.dtype !== 'float32' && job.dtype !== 'float64') fail(where, `job.dtype must be float32 or float64`);
  if (job.kind === 'knn') {
    if (!isCount(job.k) || job.k < 1) fail(where, 'job.k must be an integer >= 1');
    if (!isPlanMetric(job.metric)) {
      fail(where, `job.metric must be one of ${KNN_METRICS.join(', ')} or { "formula": "..." }`);
    }
    if (typeof job.excludeSelf !== 'boolean') fail(where, 'job.excludeSelf must be a boolean');
    return;
  }
  if (job.kind !== 'reduction') fail(where, `job.kind must be 'knn' or 'reduction'`);
  if (!isText(job.formula)) fail(where, 'job.formula must be a string');
  if (job.formula2 !== undefined && !isText(job.formula2)) fail(where, 'job.formula2 must be a string');
  if (!Array.isArray(job.aliases) || !job.aliases.every(isText)) fail(where, 'job.aliases must be strings');
  if (!isText(job.reduction)) fail(where, 'job.reduction must be a reduction name');
  if (job.axis !== 0 && job.axis !== 1) fail(where, 'job.axis must be 0 or 1');
  if (job.k !== undefined && (!isCount(job.k) || job.k < 1)) fail(where, 'job.k must be an integer >= 1');
  if (!isObject(job.parameters)) fail(where, 'job.parameters must be an object');
  for (const [name, values] of Object.entries(job.parameters)) {
    if (!Array.isArray(values) || !values.every((v) => typeof v === 'number' && Number.isFinite(v))) {
      fail(where, `job.parameters.${name} must be a list of finite numbers`);
    }
  }
}

function checkPlan(plan: unknown, where: string): asserts plan is JobPlan {
  if (!isObject(plan)) fail(where, 'expected a JSON object');
  if (plan.format !== PLAN_FORMAT) fail(where, `format must be '${PLAN_FORMAT}'`);
  if (plan.version !== PLAN_VERSION) {
    fail(where, `version ${String(plan.version)}; this keops-node reads plan version ${PLAN_VERSION}`);
  }
  if (typeof plan.hash !== 'string' || !/^[0-9a-f]{64}$/.test(plan.hash))
    fail(where, 'hash must be a sha256');
  checkJob(where, plan.job);
  if (!isCount(plan.queryRows) || !isCount(plan.baseRows))
    fail(where, 'queryRows and baseRows must be counts');
  if (!isObject(plan.inputs) || Object.keys(plan.inputs).length === 0)
    fail(where, 'inputs must be an object');
  for (const [name, input] of Object.entries(plan.inputs)) {
    if (
      !isObject(input) ||
      !isText(input.location) ||
      (input.axis !== 'query' && input.axis !== 'base') ||
      !isCount(input.rows) ||
      !isCount(input.dim) ||
      !STORAGE_DTYPES.includes(input.dtype as StorageDtype)
    ) {
      fail(where, `inputs.${name} must be { location, axis: 'query' | 'base', rows, dim, dtype }`);
    }
    const rows = input.axis === 'query' ? plan.queryRows : plan.baseRows;
    if (input.rows !== rows) fail(where, `inputs.${name} has ${input.rows} rows, its axis ${rows}`);
  }
  checkSlices(where, 'querySlices', plan.querySlices, plan.queryRows);
  checkSlices(where, 'baseSlices', plan.baseSlices, plan.baseRows);
  if (!isCount(plan.chunkRows) || plan.chunkRows < 1) fail(where, 'chunkRows must be an integer >= 1');
  if (!isText(plan.shardDir)) fail(where, 'shardDir must be a path');
  if (!isObject(plan.outputs) || !Object.values(plan.outputs).every(isText)) {
    fail(where, 'outputs must map roles to paths');
  }
  if (planHashOf(plan as unknown as JobPlan) !== plan.hash) {
    fail(where, 'its hash does not match its content (the file was edited or damaged)');
  }
}
