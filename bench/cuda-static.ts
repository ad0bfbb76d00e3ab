/**
 * Static report of the CUDA kernels (no GPU needed): for the benchmark formulas, the kernels are generated exactly
 * as the CUDA backend does (lib/codegen/cuda.ts, same sum scheme and flags as lib/backend/cuda), compiled by nvcc
 * for sm_90, and for each one this prints
 *   - registers, stack frame and spill bytes from `ptxas -v` (every entry point);
 *   - the occupancy those give on an H100 with the block size and shared memory the runtime would use;
 *   - the PTX instructions per pair of the hot path of the inner j loop of the 1D kernel.
 *
 *   npx ts-node --transpile-only bench/cuda-static.ts [--label before|after|...] [--write] [--keep DIR] [--only ID,...]
 *   (npm run bench:cuda-static -- --label after --write)
 *
 * --write appends the table to bench/RESULTS.md; --keep DIR leaves the .cu, .ptx and ptxas logs there.
 *
 * How the instructions per pair are counted (PTX, since no disassembler for sm_90 SASS is available here): the
 * PTX of `<prefix>_1d` is cut into basic blocks; the loop counted is the one that loads from shared memory and whose
 * hot path enters no inner loop that does (the unrolled j loop, not its remainder: the one loading the most bytes
 * per trip; the screened KMin loop, whose exact evaluations form a cold inner loop); its
 * hot path is the shortest path, in instructions, from its header back to it (the KMin guard that rejects, the
 * LogSumExp term below the running maximum, exp without its range fix-up). Pairs per trip = shared bytes loaded on
 * that path / bytes of one j record × output rows per thread. PTX is not SASS: ptxas folds some address
 * arithmetic and moves into other instructions, so the SASS count is usually a little lower; ratios between two
 * versions of the generator are what this measures.
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chooseBlockSize, type CudaLaunchDevice } from '../lib/backend/cuda/launch';
import { type CudaDtype, type CudaKernels, generateCudaKernels } from '../lib/codegen/cuda';
import { parseReductionWithVariables } from '../lib/formula/index';

const ROOT = join(__dirname, '..');
const NVCC = process.env.NVCC ?? '/usr/local/bin/nvcc';

/** H100 SXM (sm_90) limits used by the occupancy estimate. */
const H100: CudaLaunchDevice & {
  readonly regsPerSm: number;
  readonly maxWarpsPerSm: number;
  readonly maxBlocksPerSm: number;
  readonly sharedPerSm: number;
  readonly sharedReservedPerBlock: number;
} = {
  multiprocessors: 132,
  maxThreadsPerBlock: 1024,
  sharedMemoryPerBlock: 48 * 1024,
  sharedMemoryPerBlockOptin: 227 * 1024,
  regsPerSm: 65536,
  maxWarpsPerSm: 64,
  maxBlocksPerSm: 32,
  sharedPerSm: 228 * 1024,
  sharedReservedPerBlock: 1024,
};

interface Case {
  readonly id: string;
  readonly label: string;
  readonly text: string;
  readonly aliases: readonly string[];
  readonly dtype: CudaDtype;
  /** Generate the tensor-core kernels (what the runtime does on compute capability 8.0 and later). */
  readonly tensorCores?: boolean;
}

