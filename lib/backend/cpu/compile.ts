/**
 * The system C++ compiler: finding it (`CXX`, else c++ / g++ / clang++ on PATH), identifying it for cache keys,
 * and compiling one generated kernel into a shared object. The async variants never block the event loop; the
 * sync ones exist for `callSync`.
 *
 * `CXX` is an executable (a path may contain spaces), or a command followed by arguments (`g++ -m64`).
 * `CXXFLAGS` (whitespace-separated) is appended after the library's flags, so it can override them (`-O2`).
 * A compilation that runs longer than `KEOPS_COMPILE_TIMEOUT` seconds (default 600; 0 = no limit) is killed with
 * its whole process group: ERR_COMPILE_TIMEOUT.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { KeOpsError } from '../../errors';
import { nativeIncludeDir } from '../package-root';

const execFileAsync = promisify(execFile);

/** Tried in order when `CXX` is not set. */
const DEFAULT_COMPILERS = ['c++', 'g++', 'clang++'];

/** Compiler logs can be huge (template errors); errors keep the end, where the cause usually is. */
const MAX_LOG_CHARS = 16_000;

export interface CompilerInfo {
  /** Absolute path of the compiler executable. */
  readonly path: string;
  /** Arguments that came with it in `CXX` (e.g. `CXX="g++ -m64"`). */
  readonly leadingArgs: readonly string[];
  /** Path and `--version` output: part of every cache key, so a compiler upgrade recompiles. */
  readonly identity: string;
}

/**
 * Above this many characters of generated source, kernels are compiled at -O1: -O3 on very large formulas
 * (a sum of thousands of terms, a 2000-deep nesting) takes minutes of compiler time for little gain, while -O1
 * compiles them in seconds.
 */
export const LARGE_SOURCE_CHARS = 100_000;

/** Default of KEOPS_COMPILE_TIMEOUT, seconds. */
const DEFAULT_COMPILE_TIMEOUT_S = 600;

/** Flags every kernel gets, before the generator's own. */
export function baseCompilerFlags(): string[] {
  return ['-O3', '-march=native', '-std=c++17', '-shared', '-fPIC', `-I${nativeIncludeDir()}`];
}

/** The user's CXXFLAGS, appended after every other flag (they are part of the cache key like the others). */
export function userCompilerFlags(): string[] {
  return (process.env.CXXFLAGS ?? '').split(/\s+/).filter((flag) => flag !== '');
}

/**
 * The full flag list of a kernel: base flags, the generator's, the user's CXXFLAGS last. Above
 * LARGE_SOURCE_CHARS of source, every optimisation level but the user's is replaced by -O1.
 */
export function kernelCompilerFlags(sourceChars: number, generatorFlags: readonly string[]): string[] {
  const own = [...new Set([...baseCompilerFlags(), ...generatorFlags])];
  const leveled = sourceChars > LARGE_SOURCE_CHARS ? [...own.filter((f) => !/^-O/.test(f)), '-O1'] : own;
  return [...leveled, ...userCompilerFlags()];
}

/** KEOPS_COMPILE_TIMEOUT in milliseconds; 0 = no limit. */
export function compileTimeoutMs(): number {
  const raw = process.env.KEOPS_COMPILE_TIMEOUT;
  if (raw === undefined || raw.trim() === '') return DEFAULT_COMPILE_TIMEOUT_S * 1000;
  const seconds = Number(raw);
  if (!Number.isFinite(seconds) || seconds < 0) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `KEOPS_COMPILE_TIMEOUT must be a number of seconds >= 0 (0 = no limit), got ${JSON.stringify(raw)}`,
    );
  }
  return Math.round(seconds * 1000);
}

function noCompilerError(looked: string, cause?: unknown): KeOpsError {
  return new KeOpsError(
    'ERR_NO_COMPILER',
    `no C++ compiler found (looked for ${looked}). The CPU backend compiles each formula with the system ` +
      'compiler: install one (Debian/Ubuntu: `apt-get install g++`; Fedora: `dnf install gcc-c++`; ' +
      'Alpine: `apk add g++`; macOS: `xcode-select --install`) or point the CXX environment variable at it.',
    cause === undefined ? {} : { cause },
  );
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function locate(command: string): string | undefined {
  if (command.includes('/')) {
    const path = isAbsolute(command) ? command : resolve(command);
    return isExecutable(path) ? path : undefined;
  }
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir !== '' && isExecutable(join(dir, command))) return join(dir, command);
  }
  return undefined;
}

interface CompilerCandidate {
  path: string;
  leadingArgs: string[];
  looked: string;
}

function pickCompiler(): CompilerCandidate {
  const cxx = process.env.CXX?.trim();
  if (cxx) {
    // A path with spaces ("/opt/my tools/g++") names the compiler as a whole.
    const whole = locate(cxx);
    if (whole !== undefined) return { path: whole, leadingArgs: [], looked: `CXX=${cxx}` };
    const [command, ...leadingArgs] = cxx.split(/\s+/);
    const path = locate(command);
    if (path === undefined) throw noCompilerError(`CXX=${cxx}`);
    return { path, leadingArgs, looked: `CXX=${cxx}` };
  }
  for (const command of DEFAULT_COMPILERS) {
    const path = locate(command);
    if (path !== undefined) return { path, leadingArgs: [], looked: command };
  }
  throw noCompilerError(`${DEFAULT_COMPILERS.join(', ')} on PATH; CXX is not set`);
}

