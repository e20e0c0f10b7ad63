/**
 * Linking across a cluster: two relay nodes sharing a PostgreSQL schema and
 * NATS. The provisioning socket is on node B, the primary talks to node A.
 */
import { randomBytes } from 'node:crypto';
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import { type AccountId, decodeFrame, encodeLinkDeviceRequest, encodeProvisionEnvelope } from '@parley/wire';
import pg from 'pg';
import WebSocket from 'ws';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { openNatsBus } from '../src/adapters/bus/nats.js';
import { openPostgresStore } from '../src/adapters/store/postgres.js';
import { type BuiltRelay, buildRelay } from '../src/build.js';
import { systemClock } from '../src/ports.js';
import { basicAuth, defaultTestConfig, newPassword, registerBody, signedEc, signedKyber, silentLogger } from './helpers.js';
import { NATS_URL, PG_URL, servicesAvailable, uniqueName } from './services.js';

const available = await servicesAvailable('postgres', 'nats');
const schemas: string[] = [];
const running: BuiltRelay[] = [];

afterEach(async () => {
  for (const r of running.splice(0).reverse()) await r.close();
});
afterAll(async () => {
  if (!available || schemas.length === 0) return;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  await admin.end();
});

async function startNode(schema: string): Promise<string> {
  const built = buildRelay({
    store: await openPostgresStore(PG_URL, { schema, maxConnections: 4 }),
    bus: await openNatsBus(NATS_URL),
    clock: systemClock,
    config: defaultTestConfig(),
    logger: silentLogger(),
  });
  running.push(built);
  return built.app.listen({ host: '127.0.0.1', port: 0 });
}

describe.skipIf(!available)('linking across cluster nodes', () => {
  it('an envelope uploaded on node A reaches the provisioning socket on node B; the device links on node B with a code from node A', async () => {
    const schema = uniqueName('dev');
    schemas.push(schema);
    const a = await startNode(schema);
    const b = await startNode(schema);

    const identity = IdentityKeyPair.generate();
    const password = newPassword();
    const reg = await fetch(`${a}/v1/accounts`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(registerBody('cluster_alice', identity, password, 1234)),
    });
    const { accountId } = (await reg.json()) as { accountId: AccountId };
    const auth = basicAuth(accountId, 1, password);

    const ws = new WebSocket(`${b.replace(/^http/, 'ws')}/v1/provisioning`);
    const paths: string[] = [];
    const bodies: Uint8Array[] = [];
    let gotAddress: (a: string) => void = () => undefined;
    const address = new Promise<string>((resolve) => (gotAddress = resolve));
    const closed = new Promise<number>((resolve) => ws.on('close', (c) => resolve(c)));
    ws.on('message', (data: Buffer) => {
      const f = decodeFrame(new Uint8Array(data));
      if (f.kind !== 'request') return;
      paths.push(f.path);
      bodies.push(f.body);
      if (f.path === '/v1/address') gotAddress((JSON.parse(new TextDecoder().decode(f.body)) as { address: string }).address);
    });
    const addr = await address;
    const envelope = encodeProvisionEnvelope({ publicKey: IdentityKeyPair.generate().publicKey.serialize(), body: new Uint8Array(randomBytes(64)) });
    // Node B hands out the address only after NATS has its subscription, so one forward through node A is enough.
    const put = await fetch(`${a}/v1/provisioning/${addr}`, { method: 'PUT', headers: { authorization: auth }, body: envelope });
    expect(put.status).toBe(204);
    expect(await closed).toBe(1000);
    expect(paths).toEqual(['/v1/address', '/v1/message']);
    expect(bodies[1]).toEqual(envelope);

    const codeRes = await fetch(`${a}/v1/devices/provisioning/code`, { headers: { authorization: auth } });
    const { code } = (await codeRes.json()) as { code: string };
    const link = await fetch(`${b}/v1/devices/link`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(
        encodeLinkDeviceRequest({
          provisioningCode: code,
          password: newPassword(),
          registrationId: 4321,
          signedPreKey: signedEc(identity, 1),
          kyberLastResortKey: signedKyber(identity, 1),
        }),
      ),
    });
    expect(link.status).toBe(200);
    expect(await link.json()).toEqual({ accountId, deviceId: 2 });
  });
});
