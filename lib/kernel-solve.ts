/**
 * `KernelSolve` (docs/semantics.md 4.3): solves (αI + K) a = b by conjugate gradient, where K(a) is the Sum
 * reduction of a formula linear in the variable `varInvAlias` (the unknown) and b is the argument at that
 * position. K must be symmetric positive (semi-)definite, as in KeOps.
 *
 *     const solver = new KernelSolve('Exp(-g*SqDist(x,y))*b', ['x = Vi(2)', 'y = Vj(2)', 'b = Vj(1)', 'g = Pm(1)'],
 *       'b', { axis: 1 });
 *     const a = await solver.solve([x, x, b, g], { alpha: 0.1 });
 *     const dx = await solver.solveGrad([x, x, b, g], { alpha: 0.1, wrt: 'x', cotangent: G }); // ∂⟨G, a⟩/∂x
 *
 * Differences from KeOps: the iterations are bounded (`maxIter`, default 10 × size(b)); reaching the bound
 * throws ERR_NOT_CONVERGED (with the residual) rather than looping forever. Symmetry is checked unless
 * `symmetry: 'assume'`: at construction, numerically on random points, K_ij against K_jiᵀ with the i- and
 * j-variables paired in position order (ERR_NOT_SYMMETRIC when it fails, or when the variables cannot be
 * paired: different counts or dims); at each call, paired arguments must hold the same points. Batch dims are
 * not supported. The CG vectors are float64; each K application runs in the data dtype.
 *
 * Gradients (docs/semantics.md 3.2): with respect to b, (αI + K)⁻¹G (another solve); with respect to any other
 * input, the gradient of ⟨e, K(a)⟩ with e = −(αI + K)⁻¹G and the solution a in place of the unknown.
 *
 * `KernelSolve` is the text front end of `NodeKernelSolve`, which takes a formula node and the unknown's
 * position (as `Genred` is of `NodeGenred`); `LazyTensor.solve` uses the latter.
 */
import { KeOpsError } from './errors';
import type { FloatArray, GenredArg } from './backend/plan';
import { type FormulaVariable, parseFormula } from './formula';
import { builder as b } from './formula/builder';
import { evaluateFormula } from './formula/evaluate';
import { isLinear } from './formula/linear';
import type { Node } from './formula/node';
import { Genred, type GenredCallOptions, type GenredOptions, NodeGenred } from './genred';
import { KERNEL_SOLVE_OPTION_KEYS, NODE_KERNEL_SOLVE_OPTION_KEYS, readOptions } from './validate';

export interface KernelSolveOptions extends Pick<
  GenredOptions,
  'sumScheme' | 'dtypeAcc' | 'backend' | 'threads'
> {
  /** 0 (default, as in KeOps): K sums over i and the unknown is a Vi; 1: sums over j, the unknown is a Vj. */
  axis?: 0 | 1;
  /** 'check' (default): verify that K is symmetric (see the file comment); 'assume': trust the caller. */
  symmetry?: 'check' | 'assume';
}

export interface KernelSolveCallOptions extends GenredCallOptions {
  /** Ridge α ≥ 0 (default 1e-10, as in KeOps). */
  alpha?: number;
  /** Stop when ‖r‖² < size(b)·eps² (default 1e-6). */
  eps?: number;
  /** Most applications of K (default 10 × size(b)); reaching it throws ERR_NOT_CONVERGED. */
  maxIter?: number;
}

export interface KernelSolveGradOptions extends KernelSolveCallOptions {
  /** The input to differentiate with respect to: its position or alias name (the unknown's means b). */
  wrt: number | string;
  /** Cotangent G of the solution (size(b) values): the gradient is that of ⟨G, a⟩. */
  cotangent: Float32Array | Float64Array;
}

const invalid = (message: string): KeOpsError => new KeOpsError('ERR_INVALID_ARGUMENT', message);

const dot = (u: Float64Array, v: Float64Array): number => {
  let s = 0;
  for (let k = 0; k < u.length; k++) s += u[k] * v[k];
  return s;
};

/**
 * Conjugate gradient for (αI + K) x = rhs from x = 0, as a generator that yields each direction p and expects
 * K p back, so that one loop serves the sync and async drivers.
 */
