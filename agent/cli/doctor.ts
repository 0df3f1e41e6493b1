import type { Command } from 'commander';
import { BpgError } from '../errors.js';
import type { CliContext } from './context.js';
import type { DoctorReport } from '../engine/doctor.js';
import { jsonOption, outputOption, type FormatFlags } from './output.js';
import { plain, type Paint } from './colour.js';
import { styled, table } from './render.js';

const MARK = { found: '!', fixed: 'fixed', failed: 'FAILED', left: 'left' } as const;

export function doctorText(r: DoctorReport, paint: Paint = plain): string {
  const c = r.checked;
  const head = `checked ${c.databases} database(s), ${c.branches} branch(es), ${c.datasets} dataset(s), ${c.snapshots} snapshot(s), ${c.containers} container(s), ${c.walFolders} WAL folder(s)\n`;
  if (r.findings.length === 0) return head + 'everything matches: state, ZFS, Docker and the state folder agree\n';
  return (
    head +
    table(
      [
        ['STATUS', 'KIND', 'SUBJECT', 'DETAIL', 'ACTION'],
        ...r.findings.map((f) => [
          f.severity === 'warning' && f.status !== 'fixed' ? 'warn' : MARK[f.status],
          f.kind,
          f.subject,
          f.error ? `${f.detail} (${f.error})` : f.detail,
          f.action ?? '-',
        ]),
      ],
      styled(paint, 0),
    )
  );
}

/** `bpg doctor [--fix] [--json]`: exits 1 while something needs attention. */
export function registerDoctorCommand(program: Command, { out, engine }: CliContext): void {
  program
    .command('doctor')
    .description('compare the state with ZFS, Docker and the state folder; --fix repairs what is safe to repair')
    .option(
      '--fix',
      'finish or undo interrupted operations, remove orphans, start what should run (never destroys a dataset holding a known branch)',
    )
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (o: { fix?: boolean } & FormatFlags) => {
      const report = await (await engine()).doctor({ fix: o.fix });
      out.result(o, report, doctorText);
      if (!report.healthy) {
        const open = report.findings.filter((f) => f.severity === 'error' && f.status !== 'fixed');
        const hint = o.fix ? 'they could not be fixed automatically (see above)' : "run 'bpg doctor --fix'";
        throw new BpgError('failed', `${open.length} problem(s) need attention: ${hint}`);
      }
    });
}
