/**
 * `keops-node merge --plan PLAN.json`: checks that every shard result of the plan is there and belongs to it, then
 * writes the job's outputs (what the single-machine job writes, byte for byte for k-NN ids and distances).
 */
import { readPlan } from '../distributed/plan';
import { mergePlan } from '../distributed/shards';
import { fileStorage } from '../distributed/storage';
import { type CommandOutput, newCommand, runCommand } from './commander-io';

const HELP_AFTER = `
Reads the plan's shard results in plan order (each query slice's shards by base slice), so the outputs
never depend on where or when shards ran. A missing, damaged, stale or foreign shard result fails the merge
with ERR_SHARD naming the shard and its file; nothing is then written to the outputs.

Exit codes: 0 outputs written, 1 failed (the message starts with the error code), 2 bad arguments.`;

export const MERGE_SUMMARY = "check a job plan's shard results and write its outputs";

export function mergeCommand(argv: readonly string[], io: CommandOutput): Promise<number> {
  const command = newCommand('merge', io)
    .description(MERGE_SUMMARY)
    .addHelpText('after', HELP_AFTER)
    .requiredOption('--plan <file>', 'the plan (keops-node plan)');
  return runCommand('merge', command, argv, io, async (parsed) => {
    const args = parsed.opts<{ plan: string }>();
    const plan = await readPlan(args.plan);
    const result = await mergePlan(plan, { storage: fileStorage() });
    io.out(`merged ${result.shards} shards (${result.queryRows} rows)`);
    for (const [role, location] of Object.entries(result.outputs)) io.out(`  wrote ${role}: ${location}`);
  });
}
