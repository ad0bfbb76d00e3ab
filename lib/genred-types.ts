/**
 * Compile-time types of `Genred`: the reduction names as string literals, and the result type of a call from
 * the reduction (values, Int32Array indices, or both) and the dtype of the arguments (Float32Array in,
 * Float32Array out). The name lists are values too, so that a test can check them against the reductions the
 * library actually resolves.
 */
import type { DeviceArray } from './backend/cuda/device-array';
import type { GenredValues, GenredResult } from './formula/genred-reductions';

/** Reductions whose result is values only (one row of dimOut values per output row). */
export const VALUE_REDUCTIONS = [
  'Sum',
  'LogSumExp',
  'LogSumExpWeight',
  'SumSoftMaxWeight',
  'SoftMax',
  'Max_SumShiftExp',
  'Max_SumShiftExpWeight',
  'Min',
  'Max',
  'KMin',
] as const;

/** Reductions whose result is indices only (an Int32Array). */
export const INDEX_REDUCTIONS = ['ArgMin', 'ArgMax', 'ArgKMin'] as const;

/** Reductions whose result is `{ values, indices }`. */
export const PAIR_REDUCTIONS = [
  'Min_ArgMin',
  'MinArgMin',
  'Max_ArgMax',
  'MaxArgMax',
  'KMin_ArgKMin',
  'KMinArgKMin',
] as const;

export type ValueReductionName = (typeof VALUE_REDUCTIONS)[number];
export type IndexReductionName = (typeof INDEX_REDUCTIONS)[number];
export type PairReductionName = (typeof PAIR_REDUCTIONS)[number];
/** Every reduction name `Genred` accepts. */
export type ReductionName = ValueReductionName | IndexReductionName | PairReductionName;

type Float32Arg = Float32Array | { readonly data: Float32Array; readonly shape: readonly number[] };
type Float64Arg = Float64Array | { readonly data: Float64Array; readonly shape: readonly number[] };

/** The values' array type of a call with these arguments: their dtype (both when it cannot be told). */
export type ValuesOf<Args extends readonly unknown[]> = Args extends readonly Float32Arg[]
  ? Float32Array
  : Args extends readonly Float64Arg[]
    ? Float64Array
    : GenredValues;

/** What `call` / `callSync` of reduction `R` returns, with values of type `V`. */
export type GenredOutput<
  R extends string,
  V extends GenredValues = GenredValues,
> = R extends IndexReductionName
  ? Int32Array
  : R extends PairReductionName
    ? { values: V; indices: Int32Array }
    : R extends ValueReductionName
      ? V
      : GenredResult;

/** What `call(args, { output: 'device' })` of reduction `R` resolves to. */
export type GenredDeviceOutput<R extends string> = R extends PairReductionName
  ? { values: DeviceArray; indices: DeviceArray }
  : R extends ValueReductionName | IndexReductionName
    ? DeviceArray
    : DeviceArray | { values: DeviceArray; indices: DeviceArray };
