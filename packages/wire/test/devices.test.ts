/** Multi-device wire types: provisioning protobufs, device JSON bodies, read-sync content. */
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  type AccountId,
  WireError,
  encodeContent,
  encodeProvisionEnvelope,
  encodeProvisionMessage,
  processContent,
  processDeviceListResponse,
  processLinkDeviceResponse,
  processProvisionEnvelope,
  processProvisionMessage,
} from '../src/index.js';

const bytes = (n: number) => new Uint8Array(randomBytes(n));
const account = randomUUID() as AccountId;

describe('provisioning', () => {
  const message = {
    accountId: account,
    username: 'alice',
    identityKeyPublic: bytes(33),
    identityKeyPrivate: bytes(32),
    profileKey: bytes(32),
    provisioningCode: randomBytes(16).toString('base64url'),
    archive: { id: randomBytes(24).toString('base64url'), key: bytes(32) },
  };

  it('round-trips a provision message, with and without an archive', () => {
    expect(processProvisionMessage(encodeProvisionMessage(message))).toEqual(message);
    const none = { ...message, archive: null };
    expect(processProvisionMessage(encodeProvisionMessage(none))).toEqual(none);
  });

  it('rejects wrong key sizes, a bad code and garbage', () => {
    expect(() => processProvisionMessage(encodeProvisionMessage({ ...message, identityKeyPrivate: bytes(31) }))).toThrow(WireError);
    expect(() => processProvisionMessage(encodeProvisionMessage({ ...message, provisioningCode: 'short' }))).toThrow(WireError);
    expect(() => processProvisionMessage(encodeProvisionMessage({ ...message, archive: { id: 'x', key: bytes(16) } }))).toThrow(WireError);
    expect(() => processProvisionMessage(new Uint8Array([0xff, 0xff, 0xff]))).toThrow(WireError);
  });

  it('round-trips an envelope and bounds its size', () => {
    const env = { publicKey: bytes(33), body: bytes(200) };
    expect(processProvisionEnvelope(encodeProvisionEnvelope(env))).toEqual(env);
    expect(() => processProvisionEnvelope(encodeProvisionEnvelope({ publicKey: bytes(32), body: bytes(200) }))).toThrow(WireError);
    expect(() => processProvisionEnvelope(encodeProvisionEnvelope({ publicKey: bytes(33), body: bytes(5000) }))).toThrow(WireError);
  });
});

describe('device bodies', () => {
  it('a linked device is never device 1', () => {
    expect(processLinkDeviceResponse({ accountId: account, deviceId: 2 })).toEqual({ accountId: account, deviceId: 2 });
    expect(() => processLinkDeviceResponse({ accountId: account, deviceId: 1 })).toThrow(WireError);
  });

  it('validates device lists', () => {
    const d = { deviceId: 1, registrationId: 5, createdAt: 10, lastSeen: 20 };
    expect(processDeviceListResponse({ devices: [d] })).toEqual({ devices: [d] });
    expect(() => processDeviceListResponse({ devices: [{ ...d, deviceId: 200 }] })).toThrow(WireError);
  });
});

describe('read sync', () => {
  it('round-trips the read messages of another own device', () => {
    const c = { kind: 'syncRead' as const, reads: [{ sender: account, timestamp: 123 }] };
    expect(processContent(encodeContent(c)).content).toEqual(c);
  });
});
