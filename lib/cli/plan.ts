/**
 * `keops-node plan PLAN.json [options]`: writes the plan of a k-NN job (--base, --queries, -k) or of a reduction
 * job (--formula), cut into shards, for `keops-node shard`, `keops-node merge`, `keops-node submit` and the
 * workers (lib/distributed).
 */
import { InvalidArgumentError, Option } from 'commander';
import { KNN_METRICS, type KnnMetricName } from '../knn/metric';
import { createKnnPlan, createReductionPlan, type PlanLayout } from '../distributed/planner';
import { defaultShardDir, shardCount, writePlan } from '../distributed/plan';
import { fileStorage } from '../distributed/storage';
import { type CommandOutput, integerOption, newCommand, runCommand } from './commander-io';
import { splitAliases } from './graph';

const HELP_AFTER = `
A k-NN job: --base FILE [--queries FILE] -k K --ids FILE [--distances FILE] [--metric M] [--exclude-self].
A reduction job: --formula F -a ALIASES --input NAME=FILE ... [--param NAME=V1,V2 ...] --values FILE
[--indices FILE] [--reduction NAME] [--axis 0|1] [-k K].

The job is cut into (query slices) x (base slices) shards; shard s covers query slice floor(s / B) and base
slice s mod B. Input files must be readable, and --shard-dir and the outputs writable, at the same paths on
every machine that runs a shard or the merge. Then, anywhere:
  keops-node shard --plan PLAN.json --index I     (one per shard, in any order, on any machine)
  keops-node merge --plan PLAN.json               (checks every shard, writes the outputs)
or with Redis: keops-node submit --plan PLAN.json --redis URL, and keops-node worker --redis URL.

Exit codes: 0 plan written, 1 failed (the message starts with the error code), 2 bad arguments.`;

interface PlanArguments {
  base?: string;
  queries?: string;
  k?: number;
  ids?: string;
  distances?: string;
  metric: string;
  excludeSelf?: boolean;
  formula?: string;
  formula2?: string;
  aliases?: string[];
  reduction?: string;
  axis?: string;
  input?: string[];
  param?: string[];
  values?: string;
  indices?: string;
  dtype?: 'float32' | 'float64';
  shards?: number;
  querySlices?: number;
  baseSlices?: number;
  chunkRows?: number;
  shardDir?: string;
}

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

function namedPairs(list: readonly string[] | undefined, what: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const item of list ?? []) {
    const at = item.indexOf('=');
    if (at <= 0) throw new InvalidArgumentError(`${what} '${item}': expected NAME=VALUE`);
    out.set(item.slice(0, at).trim(), item.slice(at + 1).trim());
  }
  return out;
}

export const PLAN_SUMMARY =
  'write the plan of a k-NN or reduction job cut into shards (for shard, merge, submit)';

