/**
 * Register-blocked ("GEMM-like") evaluation of pairwise inner-dimension reductions for the CPU kernel.
 *
 * Formulas such as Exp(-g*SqDist(x,y))*b, ArgKMin over Norm2(x-y), Sum(Abs(x-y)) or WeightedSqDist(w,x,y) spend
 * almost all their time in one or more *pairwise terms*: dim-1 nodes `Sum(e)` or `Scalprod(a,b)` whose operands are
 * component-wise expressions (Add, Subtract, Mult, Minus, Square, Abs) of D-dim variables, reading at least one
 * outer and one inner variable. For long D the per-pair evaluation (one pair per SIMD lane, the D loop inside) is
 * bound by loads and cannot keep the FMA units busy. This module:
 *
 *   planBlockedEvaluation(root, positions, tag) -> BlockedPlan | undefined
 *
 * finds those terms and rewrites the formula with each term replaced by a synthetic dim-1 inner variable (a
 * position after the declared ones), so that the ordinary kernel evaluates only the cheap outer formula; and
 *
 *   generateBlockedCode(plan, opts) -> { source, tileCall, rowCall, scratchScalars, termValue(s) }
 *
 * emits the C++ that fills those synthetic values per tile: the tile's inner rows are packed in panels of 4
 * vectors of j's (64 floats / 32 doubles; component k of panel row l at [k * panel + l], so the D loop streams),
 * and a micro-kernel keeps MR output rows × one panel of accumulators in vector registers across the D loop
 * (MR = 4 with AVX-512's 32 registers, measured best among 6×2, 4×3, 5×3, 8×2 and 4×4 vectors; 1 otherwise),
 * for every pair of the row block × tile. Each pair is still computed in the difference form, one
 * component after the other in increasing k, exactly as the per-pair code does: no expanded norms, so results are
 * those of the formula up to the rounding of that sequential sum (FMA-contracted as everywhere in the CPU kernel).
 *
 * Loop order: for each group of MR rows (their D values stay in L1), for each panel of the tile (in L2):
 * micro-kernel. The tile is sized so that the packed panels fit about a third of a 1 MiB L2. KMin-type searches
 * over SqDist in float32 replace this exact pass by a bfloat16 screening (cpu-blocked-filter.ts).
 */
import { KeOpsError } from '../errors';
import { buildOp, builder } from '../formula/builder';
import { type Node, topoOrder } from '../formula/node';
import { filterScratchScalars, filterSource, type SqDistFilter } from './cpu-blocked-filter';
import type { ArgPosition } from './formula';
import { roleOf, type VarRole } from './formula';

/** Narrower terms stay with the per-pair evaluation, which is already fast there (fully unrolled D loop). */
export const MIN_BLOCKED_DIM = 16;
/** Wider terms stay per pair: a tile's packed panels (at least one panel of 64 j's) would outgrow the caches. */
export const MAX_BLOCKED_DIM = 65536;
/** Bytes of one vector register the micro-kernel is written for (AVX-512; two AVX2 registers elsewhere). */
const VECTOR_BYTES = 64;
/** Vectors of j's per panel: kPanel = VECTORS_PER_PANEL * lanes. */
const VECTORS_PER_PANEL = 4;
/** Bytes of packed inner panels per tile (about half the L2 of the reference machine). */
const PACK_BYTES = 384 * 1024;
const MAX_BLOCKED_TILE = 1024;

const ELEMENTWISE = new Set(['Add', 'Subtract', 'Mult', 'Minus', 'Square', 'Abs']);

/** A pairwise term: `node` (dim 1) = sum over k of contribution(k). */
export interface PairwiseTerm {
  readonly node: Node;
  /** Sum(e): contribution e_k; Scalprod(a,b): a_k * b_k. */
  readonly kind: 'sum' | 'scalprod';
  readonly operands: readonly Node[];
  /** The inner dimension D. */
  readonly dim: number;
  /** The synthetic inner position that carries the term's value to the outer formula. */
  readonly pos: number;
}

export interface BlockedPlan {
  /** The formula with every term replaced by its synthetic variable. */
  readonly root: Node;
  /** The declared positions followed by one dim-1 inner position per term. */
  readonly positions: readonly ArgPosition[];
  readonly terms: readonly PairwiseTerm[];
  /** Inner variables the terms read (packed per tile), with their dims, by increasing position. */
  readonly packed: readonly { readonly pos: number; readonly dim: number }[];
  /** Outer and parameter variables the terms read (checked for null by the kernel). */
  readonly direct: readonly number[];
  readonly tag: 0 | 1;
}

