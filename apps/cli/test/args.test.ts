/**
 * Command-line mistakes: each must end with exactly one `parley: ...` line on
 * stderr, nothing on stdout, exit status 2, and no stack trace. These run the
 * built CLI without a relay or profile.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const PKG = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function parley(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PARLEY_')) base[k] = v;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [MAIN, ...args], { env: { ...base, ...env }, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') {
        reject(new Error(`parley ${args.join(' ')} did not exit normally: ${err.message}\n${stderr}`));
        return;
      }
      resolve({ code: err === null ? 0 : (err.code as number), stdout, stderr });
    });
  });
}

function expectUsageError(r: Result, pattern: RegExp): void {
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, `stderr was:\n${r.stderr}`).toHaveLength(1);
  expect(lines[0]).toMatch(/^parley: /);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(r.stdout).toBe('');
  expect(r.code).toBe(2);
}

describe('parley command-line errors', () => {
  const cases: Array<[string, string[], RegExp, NodeJS.ProcessEnv?]> = [
    ['no command', [], /missing command/],
    ['unknown command', ['frobnicate'], /unknown command 'frobnicate'/],
    ['misspelled command', ['sned', 'bob', 'hi'], /unknown command 'sned'.*send/],
    ['unknown option', ['whoami', '--bogus'], /unknown option '--bogus'/],
    ['send without recipient', ['send'], /missing required argument 'username'/],
    ['send without text', ['send', 'bob'], /missing message text/],
    ['send with text and --stdin', ['send', 'bob', 'hi', '--stdin'], /not both/],
    ['send with empty text', ['send', 'bob', '  '], /empty/],
    ['send to an invalid username', ['send', 'b!', 'hi'], /invalid username 'b!'/],
    ['send with a bad timeout', ['send', 'bob', 'hi', '--timeout', '0'], /--timeout/],
    ['chat without a username', ['chat'], /missing required argument 'username'/],
    ['register without --server', ['register', 'alice'], /--server/],
    ['register with a bad URL', ['register', 'alice', '--server', 'not a url', '--no-passphrase'], /invalid --server/],
    ['register with a non-http URL', ['register', 'alice', '--server', 'ftp://x', '--no-passphrase'], /http:\/\/ or https:\/\//],
    [
      'register with an invalid username',
      ['register', 'Al', '--server', 'http://127.0.0.1:1', '--no-passphrase'],
      /invalid username/,
    ],
    [
      'register without choosing passphrase protection',
      ['register', 'alice', '--server', 'http://127.0.0.1:1'],
      /PARLEY_PASSPHRASE.*--no-passphrase/,
    ],
    [
      'register with both a passphrase and --no-passphrase',
      ['register', 'alice', '--server', 'http://127.0.0.1:1', '--no-passphrase'],
      /PARLEY_PASSPHRASE.*--no-passphrase/,
      { PARLEY_PASSPHRASE: 'hunter2-hunter2' },
    ],
    ['relay with a port out of range', ['relay', '--port', '70000'], /--port/],
    ['relay with a non-numeric port', ['relay', '--port', 'http'], /--port/],
    ['receive with a bad --wait', ['receive', '--wait', 'soon'], /--wait/],
    ['receive with a negative --wait', ['receive', '--wait', '-1'], /--wait|unknown option/],
    ['verify with letters in the number', ['verify', 'bob', '12345', 'abcde'], /only digits/],
    ['verify without a number', ['verify', 'bob'], /missing required argument 'number'/],
    ['safety-number with too many arguments', ['safety-number', 'bob', 'carol'], /too many arguments/],
    ['group without a subcommand', ['group'], /missing command after 'group' \(one of: create, add, remove, leave, info, list\)/],
    ['an unknown group subcommand', ['group', 'rename', 'x'], /unknown command 'rename'/],
    ['group create without members', ['group', 'create', 'Book club'], /missing required argument 'member'/],
    ['group create without a name', ['group', 'create'], /missing required argument 'name'/],
    ['group create with an empty name', ['group', 'create', '  ', 'bob'], /group name is empty/],
    ['group create with a name too long', ['group', 'create', 'x'.repeat(65), 'bob'], /at most 64/],
    ['group create with an invalid member', ['group', 'create', 'Book club', 'bob', 'c!'], /invalid username 'c!'/],
    ['group add without a member', ['group', 'add', 'Book club'], /missing required argument 'member'/],
    ['group remove without arguments', ['group', 'remove'], /missing required argument 'group'/],
    ['group leave with an empty group', ['group', 'leave', ''], /missing group/],
    ['group info without a group', ['group', 'info'], /missing required argument 'group'/],
    ['group list with an argument', ['group', 'list', 'extra'], /too many arguments/],
    ['group add with a bad timeout', ['group', 'add', 'g', 'bob', '--timeout', 'x'], /--timeout/],
    ['send --group with a username and text', ['send', 'bob', 'hi', '--group', 'Book club'], /only the message text/],
    ['send --group without text', ['send', '--group', 'Book club'], /missing message text/],
    ['send --group with empty text', ['send', '--group', 'Book club', ' '], /empty/],
    ['send --group with --file', ['send', '--group', 'Book club', '--file', 'x.jpg'], /--file cannot be sent to a group/],
    ['send --group with text and --stdin', ['send', '--group', 'Book club', 'hi', '--stdin'], /not both/],
  ];

  for (const [name, args, pattern, env] of cases) {
    it(name, async () => {
      expectUsageError(await parley(args, env), pattern);
    });
  }

  it('never echoes the passphrase in an error', async () => {
    const secret = 'correct-horse-battery-staple';
    const r = await parley(['register', 'alice', '--server', 'http://127.0.0.1:1', '--no-passphrase'], {
      PARLEY_PASSPHRASE: secret,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).not.toContain(secret);
  });
});

describe('relay start-up failures', () => {
  it('rejects an invalid PARLEY_PORT as a configuration error', async () => {
    expectUsageError(await parley(['relay'], { PARLEY_PORT: 'abc' }), /invalid relay configuration: PARLEY_PORT/);
  });

  it('reports an unusable data directory in one line, with the stack only under PARLEY_DEBUG=1', async () => {
    const args = ['relay', '--port', '0', '--data', '/dev/null/relay-data'];
    const plain = await parley(args);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toBe('parley: not a directory: /dev/null/relay-data\n');
    const debug = await parley(args, { PARLEY_DEBUG: '1' });
    expect(debug.code).toBe(1);
    const lines = debug.stderr.trim().split('\n');
    expect(lines[0]).toBe('parley: not a directory: /dev/null/relay-data');
    expect(lines.slice(1).some((l) => /^\s+at /.test(l))).toBe(true);
  });
});

describe('parley --help and --version', () => {
  it('prints the package version', async () => {
    const r = await parley(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(PKG.version);
  });

  it('lists every command', async () => {
    const r = await parley(['--help']);
    expect(r.code).toBe(0);
    for (const cmd of ['relay', 'register', 'whoami', 'send', 'receive', 'chat', 'group', 'safety-number', 'verify']) {
      expect(r.stdout).toMatch(new RegExp(`^\\s+${cmd}\\b`, 'm'));
    }
    expect(r.stdout).toContain('PARLEY_PASSPHRASE');
    expect(r.stderr).toBe('');
  });

  it('documents each command', async () => {
    const r = await parley(['receive', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--wait <seconds>');
    expect(r.stdout).toContain('--json');
    expect(r.stdout).toContain('--profile <dir>');
  });

  it('documents the group commands and send --group', async () => {
    const r = await parley(['group', '--help']);
    expect(r.code).toBe(0);
    for (const sub of ['create', 'add', 'remove', 'leave', 'info', 'list']) expect(r.stdout).toMatch(new RegExp(`^\\s+${sub}\\b`, 'm'));
    const send = await parley(['send', '--help']);
    expect(send.stdout).toContain('--group <group>');
  });
});