const GAUSS = ['x = Vi(0,3)', 'y = Vj(1,3)', 'b = Vj(2,1)'];
const CASES: readonly Case[] = [
  {
    id: 'gauss-f32',
    label: 'Gaussian sum f32, D=3',
    text: 'Sum_Reduction(Exp(-SqDist(x,y))*b,0)',
    aliases: GAUSS,
    dtype: 'float32',
  },
  {
    id: 'gauss-scaled-f32',
    label: 'Gaussian sum f32, D=3, scale g',
    text: 'Sum_Reduction(Exp(-g*SqDist(x,y))*b,0)',
    aliases: [...GAUSS, 'g = Pm(3,1)'],
    dtype: 'float32',
  },
  {
    id: 'gauss-f64',
    label: 'Gaussian sum f64, D=3',
    text: 'Sum_Reduction(Exp(-SqDist(x,y))*b,0)',
    aliases: GAUSS,
    dtype: 'float64',
  },
  {
    id: 'argkmin-d3',
    label: 'ArgKMin K=10 f32, D=3',
    text: 'ArgKMin_Reduction(SqDist(x,y),10,0)',
    aliases: ['x = Vi(0,3)', 'y = Vj(1,3)'],
    dtype: 'float32',
  },
  {
    id: 'argkmin-d128',
    label: 'ArgKMin K=10 f32, D=128',
    text: 'ArgKMin_Reduction(SqDist(x,y),10,0)',
    aliases: ['x = Vi(0,128)', 'y = Vj(1,128)'],
    dtype: 'float32',
  },
  {
    id: 'argkmin-d128-tc',
    label: 'ArgKMin K=10 f32, D=128, tensor cores',
    text: 'ArgKMin_Reduction(SqDist(x,y),10,0)',
    aliases: ['x = Vi(0,128)', 'y = Vj(1,128)'],
    dtype: 'float32',
    tensorCores: true,
  },
  {
    id: 'ip-d128',
    label: 'KMin_ArgKMin K=10 f32, -(x|y), D=128',
    text: 'KMin_ArgKMin_Reduction(-(x|y),10,0)',
    aliases: ['x = Vi(0,128)', 'y = Vj(1,128)'],
    dtype: 'float32',
  },
  {
    id: 'ip-d128-tc',
    label: 'KMin_ArgKMin K=10 f32, -(x|y), D=128, tensor cores',
    text: 'KMin_ArgKMin_Reduction(-(x|y),10,0)',
    aliases: ['x = Vi(0,128)', 'y = Vj(1,128)'],
    dtype: 'float32',
    tensorCores: true,
  },
  {
    id: 'argkmin-d784',
    label: 'ArgKMin K=10 f32, D=784',
    text: 'ArgKMin_Reduction(SqDist(x,y),10,0)',
    aliases: ['x = Vi(0,784)', 'y = Vj(1,784)'],
    dtype: 'float32',
  },
  {
    id: 'argkmin-d784-tc',
    label: 'ArgKMin K=10 f32, D=784, tensor cores',
    text: 'ArgKMin_Reduction(SqDist(x,y),10,0)',
    aliases: ['x = Vi(0,784)', 'y = Vj(1,784)'],
    dtype: 'float32',
    tensorCores: true,
  },
  {
    id: 'lse-f32',
    label: 'LogSumExp f32, D=3',
    text: 'Max_SumShiftExp_Reduction(-SqDist(x,y),0)',
    aliases: ['x = Vi(0,3)', 'y = Vj(1,3)'],
    dtype: 'float32',
  },
];

/** The kernels the CUDA backend generates for a case (runner.ts: block_sum for sum-type reductions). */
function kernelsOf(c: Case): CudaKernels {
  const parsed = parseReductionWithVariables(c.text, c.aliases);
  const count = Math.max(...parsed.variables.map((v) => v.pos)) + 1;
  const declared = new Map(parsed.variables.map((v) => [v.pos, v]));
  const positions = Array.from({ length: count }, (_, pos) => {
    const v = declared.get(pos);
    return v === undefined ? { dim: 1, cat: 2 as const } : { dim: v.dim, cat: v.cat };
  });
  return generateCudaKernels(parsed.reduction, {
    dtype: c.dtype,
    sumScheme: parsed.reduction.def.sumType ? 'block_sum' : 'direct_sum',
    positions,
    tensorCores: c.tensorCores,
  });
}

// ---------------------------------------------------------------------------------------------------------------
// ptxas -v

interface EntryResources {
  readonly registers: number;
  readonly stack: number;
  readonly spillStores: number;
  readonly spillLoads: number;
}