function varRole(v: Node, positions: readonly ArgPosition[], tag: 0 | 1): VarRole | undefined {
  const [pos, dim, cat] = v.params as readonly number[];
  const declared = positions[pos];
  // Inconsistent declarations are reported by the ordinary code generator.
  if (declared === undefined || declared.dim !== dim || declared.cat !== cat) return undefined;
  return roleOf(declared.cat, tag);
}

/**
 * Whether `operand` is a component-wise expression of dim-D variables (and dim-1 parameters), and which roles it
 * reads; undefined when it is not.
 */
function elementwiseRoles(
  operand: Node,
  dim: number,
  positions: readonly ArgPosition[],
  tag: 0 | 1,
): Set<VarRole> | undefined {
  const roles = new Set<VarRole>();
  for (const n of topoOrder(operand)) {
    if (n.op.name === 'Var') {
      const role = varRole(n, positions, tag);
      if (role === undefined || (n.dim !== dim && !(n.dim === 1 && role === 'param'))) return undefined;
      roles.add(role);
      continue;
    }
    if (!ELEMENTWISE.has(n.op.name) || n.dim !== dim) return undefined;
  }
  return roles;
}

function asTerm(
  n: Node,
  positions: readonly ArgPosition[],
  tag: 0 | 1,
): Omit<PairwiseTerm, 'pos'> | undefined {
  if (n.dim !== 1) return undefined;
  let kind: PairwiseTerm['kind'];
  if (n.op.name === 'Sum') kind = 'sum';
  else if (n.op.name === 'Scalprod') kind = 'scalprod';
  else return undefined;
  const dim = n.children[0].dim;
  if (dim < MIN_BLOCKED_DIM || dim > MAX_BLOCKED_DIM || n.children.some((c) => c.dim !== dim))
    return undefined;
  const roles = new Set<VarRole>();
  for (const c of n.children) {
    const r = elementwiseRoles(c, dim, positions, tag);
    if (r === undefined) return undefined;
    r.forEach((role) => roles.add(role));
  }
  if (!roles.has('outer') || !roles.has('inner')) return undefined;
  return { node: n, kind, operands: n.children, dim };
}

/** The blocked plan of a formula, or undefined when it has no pairwise term worth blocking. */
export function planBlockedEvaluation(
  root: Node,
  positions: readonly ArgPosition[],
  tag: 0 | 1,
): BlockedPlan | undefined {
  const order = topoOrder(root);
  const terms: PairwiseTerm[] = [];
  const innerCat = (1 - tag) as 0 | 1;
  const replaced = new Map<Node, Node>();
  for (const n of order) {
    const term = asTerm(n, positions, tag);
    if (term !== undefined) {
      const pos = positions.length + terms.length;
      terms.push({ ...term, pos });
      replaced.set(n, builder.variable(pos, 1, innerCat));
      continue;
    }
    const children = n.children.map((c) => replaced.get(c) ?? c);
    if (children.some((c, k) => c !== n.children[k])) replaced.set(n, buildOp(n.op, children, n.params));
  }
  if (terms.length === 0) return undefined;
  const packed = new Map<number, number>();
  const direct = new Set<number>();
  for (const t of terms) {
    for (const o of t.operands) {
      for (const v of topoOrder(o)) {
        if (v.op.name !== 'Var') continue;
        const pos = v.params[0] as number;
        if (varRole(v, positions, tag) === 'inner') packed.set(pos, v.dim);
        else direct.add(pos);
      }
    }
  }
  return {
    root: replaced.get(root) ?? root,
    positions: [...positions, ...terms.map(() => ({ dim: 1, cat: innerCat }))],
    terms,
    packed: [...packed].sort((a, b) => a[0] - b[0]).map(([pos, dim]) => ({ pos, dim })),
    direct: [...direct].sort((a, b) => a - b),
    tag,
  };
}

export interface BlockedSizes {
  /** j's per tile (a multiple of the panel width). */
  readonly tile: number;
  /** j's per panel. */
  readonly panel: number;
  /** Scalars of the packed panels per j. */
  readonly packScalarsPerJ: number;
}