/** `--version` runs once per process and compiler: identities by compiler path and leading args. */
const knownIdentities = new Map<string, string>();
const pendingIdentities = new Map<string, Promise<string>>();

function identityKey(c: CompilerCandidate): string {
  return [c.path, ...c.leadingArgs].join('\0');
}

function describeIdentity(c: CompilerCandidate, versionOutput: string): string {
  return `${[c.path, ...c.leadingArgs].join(' ')}\n${versionOutput.trim()}`;
}

function compilerInfo(c: CompilerCandidate, identity: string): CompilerInfo {
  return { path: c.path, leadingArgs: c.leadingArgs, identity };
}

export async function findCompiler(): Promise<CompilerInfo> {
  const candidate = pickCompiler();
  const key = identityKey(candidate);
  const known = knownIdentities.get(key);
  if (known !== undefined) return compilerInfo(candidate, known);
  let pending = pendingIdentities.get(key);
  if (pending === undefined) {
    pending = execFileAsync(candidate.path, [...candidate.leadingArgs, '--version'], { encoding: 'utf8' })
      .then(({ stdout }) => {
        const identity = describeIdentity(candidate, stdout);
        knownIdentities.set(key, identity);
        return identity;
      })
      .catch((e: unknown) => {
        throw noCompilerError(candidate.looked, e);
      })
      .finally(() => pendingIdentities.delete(key));
    pendingIdentities.set(key, pending);
  }
  return compilerInfo(candidate, await pending);
}

export function findCompilerSync(): CompilerInfo {
  const candidate = pickCompiler();
  const key = identityKey(candidate);
  let identity = knownIdentities.get(key);
  if (identity === undefined) {
    try {
      const stdout = execFileSync(candidate.path, [...candidate.leadingArgs, '--version'], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      identity = describeIdentity(candidate, stdout);
    } catch (e) {
      throw noCompilerError(candidate.looked, e);
    }
    knownIdentities.set(key, identity);
  }
  return compilerInfo(candidate, identity);
}

function compilerArgs(
  compiler: CompilerInfo,
  flags: readonly string[],
  source: string,
  output: string,
): string[] {
  return [...compiler.leadingArgs, ...flags, '-o', output, source];
}

function timeoutError(compiler: CompilerInfo, ms: number): KeOpsError {
  return new KeOpsError(
    'ERR_COMPILE_TIMEOUT',
    `compiling the CPU kernel with ${compiler.path} took longer than ${ms / 1000} s and was stopped; ` +
      'raise KEOPS_COMPILE_TIMEOUT (seconds, 0 = no limit) or simplify the formula',
  );
}

function compileError(compiler: CompilerInfo, e: unknown): KeOpsError {
  const err = e as { code?: unknown; stderr?: unknown; stdout?: unknown; message?: string };
  if (err.code === 'ENOENT' || err.code === 'EACCES') return noCompilerError(compiler.path, e);
  const log = `${String(err.stderr ?? '')}${String(err.stdout ?? '')}`.trim() || String(err.message ?? e);
  const shown = log.length > MAX_LOG_CHARS ? `…${log.slice(-MAX_LOG_CHARS)}` : log;
  return new KeOpsError('ERR_COMPILE', `compiling the CPU kernel with ${compiler.path} failed:\n${shown}`, {
    cause: e,
  });
}

/**
 * Compiles `sourcePath` into the shared object `outputPath`. Throws ERR_COMPILE with the compiler log, or
 * ERR_COMPILE_TIMEOUT after killing the compiler and everything it started (its own process group).
 */
export async function compileSharedObject(
  compiler: CompilerInfo,
  flags: readonly string[],
  sourcePath: string,
  outputPath: string,
): Promise<void> {
  const limit = compileTimeoutMs();
  const child = spawn(compiler.path, compilerArgs(compiler, flags, sourcePath, outputPath), {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group, so a timeout kills cc1plus / as / ld too
  });
  let log = '';
  const keep = (chunk: Buffer): void => {
    log += chunk.toString('utf8');
    if (log.length > 4 * MAX_LOG_CHARS) log = log.slice(-2 * MAX_LOG_CHARS);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let timedOut = false;
  const timer =
    limit > 0
      ? setTimeout(() => {
          timedOut = true;
          killGroup(child.pid);
        }, limit)
      : undefined;
  try {
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
      (done, fail) => {
        child.once('error', fail);
        child.once('close', (exitCode, exitSignal) => done({ code: exitCode, signal: exitSignal }));
      },
    ).catch((e: unknown) => {
      throw compileError(compiler, e);
    });
    if (timedOut) throw timeoutError(compiler, limit);
    if (code !== 0) {
      throw compileError(compiler, {
        stderr: log,
        message: `the compiler exited with ${signal === null ? `code ${code}` : `signal ${signal}`}`,
      });
    }
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

export function compileSharedObjectSync(
  compiler: CompilerInfo,
  flags: readonly string[],
  sourcePath: string,
  outputPath: string,
): void {
  const limit = compileTimeoutMs();
  try {
    execFileSync(compiler.path, compilerArgs(compiler, flags, sourcePath, outputPath), {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 64 * 1024 * 1024,
      // The synchronous variant can kill the compiler driver only (not its children, which then find no driver
      // to hand their output to and exit when done).
      ...(limit > 0 ? { timeout: limit, killSignal: 'SIGKILL' as const } : {}),
    });
  } catch (e) {
    if ((e as { code?: unknown }).code === 'ETIMEDOUT') throw timeoutError(compiler, limit);
    throw compileError(compiler, e);
  }
}
