/**
 * `keops-node recall --result FILE --truth FILE [-k K]`: prints `recall@K: 0.xxxx`, the mean over queries of
 * |first K result ids ∩ first K truth ids| / K.
 */
import { Option } from 'commander';
import { VECTOR_FILE_FORMATS, type VectorFileFormat } from '../io/formats';
import { openVectorFile, type VectorFile } from '../io/vector-file';
import { recall } from '../knn/recall';
import { type CommandOutput, integerOption, newCommand, runCommand } from './commander-io';

export const RECALL_SUMMARY = 'print recall@K of k-NN result ids against ground-truth ids';

const FORMATS = Object.keys(VECTOR_FILE_FORMATS);

/** Runs `keops-node recall ...` (argv after `recall`); returns the exit code. */
export function recallCommand(argv: readonly string[], io: CommandOutput): Promise<number> {
  const command = newCommand('recall', io)
    .description('Prints recall@K of k-NN result ids against ground-truth ids.')
    .addHelpText(
      'after',
      `
--result and --truth are vector files of integer ids, one row per query (.ivecs, .ibin, int32 / int64 .npy...):

  recall@K = mean over queries q of |first K ids of result row q ∩ first K ids of truth row q| / K

Negative ids (-1: a missing neighbour) match nothing; an id repeated in a row counts once. The truth may
have more columns than the result; both must have the same number of rows.

Exit codes: 0 done, 1 failed (the error code and message are printed), 2 usage error.`,
    )
    .requiredOption('--result <FILE>', 'k-NN result ids')
    .requiredOption('--truth <FILE>', 'ground-truth ids')
    .option('-k, --k <K>', "K (default: the result's columns)", integerOption(1))
    .addOption(
      new Option('--result-format <FORMAT>', 'format of --result (default: from its name)').choices(FORMATS),
    )
    .addOption(
      new Option('--truth-format <FORMAT>', 'format of --truth (default: from its name)').choices(FORMATS),
    );
  return runCommand('recall', command, argv, io, async (parsed) => {
    const options = parsed.opts<{
      result: string;
      truth: string;
      k?: number;
      resultFormat?: VectorFileFormat;
      truthFormat?: VectorFileFormat;
    }>();
    const files: VectorFile[] = [];
    try {
      files.push(await openVectorFile(options.result, { format: options.resultFormat }));
      files.push(await openVectorFile(options.truth, { format: options.truthFormat }));
      const measured = await recall(files[0], files[1], { k: options.k });
      io.out(`recall@${measured.k}: ${measured.recall.toFixed(4)}`);
    } finally {
      await Promise.all(files.map((f) => f.close()));
    }
  });
}
