/**
 * The k-NN metrics, each declared once: the formula the kernel ranks by (smallest first, over x = the query row
 * and y = the base row), whether rows are normalised first, and how a ranked value becomes the reported
 * distance. Every metric is computed in the kernel as the value it reports (up to an exact sign flip for 'ip'),
 * so that ties and order are those of the reported distances.
 */
import { KeOpsError } from '../errors';
import { type Formula, parseFormula } from '../formula/index';

export type KnnMetricName = 'l2' | 'euclidean' | 'ip' | 'cosine' | 'l1';

/** A metric name, or a custom formula over `x` (query row) and `y` (base row) whose smallest values are nearest. */
export type KnnMetric = KnnMetricName | { readonly formula: string };

export interface MetricDef {
  /** The name, or 'custom'. */
  readonly name: KnnMetricName | 'custom';
  /** The ranked formula (smallest = nearest). */
  readonly formula: string;
  /** Rows are scaled to unit Euclidean norm (in float64) before the compute dtype. */
  readonly normalize: boolean;
  /** The reported distance is −(ranked value): 'ip' reports the inner product, largest first. */
  readonly negate: boolean;
}

const BUILTIN: Readonly<Record<KnnMetricName, MetricDef>> = {
  // Squared Euclidean distance, as FAISS's L2 reports it.
  l2: { name: 'l2', formula: 'SqDist(x,y)', normalize: false, negate: false },
  euclidean: { name: 'euclidean', formula: 'Norm2(x-y)', normalize: false, negate: false },
  ip: { name: 'ip', formula: '-(x|y)', normalize: false, negate: true },
  // 1 − cosine similarity: the inner product of the normalised rows.
  cosine: { name: 'cosine', formula: '1-(x|y)', normalize: true, negate: false },
  l1: { name: 'l1', formula: 'Sum(Abs(x-y))', normalize: false, negate: false },
};

export const KNN_METRICS: readonly KnnMetricName[] = Object.keys(BUILTIN) as KnnMetricName[];

/** The aliases every metric formula is parsed with. */
export const metricAliases = (dim: number): string[] => [`x = Vi(${dim})`, `y = Vj(${dim})`];

/** The definition of `metric` with its parsed formula; typed KeOpsErrors for unknown metrics and bad formulas. */
export function resolveMetric(metric: unknown, dim: number): { def: MetricDef; formula: Formula } {
  let def: MetricDef;
  if (typeof metric === 'string') {
    if (!Object.prototype.hasOwnProperty.call(BUILTIN, metric)) {
      throw new KeOpsError(
        'ERR_INVALID_ARGUMENT',
        `unknown metric '${metric}' (known: ${KNN_METRICS.join(', ')}, or { formula })`,
      );
    }
    def = BUILTIN[metric as KnnMetricName];
  } else if (typeof metric === 'object' && metric !== null && !Array.isArray(metric)) {
    const keys = Object.keys(metric);
    const text = (metric as { formula?: unknown }).formula;
    if (keys.length !== 1 || typeof text !== 'string') {
      throw new KeOpsError(
        'ERR_INVALID_ARGUMENT',
        'a custom metric is { formula: string } (a formula over x, the query row, and y, the base row)',
      );
    }
    def = { name: 'custom', formula: text, normalize: false, negate: false };
  } else {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `metric must be one of ${KNN_METRICS.join(', ')} or { formula }, got ${describe(metric)}`,
    );
  }
  const formula = parseFormula(def.formula, metricAliases(dim));
  const extra = formula.variables.filter((v) => v.name !== 'x' && v.name !== 'y');
  if (extra.length > 0) {
    throw new KeOpsError(
      'ERR_FORMULA_NAME',
      `metric formula '${def.formula}': it may read only x (Vi(${dim}), the query row) and y (Vj(${dim}), the base row), ` +
        `not the variable at position ${extra[0].pos}`,
    );
  }
  if (formula.dim !== 1) {
    throw new KeOpsError(
      'ERR_FORMULA_DIM',
      `metric formula '${def.formula}' has dimension ${formula.dim}; a distance must be a scalar (dimension 1)`,
    );
  }
  return { def, formula };
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v;
}
