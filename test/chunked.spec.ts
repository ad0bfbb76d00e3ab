/**
 * Chunked runs (lib/jobs/chunked.ts) on the CPU backend: inputs from arrays, read(start, end) functions and
 * streams, random chunkings (1-row chunks included) give the single call's result (indices exactly, float32
 * sums within 1e-6); memoryLimit sizes the chunks and a too small one names the minimum; progress, abort, and
 * bad sources are typed errors that leave no read running and close streams.
 */
import { expect } from 'chai';
import { Genred } from '../lib/genred';
import { reduceChunked } from '../lib/jobs/chunked';
import { PartialReducer } from '../lib/jobs/partial';
import type { RowSource } from '../lib/jobs/sources';
import { expectRelative, randArray, rejection, rng, useTestKernelCache } from './util';

const ALIASES = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)'];
const gauss = () => new Genred('Exp(-SqDist(x,y))*b', ALIASES, { reduction: 'Sum', axis: 1, backend: 'cpu' });
const knn = () => new Genred('SqDist(x,y)', ALIASES, { reduction: 'ArgKMin', k: 4, axis: 1, backend: 'cpu' });

function data(M: number, N: number, seed: number): Float32Array[] {
  const r = rng(seed);
  return [randArray(r, 3 * M), randArray(r, 3 * N), randArray(r, 2 * N)].map((a) => Float32Array.from(a));
}

/** A read(start, end) source over `array` that counts its reads. */
function rangeSource(array: Float32Array, dim: number) {
  const source = {
    rows: array.length / dim,
    reads: 0,
    targets: 0,
    read(start: number, end: number, target?: Float32Array | Float64Array) {
      source.reads++;
      // Fill the run's recycled array when it offers one (the same array comes back two chunks later).
      if (target instanceof Float32Array) {
        expect(target.length).to.equal((end - start) * dim);
        source.targets++;
        target.set(array.subarray(start * dim, end * dim));
        return Promise.resolve(target);
      }
      return Promise.resolve(array.slice(start * dim, end * dim));
    },
  };
  return source;
}

/** A stream yielding `array` in chunks of random sizes (1 row included), recording whether it was closed. */
function streamSource(array: Float32Array, dim: number, r: () => number) {
  const rows = array.length / dim;
  const state = { closed: false };
  async function* chunks() {
    try {
      for (let at = 0; at < rows;) {
        const n = Math.min(rows - at, r() < 0.3 ? 1 : 1 + Math.floor(r() * 9));
        yield array.slice(at * dim, (at + n) * dim);
        at += n;
      }
    } finally {
      state.closed = true;
    }
  }
  return { source: { rows, chunks: chunks() } as RowSource, state };
}

