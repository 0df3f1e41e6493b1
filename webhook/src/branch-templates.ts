/**
 * Can two `branchName` templates give the same branch name? Two repositories on one database whose
 * templates can (`pr-{number}` twice, or `pr-{number}` and `pr-1{number}`: PR 11 of one, PR 1 of the
 * other) would share branches: one PR's push would reset or delete the other's database. Decided
 * exactly: each template is a small automaton (its literal characters, and `{number}` = a positive
 * number without leading zeros, as GitHub numbers PRs), and a breadth-first walk over the pair finds
 * the shortest name both can make, if there is one.
 */

type Item = { char: string } | { number: true };

const NUMBER = '{number}';
const DIGITS = '0123456789';

function items(template: string): Item[] {
  const out: Item[] = [];
  template.split(NUMBER).forEach((literal, i) => {
    if (i > 0) out.push({ number: true });
    for (const char of literal) out.push({ char });
  });
  return out;
}

/** A state: the index of the next item, and whether a number item has had its first digit. */
type State = readonly [number, boolean];

/** The state, plus the state after it when it sits inside a number that may end here. */
function closure(its: Item[], [i, inNumber]: State): State[] {
  return inNumber
    ? [
        [i, true],
        [i + 1, false],
      ]
    : [[i, false]];
}

function step(its: Item[], [i, inNumber]: State, c: string): State | null {
  const item = its[i];
  if (!item) return null;
  if ('char' in item) return !inNumber && item.char === c ? [i + 1, false] : null;
  if (!DIGITS.includes(c)) return null;
  return inNumber || c !== '0' ? [i, true] : null;
}

const accepts = (its: Item[], [i, inNumber]: State) => !inNumber && i === its.length;

/** The shortest branch name both templates make, or null when they never meet. */
export function commonBranchName(a: string, b: string): string | null {
  const A = items(a);
  const B = items(b);
  const alphabet = [...new Set([...a.replaceAll(NUMBER, ''), ...b.replaceAll(NUMBER, ''), ...DIGITS])];
  const key = (s: State, t: State) => `${s[0]},${s[1]}|${t[0]},${t[1]}`;
  const start: [State, State] = [
    [0, false],
    [0, false],
  ];
  const seen = new Set([key(...start)]);
  let frontier: { pair: [State, State]; name: string }[] = [{ pair: start, name: '' }];
  while (frontier.length) {
    const next: typeof frontier = [];
    for (const { pair, name } of frontier) {
      const as = closure(A, pair[0]);
      const bs = closure(B, pair[1]);
      if (as.some((s) => accepts(A, s)) && bs.some((t) => accepts(B, t))) return name;
      for (const c of alphabet) {
        for (const s of as) {
          const s2 = step(A, s, c);
          if (!s2) continue;
          for (const t of bs) {
            const t2 = step(B, t, c);
            if (!t2 || seen.has(key(s2, t2))) continue;
            seen.add(key(s2, t2));
            next.push({ pair: [s2, t2], name: name + c });
          }
        }
      }
    }
    frontier = next;
  }
  return null;
}
