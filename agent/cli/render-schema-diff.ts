/** `bpg branch diff` for people: the counts, each change on a line, then the SQL diff. Nothing here writes. */
import { SCHEMA_KIND_NAMES, schemaCountLines, type SchemaChange, type SchemaDiff } from '../api/schemas.js';
import { printable } from '../names.js';

/** A name or note of the branch's on one line: control characters, newlines and tabs escaped. */
const oneLine = (s: string) => printable(s).replace(/\n/g, '\\u000a').replace(/\t/g, '\\u0009');

const MARK = { added: '+', dropped: '-', altered: '~' } as const;

function changeLine(c: SchemaChange): string {
  const kind = SCHEMA_KIND_NAMES[c.kind][0];
  const on = c.table !== null && c.kind !== 'column' ? ` on ${c.table}` : '';
  const details = c.details.length > 0 ? `: ${c.details.join('; ')}` : '';
  const indent = c.kind === 'column' ? '    ' : '';
  return oneLine(`${indent}${MARK[c.change]} ${kind} ${c.name}${on}${details}`);
}

export function schemaDiffText(d: SchemaDiff): string {
  const head = `${oneLine(d.branch)} compared with ${oneLine(d.against)}`;
  const notes: string[] = [];
  if (d.truncatedKinds.length > 0)
    notes.push(
      `truncated: a branch has more ${d.truncatedKinds.map((k) => SCHEMA_KIND_NAMES[k][1]).join(', ')} than the agent reads; ` +
        'those are compared in name order up to where it stopped',
    );
  if (d.identical) return [`${head}: same schema`, ...notes.map((n) => `(${n})`)].join('\n') + '\n';
  const total = d.changes.length + d.changesOmitted;
  const out = [`${head}: ${total} change${total === 1 ? '' : 's'}`, ...schemaCountLines(d.counts).map((l) => `  ${l}`)];
  out.push('', ...d.changes.map(changeLine));
  if (d.changesOmitted > 0) out.push(`... and ${d.changesOmitted} more (counted above, and in the SQL diff)`);
  out.push(...notes.map((n) => `(${n})`));
  out.push('', 'SQL diff:', printable(d.sql).replace(/\n$/, ''));
  return out.join('\n') + '\n';
}