function* conjugateGradient(
  rhs: Float64Array,
  alpha: number,
  eps: number,
  maxIter: number,
): Generator<Float64Array, Float64Array, Float64Array> {
  const n = rhs.length;
  const x = new Float64Array(n);
  const r = rhs.slice();
  const tolerance2 = n * eps * eps;
  let r2 = dot(r, r);
  if (!Number.isFinite(r2)) throw invalid('KernelSolve: the right-hand side holds NaN or infinite values');
  const p = r.slice();
  for (let iteration = 0; r2 >= tolerance2; iteration++) {
    if (iteration >= maxIter) {
      throw new KeOpsError(
        'ERR_NOT_CONVERGED',
        `KernelSolve: no convergence after ${maxIter} iterations: residual ‖r‖ = ${Math.sqrt(r2)}, ` +
          `target ${Math.sqrt(tolerance2)} (√size(b)·eps); raise maxIter or alpha, or loosen eps`,
      );
    }
    const Kp = yield p;
    const Ap = Kp.map((v, k) => v + alpha * p[k]);
    const pAp = dot(p, Ap);
    if (!(pAp > 0)) {
      throw new KeOpsError(
        'ERR_NOT_CONVERGED',
        `KernelSolve: conjugate gradient broke down at iteration ${iteration} (pᵀ(αI + K)p = ${pAp}): ` +
          'αI + K must be symmetric positive definite',
      );
    }
    const step = r2 / pAp;
    for (let k = 0; k < n; k++) {
      x[k] += step * p[k];
      r[k] -= step * Ap[k];
    }
    const next = dot(r, r);
    if (!Number.isFinite(next)) {
      throw new KeOpsError(
        'ERR_NOT_CONVERGED',
        `KernelSolve: the residual became ${next} at iteration ${iteration}`,
      );
    }
    for (let k = 0; k < n; k++) p[k] = r[k] + (next / r2) * p[k];
    r2 = next;
  }
  return x;
}

/** Deterministic [0, 1) values (mulberry32) for the symmetry check; local state only. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The options of a solver built from formula nodes (`NodeKernelSolve`). */
export interface NodeKernelSolveOptions extends KernelSolveOptions {
  /** The inputs by position (names allow `wrt` by name); default: the variables the formula reads. */
  variables?: readonly FormulaVariable[];
  /** Number of arguments a call takes; default: the highest declared position + 1. */
  argCount?: number;
}

/**
 * A KernelSolve of a formula node: K is the Sum reduction (over `axis`) of `formula`, linear in the variable at
 * `unknown.pos`. `formula` may also be that Sum reduction already built (as `KernelSolve` does, to keep its
 * `Genred`). `KernelSolve` is the text front end.
 */
export class NodeKernelSolve {
  readonly formulaNode: Node;
  readonly axis: 0 | 1;
  /** The unknown: its argument is the right-hand side b. */
  readonly unknown: FormulaVariable;
  /** K: the Sum reduction of the formula. */
  readonly operator: NodeGenred;
  /** Pairs of (output-side, unknown-side) variables whose arguments must match for K to be symmetric. */
  private readonly pairs: readonly (readonly [FormulaVariable, FormulaVariable])[];
  private readonly checkSymmetry: boolean;

