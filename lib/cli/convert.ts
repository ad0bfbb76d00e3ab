/**
 * `keops-node convert IN OUT [--from FORMAT] [--to FORMAT] [--dtype DTYPE]`: converts a vector file to another
 * format, streamed in blocks of rows, writing OUT only when complete.
 */
import { Option } from 'commander';
import { convertVectorFile } from '../io/convert-file';
import { VECTOR_FILE_FORMATS, type VectorFileFormat } from '../io/formats';
import { STORAGE_DTYPES, type StorageDtype } from '../io/vector-source';
import { type CommandOutput, newCommand, runCommand } from './commander-io';

export const CONVERT_SUMMARY =
  'convert a vector file to another format (.fvecs .ivecs .bvecs .fbin .u8bin .i8bin .ibin .npy IDX)';

const FORMATS = Object.keys(VECTOR_FILE_FORMATS);

/** Runs `keops-node convert ...` (argv after `convert`); returns the exit code. */
export function convertCommand(argv: readonly string[], io: CommandOutput): Promise<number> {
  const command = newCommand('convert', io)
    .description(
      'Converts the vector file IN to OUT, streamed in blocks of rows; OUT appears only once complete.',
    )
    .addHelpText(
      'after',
      `
Formats come from the file names (IN may be gzipped: name.ext.gz) or --from / --to.

The stored dtype of OUT is --dtype if given, else that of IN when OUT's format holds it, else the first
dtype of OUT's format that holds every value of IN exactly, or a narrower float (float64 -> float32,
rounding to nearest). Other conversions (float -> int, int32 -> float32, int -> narrower int) may change
values and need --dtype: floats then round to the nearest integer (ties to even), and a value out of the
target's range stops the conversion with an error naming its row and column.

Exit codes: 0 done, 1 failed (the error code and message are printed), 2 usage error.`,
    )
    .argument('<IN>', 'the vector file to read')
    .argument('<OUT>', 'the vector file to write (replaced if it exists)')
    .addOption(new Option('--from <FORMAT>', 'format of IN').choices(FORMATS))
    .addOption(new Option('--to <FORMAT>', 'format of OUT').choices(FORMATS))
    .addOption(new Option('--dtype <DTYPE>', 'stored dtype of OUT').choices(STORAGE_DTYPES));
  return runCommand('convert', command, argv, io, async (parsed) => {
    const [input, output] = parsed.processedArgs as [string, string];
    const options = parsed.opts<{ from?: VectorFileFormat; to?: VectorFileFormat; dtype?: StorageDtype }>();
    const done = await convertVectorFile(input, output, options);
    io.out(
      `${output}: ${done.rows} rows × ${done.dim} ${done.to.dtype} (.${done.to.format}), from ${done.from.dtype} (.${done.from.format})`,
    );
  });
}
