/**
 * User mistakes against a real relay and real profiles: each ends with one
 * readable `parley: ...` line on stderr, a non-zero exit status, no stack
 * trace, and never the passphrase.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliResult, cliEnv, errorLine, runCli } from '../helpers/cli.js';
import { startRelayProcess } from '../helpers/relay.js';
import { cleanupAll, createWorld, type World } from '../helpers/world.js';

function expectOneLineFailure(r: CliResult, pattern: RegExp, secret?: string): string {
  expect(r.code, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`).not.toBe(0);
  expect(r.code).not.toBeNull();
  const line = errorLine(r);
  expect(line).toMatch(/^parley: /);
  expect(line).toMatch(pattern);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  if (secret !== undefined) expect(r.stdout + r.stderr).not.toContain(secret);
  return line;
}

describe('errors against a real relay', () => {
  let w: World;

  beforeAll(async () => {
    w = await createWorld('errors');
    await w.register('alice');
    await w.register('bob');
  });

  // Not w.close(): it must also run when beforeAll failed half-way.
  afterAll(cleanupAll);

  it('sending to an unknown user', async () => {
    const r = await w.cli('alice', ['send', 'nobody_here', 'hello?']);
    expectOneLineFailure(r, /no user 'nobody_here'/);
    expect(r.code).toBe(1);
  });

  it('chatting with an unknown user', async () => {
    const r = await w.cli('alice', ['chat', 'nobody_here'], { input: 'hello?\n' });
    expectOneLineFailure(r, /no user 'nobody_here'/);
    expect(r.stdout).toBe('');
  });

  it('a wrong passphrase', async () => {
    const wrong = 'definitely-not-the-passphrase';
    const r = await runCli(['--profile', w.profile('alice'), 'send', 'bob', 'hi'], { env: cliEnv({ PARLEY_PASSPHRASE: wrong }) });
    expectOneLineFailure(r, /wrong passphrase/, wrong);
  });

  it('a missing passphrase', async () => {
    const r = await runCli(['--profile', w.profile('alice'), 'whoami'], { env: cliEnv() });
    expectOneLineFailure(r, /PARLEY_PASSPHRASE/);
  });

  it('a profile directory without a profile', async () => {
    const empty = join(w.dir, 'profiles', 'empty');
    mkdirSync(empty, { recursive: true });
    const r = await runCli(['--profile', empty, 'whoami'], { env: w.env() });
    expectOneLineFailure(r, /no profile in .*register/);
  });

  it('registering a username that is taken', async () => {
    const r = await w.cli('alice2', ['register', 'alice', '--server', w.relay.url]);
    expectOneLineFailure(r, /'alice' is already taken/, w.passphrase);
  });

  it('registering into a directory that already has a profile', async () => {
    const r = await w.cli('alice', ['register', 'carol', '--server', w.relay.url]);
    expectOneLineFailure(r, /already exists/);
  });

  it('a wrong safety number', async () => {
    const r = await w.cli('alice', ['verify', 'bob', '0'.repeat(60)]);
    expectOneLineFailure(r, /not your safety number/);
  });

  it('safety numbers match on both sides and verify accepts them', async () => {
    const a = await w.ok('alice', ['safety-number', 'bob']);
    const b = await w.ok('bob', ['safety-number', 'alice']);
    const number = a.stdout.trim();
    expect(number).toMatch(/^(\d{5} ){11}\d{5}$/);
    expect(b.stdout.trim()).toBe(number);
    const v = await w.ok('alice', ['verify', 'bob', ...number.split(' ')]);
    expect(v.stdout).toMatch(/bob is now verified/);
  });

  it('a profile already in use by another parley process', async () => {
    const chat = w.live('alice', ['chat', 'bob']);
    await chat.waitForOutput(/Chatting with bob/, 30_000, 'the chat to connect');
    const r = await w.cli('alice', ['whoami']);
    expectOneLineFailure(r, /in use by another parley process/);
    chat.write('/quit');
    expect((await chat.waitForExit(30_000)).code).toBe(0);
  });

  it('a relay that requires an invite code', async () => {
    const invite = `invite-${Date.now()}`;
    const relay = await startRelayProcess({
      dataDir: join(w.dir, 'invite-data'),
      logFile: join(w.dir, 'invite.log'),
      inviteCodes: [invite],
    });
    const none = await w.cli('erin', ['register', 'erin', '--server', relay.url]);
    expectOneLineFailure(none, /invite code/);
    const wrong = await w.cli('erin', ['register', 'erin', '--server', relay.url, '--invite-code', 'not-it']);
    expectOneLineFailure(wrong, /invite code/);
    const right = await w.ok('erin', ['register', 'erin', '--server', relay.url, '--invite-code', invite]);
    expect(right.stdout).toMatch(/^registered erin /);
    expect(await relay.stop()).toBe(0);
  });

  it('a relay that cannot start because the port is taken', async () => {
    const r = await runCli(
      ['relay', '--host', '127.0.0.1', '--port', String(w.relay.port), '--data', join(w.dir, 'other-data')],
      {
        env: cliEnv(),
        timeoutMs: 20_000,
      },
    );
    expectOneLineFailure(r, /in use/);
  });

  it('an unreachable relay', async () => {
    // A second world-less relay that is started and stopped gives a URL with nothing behind it.
    const gone = await startRelayProcess({ dataDir: join(w.dir, 'gone-data'), logFile: join(w.dir, 'gone.log') });
    const r1 = await w.cli('dave', ['register', 'dave', '--server', gone.url]);
    expect(r1.code).toBe(0);
    expect(await gone.stop()).toBe(0);
    const r = await w.cli('dave', ['send', 'alice', 'anyone there?'], { timeoutMs: 60_000 });
    expectOneLineFailure(r, /cannot reach the relay at http:\/\/127\.0\.0\.1:\d+/);
  }, 90_000);
});