  constructor(
    formula: Node | NodeGenred,
    unknown: { readonly pos: number },
    options: NodeKernelSolveOptions = {},
  ) {
    if (typeof options !== 'object' || options === null)
      throw invalid('KernelSolve options must be an object');
    options = readOptions('KernelSolve', options, NODE_KERNEL_SOLVE_OPTION_KEYS);
    const axis = options.axis ?? 0;
    if (axis !== 0 && axis !== 1)
      throw new KeOpsError('ERR_REDUCTION', `axis must be 0 or 1, got ${String(axis)}`);
    const symmetry = options.symmetry ?? 'check';
    if (symmetry !== 'check' && symmetry !== 'assume') {
      throw invalid(`symmetry must be 'check' or 'assume', got ${JSON.stringify(symmetry)}`);
    }
    if (formula instanceof NodeGenred) {
      if (formula.reductionName !== 'Sum' || formula.axis !== axis) {
        throw new KeOpsError(
          'ERR_REDUCTION',
          `KernelSolve needs a Sum reduction over axis ${axis}, got ${formula.reductionName} over axis ${formula.axis}`,
        );
      }
      this.operator = formula;
    } else {
      this.operator = new NodeGenred(formula, {
        reduction: 'Sum',
        axis,
        variables: options.variables,
        argCount: options.argCount,
        sumScheme: options.sumScheme,
        dtypeAcc: options.dtypeAcc,
        backend: options.backend,
        threads: options.threads,
      });
    }
    const unknownPos = typeof unknown === 'object' && unknown !== null ? unknown.pos : undefined;
    const found = this.operator.variables.find((v) => v.pos === unknownPos);
    if (found === undefined) {
      throw invalid(
        `KernelSolve: the unknown (position ${String(unknownPos)}) is not a variable of the formula`,
      );
    }
    const reducedCat = axis === 1 ? 1 : 0;
    if (found.cat !== reducedCat) {
      throw invalid(
        `KernelSolve with axis ${axis} sums over ${reducedCat === 1 ? 'j' : 'i'}: the unknown ` +
          `'${describe(found)}' must be a ${reducedCat === 1 ? 'Vj' : 'Vi'} variable`,
      );
    }
    const node = this.operator.formulaNode;
    if (node.dim !== found.dim) {
      throw new KeOpsError(
        'ERR_FORMULA_DIM',
        `KernelSolve: the formula's dim ${node.dim} must equal the unknown's dim ${found.dim}`,
      );
    }
    const unknownNode = b.variable(found.pos, found.dim, found.cat);
    if (!isLinear(node, unknownNode)) {
      throw new KeOpsError('ERR_NOT_LINEAR', `KernelSolve: ${node} is not linear in '${describe(found)}'`);
    }
    this.checkSymmetry = symmetry === 'check';
    this.pairs = this.checkSymmetry ? pairVariables(this.operator.variables, found) : [];
    if (this.checkSymmetry) checkSymmetricFormula(node, found, this.pairs, this.operator.variables);
    this.formulaNode = node;
    this.axis = axis;
    this.unknown = found;
  }

  /** The solution a of (αI + K) a = b, b being the argument at the unknown's position; its dtype and size. */
  async solve(args: readonly GenredArg[], options: KernelSolveCallOptions = {}): Promise<FloatArray> {
    const run = this.prepare(args, options);
    const cg = conjugateGradient(run.rhs, run.alpha, run.eps, run.maxIter);
    let step = cg.next();
    while (!step.done)
      step = cg.next(this.toFloat64(await this.operator.call(run.withUnknown(step.value), run.call)));
    return run.output(step.value);
  }

  /** Like `solve`, but blocks the thread. */
  solveSync(args: readonly GenredArg[], options: KernelSolveCallOptions = {}): FloatArray {
    const run = this.prepare(args, options);
    const cg = conjugateGradient(run.rhs, run.alpha, run.eps, run.maxIter);
    let step = cg.next();
    while (!step.done)
      step = cg.next(this.toFloat64(this.operator.callSync(run.withUnknown(step.value), run.call)));
    return run.output(step.value);
  }

  /** The gradient of ⟨cotangent, solve(args)⟩ with respect to the input `wrt`, in that input's dtype and size. */
  async solveGrad(args: readonly GenredArg[], options: KernelSolveGradOptions): Promise<FloatArray> {
    const { wrt, cotangentArgs, solveOptions } = this.prepareGrad(args, options);
    const adjoint = await this.solve(cotangentArgs, solveOptions); // (αI + K)⁻¹G, K being symmetric
    if (wrt === this.unknown.pos) return adjoint;
    const solution = await this.solve(args, solveOptions);
    return this.operator.grad(replaceAt(args, this.unknown.pos, solution), {
      wrt,
      cotangent: adjoint.map((v) => -v),
      ranges: options.ranges,
      backend: options.backend,
      threads: options.threads,
      signal: options.signal,
    });
  }

  /** Like `solveGrad`, but blocks the thread. */
  solveGradSync(args: readonly GenredArg[], options: KernelSolveGradOptions): FloatArray {
    const { wrt, cotangentArgs, solveOptions } = this.prepareGrad(args, options);
    const adjoint = this.solveSync(cotangentArgs, solveOptions);
    if (wrt === this.unknown.pos) return adjoint;
    const solution = this.solveSync(args, solveOptions);
    return this.operator.gradSync(replaceAt(args, this.unknown.pos, solution), {
      wrt,
      cotangent: adjoint.map((v) => -v),
      ranges: options.ranges,
      backend: options.backend,
      threads: options.threads,
      signal: options.signal,
    });
  }

