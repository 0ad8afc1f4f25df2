/**
 * The core (src/tensor, src/kernels, src/nn, src/gpt, src/train) runs in a browser as well as in
 * Node: it imports no Node built-in, no `webgpu` (Dawn's bindings), no `@huggingface/hub`, and no
 * module of the Node or command-line edges, and names no Node global. Every import of every core
 * file is checked, so a violation is reported with its file even before an entry point reaches it;
 * and the core's entry (src/index.ts) is bundled for a browser by esbuild, which fails on a Node built-in.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { build, type Plugin } from 'esbuild';
import { describe, expect, it } from 'vitest';

const CORE = ['src/tensor', 'src/kernels', 'src/nn', 'src/gpt', 'src/train'];
const FORBIDDEN_PACKAGES = new Set(['webgpu', '@huggingface/hub']);
const NODE_GLOBALS = /\b(process\.|Buffer\.|NodeJS\.|require\(|__dirname|__filename)/;

function filesUnder(folder: string): string[] {
  return readdirSync(folder, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(folder, e.name)) : e.name.endsWith('.ts') ? [join(folder, e.name)] : [],
  );
}

/** Every module specifier a file imports or re-exports, statically or dynamically. */
function specifiers(source: string): string[] {
  const found: string[] = [];
  for (const m of source.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'";]*?from\s*['"]([^'"]+)['"]/g)) found.push(m[1]);
  for (const m of source.matchAll(/(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g)) found.push(m[1]);
  for (const m of source.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) found.push(m[1]);
  return found;
}

/** Why `spec`, imported by `file`, is not allowed in the core, or null. */
function problem(file: string, spec: string): string | null {
  if (spec.startsWith('.')) {
    const target = relative('.', resolve(dirname(file), spec));
    return CORE.some((folder) => target.startsWith(folder + '/')) ? null : `reaches ${target}, outside the core`;
  }
  const bare = spec.replace(/^node:/, '');
  if (spec.startsWith('node:') || builtinModules.includes(bare)) return 'is a Node built-in';
  const pkg = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
  return FORBIDDEN_PACKAGES.has(pkg) ? 'is Node-only' : null;
}

/** The source without comments, so that a comment naming `process.env` is not a use of it. */
const code = (source: string) => source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');

describe('the core', () => {
  const files = CORE.flatMap(filesUnder);

  it('has files to check, and the check sees a Node import where there is one', () => {
    expect(files.length).toBeGreaterThan(40);
    expect(problem('src/gpt/x.ts', 'node:fs')).toMatch(/built-in/);
    expect(problem('src/gpt/x.ts', 'fs/promises')).toMatch(/built-in/);
    expect(problem('src/gpt/x.ts', 'webgpu')).toMatch(/Node-only/);
    expect(problem('src/gpt/x.ts', '../node/hub.js')).toMatch(/outside the core/);
    expect(problem('src/gpt/x.ts', '../train/trainer.js')).toBeNull();
    expect(specifiers("import { a } from 'node:fs';\nexport * from './b.js';\nconst c = await import('webgpu');")).toEqual(['node:fs', './b.js', 'webgpu']);
  });

  it('imports no Node built-in, no webgpu, no @huggingface/hub, and nothing of src/node or src/cli', () => {
    const violations = files.flatMap((file) =>
      specifiers(readFileSync(file, 'utf8')).flatMap((spec) => {
        const why = problem(file, spec);
        return why === null ? [] : [`${file}: '${spec}' ${why}`];
      }),
    );
    expect(violations).toEqual([]);
  });

  it('names no Node global (process, Buffer, NodeJS types, require)', () => {
    const violations = files.flatMap((file) =>
      code(readFileSync(file, 'utf8')).split('\n').flatMap((line, i) => (NODE_GLOBALS.test(line) ? [`${file}:${i + 1}: ${line.trim()}`] : [])),
    );
    expect(violations).toEqual([]);
  });
});

describe('the core entry, bundled for a browser', () => {
  it('reaches no Node built-in and no Node-only package', async () => {
    const packages = new Set<string>();
    const record: Plugin = {
      name: 'record-packages',
      setup(b) {
        b.onResolve({ filter: /^[^./]/ }, (args) => {
          packages.add(args.path);
          return undefined;
        });
      },
    };
    const result = await build({
      entryPoints: ['src/index.ts'], bundle: true, platform: 'browser', format: 'esm', write: false, logLevel: 'silent', plugins: [record],
    });
    expect(result.errors).toEqual([]);
    expect([...packages].filter((spec) => problem('src/index.ts', spec) !== null)).toEqual([]);
    expect(packages).toContain('js-tiktoken');
  });
});
