/** Start a relay with the embedded adapters: SQLite store and in-process bus. */
import { LocalBus } from './adapters/bus/local.js';
import { openSqliteStore } from './adapters/store/sqlite.js';
import { buildRelay } from './build.js';
import type { RelayConfig } from './config.js';
import { systemClock } from './ports.js';

/** A listening relay. `close()` drains it (see BuiltRelay.close). */
export interface RunningRelay {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Open `<dataDir>/relay.db`, build the relay and listen on `host:port`. */
export async function startRelay(config: RelayConfig): Promise<RunningRelay> {
  const store = openSqliteStore(config.dataDir);
  const built = buildRelay({ store, bus: new LocalBus(), clock: systemClock, config });
  try {
    await built.app.listen({ host: config.host, port: config.port });
  } catch (err) {
    await built.close();
    throw err;
  }
  const addr = built.app.server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  built.log.info({ url }, 'relay listening');
  return { url, port, close: () => built.close() };
}
