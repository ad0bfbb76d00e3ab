/**
 * The tuned CUDA paths compiled by the real NVRTC for the GPUs they target (sm_80 and sm_90 cubins): the screened
 * k-NN kernels (cuda-screen.ts), with FMA or tensor-core (mma.sync) dot products, base-2 exponentials (cuda-exp2.ts), the float64 exp with its coefficients in
 * constant memory, and the KMin merge in registers. Their logic runs on the emulated GPU (cuda-screen.spec.ts,
 * cuda-exp2.spec.ts, cuda-kernel-tuning.spec.ts); this checks that NVRTC accepts them. NVRTC comes from
 * KEOPS_NVRTC_LIBRARY or .nvrtc/ (see cuda-compile.spec.ts); without it the tests skip, saying why.
 */
import { expect } from 'chai';
import { compileCuda } from '../lib/backend/cuda/compile';
import { runtimeInfo } from '../lib/backend/cuda/runtime';
import { type CudaDtype, generateCudaKernels } from '../lib/codegen/cuda';
import type { ArgPosition } from '../lib/codegen/formula';
import { parseReductionWithVariables } from '../lib/formula/index';
import { localNvrtc } from './cuda-target';

const CASES: readonly {
  text: string;
  aliases: string[];
  dtype: CudaDtype;
  has: string;
  tensorCores?: boolean;
}[] = [
  // Tensor cores: x in registers (D = 40: 5 steps, padded), x in shared memory (D = 128), long unrolled loop (784).
  {
    text: 'ArgKMin_Reduction(SqDist(x,y),10,0)',
    aliases: ['x = Vi(0,40)', 'y = Vj(1,40)'],
    dtype: 'float32',
    has: 'mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32',
    tensorCores: true,
  },
  {
    text: 'KMin_ArgKMin_Reduction(SqDist(y,x),3,1)',
    aliases: ['x = Vi(0,128)', 'y = Vj(1,128)'],
    dtype: 'float32',
    has: '#define KEOPS_MMA_A_IN_REGISTERS 0',
    tensorCores: true,
  },
  {
    text: 'Min_ArgMin_Reduction(SqDist(x,y),0)',
    aliases: ['x = Vi(0,784)', 'y = Vj(1,784)'],
    dtype: 'float32',
    has: '#define KEOPS_MMA 1',
    tensorCores: true,
  },
  // Dot-product rankings (inner product, cosine) on tensor cores, x in registers and by chunks.
  {
    text: 'KMin_ArgKMin_Reduction(-(x|y),10,0)',
    aliases: ['x = Vi(0,64)', 'y = Vj(1,64)'],
    dtype: 'float32',
    has: '#define KEOPS_SCREEN_DOT 1',
    tensorCores: true,
  },
  {
    text: 'ArgKMin_Reduction(1-(x|y),10,0)',
    aliases: ['x = Vi(0,256)', 'y = Vj(1,256)'],
    dtype: 'float32',
    has: '#define KEOPS_SCREEN_DOT 1',
    tensorCores: true,
  },
  {
    text: 'ArgKMin_Reduction(SqDist(x,y),10,0)',
    aliases: ['x = Vi(0,128)', 'y = Vj(1,128)'],
    dtype: 'float32',
    has: 'kScreen = true',
  },
  {
    text: 'KMin_ArgKMin_Reduction(SqDist(y,x),3,1)',
    aliases: ['x = Vi(0,32)', 'y = Vj(1,32)'],
    dtype: 'float32',
    has: 'kScreen = true',
  },
  {
    text: 'Sum_Reduction(Exp(-g*SqDist(x,y))*b,0)',
    aliases: ['x = Vi(0,3)', 'y = Vj(1,3)', 'b = Vj(2,1)', 'g = Pm(3,1)'],
    dtype: 'float32',
    has: 'keops_exp2(',
  },
  {
    text: 'Sum_Reduction(Exp(-SqDist(x,y))*b,0)',
    aliases: ['x = Vi(0,3)', 'y = Vj(1,3)', 'b = Vj(2,1)'],
    dtype: 'float64',
    has: 'keops_exp(',
  },
  {
    text: 'ArgKMin_Reduction(SqDist(x,y),10,0)',
    aliases: ['x = Vi(0,3)', 'y = Vj(1,3)'],
    dtype: 'float32',
    has: 'keops_red_merge',
  },
];

describe('tuned CUDA kernels compiled by NVRTC (sm_80, sm_90)', function () {
  this.timeout(300_000);
  let restore: string | undefined;

  before(async function () {
    const path = localNvrtc();
    if (path === undefined) {
      console.log('      (skipped: no NVRTC: set KEOPS_NVRTC_LIBRARY)');
      this.skip();
    }
    restore = process.env.KEOPS_NVRTC_LIBRARY;
    process.env.KEOPS_NVRTC_LIBRARY = path;
    const info = await runtimeInfo();
    if (info.nvrtc === undefined) {
      console.log(`      (skipped: NVRTC cannot be loaded: ${info.reason})`);
      this.skip();
    }
  });

  after(() => {
    if (restore === undefined) delete process.env.KEOPS_NVRTC_LIBRARY;
    else process.env.KEOPS_NVRTC_LIBRARY = restore;
  });

  for (const c of CASES) {
    it(`${c.text} ${c.dtype} (${c.aliases.map((a) => a.split(' ')[2]).join(', ')})${c.tensorCores === true ? ', tensor cores' : ''}`, async () => {
      const parsed = parseReductionWithVariables(c.text, c.aliases);
      const positions: ArgPosition[] = parsed.variables.map((v) => ({ dim: v.dim, cat: v.cat }));
      const kernels = generateCudaKernels(parsed.reduction, {
        dtype: c.dtype,
        sumScheme: parsed.reduction.def.sumType ? 'block_sum' : 'direct_sum',
        positions,
        tensorCores: c.tensorCores,
      });
      expect(kernels.source).to.include(c.has);
      expect(kernels.tensorCores).to.equal(c.tensorCores === true);
      for (const arch of ['sm_80', 'sm_90'] as const) {
        const compiled = await compileCuda(kernels.source, {
          arch,
          fastMath: kernels.fastMath,
          output: 'cubin',
        });
        expect(compiled.arch).to.equal(arch);
        expect(compiled.log, `${arch}: NVRTC warnings`).to.not.match(/warning/);
        expect([...compiled.image.subarray(0, 4)]).to.deep.equal([0x7f, 0x45, 0x4c, 0x46]);
        for (const entry of Object.values(kernels.entries))
          expect(compiled.image.includes(entry)).to.equal(true);
      }
    });
  }
});
