import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort, sh } from './helpers.js';

/**
 * A source PostgreSQL a test starts itself, not managed by the agent: the host's PostgreSQL 15
 * (/usr/lib/postgresql/15/bin) run as the host's `postgres` user in a temporary folder, listening
 * on the Docker bridge gateway, where one-shot containers on the default bridge reach it.
 */
const BIN = '/usr/lib/postgresql/15/bin';

export class SourcePg {
  host = '';
  port = 0;
  readonly password = `src-${Math.random().toString(36).slice(2)}-pw`;
  private dir = '';
  private uid = 0;
  private gid = 0;
  private proc: ChildProcess | null = null;

  async start(): Promise<void> {
    this.host = sh('docker', ['network', 'inspect', 'bridge', '--format', '{{(index .IPAM.Config 0).Gateway}}']).trim();
    this.port = await freePort();
    this.dir = mkdtempSync(join(tmpdir(), 'bpg-source-'));
    const uid = (this.uid = Number(sh('id', ['-u', 'postgres']).trim()));
    const gid = (this.gid = Number(sh('id', ['-g', 'postgres']).trim()));
    chownSync(this.dir, uid, gid);
    const pw = join(this.dir, 'pw');
    writeFileSync(pw, this.password + '\n', { mode: 0o600 });
    chownSync(pw, uid, gid);
    const data = join(this.dir, 'data');
    sh('runuser', [
      '-u',
      'postgres',
      '--',
      `${BIN}/initdb`,
      '-D',
      data,
      '-U',
      'postgres',
      `--pwfile=${pw}`,
      '-A',
      'scram-sha-256',
      '--locale=C',
      '-E',
      'UTF8',
    ]);
    writeFileSync(
      join(data, 'pg_hba.conf'),
      'host all all 0.0.0.0/0 scram-sha-256\nhost replication all 0.0.0.0/0 scram-sha-256\nlocal all all scram-sha-256\n',
    );
    this.proc = spawn(
      'runuser',
      [
        '-u',
        'postgres',
        '--',
        `${BIN}/postgres`,
        '-D',
        data,
        '-c',
        `listen_addresses=${this.host}`,
        '-c',
        `port=${this.port}`,
        '-c',
        `unix_socket_directories=${this.dir}`,
        '-c',
        'fsync=off',
      ],
      { stdio: 'ignore' },
    );
    for (let i = 0; ; i++) {
      try {
        await this.query('postgres', 'SELECT 1');
        return;
      } catch (e) {
        if (i > 200) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Puts a file (and its folders) in the source's data directory, owned by postgres, as its server would. */
  plant(rel: string, content: string): void {
    const data = join(this.dir, 'data');
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = join(data, ...parts.slice(0, i));
      if (!existsSync(d)) {
        mkdirSync(d, { mode: 0o700 });
        chownSync(d, this.uid, this.gid);
      }
    }
    writeFileSync(join(data, rel), content, { mode: 0o600 });
    chownSync(join(data, rel), this.uid, this.gid);
  }

  /** The URL without a password. */
  url(db: string): string {
    return `postgres://postgres@${this.host}:${this.port}/${db}`;
  }
  urlWithPassword(db: string): string {
    return `postgres://postgres:${encodeURIComponent(this.password)}@${this.host}:${this.port}/${db}`;
  }

  async query<T extends pg.QueryResultRow = Record<string, unknown>>(
    db: string,
    sql: string,
    params: unknown[] = [],
  ): Promise<T[]> {
    const c = new pg.Client({
      host: this.host,
      port: this.port,
      user: 'postgres',
      password: this.password,
      database: db,
    });
    await c.connect();
    try {
      return (await c.query<T>(sql, params)).rows;
    } finally {
      await c.end();
    }
  }

  async stop(): Promise<void> {
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc!.once('exit', r));
      sh('runuser', [
        '-u',
        'postgres',
        '--',
        `${BIN}/pg_ctl`,
        '-D',
        join(this.dir, 'data'),
        'stop',
        '-m',
        'fast',
        '-w',
      ]);
      await exited;
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}