/** Tile and panel sizes for a plan; `otherScalarsPerJ` are the ordinary tile's scalars per j. */
export function blockedSizes(
  plan: BlockedPlan,
  dataBytes: number,
  otherScalarsPerJ: number,
  filter?: SqDistFilter,
): BlockedSizes {
  const panel = VECTORS_PER_PANEL * (VECTOR_BYTES / dataBytes);
  // The filter packs bfloat16 pairs: half the bytes.
  const packScalarsPerJ =
    filter !== undefined ? Math.ceil(filter.dim / 2) : plan.packed.reduce((s, p) => s + p.dim, 0);
  const bytesPerJ = (packScalarsPerJ + otherScalarsPerJ) * dataBytes;
  const tile = Math.max(
    panel,
    Math.min(MAX_BLOCKED_TILE, Math.floor(PACK_BYTES / bytesPerJ / panel) * panel),
  );
  return { tile, panel, packScalarsPerJ };
}

export interface BlockedCode {
  /** C++ functions (after the formula; they use keops_t). */
  readonly source: string;
  /** The statement the kernel runs per tile, after loading it: fills every term's values for the row block. */
  readonly tileCall: string;
  /** The statement the kernel runs for row `r` (global index `i`) of a block when the block starts. */
  readonly rowCall: string;
  /** Scalars of work area the blocked code needs, at `blocked_area` (64-byte aligned). */
  readonly scratchScalars: number;
  /** C++ pointer to the value of term `s` for output row `r` (of the block) and tile row `t`. */
  readonly termValue: (s: number) => string;
}

export interface BlockedCodeOptions {
  readonly dataBytes: number;
  readonly tile: number;
  readonly rowBlock: number;
  /** bfloat16 screening of a KMin-type SqDist (float32 only; used where the CPU has AVX512_BF16). */
  readonly filter?: SqDistFilter;
}

/** Micro-kernel rows: accumulators MR × VECTORS_PER_PANEL must leave registers for operands. */
const MR_AVX512 = 4;
const MR_OTHER = 1;

