/** One human-readable summary of where keops-node will run: used by `npm start` and `keops-node info`. */
import { runtimeInfo } from './backend/cuda/runtime';
import { findCompiler } from './backend/cpu/compile';
import { cacheInfo } from './backend/cache';
import { isKeOpsError } from './errors';

export async function describeRuntime(): Promise<string> {
  const lines: string[] = [];
  const rt = await runtimeInfo();
  lines.push(`backend (auto): ${rt.backend}`);
  if (rt.reason) lines.push('  CUDA not used:', ...wrapReason(rt.reason, '    '));
  for (const d of rt.devices) {
    lines.push(
      `  GPU: ${d.name}, compute capability ${d.computeCapability.join('.')}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB`,
    );
  }
  if (rt.nvrtc) lines.push(`  NVRTC ${rt.nvrtc.version} at ${rt.nvrtc.path}`);
  if (rt.driver) lines.push(`  CUDA driver ${rt.driver.version}`);
  try {
    const compiler = await findCompiler();
    lines.push(`C++ compiler: ${compiler.identity.split('\n')[0]}`);
  } catch (e) {
    lines.push(`C++ compiler: none (${isKeOpsError(e) ? e.message : String(e)})`);
  }
  const cache = cacheInfo();
  lines.push(
    `kernel cache: ${cache.folder} (${cache.entries} kernels, ${(cache.bytes / 2 ** 20).toFixed(1)} MiB)`,
  );
  if (cache.staleTemporaries > 0) {
    lines.push(
      `  ${cache.staleTemporaries} stale temporary file(s) left by compilations whose process is gone ` +
        '(removed by the next compilation, or by `keops-node cache clear`)',
    );
  }
  return lines.join('\n');
}

const WIDTH = 100;

/**
 * A long reason ("no CUDA driver (...); no NVRTC (...); install ...") as indented lines: one per top-level
 * clause (split at "; " outside parentheses), each word-wrapped to WIDTH columns.
 */
export function wrapReason(reason: string, indent: string): string[] {
  const clauses: string[] = [];
  let depth = 0;
  let start = 0;
  for (let k = 0; k < reason.length; k++) {
    const c = reason[k];
    if (c === '(') depth++;
    else if (c === ')') depth = Math.max(0, depth - 1);
    else if (c === ';' && depth === 0 && reason[k + 1] === ' ') {
      clauses.push(reason.slice(start, k + 1));
      start = k + 2;
    }
  }
  clauses.push(reason.slice(start));
  const lines: string[] = [];
  for (const clause of clauses) {
    let line = indent;
    for (const word of clause.split(' ')) {
      if (line.trim().length > 0 && line.length + 1 + word.length > WIDTH) {
        lines.push(line);
        line = `${indent}  ${word}`;
      } else {
        line += line.trim().length > 0 ? ` ${word}` : word;
      }
    }
    lines.push(line);
  }
  return lines;
}