export function planCommand(argv: readonly string[], io: CommandOutput): Promise<number> {
  const command = newCommand('plan', io)
    .description(PLAN_SUMMARY)
    .addHelpText('after', HELP_AFTER)
    .argument('<plan>', 'the plan file to write (JSON)')
    .option('--base <file>', 'k-NN: the base vectors')
    .option('--queries <file>', 'k-NN: the query vectors (default: the base, with --exclude-self)')
    .option('-k <k>', 'k-NN: neighbours per query; KMin-type reductions: K', integerOption(1))
    .option('--ids <file>', 'k-NN: the ids output (.ibin, .ivecs, .npy)')
    .option('--distances <file>', 'k-NN: the distances output (.fbin, .fvecs, .npy)')
    .addOption(new Option('--metric <metric>', 'k-NN metric').choices(KNN_METRICS).default('l2'))
    .option('--exclude-self', 'k-NN: query i never gets base row i')
    .option('--formula <formula>', "reduction: the formula, e.g. 'Exp(-SqDist(x,y))*b'")
    .option('--formula2 <formula>', 'reduction: the weight formula of LogSumExpWeight / SumSoftMaxWeight')
    .option(
      '-a, --aliases <aliases>',
      "reduction: variables, e.g. 'x = Vi(3), y = Vj(3), b = Vj(1)'",
      collect,
    )
    .option('--reduction <name>', 'reduction: Sum, LogSumExp, Min, ArgKMin, ... (default Sum)')
    .addOption(
      new Option('--axis <axis>', 'reduction: 1 reduces over j (one row per i), 0 over i').choices([
        '0',
        '1',
      ]),
    )
    .option('--input <name=file>', 'reduction: the file of an i- or j-indexed variable (repeat)', collect)
    .option('--param <name=values>', 'reduction: a parameter, comma-separated numbers (repeat)', collect)
    .option('--values <file>', 'reduction: the values output')
    .option('--indices <file>', 'reduction: the indices output (ArgMin, ArgKMin, ...)')
    .addOption(new Option('--dtype <dtype>', 'compute dtype').choices(['float32', 'float64']))
    .option('--shards <n>', 'shorthand for --query-slices N', integerOption(1))
    .option('--query-slices <n>', 'slices of the query (output) rows (default 1)', integerOption(1))
    .option('--base-slices <n>', 'slices of the base (reduced) rows (default 1)', integerOption(1))
    .option('--chunk-rows <n>', 'base rows per kernel call inside a shard (default 65536)', integerOption(1))
    .option('--shard-dir <dir>', 'where shard results go (default: PLAN.shards beside the plan)');
  return runCommand('plan', command, argv, io, async (parsed) => {
    const args = parsed.opts<PlanArguments>();
    const planPath = parsed.args[0];
    const usage = (message: string): never => parsed.error(`error: ${message}`);
    if (args.shards !== undefined && args.querySlices !== undefined)
      usage('give --shards or --query-slices, not both');
    let inputs: Map<string, string> = new Map();
    let params: Map<string, string> = new Map();
    try {
      inputs = namedPairs(args.input, '--input');
      params = namedPairs(args.param, '--param');
    } catch (e) {
      usage((e as Error).message);
    }
    const isReduction = args.formula !== undefined;
    if (!isReduction) {
      if (args.base === undefined || args.k === undefined) {
        usage('a k-NN plan needs --base and -k (or a reduction: --formula)');
      }
      if (args.queries === undefined && args.excludeSelf !== true) {
        usage('--queries is required, unless --exclude-self (the base is then its own query set)');
      }
      if (args.ids === undefined && args.distances === undefined) usage('give --ids and/or --distances');
    } else if (args.values === undefined && args.indices === undefined) {
      usage('give --values and/or --indices');
    }
    const parameters: Record<string, number[]> = {};
    for (const [name, text] of params) {
      const values = text.split(',').map((v) => Number(v.trim()));
      if (values.some((v) => !Number.isFinite(v))) usage(`--param ${name}: expected comma-separated numbers`);
      parameters[name] = values;
    }
    const layout: PlanLayout = {
      querySlices: args.shards ?? args.querySlices,
      baseSlices: args.baseSlices,
      chunkRows: args.chunkRows,
      shardDir: args.shardDir ?? defaultShardDir(planPath),
    };
    const storage = fileStorage();
    const plan = isReduction
      ? await createReductionPlan(
          {
            ...layout,
            formula: args.formula as string,
            formula2: args.formula2,
            aliases: (args.aliases ?? []).flatMap(splitAliases),
            reduction: args.reduction,
            axis: args.axis === undefined ? undefined : (Number(args.axis) as 0 | 1),
            k: args.k,
            dtype: args.dtype,
            inputs: Object.fromEntries(inputs),
            parameters,
            outputs: { values: args.values, indices: args.indices },
          },
          storage,
        )
      : await createKnnPlan(
          {
            ...layout,
            base: args.base as string,
            queries: args.queries ?? (args.base as string),
            k: args.k as number,
            metric: args.metric as KnnMetricName,
            excludeSelf: args.excludeSelf === true,
            dtype: args.dtype,
            outputs: { ids: args.ids, distances: args.distances },
          },
          storage,
        );
    await writePlan(planPath, plan);
    const total = shardCount(plan);
    io.out(
      `plan ${planPath}: ${plan.job.kind} job, ${plan.queryRows} x ${plan.baseRows} rows, ${total} shards ` +
        `(${plan.querySlices.length} query slices x ${plan.baseSlices.length} base slices), hash ${plan.hash.slice(0, 16)}`,
    );
    io.out(
      `  run keops-node shard --plan ${planPath} --index I for I = 0..${total - 1}, then keops-node merge --plan ${planPath}`,
    );
  });
}
