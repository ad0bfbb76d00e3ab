/**
 * Engine reductions (docs/semantics.md 2.1). Each reduction is declared once, in one `ReductionDef`, with its
 * syntax, output layout, float64 reference hooks, C++ hooks (shared by CPU and CUDA) and gradient rule.
 *
 * Accumulators have a value part (`val`, compute/accumulator type, width `dimredVal`) and an exact integer
 * index part (`idx`, width `dimredIdx`; KeOps stores indices as floats, exact only up to 2^24 in float32).
 * The output likewise has `dimVal` values and `dimIdx` indices per row.
 */
import { createHash } from 'node:crypto';
import { KeOpsError } from '../errors';
import { type DotNames, reductionToDot } from './dot';
import type { Node } from './node';
import type { Rational } from './rational';

/** How the reduction is written: `Name(F,tag)`, `Name(F,K,tag)` or `Name(F,tag,G)`. */
export type ReductionSyntax = 'tag' | 'k_tag' | 'tag_formula2';

export interface ReductionAcc {
  val: Float64Array;
  /** Int32Array in kernels and the reference; Float64Array in partial results, whose global indices may pass 2^31. */
  idx: Int32Array | Float64Array;
}

export interface ReductionEmitContext {
  readonly red: Reduction;
  /** Accumulator scalar type (float or double). */
  readonly T: string;
  lit(v: number | Rational): string;
  fresh(hint: string): string;
}

export interface ReductionDef {
  /** Engine name, e.g. 'Sum_Reduction'. */
  readonly name: string;
  readonly doc: string;
  readonly syntax: ReductionSyntax;
  /** Checks dims/K and returns the layout; throws KeOpsError ERR_REDUCTION / ERR_FORMULA_DIM. */
  layout(formulaDim: number, k: number | undefined, formula2Dim: number | undefined): ReductionLayout;
  /** The per-(i,j) formula the kernel evaluates and folds ("fout"); usually `formula` itself. */
  fout(formula: Node, formula2: Node | undefined): Node;
  /** Whether block / Kahan summation applies (sum-type reductions). */
  readonly sumType: boolean;
  /**
   * Partial results (lib/jobs/partial.ts): the engine reduction with this one's accumulator and fold whose output
   * is the whole accumulator (this reduction itself when its output already is, e.g. ArgMin → Min_ArgMin), so
   * that a slice of the reduced axis can be run and later combined by `merge`.
   */
  readonly partialState: string;
  // float64 reference hooks
  init(acc: ReductionAcc, red: Reduction): void;
  fold(acc: ReductionAcc, fout: Float64Array, j: number, red: Reduction): void;
  merge(acc: ReductionAcc, other: ReductionAcc, red: Reduction): void;
  finalize(acc: ReductionAcc, red: Reduction): { val: Float64Array; idx: Int32Array | Float64Array };
  // C++ hooks: statements over arrays named `val`/`idx` (accumulator), `fout` (T[dim fout]), `j` (long),
  // `val2`/`idx2` (another accumulator), `outVal` (T*) / `outIdx` (int32_t*)
  emitInit(ctx: ReductionEmitContext, val: string, idx: string): string;
  emitFold(ctx: ReductionEmitContext, val: string, idx: string, fout: string, j: string): string;
  emitMerge(ctx: ReductionEmitContext, val: string, idx: string, val2: string, idx2: string): string;
  emitFinalize(ctx: ReductionEmitContext, val: string, idx: string, outVal: string, outIdx: string): string;
}

export interface ReductionLayout {
  readonly dimredVal: number;
  readonly dimredIdx: number;
  readonly dimVal: number;
  readonly dimIdx: number;
}

/** A reduction applied to a formula: immutable; `toString()` is canonical and re-parses to an equal reduction. */
export class Reduction {
  readonly layout: ReductionLayout;
  readonly fout: Node;
  /** Stable content hash over the formulas' DAG hashes (linear in DAG size); eager because instances are frozen. */
  readonly hash: string;

  constructor(
    readonly def: ReductionDef,
    readonly formula: Node,
    /** Category of the output index: 0 = one output row per i (reduce over j), 1 = per j (reduce over i). */
    readonly tag: 0 | 1,
    readonly k?: number,
    readonly formula2?: Node,
  ) {
    this.layout = def.layout(formula.dim, k, formula2?.dim);
    this.fout = def.fout(formula, formula2);
    const parts = [def.name, String(tag), String(k ?? ''), formula.hash, formula2?.hash ?? ''];
    this.hash = createHash('sha256').update(parts.join('|')).digest('hex');
    Object.freeze(this);
  }

  toString(): string {
    const f = this.formula.toString();
    switch (this.def.syntax) {
      case 'tag':
        return `${this.def.name}(${f},${this.tag})`;
      case 'k_tag':
        return `${this.def.name}(${f},${this.k},${this.tag})`;
      case 'tag_formula2':
        return `${this.def.name}(${f},${this.tag},${this.formula2})`;
    }
  }

  /** Graphviz DOT text: the formula DAG(s) under a node naming the reduction. */
  toDot(names?: DotNames): string {
    return reductionToDot(this, names);
  }

  equals(other: Reduction): boolean {
    return this.hash === other.hash;
  }
}

export function checkTag(name: string, tag: number): 0 | 1 {
  if (tag !== 0 && tag !== 1) {
    throw new KeOpsError(
      'ERR_REDUCTION',
      `${name}: the last argument must be 0 (reduce over j) or 1 (over i), got ${tag}`,
    );
  }
  return tag;
}
