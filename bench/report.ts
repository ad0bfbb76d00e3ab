/**
 * What the benchmark scripts share to report: lines printed as they come and kept for bench/RESULTS.md, the
 * machine's load average (this machine is shared: figures are only comparable within one run), and the closing
 * lines appended to RESULTS.md.
 */
import { appendFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';

/** The 1-minute load average, as the reports print it. */
export function loadAverage(): string {
  return loadavg()[0].toFixed(1);
}

export interface Report {
  /** Prints a line and keeps it for RESULTS.md. */
  readonly out: (line: string) => void;
  /** Prints the load average after the run, then appends every kept line to bench/RESULTS.md. */
  readonly finish: () => void;
}

export function benchReport(): Report {
  const lines: string[] = [];
  const out = (line: string): void => {
    lines.push(line);
    console.log(line);
  };
  return {
    out,
    finish: () => {
      out('');
      out(
        `Load average after the run: ${loadAverage()} (other jobs share this machine when it exceeds ` +
          `${cpus().length}).`,
      );
      out('');
      appendFileSync(join(__dirname, 'RESULTS.md'), `\n${lines.join('\n')}\n`);
    },
  };
}
