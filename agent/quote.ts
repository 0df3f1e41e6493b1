/**
 * Text from elsewhere made safe to print, in messages and on terminals. No dependencies: the CLI's
 * light start-up path (duration.ts, saved contexts) uses it without loading names.ts and its zod.
 */

/**
 * Someone's input as an error message quotes it: control characters escaped (a newline would cut
 * the CLI's one error line, or forge a second one) and at most 80 characters.
 */
export function shown(value: string): string {
  const safe = value.replace(
    /[\x00-\x1f\x7f\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return safe.length > 80 ? `${safe.slice(0, 80)}…` : safe;
}

/**
 * Text someone else wrote (a branch's SQL: names, definitions, function bodies), made safe to print
 * on a terminal or in a comment without cutting it: control characters other than newline and tab,
 * line and paragraph separators, and the bidirectional controls of "Trojan source" are escaped as
 * `\uXXXX`, so nothing can move the cursor, clear a line, or reorder what the reader sees.
 */
export function printable(value: string): string {
  return value.replace(
    /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
