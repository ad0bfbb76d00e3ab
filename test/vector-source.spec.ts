import { expect } from 'chai';
import { bfloat16ToNumber, convertToFloat, float16ToNumber, vectorsFromArray } from '../lib/io/vector-source';
import { expectKeOpsError, rejection } from './util';

describe('vector sources and stored-value conversion', () => {
  it('decodes float16 bit patterns: normals, subnormals, zeros, infinities, NaN', () => {
    expect(float16ToNumber(0x3c00)).to.equal(1);
    expect(float16ToNumber(0xc000)).to.equal(-2);
    expect(float16ToNumber(0x7bff)).to.equal(65504);
    expect(float16ToNumber(0x0001)).to.equal(2 ** -24);
    expect(float16ToNumber(0x03ff)).to.equal(1023 * 2 ** -24);
    expect(float16ToNumber(0x0400)).to.equal(2 ** -14);
    expect(Object.is(float16ToNumber(0x8000), -0)).to.equal(true);
    expect(float16ToNumber(0x7c00)).to.equal(Infinity);
    expect(float16ToNumber(0xfc00)).to.equal(-Infinity);
    expect(Number.isNaN(float16ToNumber(0x7e00))).to.equal(true);
    expect(float16ToNumber(0x3555)).to.equal(0.333251953125);
  });

  it('decodes bfloat16 as the top half of a float32', () => {
    expect(bfloat16ToNumber(0x3f80)).to.equal(1);
    expect(bfloat16ToNumber(0xc0a0)).to.equal(-5);
    expect(bfloat16ToNumber(0x3eab)).to.equal(0.333984375);
    expect(bfloat16ToNumber(0x7f80)).to.equal(Infinity);
  });

  it('converts every storage dtype into float32 and float64', () => {
    const bf = new Uint16Array([0x3f80, 0xc0a0]);
    expect([...convertToFloat(bf, 'bfloat16', new Float64Array(2))]).to.deep.equal([1, -5]);
    expect([
      ...convertToFloat(new Uint16Array([0x3c00, 0xc000]), 'float16', new Float32Array(2)),
    ]).to.deep.equal([1, -2]);
    expect([...convertToFloat(new Int8Array([-128, 127]), 'int8', new Float32Array(2))]).to.deep.equal([
      -128, 127,
    ]);
    expect([...convertToFloat(new Uint8Array([0, 255]), 'uint8', new Float64Array(2))]).to.deep.equal([
      0, 255,
    ]);
    expect([
      ...convertToFloat(new BigInt64Array([-3n, 2n ** 40n]), 'int64', new Float64Array(2)),
    ]).to.deep.equal([-3, 2 ** 40]);
    expect([...convertToFloat(new Int32Array([16777217]), 'int32', new Float32Array(1))]).to.deep.equal([
      16777216,
    ]);
  });

  it('reads in-memory rows by ranges and refuses bad shapes and ranges', async () => {
    const src = vectorsFromArray(new Uint8Array([1, 2, 3, 4, 5, 6]), 2, { name: 'q' });
    expect(src.rows).to.equal(3);
    expect(src.dtype).to.equal('uint8');
    expect([...(await src.read(1, 3))]).to.deep.equal([3, 4, 5, 6]);
    expect((await rejection(src.read(2, 4))).code).to.equal('ERR_INVALID_ARGUMENT');
    expectKeOpsError(() => vectorsFromArray(new Uint8Array(5), 2), 'ERR_ARG_SHAPE');
    expectKeOpsError(() => vectorsFromArray(new Uint8Array(4), 2, { dtype: 'bfloat16' }), 'ERR_ARG_DTYPE');
    expect(vectorsFromArray(new Uint16Array(4), 2, { dtype: 'bfloat16' }).dtype).to.equal('bfloat16');
    expectKeOpsError(() => vectorsFromArray([1, 2] as unknown as Float32Array, 1), 'ERR_ARG_TYPE');
  });
});
