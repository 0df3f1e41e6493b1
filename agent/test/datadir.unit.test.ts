import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { linkSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseConfig } from '../config.js';
import { UntrustedDir } from '../drivers/untrusted-fs.js';
import { pinnedSettings, serverArgs, userConf } from '../engine/datadir.js';

/** What the agent writes into data directories, and how it reaches them: real files, no stack. */

describe('settings the agent depends on', () => {
  it('are server options (one argv item each), archiving by basic_archive from PostgreSQL 15, a shell command before', () => {
    const args = serverArgs(15, '/var/lib/postgresql/data');
    assert.deepEqual(args.slice(0, 2), ['-D', '/var/lib/postgresql/data']);
    assert.ok(args.includes('archive_library=basic_archive'));
    assert.ok(args.includes('archive_command='));
    assert.ok(args.includes('hba_file=/etc/betterpg/pg_hba.conf'));
    assert.ok(args.includes('recovery_target_time='));
    const old = pinnedSettings(14, '/d');
    assert.equal(old.archive_library, undefined);
    assert.match(old.archive_command!, /cp %p .*\.tmp && sync .* && mv -f/);
  });

  it('point-in-time recovery sets its one target, with no empty ones that would count as a second', () => {
    const p = pinnedSettings(15, '/d', { recovery_target_time: '2026-11-30 10:00:00+00' });
    assert.equal(p.recovery_target_time, '2026-11-30 10:00:00+00');
    for (const k of ['recovery_target', 'recovery_target_lsn', 'recovery_target_name', 'recovery_target_xid'])
      assert.ok(!(k in p), k);
  });

  it('postgres.settings go to betterpg.conf, quoted, without the pinned ones', () => {
    const cfg = parseConfig({ postgres: { settings: { work_mem: "4MB'x", port: 5433, jit: false } } }, 'test');
    const text = userConf(cfg, 15);
    assert.match(text, /^work_mem = '4MB''x'$/m);
    assert.match(text, /^jit = off$/m);
    assert.doesNotMatch(text, /^port/m);
  });
});

describe('UntrustedDir: names in a tree a branch controls', () => {
  const root = mkdtempSync(join(tmpdir(), 'bpg-untrusted-'));
  const outside = join(root, 'outside');
  const data = join(root, 'data');
  mkdirSync(data);
  writeFileSync(outside, 'host secret\n', { mode: 0o600 });
  const me = { uid: process.getuid!(), gid: process.getgid!() };
  after(() => rmSync(root, { recursive: true, force: true }));

  it('writes a file whole (temporary name, then rename) and reads it back', async () => {
    await UntrustedDir.with(data, async (d) => {
      await d.writeFile('betterpg.conf', 'a = 1\n', me);
      assert.equal(await d.readText('betterpg.conf'), 'a = 1\n');
      await d.writeFile('betterpg.conf', 'a = 2\n', me);
      assert.equal(await d.readText('betterpg.conf'), 'a = 2\n');
      assert.deepEqual((await d.list()).sort(), ['betterpg.conf']);
    });
    assert.equal(lstatSync(join(data, 'betterpg.conf')).mode & 0o777, 0o600);
  });

  it('refuses a link, a FIFO, a directory or a hard-linked file at a name, naming it, and never touches the target', async () => {
    symlinkSync(outside, join(data, 'link'));
    execFileSync('mkfifo', [join(data, 'fifo')]);
    mkdirSync(join(data, 'dir'));
    linkSync(join(data, 'betterpg.conf'), join(data, 'hard'));
    await UntrustedDir.with(data, async (d) => {
      await assert.rejects(
        d.writeFile('link', 'x', me),
        /data\/link is a symbolic link, not a regular file: refusing to use it/,
      );
      await assert.rejects(d.readText('link'), /data\/link is a symbolic link, not a file/);
      await assert.rejects(d.readText('fifo'), /data\/fifo is a FIFO, not a regular file/);
      await assert.rejects(d.writeFile('fifo', 'x', me), /data\/fifo is a FIFO/);
      await assert.rejects(d.writeFile('dir', 'x', me), /data\/dir is a directory/);
      await assert.rejects(d.remove('dir'), /data\/dir is a directory/);
      await assert.rejects(d.writeFile('hard', 'x', me), /has 1 other hard link/);
      await assert.rejects(d.append('link', 'x'), /symbolic link/);
      await assert.rejects(d.dir('link'), /data\/link is a symbolic link, not a directory/);
      await d.remove('link'); // the link goes, not what it points at
    });
    assert.equal(readFileSync(outside, 'utf8'), 'host secret\n');
    assert.throws(() => lstatSync(join(data, 'link')));
  });

  it('copies regular files only, and refuses one larger than asked', async () => {
    mkdirSync(join(root, 'archive'));
    writeFileSync(join(root, 'archive', 'seg'), Buffer.alloc(3000, 1));
    symlinkSync(outside, join(root, 'archive', 'evil'));
    await UntrustedDir.with(join(root, 'archive'), (src) =>
      UntrustedDir.with(data, async (dst) => {
        await dst.copyFrom(src, 'seg', me, 4096);
        await assert.rejects(dst.copyFrom(src, 'evil', me, 4096), /archive\/evil is a symbolic link/);
        await assert.rejects(dst.copyFrom(src, 'seg', me, 100), /is 3000 bytes, more than the 100 expected/);
      }),
    );
    assert.equal(readFileSync(join(data, 'seg')).length, 3000);
  });

  it('a linked directory on the way is refused too', async () => {
    symlinkSync(root, join(data, 'pg_wal'));
    await UntrustedDir.with(data, (d) =>
      assert.rejects(d.dir('pg_wal'), /data\/pg_wal is a symbolic link, not a directory/),
    );
    await assert.rejects(UntrustedDir.open(join(data, 'pg_wal')), /is a symbolic link, not a directory/);
  });
});
