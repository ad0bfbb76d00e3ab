/**
 * Where the CUDA-backend tests run: on the machine's GPU when runtimeInfo() says CUDA works, else on the
 * emulated GPU (test/fake-cuda: a fake libcuda and NVRTC that compile the generated kernels with g++ and run
 * them on CPU threads), which exercises every host-side path — loading, NVRTC, the image cache, modules,
 * memory, launches, the device thread, errors — with the real generated kernels. When neither is possible the
 * tests skip, saying why.
 *
 *     describe('...', function () {
 *       const target = useCudaTarget();          // registers before/after hooks
 *       it('...', async function () { target.require(this); ... });
 *     });
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runtimeInfo } from '../lib/backend/cuda/runtime';
import { packageRoot } from '../lib/backend/package-root';
import { fakeCudaEnv } from './fake-cuda';

/** A real NVRTC library: KEOPS_NVRTC_LIBRARY, or the one .ci/run unpacks into .nvrtc/; undefined when neither. */
export function localNvrtc(): string | undefined {
  if (process.env.KEOPS_NVRTC_LIBRARY) return process.env.KEOPS_NVRTC_LIBRARY;
  const unpacked = join(packageRoot(), '.nvrtc', 'nvidia', 'cu13', 'lib', 'libnvrtc.so.13');
  return existsSync(unpacked) ? unpacked : undefined;
}

export interface CudaTarget {
  /** 'gpu': a real device; 'emulated': the fake driver; undefined: neither (tests skip). */
  readonly kind: 'gpu' | 'emulated' | undefined;
  /** Why there is no target. */
  readonly reason: string;
  /** Skips the calling test when there is no target. */
  require(context: Mocha.Context): void;
}

/** Env variables the fake driver reads; restored after each suite that changes them. */
export function withFakeEnv<T>(vars: Record<string, string | undefined>, body: () => T): T {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const set = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  set(vars);
  let result: T;
  try {
    result = body();
  } catch (e) {
    set(saved);
    throw e;
  }
  if (result instanceof Promise) return result.finally(() => set(saved)) as T;
  set(saved);
  return result;
}

const reported = new Set<string>();

export function useCudaTarget(options: { emulatedOnly?: boolean } = {}): CudaTarget {
  const state: { kind: CudaTarget['kind']; reason: string } = { kind: undefined, reason: '' };
  const saved: Record<string, string | undefined> = {};
  before(async function () {
    this.timeout(120_000);
    if (!options.emulatedOnly) {
      const info = await runtimeInfo();
      if (info.backend === 'cuda') {
        state.kind = 'gpu';
        return;
      }
    }
    try {
      const env = fakeCudaEnv();
      for (const [k, v] of Object.entries(env)) {
        saved[k] = process.env[k];
        process.env[k] = v;
      }
      const info = await runtimeInfo();
      if (info.backend !== 'cuda') throw new Error(`the emulated GPU is not usable: ${info.reason}`);
      state.kind = 'emulated';
    } catch (e) {
      state.reason = `no GPU and no emulated GPU: ${(e as Error).message}`;
      if (!reported.has(state.reason)) {
        reported.add(state.reason);
        console.log(`      (CUDA tests skipped: ${state.reason})`);
      }
    }
  });
  after(function () {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  return {
    get kind() {
      return state.kind;
    },
    get reason() {
      return state.reason;
    },
    require(context: Mocha.Context) {
      if (state.kind === undefined) context.skip();
    },
  };
}

/** For one describe block: the fake driver reports `count` devices (KEOPS_FAKE_CUDA_DEVICES), restored after. */
export function useFakeCudaDevices(count: number): void {
  let saved: string | undefined;
  before(() => {
    saved = process.env.KEOPS_FAKE_CUDA_DEVICES;
    process.env.KEOPS_FAKE_CUDA_DEVICES = String(count);
  });
  after(() => {
    if (saved === undefined) delete process.env.KEOPS_FAKE_CUDA_DEVICES;
    else process.env.KEOPS_FAKE_CUDA_DEVICES = saved;
  });
}