  private toFloat64(result: unknown): Float64Array {
    if (result instanceof Float64Array) return result;
    if (result instanceof Float32Array) return Float64Array.from(result);
    throw new KeOpsError('ERR_INTERNAL', 'KernelSolve: the Sum reduction returned no values');
  }

  private prepare(args: readonly GenredArg[], options: KernelSolveCallOptions) {
    if (typeof options !== 'object' || options === null) throw invalid('solve options must be an object');
    if (!Array.isArray(args) || args.length !== this.operator.argCount) {
      throw new KeOpsError(
        'ERR_ARG_COUNT',
        `KernelSolve takes ${this.operator.argCount} arguments, got ${Array.isArray(args) ? args.length : 'none'}`,
      );
    }
    const alpha = options.alpha ?? 1e-10;
    const eps = options.eps ?? 1e-6;
    if (typeof alpha !== 'number' || !(alpha >= 0) || !Number.isFinite(alpha)) {
      throw invalid(`alpha must be a finite number >= 0, got ${String(alpha)}`);
    }
    if (typeof eps !== 'number' || !(eps > 0) || !Number.isFinite(eps)) {
      throw invalid(`eps must be a finite number > 0, got ${String(eps)}`);
    }
    const rhsArg = args[this.unknown.pos];
    const rhsData = ArrayBuffer.isView(rhsArg) ? rhsArg : (rhsArg as { data?: unknown })?.data;
    if (!(rhsData instanceof Float32Array || rhsData instanceof Float64Array)) {
      throw new KeOpsError(
        'ERR_ARG_TYPE',
        `the right-hand side '${describe(this.unknown)}' must be a Float32Array or a Float64Array`,
      );
    }
    const maxIter = options.maxIter ?? 10 * rhsData.length;
    if (!Number.isSafeInteger(maxIter) || maxIter < 0) {
      throw invalid(`maxIter must be an integer >= 0, got ${String(maxIter)}`);
    }
    this.checkArguments(args, rhsData.length / this.unknown.dim);
    const shape = ArrayBuffer.isView(rhsArg) ? undefined : (rhsArg as { shape: readonly number[] }).shape;
    const float32 = rhsData instanceof Float32Array;
    const inDtype = (x: Float64Array): FloatArray => (float32 ? Float32Array.from(x) : x);
    const pos = this.unknown.pos;
    return {
      rhs: Float64Array.from(rhsData),
      alpha,
      eps,
      maxIter,
      call: {
        ranges: options.ranges,
        backend: options.backend,
        threads: options.threads,
        signal: options.signal,
      } as GenredCallOptions,
      withUnknown: (x: Float64Array): GenredArg[] => {
        const data = inDtype(x);
        return replaceAt(args, pos, shape === undefined ? data : { data, shape });
      },
      output: inDtype,
    };
  }

  private prepareGrad(args: readonly GenredArg[], options: KernelSolveGradOptions) {
    if (typeof options !== 'object' || options === null)
      throw invalid('solveGrad options need { wrt, cotangent }');
    const wrt = this.operator.gradient(options.wrt).wrt.pos;
    const G = options.cotangent;
    if (!(G instanceof Float32Array || G instanceof Float64Array)) {
      throw new KeOpsError('ERR_ARG_TYPE', 'cotangent must be a Float32Array or a Float64Array');
    }
    const solveOptions: KernelSolveCallOptions = {
      alpha: options.alpha,
      eps: options.eps,
      maxIter: options.maxIter,
      ranges: options.ranges,
      backend: options.backend,
      threads: options.threads,
      signal: options.signal,
    };
    const rhs = args[this.unknown.pos];
    const rhsLength = (ArrayBuffer.isView(rhs) ? rhs : (rhs as { data?: FloatArray })?.data)?.length;
    if (G.length !== rhsLength) {
      throw invalid(`cotangent: the solution has ${rhsLength} values, the cotangent ${G.length}`);
    }
    const cotangentArgs = replaceAt(
      args,
      this.unknown.pos,
      ArrayBuffer.isView(rhs) ? G : { data: G, shape: rhs.shape },
    );
    return { wrt, cotangentArgs, solveOptions };
  }

