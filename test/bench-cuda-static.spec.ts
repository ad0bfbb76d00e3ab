/**
 * The PTX inner-loop counter of bench/cuda-static.ts on hand-written PTX: the loop that reads shared memory, its
 * shortest path back to the header (a cold branch skipped), the distinct shared bytes of that path (overlapping
 * vector loads counted once) and the pairs they make.
 */
import { expect } from 'chai';
import { innerLoopCount } from '../bench/cuda-static';

const PTX = String.raw`
.visible .entry keops_1d(
	.param .u64 keops_1d_param_0
)
{
	.reg .pred 	%p<4>;
	mov.u32 	%r1, 0;
$L__BB0_1:
	ld.shared.v4.f32 	{%f1, %f2, %f3, %f4}, [%r2];
	ld.shared.v2.f32 	{%f5, %f6}, [%r2+16];
	ld.shared.f32 	%f7, [%r2+12];
	setp.lt.f32 	%p1, %f1, %f9;
	@%p1 bra 	$L__BB0_3;
	bra.uni 	$L__BB0_2;
$L__BB0_3:
	add.f32 	%f9, %f1, %f2;
	add.f32 	%f9, %f9, %f3;
	add.f32 	%f9, %f9, %f4;
	add.f32 	%f9, %f9, %f5;
$L__BB0_2:
	add.s32 	%r1, %r1, 2;
	setp.ne.s32 	%p2, %r1, 64;
	@%p2 bra 	$L__BB0_1;
	ret;
}
`;

describe('bench/cuda-static.ts PTX loop counter', () => {
  it('counts the hot path of the shared-memory loop per pair', () => {
    // Hot path: 3 loads, setp, bra, bra.uni, then add, setp, bra = 9 instructions; bytes [0, 24) = two
    // 12-byte records, 2 rows per thread: 4 pairs.
    const count = innerLoopCount(PTX, 'keops_1d', 12, 2);
    expect(count).to.deep.equal({
      instructionsPerTrip: 9,
      pairsPerTrip: 4,
      perPair: 2.25,
      mufuPerPair: 0,
      fp64PerPair: 0,
      mmaPerPair: 0,
    });
  });

  it('counts the pairs of a tensor-core loop from its mma.sync instructions', () => {
    // Two m16n8k8 on the hot path: 2 × 16 × 8 pairs of a warp over 8 dimensions; at 16 dimensions per pair,
    // 2 × 1024 / (32 × 16) = 4 pairs per thread.
    const mma =
      'mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 	{%f1, %f2, %f3, %f4}, {%r5, %r6, %r7, %r8}, {%r9, %r10}, {%f1, %f2, %f3, %f4};';
    const tensor = PTX.replace(
      'setp.lt.f32 \t%p1, %f1, %f9;',
      `${mma}\n\t${mma}\n\tsetp.lt.f32 \t%p1, %f1, %f9;`,
    );
    const count = innerLoopCount(tensor, 'keops_1d', 12, 1, 16);
    expect(count.instructionsPerTrip).to.equal(11);
    expect(count.pairsPerTrip).to.equal(4);
    expect(count.mmaPerPair).to.equal(0.5);
  });

  it('counts a loop whose nested loop is cold (screened KMin), and its MUFU and FP64 operations', () => {
    // The exact evaluations of the pairs the screening keeps form a loop inside the j loop, off its hot path.
    const screened = PTX.replace(
      '$L__BB0_3:\n',
      '$L__BB0_3:\n$L__BB0_4:\n\tld.shared.f32 \t%f8, [%r3];\n\tadd.s32 \t%r4, %r4, 1;\n' +
        '\tsetp.ne.s32 \t%p3, %r4, 4;\n\t@%p3 bra \t$L__BB0_4;\n',
    ).replace(
      'setp.lt.f32 \t%p1, %f1, %f9;',
      'ex2.approx.ftz.f32 \t%f10, %f1;\n\tfma.rn.f64 \t%fd1, %fd2, %fd3, %fd1;\n\tsetp.lt.f32 \t%p1, %f10, %f9;',
    );
    const count = innerLoopCount(screened, 'keops_1d', 12, 2);
    expect(count.instructionsPerTrip).to.equal(11);
    expect(count.pairsPerTrip).to.equal(4);
    expect(count.mufuPerPair).to.equal(0.25);
    expect(count.fp64PerPair).to.equal(0.25);
    // With the nested loop on the hot path, the nested loop is the one counted.
    const hot = screened.replace('@%p1 bra \t$L__BB0_3;\n\tbra.uni \t$L__BB0_2;', 'bra.uni \t$L__BB0_3;');
    expect(innerLoopCount(hot, 'keops_1d', 4, 1).pairsPerTrip).to.equal(1);
  });

  it('says so when the entry or a shared-memory loop is missing', () => {
    expect(() => innerLoopCount(PTX, 'keops_split', 12, 1)).to.throw(/no .entry keops_split/);
    const noLoop = PTX.replace('@%p2 bra 	$L__BB0_1;', '');
    expect(() => innerLoopCount(noLoop, 'keops_1d', 12, 1)).to.throw(/no inner loop/);
  });
});
