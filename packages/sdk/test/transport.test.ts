import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultRelayConfig, startRelay, type RunningRelay } from '@parley/relay';
import { ParleyClient, SdkError } from '../src/index.js';
import { RelaySocket, type SocketState } from '../src/transport.js';
import { nextEvent, tempDir } from './helpers.js';

let relay: RunningRelay;
const tmp = tempDir('parley-transport-');
beforeAll(async () => {
  relay = await startRelay(defaultRelayConfig({ port: 0, dataDir: join(tmp.dir, 'relay'), logLevel: 'silent' }));
});
afterAll(async () => {
  await relay.close();
  tmp.cleanup();
});

function password(c: ParleyClient): string {
  return (c as unknown as { password(): string }).password();
}

describe('WebSocket transport', () => {
  it('a second connection replaces the first, which stops reconnecting', async () => {
    const c = await ParleyClient.register({ profileDir: join(tmp.dir, 'a'), serverUrl: relay.url, username: 'dora_t', passphrase: null });
    try {
      const states: SocketState[] = [];
      await c.connect();
      c.on('connection', (s) => states.push(s));
      const replaced = nextEvent(c, 'connection', (s) => s === 'replaced');
      const other = new RelaySocket({
        serverUrl: relay.url,
        creds: { accountId: c.identity.accountId, deviceId: c.identity.deviceId, password: password(c) },
        onRequest: async () => ({ status: 200 }),
        onState: () => {},
      });
      await other.start();
      await replaced;
      expect(states).toEqual(['replaced']);
      // Requests over the second socket still work; the first one did not come back.
      expect((await other.request('GET', '/v1/keepalive')).status).toBe(200);
      await other.close();
      expect(states).toEqual(['replaced']);
      const sock = (c as unknown as { socket: { isOpen: boolean; reconnectTimer: unknown } }).socket;
      expect(sock.isOpen).toBe(false);
      expect(sock.reconnectTimer).toBeNull(); // no reconnect scheduled
    } finally {
      await c.close();
    }
  });

  it('reconnects after the relay restarts and keeps delivering', async () => {
    const dataDir = join(tmp.dir, 'relay2');
    let r = await startRelay(defaultRelayConfig({ port: 0, dataDir, logLevel: 'silent' }));
    const a = await ParleyClient.register({ profileDir: join(tmp.dir, 'r1'), serverUrl: r.url, username: 'ann_t', passphrase: null });
    const b = await ParleyClient.register({ profileDir: join(tmp.dir, 'r2'), serverUrl: r.url, username: 'ben_t', passphrase: null });
    try {
      await a.connect();
      await b.connect();
      const closed = nextEvent(b, 'connection', (s) => s === 'closed');
      const reopened = nextEvent(b, 'connection', (s) => s === 'open');
      await r.close();
      await closed;
      r = await startRelay(defaultRelayConfig({ port: r.port, dataDir, logLevel: 'silent' }));
      await reopened;
      const got = nextEvent(b, 'message', (m) => m.body === 'after restart');
      await a.send('ben_t', 'after restart');
      expect((await got)[0].from).toBe('ann_t');
    } finally {
      await a.close();
      await b.close();
      await r.close();
    }
  });

  it('refuses wrong credentials on the upgrade with UNAUTHORIZED', async () => {
    const s = new RelaySocket({
      serverUrl: relay.url,
      creds: { accountId: '00000000-0000-4000-8000-000000000001', deviceId: 1, password: 'A'.repeat(43) },
      onRequest: async () => ({ status: 200 }),
      onState: () => {},
    });
    await expect(s.start()).rejects.toSatisfy((e) => SdkError.is(e, 'UNAUTHORIZED'));
    await s.close();
  });

  it('reports an unreachable relay as RELAY_UNREACHABLE', async () => {
    await expect(
      ParleyClient.register({ profileDir: join(tmp.dir, 'x'), serverUrl: 'http://127.0.0.1:1', username: 'nobody_t', passphrase: null }),
    ).rejects.toSatisfy((e) => SdkError.is(e, 'RELAY_UNREACHABLE'));
    // A failed registration leaves no half-made profile behind.
    await expect(ParleyClient.open({ profileDir: join(tmp.dir, 'x'), passphrase: null })).rejects.toSatisfy((e) =>
      SdkError.is(e, 'PROFILE_NOT_FOUND'),
    );
  });
});
