/**
 * Checks of what users pass to the public API that are not about kernels: the option keys each entry point
 * accepts (declared here, once), "did you mean" for a misspelt key, how a wrong value is described in an error,
 * and turning errors thrown by the user's own objects (Proxy traps, getters) into KeOpsErrors.
 */
import { KeOpsError, type KeOpsErrorCode } from './errors';
import { closestName } from './formula/parser';

/** `new Genred(formula, aliases, options)`. */
export const GENRED_OPTION_KEYS = [
  'reduction',
  'axis',
  'k',
  'formula2',
  'sumScheme',
  'dtypeAcc',
  'backend',
  'threads',
] as const;

/** `new NodeGenred(node, options)`: Genred's, with the declared inputs. */
export const NODE_GENRED_OPTION_KEYS = [...GENRED_OPTION_KEYS, 'variables', 'argCount'] as const;

/**
 * `call` / `callSync` options. `signal` (an AbortSignal) is read by the backends that can stop a running call;
 * add new call options here (one place) together with the code that reads them.
 */
export const CALL_OPTION_KEYS = ['ranges', 'backend', 'threads', 'device', 'output', 'signal'] as const;

/** Options of a LazyTensor reduction call (`sum(1, options)`, `reduction(...).call(options)`, `grad`). */
export const LAZY_REDUCTION_OPTION_KEYS = [
  'ranges',
  'backend',
  'threads',
  'signal',
  'dtypeAcc',
  'sumScheme',
] as const;

/** `new KernelSolve(formula, aliases, unknown, options)`. */
export const KERNEL_SOLVE_OPTION_KEYS = [
  'axis',
  'symmetry',
  'sumScheme',
  'dtypeAcc',
  'backend',
  'threads',
] as const;

/** `new NodeKernelSolve(node, unknown, options)`: KernelSolve's, with the declared inputs. */
export const NODE_KERNEL_SOLVE_OPTION_KEYS = [...KERNEL_SOLVE_OPTION_KEYS, 'variables', 'argCount'] as const;

/** `grad` / `gradSync` options: a call's, with what to differentiate. */
export const GRAD_OPTION_KEYS = [...CALL_OPTION_KEYS, 'wrt', 'cotangent'] as const;

/** A short description of a value for error messages: its type, and the value itself when short. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  switch (typeof value) {
    case 'string':
      return `a string (${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)})`;
    case 'number':
      return `a number (${String(value)})`;
    case 'bigint':
      return `a bigint (${String(value)}n)`;
    case 'boolean':
      return `a boolean (${String(value)})`;
    case 'symbol':
      return 'a symbol';
    case 'function':
      return 'a function';
    default:
      if (Array.isArray(value)) return `an array of length ${value.length}`;
      if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`;
      return 'an object';
  }
}

/**
 * Refuses an options object that is not an object, or that has a key `allowed` does not list (with the closest
 * allowed key as a suggestion). Returns a plain copy, read once (getters and Proxy traps run here, only here).
 */
export function readOptions<T>(what: string, options: T, allowed: readonly string[]): T {
  return fromUserCode(`${what} options`, () => {
    if (typeof options !== 'object' || options === null || Array.isArray(options)) {
      throw new KeOpsError(
        'ERR_INVALID_ARGUMENT',
        `${what} options must be an object, got ${describeValue(options)}`,
      );
    }
    for (const key of Object.keys(options)) {
      if (allowed.includes(key)) continue;
      const hint = closestName(key, allowed);
      throw new KeOpsError(
        'ERR_INVALID_ARGUMENT',
        `${what}: unknown option '${key}'${hint === undefined ? '' : `; did you mean '${hint}'?`} ` +
          `(options: ${allowed.join(', ')})`,
      );
    }
    return { ...options };
  });
}

/**
 * Runs `read`, which reads objects the user gave (options, arguments): an error that is not a KeOpsError
 * can only come from the user's objects (a Proxy trap, a getter), and becomes a KeOpsError with `code` that
 * keeps the original as its cause.
 */
export function fromUserCode<T>(
  what: string,
  read: () => T,
  code: KeOpsErrorCode = 'ERR_INVALID_ARGUMENT',
): T {
  try {
    return read();
  } catch (e) {
    if (e instanceof KeOpsError) throw e;
    const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    throw new KeOpsError(code, `reading the ${what} threw ${message}`, { cause: e });
  }
}
