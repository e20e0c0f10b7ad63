/** `parley relay`: run the relay server in the foreground. */
import type { RelayConfig } from '@parley/relay';
import { CliError, ExitCode } from '../errors.js';

export interface RelayFlags {
  host?: string;
  port?: number;
  data?: string;
  inviteCode?: string[];
  /** `sqlite` or a postgres:// URL (cluster mode). */
  store?: string;
  /** `local` or nats:// URLs (cluster mode). */
  bus?: string;
  /** `memory` or a redis:// URL (limits shared by a cluster). */
  rateLimiter?: string;
  /** Sealed-sender server-certificate file. */
  serverCert?: string;
}

/**
 * The port `parley relay` uses when neither --port nor PARLEY_PORT is given.
 * Profiles remember the relay's URL, so a standalone relay needs a stable
 * port (the library's own default, 0, suits tests and embedding).
 */
export const DEFAULT_RELAY_PORT = 8080;

/** Only the flags actually given override the environment. */
export function relayOverrides(flags: RelayFlags, env: NodeJS.ProcessEnv): Partial<RelayConfig> {
  const overrides: Partial<RelayConfig> = {};
  if (flags.host !== undefined) overrides.host = flags.host;
  if (flags.port !== undefined) overrides.port = flags.port;
  else if (env.PARLEY_PORT === undefined || env.PARLEY_PORT === '') overrides.port = DEFAULT_RELAY_PORT;
  if (flags.data !== undefined) overrides.dataDir = flags.data;
  if (flags.inviteCode !== undefined && flags.inviteCode.length > 0) overrides.inviteCodes = flags.inviteCode;
  if (flags.store !== undefined) overrides.store = flags.store;
  if (flags.bus !== undefined) overrides.bus = flags.bus;
  if (flags.rateLimiter !== undefined) overrides.rateLimiter = flags.rateLimiter;
  if (flags.serverCert !== undefined) overrides.serverCertificate = flags.serverCert;
  return overrides;
}

/**
 * Starts the relay and keeps it running until SIGTERM or SIGINT, then closes
 * it (draining connections, closing the store) and resolves with status 0.
 */
export async function runRelay(flags: RelayFlags): Promise<number> {
  const { relayConfigFromEnv, startRelay } = await import('@parley/relay');
  let config: RelayConfig;
  try {
    config = relayConfigFromEnv(process.env, relayOverrides(flags, process.env));
  } catch (err) {
    throw new CliError(`invalid relay configuration: ${err instanceof Error ? err.message : String(err)}`, ExitCode.Usage);
  }
  const relay = await startRelay(config);

  await new Promise<void>((resolve) => {
    const onSignal = (): void => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      // A second signal while draining means "stop now".
      const force = (): void => process.exit(ExitCode.Failure);
      process.once('SIGTERM', force);
      process.once('SIGINT', force);
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  await relay.close();
  return ExitCode.Ok;
}
