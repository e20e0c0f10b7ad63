/**
 * Online-only delivery (typing indicators): an envelope travels on the bus
 * inside an `online:` signal to whichever node holds the device's socket and
 * is pushed there once. It is never stored, so an offline device never sees it.
 */
import { Limits, encodeEnvelope } from '@parley/wire';
import { type Bus, type StoredEnvelope, deviceKey } from './ports.js';

export const ONLINE_PREFIX = 'online:';

/** Longest `online:` bus signal: a base64 envelope with the largest content. */
export const MAX_ONLINE_SIGNAL_CHARS = Math.ceil((Limits.maxContentBytes + 1024) / 3) * 4 + ONLINE_PREFIX.length;

/** Push envelopes to sockets open right now, on any node, without storing them. */
export function publishOnline(bus: Bus, envelopes: readonly StoredEnvelope[]): void {
  for (const e of envelopes) {
    const bytes = encodeEnvelope({ ...e, serverGuid: e.guid });
    bus.publish(deviceKey(e.destination.account, e.destination.device), `online:${Buffer.from(bytes).toString('base64')}`);
  }
}

/**
 * The `onReadable` of a batch: wake every destination device as soon as the
 * store can hand its envelopes out, without waiting for the disk flush that
 * the sender's answer waits for.
 */
export function wakeOnReadable(bus: Bus, envelopes: readonly StoredEnvelope[]): () => void {
  return () => {
    for (const e of envelopes) bus.publish(deviceKey(e.destination.account, e.destination.device));
  };
}

/** The envelope bytes inside an `online:` signal, or null when it is not one. */
export function onlineEnvelope(signal: string): Uint8Array | null {
  if (!signal.startsWith(ONLINE_PREFIX)) return null;
  return new Uint8Array(Buffer.from(signal.slice(ONLINE_PREFIX.length), 'base64'));
}