  /** A square system without batch dims and, when checking symmetry, the same points on both sides. */
  private checkArguments(args: readonly GenredArg[], unknownRows: number): void {
    const outputCat = this.unknown.cat === 1 ? 0 : 1;
    for (const v of this.operator.variables) {
      const arg = args[v.pos];
      if (arg === undefined || ArrayBuffer.isView(arg)) continue;
      const rank = v.cat === 2 ? 1 : 2;
      if (Array.isArray(arg.shape) && arg.shape.length > rank) {
        throw new KeOpsError(
          'ERR_ARG_SHAPE',
          `KernelSolve takes no batch dims; ${describe(v)} has shape [${arg.shape}]`,
        );
      }
    }
    const outputVariable = this.operator.variables.find((v) => v.cat === outputCat);
    const outputRows =
      outputVariable === undefined ? 1 : rowsOf(args[outputVariable.pos], outputVariable.dim);
    // A malformed argument (NaN rows) is left to the planner, which explains it better.
    if (Number.isFinite(outputRows) && outputRows !== unknownRows) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `KernelSolve needs a square system: K has ${outputRows} output rows, the unknown ${unknownRows}`,
      );
    }
    if (!this.checkSymmetry) return;
    for (const [out, inner] of this.pairs) {
      if (!sameValues(args[out.pos], args[inner.pos])) {
        throw new KeOpsError(
          'ERR_NOT_SYMMETRIC',
          `KernelSolve: ${describe(out)} and ${describe(inner)} must hold the same points for K to be ` +
            "symmetric (pass symmetry: 'assume' to skip this check)",
        );
      }
    }
  }
}

/** The text front end: a formula string, its aliases and the unknown's alias (or `Var(pos,dim,cat)`). */
export class KernelSolve extends NodeKernelSolve {
  readonly formula: string;
  readonly aliases: readonly string[];
  declare readonly operator: Genred;

  constructor(
    formula: string,
    aliases: readonly string[],
    varInvAlias: string,
    options: KernelSolveOptions = {},
  ) {
    if (typeof options !== 'object' || options === null)
      throw invalid('KernelSolve options must be an object');
    options = readOptions('KernelSolve', options, KERNEL_SOLVE_OPTION_KEYS);
    const operator = new Genred(formula, aliases, {
      reduction: 'Sum',
      axis: options.axis ?? 0,
      sumScheme: options.sumScheme,
      dtypeAcc: options.dtypeAcc,
      backend: options.backend,
      threads: options.threads,
    });
    super(operator, findUnknown(operator, varInvAlias, aliases), options);
    this.formula = formula;
    this.aliases = Object.freeze([...aliases]);
  }
}

function describe(v: FormulaVariable): string {
  return v.name ?? `argument ${v.pos}`;
}

/** The variable named by `varInvAlias`: an alias name, or `Var(pos,dim,cat)` of a declared variable. */
function findUnknown(operator: NodeGenred, varInvAlias: string, aliases: readonly string[]): FormulaVariable {
  if (typeof varInvAlias !== 'string') throw invalid('varInvAlias must be an alias name or Var(pos,dim,cat)');
  const declared = operator.variables;
  const named = declared.find((v) => v.name === varInvAlias);
  if (named !== undefined) return named;
  let node: Node;
  try {
    node = parseFormula(varInvAlias, aliases).node;
  } catch (e) {
    throw invalid(`varInvAlias '${varInvAlias}' is neither an alias nor a variable: ${(e as Error).message}`);
  }
  const [pos] = node.params as number[];
  const found = node.op.name === 'Var' ? declared.find((v) => v.pos === pos) : undefined;
  if (found === undefined || found.dim !== node.dim) {
    throw invalid(`varInvAlias '${varInvAlias}' is not a variable of the formula`);
  }
  return found;
}

function replaceAt(args: readonly GenredArg[], pos: number, value: GenredArg): GenredArg[] {
  const copy = [...args];
  copy[pos] = value;
  return copy;
}

function dataOf(arg: GenredArg | undefined): FloatArray | undefined {
  if (arg === undefined) return undefined;
  return ArrayBuffer.isView(arg) ? arg : arg.data;
}

/** Rows of a (validated later by the planner) Vi/Vj argument. */
function rowsOf(arg: GenredArg | undefined, dim: number): number {
  const data = dataOf(arg);
  return data === undefined ? NaN : data.length / dim;
}

