/**
 * Scrubbing secrets out of text we publish (a PR comment, a job summary, a log line). A runner
 * masks registered secrets in its own log only; a comment or summary written through the API is
 * not masked by anyone, so every secret is replaced here, in every form it may be printed in.
 */

/**
 * Every form in which a secret may show up in output: as is, URL-encoded (in a connection string
 * or a query), and base64 as actions/checkout writes the token into .git/config
 * (`AUTHORIZATION: basic base64(x-access-token:<token>)`) and as a bare base64 of the value.
 */
export function secretForms(secrets: string[]): string[] {
  // A value too short to be a secret (a 3-character one would blank out half the log) is not scrubbed.
  const forms = secrets
    .filter((s) => s.length >= 6)
    .flatMap((s) => [
      s,
      encodeURIComponent(s),
      Buffer.from(s).toString('base64'),
      Buffer.from(`x-access-token:${s}`).toString('base64'),
    ]);
  return [...new Set(forms)];
}

/** Replaces every given secret (longest first, each in all its forms) with `***`. */
export function scrubber(secrets: string[]): (s: string) => string {
  const list = secretForms(secrets).sort((a, b) => b.length - a.length);
  return (s) => list.reduce((acc, secret) => acc.split(secret).join('***'), s);
}
