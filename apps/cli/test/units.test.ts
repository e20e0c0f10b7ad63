/** The CLI's pure helpers: formatting untrusted text, error wording, option plumbing. */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { relayOverrides } from '../src/commands/relay.js';
import { choosePassphrase, parseServerUrl } from '../src/commands/register.js';
import { parseSafetyNumberArg } from '../src/commands/safety.js';
import { resolveProfileDir } from '../src/context.js';
import { CliError, describeSdkError, oneLine, reportError } from '../src/errors.js';
import { excerpt, formatSafetyNumber, safeText, shortTime } from '../src/format.js';

describe('safeText', () => {
  it('neutralises terminal control sequences and bidi overrides', () => {
    expect(safeText('red \u001b[31mtext\u0007')).toBe('red \ufffd[31mtext\ufffd');
    expect(safeText('a\u202eb')).toBe('a\ufffdb');
    expect(safeText('tab\tok')).toBe('tab\tok');
  });
  it('indents continuation lines so a body cannot fake another sender', () => {
    expect(safeText('hi\n[12:00:00] bob: fake')).toBe('hi\n    [12:00:00] bob: fake');
  });
  it('keeps ordinary text, including non-ASCII', () => {
    expect(safeText('ünïcødé ✓ 🎉')).toBe('ünïcødé ✓ 🎉');
  });
});

describe('formatting', () => {
  it('groups a 60-digit safety number in blocks of 5', () => {
    const digits = '0123456789'.repeat(6);
    expect(formatSafetyNumber(digits)).toBe('01234 56789 '.repeat(6).trim());
    expect(formatSafetyNumber('not a number')).toBe('not a number');
  });
  it('shortens excerpts to one line', () => {
    expect(excerpt('line one\nline two', 100)).toBe('line one line two');
    expect(excerpt('x'.repeat(50), 10)).toBe(`${'x'.repeat(9)}…`);
  });
  it('shows only the time for today and the date otherwise', () => {
    const now = new Date(2024, 4, 1, 15, 0, 0);
    expect(shortTime(new Date(2024, 4, 1, 9, 5, 7).getTime(), now)).toBe('09:05:07');
    expect(shortTime(new Date(2024, 3, 30, 9, 5, 7).getTime(), now)).toBe('2024-04-30 09:05');
  });
});

describe('errors', () => {
  const never = (_e: unknown): _e is never => false;

  it('collapses messages to one line and redacts secrets', () => {
    expect(oneLine('a\n  b\r\nc', [])).toBe('a b c');
    expect(oneLine('bad pass hunter2 here', ['hunter2'])).toBe('bad pass *** here');
  });
  it('names the peer, relay and profile in SDK errors', () => {
    const ctx = { peer: 'bob', serverUrl: 'http://r', profileDir: '/p' };
    expect(describeSdkError({ code: 'USER_NOT_FOUND', message: 'x' }, ctx)).toBe(
      "there is no user 'bob' on the relay at http://r",
    );
    expect(describeSdkError({ code: 'BAD_PASSPHRASE', message: 'x' }, ctx)).toContain('/p');
    expect(describeSdkError({ code: 'RATE_LIMITED', message: 'x', retryAfter: 2.5 }, ctx)).toContain('in 3 s');
  });
  it('reports CliErrors with their exit code and unexpected errors as exit 1', () => {
    expect(reportError(new CliError('nope', 2), {}, never, [])).toMatchObject({ line: 'nope', exitCode: 2 });
    const r = reportError(new Error('boom\nsecond line'), {}, never, []);
    expect(r.exitCode).toBe(1);
    expect(r.line).toBe('unexpected error: boom second line (set PARLEY_DEBUG=1 for details)');
  });
});

describe('options', () => {
  it('passes only the relay flags that were given, defaulting the port to 8080', () => {
    expect(relayOverrides({}, {})).toEqual({ port: 8080 });
    expect(relayOverrides({}, { PARLEY_PORT: '9000' })).toEqual({});
    expect(relayOverrides({ port: 0, data: 'd', inviteCode: ['a', 'b'], host: 'h' }, {})).toEqual({
      port: 0,
      dataDir: 'd',
      inviteCodes: ['a', 'b'],
      host: 'h',
    });
  });
  it('resolves the profile directory from flag, environment, then home', () => {
    expect(resolveProfileDir({ profile: '/x' }, { PARLEY_PROFILE: '/y' })).toBe('/x');
    expect(resolveProfileDir({}, { PARLEY_PROFILE: '/y' })).toBe('/y');
    expect(resolveProfileDir({}, {})).toBe(join(homedir(), '.parley'));
    expect(resolveProfileDir({ profile: '~/p' }, {})).toBe(join(homedir(), 'p'));
  });
  it('requires an explicit choice of passphrase protection', () => {
    expect(choosePassphrase(true, 'secret')).toBe('secret');
    expect(choosePassphrase(false, null)).toBeNull();
    expect(() => choosePassphrase(true, null)).toThrow(CliError);
    expect(() => choosePassphrase(false, 'secret')).toThrow(CliError);
  });
  it('validates relay URLs and safety numbers', () => {
    expect(parseServerUrl('http://127.0.0.1:8080/')).toBe('http://127.0.0.1:8080');
    expect(() => parseServerUrl('http://user:pw@host')).toThrow(/credentials/);
    expect(parseSafetyNumberArg(['12345 67890', '11111'])).toBe('123456789011111');
    expect(() => parseSafetyNumberArg(['12a'])).toThrow(/only digits/);
  });
});
