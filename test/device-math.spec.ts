/**
 * The prelude's math that only the GPU runs, compiled here for the CPU: the float64 exp of the CUDA kernels
 * (keops_exp_device: CUDA's polynomial, coefficients in constant memory, library fallback outside the normal
 * range), and keops_exp2, the base-2 exponential of formulas whose log2(e) scale is folded into the formula
 * (lib/codegen/cuda-exp2.ts), against JavaScript's exp and 2 ** x. Needs g++.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { cudaPrelude } from '../lib/codegen/cuda';
import { rng } from './util';

const PROGRAM = String.raw`
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char** argv) {
  FILE* in = fopen(argv[1], "rb");
  long n = 0;
  if (fread(&n, sizeof n, 1, in) != 1) return 2;
  double* x = (double*)malloc(sizeof(double) * n);
  if (fread(x, sizeof(double), n, in) != (size_t)n) return 2;
  fclose(in);
  FILE* out = fopen(argv[2], "wb");
  for (long k = 0; k < n; k++) {
    const double e = keops_exp_device(x[k]), e2 = keops_exp2(x[k]), e2f = keops_exp2((float)x[k]);
    fwrite(&e, sizeof e, 1, out);
    fwrite(&e2, sizeof e2, 1, out);
    fwrite(&e2f, sizeof e2f, 1, out);
  }
  fclose(out);
  return 0;
}
`;

/** Runs the three functions on `xs`: [exp_device, exp2(double), exp2(float) widened] per value. */
function evaluate(xs: readonly number[]): Float64Array {
  const dir = mkdtempSync(join(tmpdir(), 'keops-device-math-'));
  try {
    writeFileSync(join(dir, 'math.cpp'), `${cudaPrelude()}\n${PROGRAM}`);
    execFileSync('g++', ['-O2', '-std=c++17', '-o', join(dir, 'math'), join(dir, 'math.cpp')]);
    const input = Buffer.alloc(8 + 8 * xs.length);
    input.writeBigInt64LE(BigInt(xs.length), 0);
    xs.forEach((x, k) => input.writeDoubleLE(x, 8 + 8 * k));
    writeFileSync(join(dir, 'in.bin'), input);
    execFileSync(join(dir, 'math'), [join(dir, 'in.bin'), join(dir, 'out.bin')]);
    const bytes = readFileSync(join(dir, 'out.bin'));
    return new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Distance in units in the last place of `expected` (doubles; 0 for identical values, NaN included). */
function ulps(got: number, expected: number, eps: number, tiny: number): number {
  if (Object.is(got, expected) || (Number.isNaN(got) && Number.isNaN(expected))) return 0;
  if (!Number.isFinite(expected) || !Number.isFinite(got)) return Infinity;
  return Math.abs(got - expected) / Math.max(Math.abs(expected) * eps, tiny);
}

describe('GPU-only prelude math, compiled for the CPU', function () {
  this.timeout(60_000);
  const random = rng(20261206);
  const special = [0, -0, 1, -1, 0.5, 1e-300, -1e-300, Infinity, -Infinity, NaN, 708.39, 708.4, 709.7, 709.8];
  special.push(-708.39, -708.4, -720, -745, -745.2, -746, 1023, 1024, -1022, -1074, -1075, -1076, -1100);
  const uniform = Array.from({ length: 4000 }, () => (random() * 2 - 1) * 760);
  const small = Array.from({ length: 2000 }, () => (random() * 2 - 1) * 4);
  const wide = Array.from({ length: 1000 }, () => (random() * 2 - 1) * 1100);
  const xs = [...special, ...uniform, ...small, ...wide];
  let out: Float64Array;
  before(() => {
    out = evaluate(xs);
  });

  it('exp(double): within 1 ulp of exp, exact specials (inf, 0, NaN, overflow, subnormals)', () => {
    let worst = 0;
    xs.forEach((x, k) => {
      const e = ulps(out[3 * k], Math.exp(x), 2 ** -52, 2 ** -1074);
      if (e > worst) worst = e;
      expect(e, `exp(${x}) = ${out[3 * k]}, expected ${Math.exp(x)}`).to.be.at.most(1);
    });
    expect(worst).to.be.above(0); // the polynomial is not the reference's: some values differ by rounding
    expect(Object.is(out[3 * special.indexOf(-Infinity)], 0)).to.equal(true);
    expect(out[3 * special.indexOf(Infinity)]).to.equal(Infinity);
    expect(Number.isNaN(out[3 * special.findIndex(Number.isNaN)])).to.equal(true);
  });

  it('exp2(double): within 2 ulp of 2 ** x, exact specials', () => {
    xs.forEach((x, k) => {
      const e = ulps(out[3 * k + 1], 2 ** x, 2 ** -52, 2 ** -1074);
      expect(e, `exp2(${x}) = ${out[3 * k + 1]}, expected ${2 ** x}`).to.be.at.most(2);
    });
  });

  it('exp2(float): within 2 float ulp of 2 ** x, 0 below 2^-149, inf above 2^128', () => {
    xs.forEach((x, k) => {
      const xf = Math.fround(x);
      const expected = Math.fround(2 ** xf);
      const e = ulps(out[3 * k + 2], expected, 2 ** -23, 2 ** -149);
      expect(e, `exp2f(${xf}) = ${out[3 * k + 2]}, expected ${expected}`).to.be.at.most(2);
    });
  });
});
