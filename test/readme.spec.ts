/** The README's operation table is generated from the operation definitions: it must be current. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import * as ts from 'typescript';
import * as keopsNode from '../lib/index';
import { opTableMarkdown } from '../scripts/op-table';

describe('README', () => {
  it('lists every operation and parse-time function (regenerate with `npx ts-node scripts/op-table.ts`)', () => {
    const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
    const block = /<!-- op-table:start -->\n([\s\S]*?)\n<!-- op-table:end -->/.exec(readme);
    expect(block, 'op-table markers').to.not.equal(null);
    expect((block as RegExpExecArray)[1]).to.equal(opTableMarkdown());
  });
});

/**
 * Type-checks every ```ts block of the README under `strict`, as a user's module importing 'keops-node' (mapped
 * to lib/index.ts). Blocks are fragments: the names they use without defining (the data arrays, objects made
 * in an earlier block) are declared by a prelude, with the types a user would have; blocks that import nothing
 * get the package's exports they use.
 */
describe('README TypeScript snippets', function () {
  this.timeout(120_000);

  /** Free names of the snippets and their types. */
  const PRELUDE: Readonly<Record<string, string>> = {
    x: 'Float64Array',
    y: 'Float64Array',
    b: 'Float64Array',
    g: 'Float64Array',
    G: 'Float64Array',
    points: 'Float32Array',
    queries: 'Float32Array',
    weights: 'Float32Array',
    x_i: 'LazyTensor',
    y_j: 'LazyTensor',
    b_j: 'LazyTensor',
    K_ij: 'LazyTensor',
    rangesI: 'Int32Array',
    rangesJ: 'Int32Array',
    keep: 'KeepMask',
    gauss: "Genred<'Sum'>",
    cy: 'ReturnType<typeof clusterRangesCentroids>',
    sy: 'ReturnType<typeof sortClusters>',
    sb: 'Float64Array',
    sigma: 'number',
    centroidDistance: '(i: number, j: number) => number',
    u: '{ data: Float64Array; shape: number[] }',
    v: '{ data: Float64Array; shape: number[] }',
    beta: 'Float64Array',
    baseShard0: 'Float32Array',
    bytesFromAnotherMachine: 'Uint8Array',
    n: 'number',
    readBaseRows: '(start: number, end: number) => Float32Array',
  };

  it('compile under tsc --strict', () => {
    const root = join(__dirname, '..');
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const blocks = [...readme.matchAll(/^```ts\n([\s\S]*?)^```/gm)].map((m) => m[1]);
    expect(blocks.length).to.be.greaterThan(3);
    const exported = Object.keys(keopsNode);
    const typeNames = [
      'LazyTensor',
      'BlockSparseRanges',
      'KeepMask',
      'Genred',
      'clusterRangesCentroids',
      'sortClusters',
    ];

    const files = new Map<string, string>();
    blocks.forEach((block, n) => {
      const source = ts.createSourceFile('block.ts', block, ts.ScriptTarget.ES2022);
      const declared = new Set<string>();
      for (const statement of source.statements) {
        if (ts.isImportDeclaration(statement)) {
          const bindings = statement.importClause?.namedBindings;
          if (bindings !== undefined && ts.isNamedImports(bindings)) {
            for (const e of bindings.elements) declared.add(e.name.text);
          }
        } else if (ts.isVariableStatement(statement)) {
          for (const d of statement.declarationList.declarations) {
            if (ts.isIdentifier(d.name)) declared.add(d.name.text);
          }
        }
      }
      const uses = (name: string): boolean => new RegExp(`\\b${name}\\b`).test(block);
      const free = Object.entries(PRELUDE).filter(([name]) => !declared.has(name) && uses(name));
      const imports = new Set(
        [...exported, ...typeNames].filter(
          (name) =>
            !declared.has(name) && (uses(name) || free.some(([, t]) => new RegExp(`\\b${name}\\b`).test(t))),
        ),
      );
      const prelude =
        (imports.size > 0 ? `import { ${[...imports].join(', ')} } from 'keops-node';\n` : '') +
        free.map(([name, type]) => `declare const ${name}: ${type};\n`).join('');
      files.set(join(root, 'test', `.readme-block-${n}.ts`), `${prelude}${block}\nexport {};\n`);
    });

    const options: ts.CompilerOptions = {
      strict: true,
      noEmit: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
      types: ['node'],
      skipLibCheck: true,
      paths: { 'keops-node': [join(root, 'lib', 'index.ts')] },
    };
    const host = ts.createCompilerHost(options);
    const readFile = host.readFile.bind(host);
    host.readFile = (name) => files.get(name) ?? readFile(name);
    const fileExists = host.fileExists.bind(host);
    host.fileExists = (name) => files.has(name) || fileExists(name);
    const program = ts.createProgram([...files.keys()], options, host);
    const diagnostics = ts
      .getPreEmitDiagnostics(program)
      .filter((d) => d.file !== undefined && files.has(d.file.fileName));
    const messages = diagnostics.map((d) => {
      const { line } = (d.file as ts.SourceFile).getLineAndCharacterOfPosition(d.start ?? 0);
      const text = (d.file as ts.SourceFile).text.split('\n')[line];
      return `${(d.file as ts.SourceFile).fileName.replace(/.*\//, '')}:${line + 1}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}\n    ${text}`;
    });
    expect(messages, messages.join('\n')).to.deep.equal([]);
  });
});
