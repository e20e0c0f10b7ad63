/** Prometheus metrics, one registry per relay instance, with no per-user labels. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface RelayMetrics {
  registry: Registry;
  sends: Counter<'result'>;
  deliveries: Counter;
  acks: Counter;
  authFailures: Counter;
  rateLimited: Counter<'bucket'>;
  sendCommitSeconds: Histogram;
  openSockets: Gauge;
  openAnonymousSockets: Gauge;
  /** Request frames answered on sockets, by socket kind (`device` / `anonymous`). */
  socketRequests: Counter<'socket'>;
  errors: Counter<'code'>;
}

export function createMetrics(): RelayMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'parley_relay_process_' });
  const registers = [registry];
  return {
    registry,
    sends: new Counter({ name: 'parley_relay_sends_total', help: 'Send requests by outcome', labelNames: ['result'], registers }),
    deliveries: new Counter({ name: 'parley_relay_deliveries_total', help: 'Envelopes pushed to sockets', registers }),
    acks: new Counter({ name: 'parley_relay_acks_total', help: 'Envelopes acknowledged and deleted', registers }),
    authFailures: new Counter({ name: 'parley_relay_auth_failures_total', help: 'Rejected credentials', registers }),
    rateLimited: new Counter({
      name: 'parley_relay_rate_limited_total',
      help: 'Requests refused by a rate limit',
      labelNames: ['bucket'],
      registers,
    }),
    sendCommitSeconds: new Histogram({
      name: 'parley_relay_send_commit_seconds',
      help: 'Time to commit a send to the store',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    openSockets: new Gauge({ name: 'parley_relay_open_sockets', help: 'Authenticated device sockets', registers }),
    openAnonymousSockets: new Gauge({
      name: 'parley_relay_open_anonymous_sockets',
      help: 'Unauthenticated (sealed-sender) sockets',
      registers,
    }),
    socketRequests: new Counter({
      name: 'parley_relay_socket_requests_total',
      help: 'Request frames received on sockets, by socket kind',
      labelNames: ['socket'],
      registers,
    }),
    errors: new Counter({ name: 'parley_relay_errors_total', help: 'Error answers by code', labelNames: ['code'], registers }),
  };
}
