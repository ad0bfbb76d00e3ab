/**
 * CUDA kernels for a device: generated source (lib/codegen/cuda.ts) → NVRTC image (cubin for the device's
 * architecture, PTX when this NVRTC does not know it) → module loaded on the device.
 *
 * The image is cached on disk (lib/backend/cache.ts: `<key>.cubin` / `<key>.ptx` with the integrity trailer), the
 * key covering the source, the NVRTC library and version, the architecture, the driver version and the flags, so a
 * new driver or NVRTC never loads a stale image. Loaded modules are cached per device (device.ts).
 */
import { createHash } from 'node:crypto';
import type { CudaKernels } from '../../codegen/cuda';
import { readCacheEntry, readCacheEntrySync, writeCacheEntry, writeCacheEntrySync } from '../cache';
import { compileCuda, type CudaCompiled, type CudaCompileOptions, compileCudaSync } from './compile';
import type { CudaDevice, LoadedCudaModule } from './device';

/** Bump when the key recipe or the way images are built changes. */
const IMAGE_FORMAT_VERSION = 1;

export type CudaKernelOrigin = 'memory' | 'disk' | 'compiled';

export interface AcquiredCudaKernels {
  readonly kernels: CudaKernels;
  readonly module: LoadedCudaModule;
  readonly key: string;
  /** Where the image came from the first time this runner needed it. */
  readonly origin: CudaKernelOrigin;
  readonly compileMs: number;
  readonly output: 'cubin' | 'ptx';
}

function imageKey(kernels: CudaKernels, device: CudaDevice): string {
  const recipe = {
    format: IMAGE_FORMAT_VERSION,
    source: createHash('sha256').update(kernels.source).digest('hex'),
    fastMath: kernels.fastMath,
    arch: device.arch,
    nvrtc: device.nvrtc,
    driver: device.driverVersion,
  };
  return createHash('sha256').update(JSON.stringify(recipe)).digest('hex');
}

function entryNames(kernels: CudaKernels): string[] {
  const { oneD, split, splitMerge, ranges } = kernels.entries;
  return [oneD, split, splitMerge, ranges];
}

function compileOptions(kernels: CudaKernels, device: CudaDevice): CudaCompileOptions {
  return { arch: device.arch, fastMath: kernels.fastMath, output: 'cubin' };
}

interface Image {
  bytes: Buffer;
  origin: CudaKernelOrigin;
  compileMs: number;
  output: 'cubin' | 'ptx';
}

function fromCompiled(compiled: CudaCompiled): Image {
  return {
    bytes: compiled.image,
    origin: 'compiled',
    compileMs: compiled.compileMs,
    output: compiled.output,
  };
}

/** The kernels of `kernels` on `device`: from the device's modules, the disk cache, or compiled now. */
export async function acquireCudaKernels(
  kernels: CudaKernels,
  device: CudaDevice,
): Promise<AcquiredCudaKernels> {
  const key = imageKey(kernels, device);
  let image: Image = { bytes: Buffer.alloc(0), origin: 'memory', compileMs: 0, output: 'cubin' };
  const module = await device.loadModule(
    key,
    async () => {
      for (const output of ['cubin', 'ptx'] as const) {
        const cached = await readCacheEntry(key, output);
        if (cached !== undefined) {
          image = { bytes: cached, origin: 'disk', compileMs: 0, output };
          return cached;
        }
      }
      image = fromCompiled(await compileCuda(kernels.source, compileOptions(kernels, device)));
      await writeCacheEntry(key, image.output, image.bytes);
      return image.bytes;
    },
    entryNames(kernels),
  );
  return { kernels, module, key, origin: image.origin, compileMs: image.compileMs, output: image.output };
}

export function acquireCudaKernelsSync(kernels: CudaKernels, device: CudaDevice): AcquiredCudaKernels {
  const key = imageKey(kernels, device);
  let image: Image = { bytes: Buffer.alloc(0), origin: 'memory', compileMs: 0, output: 'cubin' };
  const module = device.loadModuleSync(
    key,
    () => {
      for (const output of ['cubin', 'ptx'] as const) {
        const cached = readCacheEntrySync(key, output);
        if (cached !== undefined) {
          image = { bytes: cached, origin: 'disk', compileMs: 0, output };
          return cached;
        }
      }
      image = fromCompiled(compileCudaSync(kernels.source, compileOptions(kernels, device)));
      writeCacheEntrySync(key, image.output, image.bytes);
      return image.bytes;
    },
    entryNames(kernels),
  );
  return { kernels, module, key, origin: image.origin, compileMs: image.compileMs, output: image.output };
}
