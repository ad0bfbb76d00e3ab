/**
 * What a typed array really is, read with the built-in %TypedArray%.prototype getters captured at load time:
 * a subclass getter or an own `length` property cannot change these answers (the native side checks the same
 * facts again on the backing store before any kernel reads it).
 */
import { KeOpsError } from '../errors';

const typedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype) as object;

function intrinsicGetter(name: string): (this: unknown) => unknown {
  const getter = Object.getOwnPropertyDescriptor(typedArrayPrototype, name)?.get;
  if (getter === undefined) throw new Error(`%TypedArray%.prototype.${name} has no getter`);
  return getter as (this: unknown) => unknown;
}

const lengthOfView = intrinsicGetter('length');
const bufferOfView = intrinsicGetter('buffer');

/** The number of elements `array` views in its buffer now (0 once the buffer is detached). */
export function elementCount(array: ArrayBufferView, what: string): number {
  try {
    return lengthOfView.call(array) as number;
  } catch (e) {
    throw new KeOpsError('ERR_ARG_TYPE', `${what} is not a genuine typed array (${(e as Error).message})`, {
      cause: e,
    });
  }
}

/**
 * Whether the array's ArrayBuffer was detached (transferred with postMessage / structuredClone). A detached
 * array reports 0 elements, like a genuinely empty one; constructing a view of its buffer tells them apart
 * (only arrays of 0 elements are probed). A SharedArrayBuffer can never be detached.
 */
export function isDetached(array: ArrayBufferView): boolean {
  if (elementCount(array, 'an array') !== 0) return false;
  const buffer = bufferOfView.call(array) as ArrayBufferLike;
  if (typeof SharedArrayBuffer !== 'undefined' && buffer instanceof SharedArrayBuffer) return false;
  try {
    new Uint8Array(buffer as ArrayBuffer, 0, 0);
    return false;
  } catch {
    return true;
  }
}

export function detachedError(what: string): KeOpsError {
  return new KeOpsError(
    'ERR_ARG_DETACHED',
    `${what}: its ArrayBuffer is detached (transferred to another thread or context); pass an array that owns its data`,
  );
}
