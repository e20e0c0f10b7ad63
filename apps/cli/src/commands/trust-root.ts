/**
 * `parley relay trust-root create` and `parley relay server-cert`: the
 * sealed-sender keys of a production relay. The trust root signs server
 * certificates and should stay offline; the relay runs with a server
 * certificate only (`parley relay --server-cert FILE`).
 */
import { readFileSync } from 'node:fs';
import { CliError, ExitCode } from '../errors.js';

/** Write a new trust-root key pair to `out` (mode 0600; an existing file is never overwritten). */
export async function runTrustRootCreate(out: string): Promise<number> {
  const { createTrustRoot, writeSecretFile } = await import('@parley/relay');
  const root = createTrustRoot();
  writeNew(writeSecretFile, out, root);
  process.stdout.write(
    `trust root written to ${out}\npublic key: ${root.publicKey}\nkeep this file offline; it signs server certificates.\n`,
  );
  return ExitCode.Ok;
}

/** Sign a new server certificate with id `id` using the trust root in `trustRootPath`; write it to `out` (0600). */
export async function runServerCert(opts: { trustRoot: string; id: number; out: string }): Promise<number> {
  const { createServerCertificate, writeSecretFile } = await import('@parley/relay');
  let text: string;
  try {
    text = readFileSync(opts.trustRoot, 'utf8');
  } catch {
    throw new CliError('cannot read the trust-root file', ExitCode.Usage);
  }
  let cert;
  try {
    cert = createServerCertificate(text, opts.id);
  } catch (err) {
    throw new CliError(err instanceof RangeError ? err.message : 'invalid trust-root file', ExitCode.Usage);
  }
  writeNew(writeSecretFile, opts.out, cert);
  process.stdout.write(
    `server certificate ${opts.id} written to ${opts.out}\nrun the relay with: parley relay --server-cert ${opts.out}\n`,
  );
  return ExitCode.Ok;
}

function writeNew(write: (path: string, content: string) => void, out: string, value: unknown): void {
  try {
    write(out, `${JSON.stringify(value, null, 2)}\n`);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 'EEXIST') throw new CliError('the output file exists; refusing to overwrite it', ExitCode.Usage);
    throw new CliError('cannot write the output file', ExitCode.Failure);
  }
}

/** `--id`: a certificate id in 1..2^32-1. */
export function parseCertificateId(value: string): number {
  const n = Number(value);
  if (!/^[0-9]{1,10}$/.test(value) || n < 1 || n > 0xffffffff)
    throw new RangeError('expected a certificate id from 1 to 4294967295.');
  return n;
}
