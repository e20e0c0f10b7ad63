import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultRelayConfig, relayConfigFromEnv } from '../src/config.js';
import { startRelay } from '../src/start.js';

describe('relay config', () => {
  it('has the documented defaults', () => {
    expect(defaultRelayConfig()).toEqual({
      host: '127.0.0.1',
      port: 0,
      dataDir: './data',
      inviteCodes: null,
      messageTtlMs: 30 * 24 * 3600 * 1000,
      purgeIntervalMs: 3600 * 1000,
      logLevel: 'info',
      logDestination: 1,
    });
  });

  it('reads PARLEY_* variables, and explicit overrides win', () => {
    const env = {
      PARLEY_HOST: '0.0.0.0',
      PARLEY_PORT: '8443',
      PARLEY_DATA_DIR: '/var/lib/parley',
      PARLEY_INVITE_CODES: 'abc, def,,',
      PARLEY_MESSAGE_TTL_DAYS: '2',
      PARLEY_LOG_LEVEL: 'warn',
    };
    const c = relayConfigFromEnv(env, { port: 9000 });
    expect(c).toMatchObject({
      host: '0.0.0.0',
      port: 9000,
      dataDir: '/var/lib/parley',
      inviteCodes: ['abc', 'def'],
      messageTtlMs: 2 * 24 * 3600 * 1000,
      logLevel: 'warn',
    });
    expect(relayConfigFromEnv({ PARLEY_INVITE_CODES: '' }).inviteCodes).toBeNull();
    expect(() => relayConfigFromEnv({ PARLEY_PORT: 'eighty' })).toThrow(RangeError);
    expect(() => relayConfigFromEnv({ PARLEY_MESSAGE_TTL_DAYS: '-1' })).toThrow(RangeError);
  });

  it('reads the device limit and idle expiry', () => {
    const c = relayConfigFromEnv({ PARLEY_MAX_DEVICES: '3', PARLEY_DEVICE_IDLE_DAYS: '2' });
    expect(c.maxDevices).toBe(3);
    expect(c.deviceIdleMs).toBe(2 * 24 * 3600 * 1000);
    expect(relayConfigFromEnv({}).maxDevices).toBeUndefined();
    expect(() => relayConfigFromEnv({ PARLEY_MAX_DEVICES: '128' })).toThrow(RangeError);
    expect(() => relayConfigFromEnv({ PARLEY_MAX_DEVICES: 'six' })).toThrow(RangeError);
    expect(() => relayConfigFromEnv({ PARLEY_DEVICE_IDLE_DAYS: '0' })).toThrow(RangeError);
  });

  it('startRelay logs one "relay listening" line with the url to the configured destination', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-relay-log-'));
    try {
      const logFile = join(dir, 'relay.log');
      const relay = await startRelay(defaultRelayConfig({ dataDir: join(dir, 'data'), logDestination: logFile }));
      expect(relay.url).toBe(`http://127.0.0.1:${relay.port}`);
      const res = await fetch(`${relay.url}/healthz`);
      expect(res.status).toBe(200);
      await relay.close();
      const lines = readFileSync(logFile, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { msg: string; url?: string });
      expect(lines.filter((l) => l.msg === 'relay listening')).toEqual([expect.objectContaining({ url: relay.url })]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