describe('chunked runs', function () {
  this.timeout(600_000);
  useTestKernelCache();

  it('random chunkings of every source kind give the single call (Sum within 1e-6, ArgKMin exactly)', async function () {
    const r = rng(5);
    const M = 19;
    const N = 83;
    const [x, y, b] = data(M, N, 21);
    for (const [make, exact] of [
      [gauss, false],
      [knn, true],
    ] as const) {
      const g: Genred = make();
      const reducer = new PartialReducer(g);
      const whole = (await g.call([x, y, b])) as Float32Array | Int32Array;
      for (let trial = 0; trial < 6; trial++) {
        const kinds = [trial % 3, (trial + 1) % 3, (trial + 2) % 3];
        const asSource = (array: Float32Array, dim: number, kind: number): RowSource =>
          kind === 0 ? array : kind === 1 ? rangeSource(array, dim) : streamSource(array, dim, r).source;
        const output = 1 + Math.floor(r() * M);
        const reduced = trial === 0 ? 1 : 1 + Math.floor(r() * 30);
        // A streamed reduced axis is read once: give it a single output block.
        const streamed = kinds[1] === 2 || kinds[2] === 2;
        const result = await reduceChunked(
          reducer,
          [asSource(x, 3, kinds[0]), asSource(y, 3, kinds[1]), asSource(b, 2, kinds[2])],
          {
            chunkRows: { output: streamed ? M : output, reduced },
          },
        );
        const what = `${g.reductionName} trial ${trial} (blocks of ${output}, chunks of ${reduced})`;
        expect(result.constructor, what).to.equal(whole.constructor);
        if (exact) expect(Array.from(result as Int32Array), what).to.deep.equal(Array.from(whole));
        else expectRelative(result as Float32Array, whole, 1e-6, what);
      }
    }
  });

  it('memoryLimit picks the chunk sizes; too small a limit is ERR_MEMORY_LIMIT naming the minimum', async function () {
    const M = 20;
    const N = 120;
    const [x, y, b] = data(M, N, 22);
    const g = knn();
    const reducer = new PartialReducer(g);
    const whole = (await g.call([x, y, b])) as Int32Array;
    const error = await rejection(reduceChunked(reducer, [x, y, b], { memoryLimit: 100 }));
    expect(error.code).to.equal('ERR_MEMORY_LIMIT');
    const minimum = Number(/minimum of (\d+) bytes/.exec(error.message)?.[1]);
    expect(minimum).to.be.greaterThan(100);
    // At the minimum: one output row and one reduced row at a time, and still the same result.
    const ySource = rangeSource(y, 3);
    const tiny = await reduceChunked(reducer, [x, ySource, b], { memoryLimit: minimum });
    expect(Array.from(tiny as Int32Array)).to.deep.equal(Array.from(whole));
    expect(ySource.reads).to.equal(M * N);
    expect(ySource.targets).to.equal(M * N);
    // A limit holding every output row reads the base once, in few chunks.
    const once = rangeSource(y, 3);
    await reduceChunked(reducer, [x, once, b], { memoryLimit: 1 << 20 });
    expect(once.reads).to.equal(1);
    const some = rangeSource(y, 3);
    const mid = await reduceChunked(reducer, [x, some, b], { memoryLimit: 3000 });
    expect(some.reads).to.be.greaterThan(1);
    expect(Array.from(mid as Int32Array)).to.deep.equal(Array.from(whole));
    // A stream cannot be re-read for a second output block.
    const stream = streamSource(y, 3, rng(1));
    const streamed = await rejection(
      reduceChunked(reducer, [x, stream.source, b], { memoryLimit: minimum * 2 }),
    );
    expect(streamed.code).to.equal('ERR_MEMORY_LIMIT');
    expect(streamed.message).to.contain('read once');
  });

  it('reports progress (monotone, rate-limited, complete at the end)', async function () {
    const [x, y, b] = data(10, 200, 23);
    const reports: { pairsDone: number; pairsTotal: number; elapsedMs: number }[] = [];
    const started = Date.now();
    await reduceChunked(gauss(), [x, y, b], {
      chunkRows: { reduced: 2 },
      onProgress: (p) => reports.push(p),
    });
    const elapsed = Date.now() - started;
    expect(reports.length).to.be.at.least(1);
    expect(reports.length).to.be.at.most(Math.floor(elapsed / 100) + 2);
    const last = reports[reports.length - 1];
    expect(last.pairsDone).to.equal(2000);
    expect(last.pairsTotal).to.equal(2000);
    for (let k = 1; k < reports.length; k++) {
      expect(reports[k].pairsDone).to.be.at.least(reports[k - 1].pairsDone);
      expect(reports[k].elapsedMs).to.be.at.least(reports[k - 1].elapsedMs);
    }
  });

  it('an AbortSignal stops the run between chunks with ERR_ABORTED and closes the streams', async function () {
    const [x, y, b] = data(10, 200, 24);
    const pre = new AbortController();
    pre.abort();
    const ySource = rangeSource(y, 3);
    expect((await rejection(reduceChunked(gauss(), [x, ySource, b], { signal: pre.signal }))).code).to.equal(
      'ERR_ABORTED',
    );
    expect(ySource.reads).to.equal(0);
    const controller = new AbortController();
    const stream = streamSource(b, 2, rng(2));
    let reads = 0;
    const counting = {
      rows: 200,
      read(start: number, end: number) {
        if (++reads === 5) controller.abort();
        return y.slice(start * 3, end * 3);
      },
    };
    const error = await rejection(
      reduceChunked(gauss(), [x, counting, stream.source], {
        chunkRows: { reduced: 10 },
        signal: controller.signal,
      }),
    );
    expect(error.code).to.equal('ERR_ABORTED');
    expect(reads).to.be.below(8);
    expect(stream.state.closed).to.equal(true);
  });

  describe('bad sources are ERR_SOURCE, naming the source and rows', function () {
    const [x, y, b] = data(6, 30, 25);
    const cases: [string, RowSource, RegExp][] = [
      [
        'a short read',
        { rows: 30, read: (s, e) => y.slice(s * 3, e * 3 - 1) },
        /source 1 \(y\): rows \[\d+, \d+\).*expected/,
      ],
      [
        'a float64 read in a float32 run',
        { rows: 30, read: (s, e) => Float64Array.from(y.slice(s * 3, e * 3)) },
        /float64/,
      ],
      [
        'a non-array',
        { rows: 30, read: () => [1, 2, 3] as unknown as Float32Array },
        /expected a Float32Array/,
      ],
      [
        'a throwing read',
        {
          rows: 30,
          read: () => {
            throw new Error('disk on fire');
          },
        },
        /disk on fire/,
      ],
      ['a stream ending early', { rows: 30, chunks: [y.slice(0, 30)] }, /ended after fewer rows/],
      ['a stream of partial rows', { rows: 30, chunks: [y.slice(0, 31), y.slice(31)] }, /not whole rows/],
    ];
    for (const [what, source, message] of cases) {
      it(what, async function () {
        const error = await rejection(reduceChunked(gauss(), [x, source, b], { chunkRows: { reduced: 7 } }));
        expect(error.code, error.message).to.equal('ERR_SOURCE');
        expect(error.message).to.match(message);
      });
    }
    it('mismatched row counts, unknown options and wrong source counts are rejected before any read', async function () {
      const ySource = rangeSource(y, 3);
      expect((await rejection(reduceChunked(gauss(), [x, ySource, b.subarray(2)]))).code).to.equal(
        'ERR_ARG_SHAPE',
      );
      expect(
        (await rejection(reduceChunked(gauss(), [x, ySource, b], { memoryLimt: 5 } as never))).code,
      ).to.equal('ERR_INVALID_ARGUMENT');
      expect((await rejection(reduceChunked(gauss(), [x, ySource]))).code).to.equal('ERR_ARG_COUNT');
      expect(ySource.reads).to.equal(0);
    });
  });
});