function microKernel(
  plan: BlockedPlan,
  term: PairwiseTerm,
  index: number,
  mr: number,
  lanes: number,
): string {
  const nv = VECTORS_PER_PANEL;
  const panel = nv * lanes;
  const D = term.dim;
  const inner = (v: Node): boolean => varRole(v, plan.positions, plan.tag) === 'inner';
  const outer = (v: Node): boolean => varRole(v, plan.positions, plan.tag) === 'outer';
  // Which expression nodes depend on the inner / outer row: they are computed per vector / per row.
  const readsInner = new Map<Node, boolean>();
  const readsOuter = new Map<Node, boolean>();
  const nodes: Node[] = [];
  for (const o of term.operands) {
    for (const n of topoOrder(o)) {
      if (readsInner.has(n)) continue;
      nodes.push(n);
      readsInner.set(n, n.op.name === 'Var' ? inner(n) : n.children.some((c) => readsInner.get(c)));
      readsOuter.set(n, n.op.name === 'Var' ? outer(n) : n.children.some((c) => readsOuter.get(c)));
    }
  }
  const posOf = (v: Node): number => v.params[0] as number;
  const vars = nodes.filter((n) => n.op.name === 'Var');
  const lines: string[] = [];
  const emit = (indent: number, s: string): number => lines.push(' '.repeat(indent) + s);
  emit(
    0,
    `static void keops_blocked_term${index}(const void* const* args, long first_row, long rows, long panels,`,
  );
  emit(0, `                                const keops_t* pack, keops_t* out) {`);
  for (const v of vars.filter((n) => !inner(n) && !outer(n))) {
    emit(2, `const keops_t* const w${posOf(v)} = (const keops_t*)args[${posOf(v)}];`);
  }
  emit(2, `for (long r0 = 0; r0 < rows; r0 += ${mr}) {`);
  for (const v of vars.filter(outer)) {
    for (let r = 0; r < mr; r++) {
      // Rows past the block's end repeat its last row: computed, never stored.
      emit(
        4,
        `const keops_t* const x${posOf(v)}_${r} = (const keops_t*)args[${posOf(v)}] + ` +
          `(first_row + (r0 + ${r} < rows ? r0 + ${r} : rows - 1)) * ${D};`,
      );
    }
  }
  emit(4, `for (long p = 0; p < panels; p++) {`);
  for (const v of vars.filter(inner)) {
    const offset = packOffset(plan, posOf(v));
    emit(6, `const keops_t* const y${posOf(v)} = pack + ${offset} + p * ${D * panel};`);
  }
  for (let r = 0; r < mr; r++) {
    for (let q = 0; q < nv; q++) emit(6, `keops_vec acc_${r}_${q} = {};`);
  }
  emit(6, `for (long k = 0; k < ${D}; k++) {`);
  const value = new Map<Node, (r: number, q: number) => string>();
  for (const n of nodes) {
    const perRow = readsOuter.get(n) === true;
    const perVector = readsInner.get(n) === true;
    const rs = perRow ? [...Array(mr).keys()] : [0];
    const qs = perVector ? [...Array(nv).keys()] : [0];
    const name = (r: number, q: number): string =>
      `e${nodes.indexOf(n)}${perRow ? `_${r}` : ''}${perVector ? `_${q}` : ''}`;
    const type = perVector ? 'keops_vec' : 'keops_t';
    const at = (c: Node, r: number, q: number): string =>
      (value.get(c) as (r: number, q: number) => string)(r, q);
    for (const r of rs) {
      for (const q of qs) {
        let expr: string;
        const [a, b] = n.children;
        switch (n.op.name) {
          case 'Var':
            if (inner(n)) expr = `*(const keops_vec*)(y${posOf(n)} + k * ${panel} + ${q * lanes})`;
            else if (outer(n)) expr = `x${posOf(n)}_${r}[k]`;
            else expr = `w${posOf(n)}[${n.dim === 1 ? 0 : 'k'}]`;
            break;
          case 'Add':
            expr = `${at(a, r, q)} + ${at(b, r, q)}`;
            break;
          case 'Subtract':
            expr = `${at(a, r, q)} - ${at(b, r, q)}`;
            break;
          case 'Mult':
            expr = `${at(a, r, q)} * ${at(b, r, q)}`;
            break;
          case 'Minus':
            expr = `-${at(a, r, q)}`;
            break;
          case 'Square':
            expr = `${at(a, r, q)} * ${at(a, r, q)}`;
            break;
          default: // Abs
            expr = `${perVector ? 'keops_vabs' : 'keops_sabs'}(${at(a, r, q)})`;
        }
        emit(8, `const ${type} ${name(r, q)} = ${expr};`);
      }
    }
    value.set(n, (r, q) => name(perRow ? r : 0, perVector ? q : 0));
  }
  const at = (c: Node, r: number, q: number): string =>
    (value.get(c) as (r: number, q: number) => string)(r, q);
  for (let r = 0; r < mr; r++) {
    for (let q = 0; q < nv; q++) {
      const [a, b] = term.operands;
      const contribution = term.kind === 'sum' ? at(a, r, q) : `${at(a, r, q)} * ${at(b, r, q)}`;
      emit(8, `acc_${r}_${q} += ${contribution};`);
    }
  }
  emit(6, `}`);
  for (let r = 0; r < mr; r++) {
    const stores = [...Array(nv).keys()]
      .map((q) => `*(keops_vec*)(row + ${q * lanes}) = acc_${r}_${q};`)
      .join(' ');
    emit(
      6,
      `if (r0 + ${r} < rows) { keops_t* const row = out + (r0 + ${r}) * kBlockedTile + p * ${panel}; ${stores} }`,
    );
  }
  emit(4, `}`);
  emit(2, `}`);
  emit(0, `}`);
  return lines.join('\n');
}

/** Offset (scalars per tile, times the tile) of a packed inner variable in the pack area. */
function packOffset(plan: BlockedPlan, pos: number): string {
  let offset = 0;
  for (const p of plan.packed) {
    if (p.pos === pos) return `${offset} * kBlockedTile`;
    offset += p.dim;
  }
  throw new KeOpsError('ERR_INTERNAL', `position ${pos} is not packed`);
}