function sameValues(a: GenredArg | undefined, c: GenredArg | undefined): boolean {
  const x = dataOf(a);
  const y = dataOf(c);
  if (x === undefined || y === undefined || x.length !== y.length) return false;
  if (x === y) return true;
  for (let k = 0; k < x.length; k++) if (x[k] !== y[k]) return false;
  return true;
}

/**
 * Pairs the output-side variables with the unknown's side (the unknown excluded), in position order; the
 * pairing must be one to one with equal dims for symmetry to be checkable.
 */
function pairVariables(
  variables: readonly FormulaVariable[],
  unknown: FormulaVariable,
): (readonly [FormulaVariable, FormulaVariable])[] {
  const outputSide = variables.filter((v) => v.cat === 1 - unknown.cat);
  const unknownSide = variables.filter((v) => v.cat === unknown.cat && v.pos !== unknown.pos);
  const pairable =
    outputSide.length === unknownSide.length && outputSide.every((v, k) => v.dim === unknownSide[k].dim);
  if (!pairable) {
    const list = (vs: FormulaVariable[]) =>
      vs.map((v) => `${v.name ?? `Var ${v.pos}`}(${v.dim})`).join(', ') || 'none';
    throw new KeOpsError(
      'ERR_NOT_SYMMETRIC',
      `KernelSolve cannot check that K is symmetric: the ${unknown.cat === 1 ? 'i' : 'j'}-variables ` +
        `[${list(outputSide)}] do not pair with the other ${unknown.cat === 1 ? 'j' : 'i'}-variables ` +
        `[${list(unknownSide)}]; pass symmetry: 'assume' if it is`,
    );
  }
  return outputSide.map((v, k) => [v, unknownSide[k]] as const);
}

/**
 * K's block for points (P, Q) is A[:, l] = F(P on the output side, Q on the unknown's side, unknown = e_l);
 * symmetry means A(P, Q) = A(Q, P)ᵀ. Checked on a few random points, parameters random too.
 */
function checkSymmetricFormula(
  f: Node,
  unknown: FormulaVariable,
  pairs: readonly (readonly [FormulaVariable, FormulaVariable])[],
  variables: readonly FormulaVariable[],
): void {
  const random = seeded(0x5eed);
  const values = (dim: number, lo: number, hi: number) =>
    Float64Array.from({ length: dim }, () => lo + (hi - lo) * random());
  const d = unknown.dim;
  for (let trial = 0; trial < 3; trial++) {
    const params = new Map(variables.filter((v) => v.cat === 2).map((v) => [v.pos, values(v.dim, 0.5, 1.5)]));
    const P = pairs.map(([v]) => values(v.dim, -1, 1));
    const Q = pairs.map(([v]) => values(v.dim, -1, 1));
    const block = (outSide: Float64Array[], unknownSide: Float64Array[]): Float64Array[] =>
      Array.from({ length: d }, (_, l) => {
        const e = new Float64Array(d);
        e[l] = 1;
        const byPos = new Map<number, Float64Array>(params);
        pairs.forEach(([o, u], k) => {
          byPos.set(o.pos, outSide[k]);
          byPos.set(u.pos, unknownSide[k]);
        });
        byPos.set(unknown.pos, e);
        return evaluateFormula(f, (v) => byPos.get(v.params[0] as number) as Float64Array);
      });
    const A = block(P, Q); // A[l][m] = entry (m, l)
    const B = block(Q, P);
    let scale = 1;
    for (const col of A) for (const x of col) scale = Math.max(scale, Math.abs(x));
    for (let l = 0; l < d; l++) {
      for (let m = 0; m < d; m++) {
        if (Number.isNaN(A[l][m]) && Number.isNaN(B[m][l])) continue;
        if (!(Math.abs(A[l][m] - B[m][l]) <= 1e-9 * scale)) {
          throw new KeOpsError(
            'ERR_NOT_SYMMETRIC',
            `KernelSolve: K is not symmetric (K_ij ≠ K_jiᵀ on random points, the i- and j-variables paired in ` +
              `position order: ${pairs.map(([o, u]) => `${o.name ?? o.pos}↔${u.name ?? u.pos}`).join(', ') || 'none'}); ` +
              "pass symmetry: 'assume' to skip this check",
          );
        }
      }
    }
  }
}
