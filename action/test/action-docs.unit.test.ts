import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import YAML from 'yaml';

/**
 * The Action's inputs and outputs tables in docs/reference/action.md are generated from action.yml
 * by scripts/gen-action-docs.mjs. This regenerates them in memory and fails when the committed file
 * differs: a changed input without `node scripts/gen-action-docs.mjs` cannot land.
 */

interface GenActionDocs {
  MARKERS: Record<'inputs' | 'outputs', [string, string]>;
  renderTables(actionYml: string): { inputs: string; outputs: string };
  updateDoc(markdown: string, tables: { inputs: string; outputs: string }): string;
  expectedDoc(root: string): string;
  paths(root: string): { actionYml: string; doc: string };
}

/** The repository's root: the nearest folder up from this file holding action.yml and package.json. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!(existsSync(join(dir, 'action.yml')) && existsSync(join(dir, 'package.json')))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('repository root not found above this test file');
    dir = up;
  }
  return dir;
}

const root = repoRoot();
const gen = (await import(pathToFileURL(join(root, 'scripts', 'gen-action-docs.mjs')).href)) as GenActionDocs;
const { actionYml, doc } = gen.paths(root);

describe('docs/reference/action.md', () => {
  it('holds the inputs and outputs tables that action.yml makes (else: node scripts/gen-action-docs.mjs)', () => {
    assert.equal(
      readFileSync(doc, 'utf8'),
      gen.expectedDoc(root),
      `${doc} is stale: run node scripts/gen-action-docs.mjs and commit it`,
    );
  });

  it('has a row for every input and output of action.yml, with its default', () => {
    const action = YAML.parse(readFileSync(actionYml, 'utf8')) as {
      inputs: Record<string, { required?: boolean; default?: string }>;
      outputs: Record<string, unknown>;
    };
    const text = readFileSync(doc, 'utf8');
    for (const [name, input] of Object.entries(action.inputs)) {
      const row = text.split('\n').find((l) => l.startsWith(`| \`${name}\` |`));
      assert.ok(row, `input ${name} has a row`);
      if (input.required) assert.ok(row.includes('| (required) |'), `${name} is shown as required`);
      else if (input.default)
        assert.ok(row.includes(`\`${input.default}\``), `${name} shows its default ${input.default}`);
    }
    for (const name of Object.keys(action.outputs)) {
      assert.ok(text.includes(`| \`${name}\` |`), `output ${name} has a row`);
    }
  });

  it('a changed action.yml makes the committed tables stale', () => {
    const yml = readFileSync(actionYml, 'utf8').replace(
      /^inputs:\n/m,
      "inputs:\n  extra_input:\n    description: Added | with a pipe.\n    required: false\n    default: 'x'\n",
    );
    const changed = gen.updateDoc(readFileSync(doc, 'utf8'), gen.renderTables(yml));
    assert.notEqual(changed, readFileSync(doc, 'utf8'));
    assert.ok(changed.includes('| `extra_input` | `x` | Added \\| with a pipe. |'), 'the new input, its pipe escaped');
  });

  it('refuses a document without its markers', () => {
    const tables = gen.renderTables(readFileSync(actionYml, 'utf8'));
    assert.throws(() => gen.updateDoc('# no markers here\n', tables), /markers for the inputs table not found/);
    assert.throws(
      () => gen.updateDoc(`${gen.MARKERS.inputs[0]}\n${gen.MARKERS.inputs[1]}\n`, tables),
      /markers for the outputs table not found/,
    );
  });
});
