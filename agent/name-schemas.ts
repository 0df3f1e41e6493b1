import { z } from 'zod';
import { IMAGE_MESSAGE, IMAGE_RE, NAME_MAX, NAME_RE, nameMessages, type NameKind } from './names.js';

/** The zod schemas of names.ts's rules, with the same messages, for the API, the config and the receiver. */
function nameSchema(kind: NameKind) {
  const m = nameMessages(kind);
  return z.string().min(1, m.empty).max(NAME_MAX[kind], m.long).regex(NAME_RE, m.alphabet);
}

export const DatabaseName = nameSchema('database');
export const BranchPart = nameSchema('branch');
export const ImageRef = z.string().regex(IMAGE_RE, IMAGE_MESSAGE);