function run(args: readonly string[]): { stdout: string; stderr: string } {
  const r = spawnSync(NVCC, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error !== undefined) throw new Error(`cannot run ${NVCC}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`nvcc ${args.join(' ')} failed:\n${r.stderr}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

/** Per entry point, from ptxas' "Function properties for X" and "Used N registers" lines. */
function parsePtxasLog(log: string): Map<string, EntryResources> {
  const out = new Map<string, EntryResources>();
  const re =
    /Function properties for (\w+)\s*\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads\s*\n[^\n]*Used (\d+) registers/g;
  for (const m of log.matchAll(re)) {
    out.set(m[1], {
      stack: Number(m[2]),
      spillStores: Number(m[3]),
      spillLoads: Number(m[4]),
      registers: Number(m[5]),
    });
  }
  return out;
}

interface Occupancy {
  readonly blockSize: number;
  readonly sharedBytes: number;
  readonly blocksPerSm: number;
  readonly warpsPerSm: number;
  readonly limiter: string;
}

/** Resident blocks per SM on an H100 (registers allocated per warp in units of 256, 1 KiB smem reserved per block). */
function occupancy(kernels: CudaKernels, registers: number): Occupancy {
  const block = chooseBlockSize(kernels, H100);
  const warps = Math.ceil(block.blockSize / 32);
  const regsPerWarp = Math.ceil((Math.max(registers, 1) * 32) / 256) * 256;
  const limits: [string, number][] = [
    ['registers', Math.floor(Math.floor(H100.regsPerSm / regsPerWarp) / warps)],
    ['shared memory', Math.floor(H100.sharedPerSm / (block.sharedBytes + H100.sharedReservedPerBlock))],
    ['warps', Math.floor(H100.maxWarpsPerSm / warps)],
    ['blocks', H100.maxBlocksPerSm],
  ];
  const [limiter, blocksPerSm] = limits.reduce((a, b) => (b[1] < a[1] ? b : a));
  return {
    blockSize: block.blockSize,
    sharedBytes: block.sharedBytes,
    blocksPerSm,
    warpsPerSm: blocksPerSm * warps,
    limiter,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// PTX hot path of the inner loop

interface Block {
  readonly label: string | undefined;
  readonly instructions: string[];
  readonly successors: number[];
}

/** The body of `.entry name` (between its braces). */
function entryBody(ptx: string, name: string): string {
  const start = ptx.indexOf(`.entry ${name}(`);
  if (start < 0) throw new Error(`no .entry ${name} in the PTX`);
  const open = ptx.indexOf('{', ptx.indexOf(')', start));
  let depth = 0;
  for (let k = open; k < ptx.length; k++) {
    if (ptx[k] === '{') depth++;
    else if (ptx[k] === '}' && --depth === 0) return ptx.slice(open + 1, k);
  }
  throw new Error(`unbalanced braces in .entry ${name}`);
}

function basicBlocks(body: string): Block[] {
  const lines = body
    .split('\n')
    .map((l) => l.replace(/\/\/.*$/, '').trim())
    .filter((l) => l !== '' && l !== '{' && l !== '}' && !l.startsWith('.'));
  const raw: { label: string | undefined; instructions: string[] }[] = [
    { label: undefined, instructions: [] },
  ];
  for (const line of lines) {
    const label = /^(\$?[\w$]+):$/.exec(line);
    if (label !== null) {
      raw.push({ label: label[1], instructions: [] });
      continue;
    }
    const current = raw[raw.length - 1];
    current.instructions.push(line);
    if (/^(@!?%\w+\s+)?(bra|ret|exit)\b/.test(line)) raw.push({ label: undefined, instructions: [] });
  }
  const blocks = raw.filter((b) => b.label !== undefined || b.instructions.length > 0);
  const indexOf = new Map(blocks.map((b, k) => [b.label, k]));
  return blocks.map((b, k) => {
    const last = b.instructions[b.instructions.length - 1] ?? '';
    const branch = /^(@!?%\w+\s+)?bra(?:\.uni)?\s+([\w$]+);/.exec(last);
    const successors: number[] = [];
    if (branch !== null) {
      successors.push(indexOf.get(branch[2]) as number);
      if (branch[1] !== undefined && k + 1 < blocks.length) successors.push(k + 1);
    } else if (!/^(@!?%\w+\s+)?(ret|exit)\b/.test(last) && k + 1 < blocks.length) successors.push(k + 1);
    return { label: b.label, instructions: b.instructions, successors };
  });
}

/** The shared-memory bytes one instruction reads, as (base register, first byte, end), or undefined. */
function sharedRange(instruction: string): { base: string; lo: number; hi: number } | undefined {
  const m = /^(?:@!?%\w+\s+)?ld\.shared(?:\.v(\d))?\.[a-z](\d+)\s.*\[([^\]+]+)(?:\+(-?\d+))?\]/.exec(
    instruction,
  );
  if (m === null) return undefined;
  const lo = m[4] === undefined ? 0 : Number(m[4]);
  return { base: m[3].trim(), lo, hi: lo + (m[1] === undefined ? 1 : Number(m[1])) * (Number(m[2]) / 8) };
}

/**
 * Distinct shared-memory bytes the instructions read (vector loads may overlap: a v4 load of a 12-byte record
 * also reads the next record's first value).
 */
function sharedBytesRead(instructions: readonly string[]): number {
  const byBase = new Map<string, [number, number][]>();
  for (const i of instructions) {
    const r = sharedRange(i);
    if (r === undefined) continue;
    const list = byBase.get(r.base) ?? [];
    list.push([r.lo, r.hi]);
    byBase.set(r.base, list);
  }
  let total = 0;
  for (const list of byBase.values()) {
    list.sort((a, b) => a[0] - b[0]);
    let end = -Infinity;
    for (const [lo, hi] of list) {
      if (hi <= end) continue;
      total += hi - Math.max(lo, end);
      end = hi;
    }
  }
  return total;
}

/** Natural loops (header, body) from back edges to a block at or above the branch. */
function loops(blocks: readonly Block[]): { header: number; body: Set<number> }[] {
  const predecessors = blocks.map(() => [] as number[]);
  blocks.forEach((b, k) => b.successors.forEach((s) => predecessors[s].push(k)));
  const byHeader = new Map<number, Set<number>>();
  blocks.forEach((b, k) => {
    for (const h of b.successors) {
      if (h > k) continue;
      const body = byHeader.get(h) ?? new Set([h]);
      const stack = [k];
      while (stack.length > 0) {
        const n = stack.pop() as number;
        if (body.has(n)) continue;
        body.add(n);
        stack.push(...predecessors[n]);
      }
      byHeader.set(h, body);
    }
  });
  return [...byHeader].map(([header, body]) => ({ header, body }));
}

interface HotPath {
  readonly instructions: number;
  readonly sharedBytes: number;
  /** The blocks on the path. */
  readonly blocks: ReadonlySet<number>;
  /** MUFU (ex2, lg2, rcp, rsqrt, sqrt, sin, cos approximations) and FP64 arithmetic instructions on the path. */
  readonly mufu: number;
  readonly fp64: number;
  /** mma.sync instructions (tensor cores) on the path. */
  readonly mma: number;
}

/** Shortest path (instructions) from the header back to it inside the loop (Dijkstra, small graphs). */
function hotPath(blocks: readonly Block[], loop: { header: number; body: Set<number> }): HotPath {
  const cost = (k: number): number => blocks[k].instructions.length;
  const dist = new Map<number, number>([[loop.header, cost(loop.header)]]);
  const previous = new Map<number, number>();
  const done = new Set<number>();
  let best: { d: number; last: number } | undefined;
  for (;;) {
    let u: number | undefined;
    for (const [k, d] of dist) if (!done.has(k) && (u === undefined || d < (dist.get(u) as number))) u = k;
    if (u === undefined) break;
    done.add(u);
    const du = dist.get(u) as number;
    for (const s of blocks[u].successors) {
      if (!loop.body.has(s)) continue;
      if (s === loop.header) {
        if (best === undefined || du < best.d) best = { d: du, last: u };
        continue;
      }
      const known = dist.get(s);
      if (known === undefined || du + cost(s) < known) {
        dist.set(s, du + cost(s));
        previous.set(s, u);
      }
    }
  }
  if (best === undefined) throw new Error('the loop has no path back to its header');
  const path: string[] = [];
  const onPath = new Set<number>();
  for (let k: number | undefined = best.last; k !== undefined; k = previous.get(k)) {
    path.push(...blocks[k].instructions);
    onPath.add(k);
  }
  const mufu = path.filter((i) => /^(@!?%\w+\s+)?(ex2|lg2|rcp|rsqrt|sqrt|sin|cos)\.approx/.test(i)).length;
  const fp64 = path.filter((i) =>
    /^(@!?%\w+\s+)?(add|sub|mul|fma|neg|abs|min|max)(\.\w+)*\.f64\s/.test(i),
  ).length;
  const mma = path.filter((i) => /^(@!?%\w+\s+)?mma\.sync/.test(i)).length;
  return { instructions: best.d, sharedBytes: sharedBytesRead(path), blocks: onPath, mufu, fp64, mma };
}

export interface LoopCount {
  readonly instructionsPerTrip: number;
  readonly pairsPerTrip: number;
  readonly perPair: number;
  readonly mufuPerPair: number;
  readonly fp64PerPair: number;
  readonly mmaPerPair: number;
}

/**
 * `mmaDims`: for tensor-core kernels, the dimensions (padded to whole steps of 8) each pair's dot product takes:
 * there the pairs of a trip are counted from its m16n8k8 instructions (each 16 × 8 pairs of a warp over 8
 * dimensions), not from the shared bytes read (a record serves a whole warp's rows).
 */
export function innerLoopCount(
  ptx: string,
  entry: string,
  recordBytes: number,
  rowsPerThread: number,
  mmaDims?: number,
): LoopCount {
  const blocks = basicBlocks(entryBody(ptx, entry));
  const all = loops(blocks);
  const loadsShared = (body: Set<number>): boolean =>
    [...body].some((k) => blocks[k].instructions.some((i) => sharedRange(i) !== undefined));
  // A loop whose hot path enters a nested loop reading shared memory (the tile loop around the j loop) is not
  // the inner loop; one that only has a cold nested loop (the screened KMin loop's exact evaluations) is.
  const reading = all.filter((l) => loadsShared(l.body));
  if (reading.length === 0) throw new Error(`no inner loop reading shared memory in ${entry}`);
  const paths = reading
    .map((l) => ({ l, path: hotPath(blocks, l) }))
    .filter(
      ({ l, path }) =>
        !all.some(
          (o) =>
            o !== l &&
            o.body.size < l.body.size &&
            [...o.body].every((k) => l.body.has(k)) &&
            loadsShared(o.body) &&
            path.blocks.has(o.header),
        ),
    )
    .map(({ path }) => path)
    .filter((p) => p.sharedBytes > 0);
  if (paths.length === 0) throw new Error(`no hot path reading shared memory in ${entry}`);
  const path = paths.reduce((a, b) => (b.sharedBytes > a.sharedBytes ? b : a));
  const pairs =
    mmaDims === undefined
      ? (path.sharedBytes / recordBytes) * rowsPerThread
      : (path.mma * 16 * 8 * 8) / (32 * mmaDims);
  return {
    instructionsPerTrip: path.instructions,
    pairsPerTrip: pairs,
    perPair: path.instructions / pairs,
    mufuPerPair: path.mufu / pairs,
    fp64PerPair: path.fp64 / pairs,
    mmaPerPair: path.mma / pairs,
  };
}

// ---------------------------------------------------------------------------------------------------------------

interface Row {
  readonly c: Case;
  readonly oneD: EntryResources;
  readonly others: string;
  readonly occ: Occupancy;
  readonly loop: LoopCount;
  readonly rowsPerThread: number;
}

function analyse(c: Case, dir: string): Row {
  const kernels = kernelsOf(c);
  const cu = join(dir, `${c.id}.cu`);
  writeFileSync(cu, kernels.source);
  const flags = ['-arch=sm_90', '-O3', '--std=c++17', ...(kernels.fastMath ? ['-use_fast_math'] : [])];
  const { stderr } = run(['-cubin', ...flags, '-Xptxas', '-v', '-o', join(dir, `${c.id}.cubin`), cu]);
  writeFileSync(join(dir, `${c.id}.ptxas.txt`), stderr);
  const resources = parsePtxasLog(stderr);
  run(['-ptx', ...flags, '-o', join(dir, `${c.id}.ptx`), cu]);
  const ptx = readFileSync(join(dir, `${c.id}.ptx`), 'utf8');
  const e = kernels.entries;
  const oneD = resources.get(e.oneD);
  if (oneD === undefined) throw new Error(`ptxas reported nothing for ${e.oneD}`);
  const others = [e.split, e.splitMerge, e.ranges]
    .map((name) => {
      const r = resources.get(name);
      return r === undefined ? `${name}: ?` : `${name.replace(/^keops_/, '')} ${r.registers}/${r.stack}`;
    })
    .join(', ');
  const rowsPerThread = kernels.rowsPerThread;
  const inner = innerLoopCount(
    ptx,
    e.oneD,
    kernels.sharedBytesPerThread,
    rowsPerThread,
    kernels.tensorCores ? kernels.tensorCoreDims : undefined,
  );
  // The chunked tensor-core kernels screen each group after their k loop: add that epilogue per pair.
  const screen =
    kernels.tensorCores && kernels.tileRecords > 0 ? screenPerPair(kernels, dir, c.id, flags) : 0;
  return {
    c,
    oneD,
    others,
    occ: occupancy(kernels, oneD.registers),
    loop:
      screen === 0
        ? inner
        : {
            ...inner,
            instructionsPerTrip: inner.instructionsPerTrip + screen * inner.pairsPerTrip,
            perPair: inner.perPair + screen,
          },
    rowsPerThread,
  };
}

const SCREEN_BEGIN = 'keops-static: screen begin';
const SCREEN_END = 'keops-static: screen end';

/**
 * PTX instructions per pair of the screening epilogue of a tensor-core group (the exchange of the dot products
 * and the test, without the rare exact evaluations): counted between two PTX comments inserted around it in a copy
 * of the source, divided by the group's records (each lane screens its row against every record of the group).
 */
function screenPerPair(kernels: CudaKernels, dir: string, id: string, flags: readonly string[]): number {
  const begin =
    'const int lane = threadIdx.x & 31;\n  const int g = lane >> 2, c = lane & 3;\n#pragma unroll\n  for (int m';
  const end = '  while (keep != 0) {';
  const source = kernels.source;
  if (!source.includes(begin) || !source.includes(end)) throw new Error('no screening epilogue to mark');
  const marked = source
    .replace(begin, begin.replace('#pragma', `asm volatile("// ${SCREEN_BEGIN}");\n#pragma`))
    .replace(end, `  asm volatile("// ${SCREEN_END}");\n${end}`);
  const cu = join(dir, `${id}.marked.cu`);
  writeFileSync(cu, marked);
  run(['-ptx', ...flags, '-o', join(dir, `${id}.marked.ptx`), cu]);
  const lines = readFileSync(join(dir, `${id}.marked.ptx`), 'utf8').split('\n');
  const from = lines.findIndex((l) => l.includes(SCREEN_BEGIN));
  const to = lines.findIndex((l) => l.includes(SCREEN_END));
  if (from < 0 || to < from) throw new Error('the screening markers are missing from the PTX');
  const instructions = lines
    .slice(from + 1, to)
    .map((l) => l.replace(/\/\/.*$/, '').trim())
    .filter((l) => l !== '' && l !== '{' && l !== '}' && !l.startsWith('.') && !/^[$\w]+:$/.test(l));
  const group = Number(/constexpr int kMmaGroup = (\d+);/.exec(source)?.[1]);
  return instructions.length / group;
}

/** Clock and size of the issue-bound model (the static analysis' model.py): H100 SXM, 1.75 GHz. */
const CLOCK_HZ = 1.75e9;
const MODEL_PAIRS = 1e12;

/**
 * Cycles of an SM sub-partition per mma.sync m16n8k8 with TF32 operands: the H100's dense TF32 rate (494.7
 * TFLOPS at 1.98 GHz on 132 SMs: 1024 multiply-adds per SM and cycle) is 4 cycles; mma.sync reaches about two
 * thirds of the rate of Hopper's wgmma in published microbenchmarks, hence 6.
 */
const MMA_TF32_CYCLES = 6;

/**
 * Seconds for 1e6 × 1e6 pairs if the inner loop ran at the bound of its SM sub-partitions: per warp of 32 pairs,
 * max(instructions issued, 8 cycles per MUFU op, 2 per FP64 op, MMA_TF32_CYCLES per mma), 4 sub-partitions × 132
 * SMs. Occupancy, latency and tile overhead are not modelled (the static analysis found 70-90% of this reached in
 * practice), nor the pairs a screening sends to the exact path.
 */
function ceilingSeconds(loop: LoopCount): { seconds: number; bound: string } {
  const bounds: [string, number][] = [
    ['issue', loop.perPair],
    ['MUFU', 8 * loop.mufuPerPair],
    ['FP64', 2 * loop.fp64PerPair],
    ['tensor', MMA_TF32_CYCLES * loop.mmaPerPair],
  ];
  const [bound, cycles] = bounds.reduce((a, b) => (b[1] > a[1] ? b : a));
  return { seconds: (MODEL_PAIRS * cycles) / (32 * 4 * H100.multiprocessors * CLOCK_HZ), bound };
}

function table(rows: readonly Row[]): string {
  const head =
    '| case | regs / stack / spill (1d) | block, smem | occupancy (H100) | rows/thread | PTX instr per pair (per trip / pairs) | 1e6×1e6 ceiling | split, merge, ranges: regs/stack |\n' +
    '| --- | --- | --- | --- | --- | --- | --- | --- |\n';
  return (
    head +
    rows
      .map(
        (r) =>
          `| ${r.c.label} | ${r.oneD.registers} / ${r.oneD.stack} B / ${r.oneD.spillStores + r.oneD.spillLoads} B ` +
          `| ${r.occ.blockSize}, ${r.occ.sharedBytes} B | ${r.occ.blocksPerSm} blk, ${r.occ.warpsPerSm} warps ` +
          `(${Math.round((100 * r.occ.warpsPerSm) / H100.maxWarpsPerSm)}%, ${r.occ.limiter}) | ${r.rowsPerThread} ` +
          `| **${r.loop.perPair.toFixed(2)}** (${+r.loop.instructionsPerTrip.toFixed(1)} / ${+r.loop.pairsPerTrip.toFixed(2)}) ` +
          `| ${ceilingSeconds(r.loop).seconds.toFixed(2)} s (${ceilingSeconds(r.loop).bound}) | ${r.others} |`,
      )
      .join('\n') +
    '\n'
  );
}

function main(): void {
  const argv = process.argv.slice(2);
  const at = (flag: string): string | undefined => {
    const k = argv.indexOf(flag);
    return k >= 0 ? argv[k + 1] : undefined;
  };
  const label = at('--label') ?? 'current';
  const keep = at('--keep');
  const dir = keep ?? mkdtempSync(join(tmpdir(), 'keops-cuda-static-'));
  mkdirSync(dir, { recursive: true });
  try {
    const version = run(['--version']).stdout.trim().split('\n').pop() ?? '';
    const only = at('--only')?.split(',');
    const rows = CASES.filter((c) => only === undefined || only.includes(c.id)).map((c) => analyse(c, dir));
    const text =
      `\n## CUDA static report (${label}), ${new Date().toISOString().slice(0, 10)}\n\n` +
      `No GPU: nvcc (${version}) -cubin -arch=sm_90 -O3 --std=c++17 (-use_fast_math for float32, as the runtime's ` +
      `NVRTC flags), ptxas -v; occupancy for an H100 (132 SMs, 64 warps and 64K registers per SM) with the block ` +
      `size the runtime chooses; instructions per pair counted in PTX on the hot path of the 1D kernel's inner ` +
      `loop (\`bench/cuda-static.ts\` explains how; tensor-core kernels: their k loop plus the screening epilogue per ` +
      `pair, staging not counted); the ceiling is the issue / MUFU / FP64 / tensor bound of that loop for ` +
      `1e6 × 1e6 pairs at 1.75 GHz (occupancy not modelled). Generated by \`npm run bench:cuda-static\`.\n\n` +
      table(rows);
    process.stdout.write(text);
    if (argv.includes('--write')) appendFileSync(join(ROOT, 'bench', 'RESULTS.md'), text);
  } finally {
    if (keep === undefined) rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) main();
