/**
 * The kernel language on LazyTensors: `lazyKernel('gaussian(x,y) * linear(u,v)**2', { x: x_i, y: y_j, u: u_i,
 * v: v_j }, [Pm(4), null])` is the symbolic matrix K_ij, to reduce like any LazyTensor (`K.matvec(b)`,
 * `K.mul(Vj(b, E)).sumSync(1)`, `.solve(...)`), differentiate or render (`toDot()`).
 */
import { KeOpsError } from '../errors';
import { LazyTensor, type Operand } from '../lazy-tensor';
import { ratToNumber } from '../formula/rational';
import { type KernelAlgebra, type KernelExpression } from './language';
import { kernelOf, scaleList } from './product';

/** LazyTensor operations as a kernel algebra: constants are compile-time constants, as in formula strings. */
export const LAZY_ALGEBRA: KernelAlgebra<LazyTensor> = {
  constant: (value) => LazyTensor.constant(ratToNumber(value)),
  call: (name, [first, ...rest], params = []) => first.op(name, rest, params),
};

export interface LazyKernelOptions {
  /** 'sum' (default): k(x_i, y_j). 'log': log k(x_i, y_j) in the stable form of the log-domain modes. */
  readonly domain?: 'sum' | 'log';
}

/**
 * The kernel as a LazyTensor. `variables` binds every name of the kernel's pairs to a LazyTensor (usually a Vi
 * for the first name of a pair and a Vj for the second); `gamma` gives one scale per atom, in order of
 * appearance (a LazyTensor such as Pm(0.25) or Vj(s, D), a number, or null for linear), or a single scale for
 * a single atom.
 */
export function lazyKernel(
  kernel: string | KernelExpression,
  variables: Readonly<Record<string, LazyTensor>>,
  gamma?: Operand | null | readonly (Operand | null)[],
  options: LazyKernelOptions = {},
): LazyTensor {
  const parsed = kernelOf(kernel);
  if (typeof variables !== 'object' || variables === null) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      'lazyKernel: variables must be an object { name: LazyTensor }',
    );
  }
  const domain = options.domain ?? 'sum';
  if (domain !== 'sum' && domain !== 'log') {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `lazyKernel: domain must be 'sum' or 'log', got ${String(domain)}`,
    );
  }
  const bound = (name: string): LazyTensor => {
    const v = Object.hasOwn(variables, name) ? variables[name] : undefined;
    if (!(v instanceof LazyTensor)) {
      throw new KeOpsError(
        'ERR_INVALID_ARGUMENT',
        `lazyKernel: the kernel uses '${name}': bind it to a LazyTensor`,
      );
    }
    return v;
  };
  const scales = scaleList(gamma, parsed).map((g) =>
    g === null ? undefined : g instanceof LazyTensor ? g : LazyTensor.constant(g as number),
  );
  return parsed.lower(
    LAZY_ALGEBRA,
    {
      pair: (p) => ({ x: bound(parsed.pairs[p].x), y: bound(parsed.pairs[p].y) }),
      scale: (a) => scales[a],
    },
    domain,
  );
}
