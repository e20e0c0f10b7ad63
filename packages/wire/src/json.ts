import { fail } from './errors.js';

/** Helpers for validating untyped JSON bodies field by field. */
export type Json = Record<string, unknown>;

export function obj(value: unknown, field: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(field, 'must be an object');
  return value as Json;
}

export function int(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
    fail(field, `must be an integer in ${min}..${max}`);
  return value;
}

export function bool(value: unknown, field: string, fallback?: boolean): boolean {
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== 'boolean') fail(field, 'must be a boolean');
  return value;
}

export function str(value: unknown, field: string, maxLength: number): string {
  if (typeof value !== 'string' || value.length > maxLength) fail(field, `must be a string of at most ${maxLength} characters`);
  return value;
}

export function arr(value: unknown, field: string, maxItems: number): unknown[] {
  if (!Array.isArray(value) || value.length > maxItems) fail(field, `must be an array of at most ${maxItems} items`);
  return value;
}

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Standard base64 with an exact or bounded decoded length. */
export function b64(value: unknown, field: string, length: { exact?: number; max?: number }): Uint8Array {
  const max = length.exact ?? length.max ?? 0;
  if (typeof value !== 'string' || value.length > Math.ceil(max / 3) * 4 + 4 || !B64.test(value) || value.length % 4 !== 0)
    fail(field, 'must be base64');
  const bytes = new Uint8Array(Buffer.from(value, 'base64'));
  if (length.exact !== undefined && bytes.length !== length.exact) fail(field, `must be ${length.exact} bytes`);
  if (length.max !== undefined && bytes.length > length.max) fail(field, `must be at most ${length.max} bytes`);
  return bytes;
}

export function toB64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}
