import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A throw-away self-signed certificate for 127.0.0.1 and localhost, made by the openssl command
 * (Node's crypto can make keys but not X.509 certificates). Throws if openssl is missing.
 */
export function selfSignedCert(dir = mkdtempSync(join(tmpdir(), 'bpg-tls-'))): {
  cert: string;
  key: string;
  pem: string;
  dir: string;
} {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return { cert, key, pem: readFileSync(cert, 'utf8'), dir };
}

/** A throw-away certificate authority (openssl), to issue server certificates a client can verify. */
export interface TestCa {
  /** PEM file of the CA certificate (a client's sslrootcert). */
  cert: string;
  key: string;
  pem: string;
  dir: string;
}

export function testCa(dir = mkdtempSync(join(tmpdir(), 'bpg-ca-'))): TestCa {
  const cert = join(dir, 'ca.pem');
  const key = join(dir, 'ca-key.pem');
  openssl([
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '2',
    '-subj',
    '/CN=betterpg test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { cert, key, pem: readFileSync(cert, 'utf8'), dir };
}

/**
 * A server certificate signed by `ca` for the DNS names (wildcards allowed: `*.db.example.test`)
 * and IP addresses given, written as `<name>.pem` and `<name>-key.pem` in the CA's folder.
 */
export function issueCert(
  ca: TestCa,
  o: { name: string; dns: string[]; ips?: string[]; cn?: string },
): { cert: string; key: string; pem: string } {
  const cert = join(ca.dir, `${o.name}.pem`);
  const key = join(ca.dir, `${o.name}-key.pem`);
  const csr = join(ca.dir, `${o.name}.csr`);
  const ext = join(ca.dir, `${o.name}.ext`);
  const san = [...o.dns.map((d) => `DNS:${d}`), ...(o.ips ?? []).map((ip) => `IP:${ip}`)].join(',');
  writeFileSync(
    ext,
    `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\n`,
  );
  openssl([
    'req',
    '-new',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    key,
    '-out',
    csr,
    '-subj',
    `/CN=${o.cn ?? o.dns[0] ?? o.name}`,
  ]);
  openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    '-CAcreateserial',
    '-out',
    cert,
    '-days',
    '1',
    '-sha256',
    '-extfile',
    ext,
  ]);
  return { cert, key, pem: readFileSync(cert, 'utf8') };
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}
