import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * No import cycles in the sources (agent/, webhook/, action/src, shared/): a module graph with a
 * cycle loads in an order that depends on who imports first. Only imports that load code count
 * (`import type` is erased). Tests are left out.
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      if (name !== 'test' && name !== 'node_modules' && name !== 'dist') sources(p, out);
    } else if (p.endsWith('.ts') && !p.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** The relative modules a file loads: `import … from './x.js'` and `export … from './x.js'`, not `import type`. */
export function localImports(file: string, text: string): string[] {
  const deps: string[] = [];
  for (const m of text.matchAll(/^(?:import|export)\s+(?!type\b)[^;]*?\bfrom\s+'(\.{1,2}\/[^']+)'/gm))
    deps.push(resolve(dirname(file), m[1]!.replace(/\.js$/, '.ts')));
  for (const m of text.matchAll(/^import\s+'(\.{1,2}\/[^']+)'/gm))
    deps.push(resolve(dirname(file), m[1]!.replace(/\.js$/, '.ts')));
  return deps;
}

export function findCycles(graph: Map<string, string[]>): string[][] {
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[][] = [];
  const visit = (n: string, stack: string[]) => {
    state.set(n, 'open');
    stack.push(n);
    for (const d of graph.get(n) ?? []) {
      if (!graph.has(d)) continue;
      if (state.get(d) === 'open') cycles.push([...stack.slice(stack.indexOf(d)), d]);
      else if (!state.has(d)) visit(d, stack);
    }
    stack.pop();
    state.set(n, 'done');
  };
  for (const n of graph.keys()) if (!state.has(n)) visit(n, []);
  return cycles;
}

describe('import cycles', () => {
  it('finds a cycle when there is one (so the check below can fail)', () => {
    const g = new Map([
      ['a', ['b']],
      ['b', ['c']],
      ['c', ['a']],
      ['d', ['a']],
    ]);
    assert.deepEqual(findCycles(g), [['a', 'b', 'c', 'a']]);
    assert.deepEqual(localImports('/x/y.ts', "import type { T } from './t.js';\nimport { u } from './u.js';"), [
      '/x/u.ts',
    ]);
  });

  it('agent/, webhook/, action/src and shared/ have none', () => {
    const files = ['agent', 'webhook', 'action/src', 'shared'].flatMap((d) => {
      try {
        return sources(join(ROOT, d));
      } catch {
        return [];
      }
    });
    assert.ok(files.length > 100, `sources found (${files.length})`);
    const graph = new Map(files.map((f) => [f, localImports(f, readFileSync(f, 'utf8'))]));
    const cycles = findCycles(graph).map((c) => c.map((f) => relative(ROOT, f)).join(' -> '));
    assert.deepEqual(cycles, []);
  });
});
