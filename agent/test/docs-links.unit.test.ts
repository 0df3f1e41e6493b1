import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * Every relative link in README.md and docs/**\/*.md points to a file or folder that exists, and
 * every anchor (`#...`, own file or another .md) to a heading there, named as GitHub names it.
 */

/** Files linked before they are written (none now: a missing file fails). */
const PENDING = new Set<string>();

/** The repository's root: the nearest folder up from this file holding package.json and docs/. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!(existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'docs')))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('repository root not found above this test file');
    dir = up;
  }
  return dir;
}

/** A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens. */
export function slug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // links and images: their text
    .replace(/<[^>]+>/g, '') // inline HTML
    .replace(/[`*]/g, ''); // code and emphasis marks (their content stays)
  return text
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

/** Lines outside fenced code blocks (``` and ~~~), with their line numbers. */
function proseLines(markdown: string): Array<{ n: number; text: string }> {
  const out: Array<{ n: number; text: string }> = [];
  let fence: string | null = null;
  markdown.split('\n').forEach((line, i) => {
    const m = /^\s{0,3}(`{3,}|~{3,})/.exec(line);
    if (m) {
      if (fence === null) fence = m[1]!;
      else if (m[1]!.startsWith(fence[0]!) && m[1]!.length >= fence.length) fence = null;
      return;
    }
    if (fence === null) out.push({ n: i + 1, text: line });
  });
  return out;
}

/** The anchors a document offers: its headings (with GitHub's -1, -2 for repeats) and `<a id|name>`. */
export function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const { text } of proseLines(markdown)) {
    const h = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(text);
    if (h) {
      const base = slug(h[1]!);
      const count = seen.get(base) ?? 0;
      seen.set(base, count + 1);
      out.add(count === 0 ? base : `${base}-${count}`);
    }
    for (const a of text.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) out.add(a[1]!);
  }
  return out;
}

/** Link targets in the prose (inline links, images, reference definitions), code spans left out. */
export function links(markdown: string): Array<{ n: number; target: string }> {
  const out: Array<{ n: number; target: string }> = [];
  for (const { n, text } of proseLines(markdown)) {
    const prose = text.replace(/(`+)[^`]*?\1/g, '');
    for (const m of prose.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g))
      out.push({ n, target: m[1]! });
    const def = /^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$/.exec(prose);
    if (def) out.push({ n, target: def[1]! });
  }
  return out;
}

/** What is wrong with each relative link of `file` (a path under root), as `file:line: message`. */
export function brokenLinks(root: string, file: string, read: (path: string) => string | null): string[] {
  const text = read(join(root, file));
  if (text === null) return [`${file}: cannot be read`];
  const problems: string[] = [];
  for (const { n, target } of links(text)) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//')) continue; // https:, mailto:, ...
    const hash = target.indexOf('#');
    const pathPart = decodeURIComponent(hash < 0 ? target : target.slice(0, hash));
    const anchor = hash < 0 ? null : decodeURIComponent(target.slice(hash + 1));
    const abs = pathPart === '' ? join(root, file) : resolve(dirname(join(root, file)), pathPart);
    const rel = relative(root, abs).split(sep).join('/');
    const where = `${file}:${n}: ${target}`;
    if (rel.startsWith('..')) {
      problems.push(`${where}: points outside the repository`);
      continue;
    }
    const targetText = read(abs);
    const isDir = targetText === null && existsSync(abs) && statSync(abs).isDirectory();
    if (targetText === null && !isDir) {
      if (!PENDING.has(rel)) problems.push(`${where}: ${rel} does not exist`);
      continue;
    }
    if (anchor === null) continue;
    if (isDir || !rel.endsWith('.md')) {
      problems.push(`${where}: an anchor into something that is not a markdown file`);
      continue;
    }
    if (!anchors(targetText!).has(anchor)) problems.push(`${where}: no heading #${anchor} in ${rel}`);
  }
  return problems;
}

function readOrNull(path: string): string | null {
  try {
    return statSync(path).isFile() ? readFileSync(path, 'utf8') : null;
  } catch {
    return null;
  }
}

function markdownFiles(root: string, dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) return markdownFiles(root, rel);
    return e.name.endsWith('.md') ? [rel] : [];
  });
}

describe('documentation links', () => {
  it('makes anchors as GitHub does', () => {
    assert.equal(
      slug('Threat model: pull-request code and SQL are untrusted'),
      'threat-model-pull-request-code-and-sql-are-untrusted',
    );
    assert.equal(slug('HTTP API (`bpg serve`)'), 'http-api-bpg-serve');
    assert.equal(slug("`migrate` is the pull request's code"), 'migrate-is-the-pull-requests-code');
    assert.equal(slug('50 branches at once (`scripts/bench-load.mjs`)'), '50-branches-at-once-scriptsbench-loadmjs');
    assert.equal(slug('3. Running it next to the agent'), '3-running-it-next-to-the-agent');
    assert.equal(slug('Reset — [docs](x.md) and *more* snake_case'), 'reset--docs-and-more-snake_case');
    assert.deepEqual([...anchors('# A\n## A\n```\n# not a heading\n```\n<a id="here"></a>\n')], ['a', 'a-1', 'here']);
  });

  it('finds broken files and anchors, and ignores code and external links', () => {
    const files: Record<string, string> = {
      '/r/docs/a.md':
        '# Title\n\n[ok](b.md#second-part) [self](#title) [web](https://example.com/x.md) `[code](nope.md)`\n[file](b.md#nope) [gone](c.md)\n```\n[in a fence](nowhere.md)\n```\n[up](../../etc/passwd)\n[ref]: ./b.md\n',
      '/r/docs/b.md': '# B\n\n## Second part\n',
    };
    const problems = brokenLinks('/r', 'docs/a.md', (p) => files[p] ?? null);
    assert.deepEqual(problems, [
      'docs/a.md:4: b.md#nope: no heading #nope in docs/b.md',
      'docs/a.md:4: c.md: docs/c.md does not exist',
      'docs/a.md:8: ../../etc/passwd: points outside the repository',
    ]);
  });

  it('every relative link and anchor in README.md and docs/**/*.md resolves', () => {
    const root = repoRoot();
    const files = ['README.md', ...markdownFiles(root, 'docs')];
    assert.ok(files.length > 10, `found the docs (${files.length} files)`);
    const problems = files.flatMap((f) => brokenLinks(root, f, readOrNull));
    assert.deepEqual(problems, [], `broken links:\n${problems.join('\n')}`);
  });
});
