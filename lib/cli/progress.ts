/**
 * Progress of a long command: on a terminal a cli-progress bar (percentage, rows, pairs/s, ETA), redrawn in
 * place; elsewhere (a log file, a CI job) a plain line at most every `intervalMs`, so logs stay short.
 */
import { SingleBar } from 'cli-progress';
import type { KnnJobProgress } from '../jobs/knn-job';

/** Where a job is: pairs evaluated (those done before a resume included), rows written. */
export type ProgressState = KnnJobProgress;

export interface ProgressDisplay {
  update(state: ProgressState): void;
  /** Ends the display (the bar's line is kept); idempotent. */
  stop(): void;
}

/** Pairs per second over this run, 0 before any time has passed. */
export function pairsPerSecond(state: ProgressState): number {
  return state.elapsedMs > 0 ? ((state.pairsDone - state.pairsAtStart) * 1000) / state.elapsedMs : 0;
}

/** Seconds left at the current rate, or undefined when unknown. */
export function secondsLeft(state: ProgressState): number | undefined {
  const rate = pairsPerSecond(state);
  return rate > 0 ? (state.pairsTotal - state.pairsDone) / rate : undefined;
}

/** `1.23e+9`-style numbers read badly in a progress line: 1.23 G. */
export function formatRate(perSecond: number): string {
  const units = ['', 'k', 'M', 'G', 'T'];
  let value = perSecond;
  let u = 0;
  while (value >= 1000 && u < units.length - 1) {
    value /= 1000;
    u++;
  }
  return `${value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0)} ${units[u]}`;
}

/** 75 s → "1m15s"; undefined → "?". */
export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

const percent = (state: ProgressState) =>
  state.pairsTotal > 0 ? (100 * state.pairsDone) / state.pairsTotal : 100;

/** One plain progress line: `knn: 42.0% (4200/10000 rows), 1.52 G pairs/s, ETA 1m05s`. */
export function progressLine(label: string, state: ProgressState): string {
  return (
    `${label}: ${percent(state).toFixed(1)}% (${state.rowsDone}/${state.rows} rows), ` +
    `${formatRate(pairsPerSecond(state))}pairs/s, ETA ${formatDuration(secondsLeft(state))}`
  );
}

/** Plain lines through `write`: the first at once, then at most every `intervalMs`, and the last one. */
export function lineProgress(
  label: string,
  write: (line: string) => void,
  intervalMs: number,
): ProgressDisplay {
  let last = -Infinity;
  let ended = false;
  return {
    update(state) {
      const end = state.rowsDone === state.rows; // the last line always comes, once
      if (ended || (state.elapsedMs - last < intervalMs && !end)) return;
      last = state.elapsedMs;
      ended = end;
      write(progressLine(label, state));
    },
    stop() {},
  };
}

/** A progress bar redrawn in place on a terminal stream. */
export function barProgress(label: string, stream: NodeJS.WritableStream): ProgressDisplay {
  const bar = new SingleBar({
    stream,
    format: `${label} [{bar}] {percentage}% | {rowsDone}/{rows} rows | {rate}pairs/s | ETA {left}`,
    hideCursor: true,
    gracefulExit: false,
    fps: 5,
  });
  let started = false;
  let stopped = false;
  return {
    update(state) {
      if (stopped) return;
      const payload = {
        rowsDone: state.rowsDone,
        rows: state.rows,
        rate: formatRate(pairsPerSecond(state)),
        left: formatDuration(secondsLeft(state)),
      };
      // The bar counts pairs; its total is at least 1 so that an empty job shows 100%.
      if (!started) bar.start(Math.max(1, state.pairsTotal), state.pairsDone, payload);
      else bar.update(state.pairsDone, payload);
      started = true;
    },
    stop() {
      if (started && !stopped) bar.stop();
      stopped = true;
    },
  };
}
