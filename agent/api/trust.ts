/**
 * A fetch that trusts one more certificate authority: for an agent whose api.tls certificate is
 * self-signed or from a private CA. The system's roots stay trusted too (as NODE_EXTRA_CA_CERTS,
 * which also works, but only when set before Node starts: a GitHub Action cannot set it for itself).
 * Node's global fetch takes no CA, so this is undici's own fetch with an agent of its own.
 */

/** PEM text of one or more CA certificates. */
export function fetchTrusting(caPem: string): typeof fetch {
  if (!/-----BEGIN CERTIFICATE-----/.test(caPem))
    throw new Error('the CA must be PEM text (-----BEGIN CERTIFICATE-----)');
  let ready: Promise<typeof fetch> | null = null;
  const load = async (): Promise<typeof fetch> => {
    // node:tls and undici on the first call: the CLI's socket path builds a client and never needs them.
    const [{ Agent, fetch: undiciFetch }, { rootCertificates }] = await Promise.all([
      import('undici'),
      import('node:tls'),
    ]);
    const dispatcher = new Agent({ connect: { ca: [...rootCertificates, caPem] } });
    return ((input: Parameters<typeof fetch>[0], init?: RequestInit) =>
      undiciFetch(input as never, { ...(init as object), dispatcher } as never)) as unknown as typeof fetch;
  };
  return (async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
    ready ??= load();
    return (await ready)(input, init);
  }) as typeof fetch;
}