export function generateBlockedCode(plan: BlockedPlan, opts: BlockedCodeOptions): BlockedCode {
  const { dataBytes, tile, rowBlock, filter } = opts;
  const lanes = VECTOR_BYTES / dataBytes;
  const panel = VECTORS_PER_PANEL * lanes;
  const packScalars = plan.packed.reduce((s, p) => s + p.dim, 0) * tile;
  const valueScalars = plan.terms.length * rowBlock * tile;
  const absMask = dataBytes === 4 ? '0x7fffffff' : '0x7fffffffffffffffLL';
  const intType = dataBytes === 4 ? 'int' : 'long long';
  const filterScalars = filter !== undefined ? filterScratchScalars(filter, tile, rowBlock) : 0;
  const packers = plan.packed
    .map(
      ({ pos, dim }) =>
        `  {\n` +
        `    const keops_t* const src = (const keops_t*)args[${pos}] + tile_start * ${dim};\n` +
        `    keops_t* const dst = pack + ${packOffset(plan, pos)};\n` +
        `    for (long t = 0; t < panels * ${panel}; t++) {\n` +
        `      keops_t* const d = dst + (t / ${panel}) * ${dim * panel} + t % ${panel};\n` +
        `      if (t < len) {\n` +
        `        const keops_t* const s = src + t * ${dim};\n` +
        `        for (long k = 0; k < ${dim}; k++) d[k * ${panel}] = s[k];\n` +
        `      } else {\n` +
        `        for (long k = 0; k < ${dim}; k++) d[k * ${panel}] = 0;\n` +
        `      }\n` +
        `    }\n` +
        `  }`,
    )
    .join('\n');
  const kernels = (mr: number): string =>
    plan.terms.map((t, s) => microKernel(plan, t, s, mr, lanes)).join('\n');
  const calls = plan.terms
    .map(
      (_t, s) =>
        `  keops_blocked_term${s}(args, first_row, rows, panels, pack, values + ${s} * ${rowBlock} * kBlockedTile);`,
    )
    .join('\n');
  const source = `// ---- register-blocked pairwise terms (lib/codegen/cpu-blocked.ts)
typedef keops_t keops_vec __attribute__((vector_size(${VECTOR_BYTES})));
typedef ${intType} keops_ivec __attribute__((vector_size(${VECTOR_BYTES})));
const long kBlockedTile = ${tile};
inline keops_vec keops_vabs(keops_vec v) { return (keops_vec)((keops_ivec)v & ${absMask}); }
inline keops_t keops_sabs(keops_t v) { return __builtin_fabs(v); }
${
  filter !== undefined
    ? `#if defined(__AVX512BF16__) && defined(__AVX512F__)\n#define KEOPS_BLOCKED_FILTER 1\n` +
      `${filterSource(filter, tile, rowBlock)}#else\n#define KEOPS_BLOCKED_FILTER 0\n#endif`
    : '#define KEOPS_BLOCKED_FILTER 0'
}
#if defined(__AVX512F__)
${kernels(MR_AVX512)}
#else
${kernels(MR_OTHER)}
#endif
static void keops_blocked_row(const void* const* args, long i, long r, keops_t* area) {
#if KEOPS_BLOCKED_FILTER
  keops_blocked_filtered_row(args, i, r, area);
#else
  (void)args;
  (void)i;
  (void)r;
  (void)area;
#endif
}
// Packs the tile's inner rows [tile_start, tile_start + len) in panels (zeros past len), then computes every
// term for rows [first_row, first_row + rows) × the tile into values[term][row][t].
static void keops_blocked_tile(const void* const* args, long tile_start, long len, long first_row, long rows,
                               keops_t* area, const keops_acc_t* acc, long acc_stride) {
#if KEOPS_BLOCKED_FILTER
  keops_blocked_filtered(args, tile_start, len, first_row, rows, area, acc, acc_stride);
#else
  (void)acc;
  (void)acc_stride;
  keops_t* const values = area;
  keops_t* const pack = area + ${valueScalars};
  const long panels = (len + ${panel - 1}) / ${panel};
${packers}
${calls}
#endif
}
// ---- end of register-blocked pairwise terms
`;
  return {
    source,
    tileCall: `keops_blocked_tile(task->args, tile_start, len, block_begin, rows, blocked_area, acc_area, acc_per_row);`,
    rowCall: `keops_blocked_row(task->args, block_begin + r, r, blocked_area);`,
    scratchScalars: valueScalars + Math.max(packScalars, filterScalars),
    termValue: (s) => `blocked_area + ${s * rowBlock * tile} + r * ${tile}`,
  };
}
