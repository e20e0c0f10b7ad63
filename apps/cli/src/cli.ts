/**
 * The `parley` command line: argument parsing with commander, dispatch to the
 * command modules, and one place where every error becomes one line on stderr.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { runChat } from './commands/chat.js';
import { runDevicesAdd, runDevicesList, runDevicesRemove } from './commands/devices.js';
import { runGroupAdd, runGroupCreate, runGroupInfo, runGroupLeave, runGroupList, runGroupRemove } from './commands/group.js';
import { runLink } from './commands/link.js';
import { runReceive } from './commands/receive.js';
import { runRegister } from './commands/register.js';
import { type RelayFlags, runRelay } from './commands/relay.js';
import { runSafetyNumber, runVerify } from './commands/safety.js';
import { runSend } from './commands/send.js';
import { parseCertificateId, runServerCert, runTrustRootCreate } from './commands/trust-root.js';
import { runWhoami } from './commands/whoami.js';
import { passphraseFromEnv, resolveProfileDir } from './context.js';
import type { SdkError } from '@parley/sdk';
import { type ErrorContext, ExitCode, oneLine, redact, reportError } from './errors.js';
import { eprintln } from './io.js';

export function cliVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

export function parsePort(value: string): number {
  if (!/^[0-9]{1,5}$/.test(value) || Number(value) > 65535)
    throw new InvalidArgumentError('expected a port number from 0 to 65535.');
  return Number(value);
}

export function parseSeconds(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n > 86_400 * 365)
    throw new InvalidArgumentError('expected a number of seconds (0 or more).');
  return n;
}

export function parsePositiveSeconds(value: string): number {
  const n = parseSeconds(value);
  if (n === 0) throw new InvalidArgumentError('expected a number of seconds greater than 0.');
  return n;
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

interface GlobalOptions {
  profile?: string;
}

/**
 * Builds the command tree. Each action stores its exit status in `result`;
 * errors propagate to `run`.
 */
export function createProgram(env: NodeJS.ProcessEnv, ctx: ErrorContext, result: { code: number }): Command {
  const program = new Command('parley');
  const profileOf = (cmd: Command): string => {
    const dir = resolveProfileDir(cmd.optsWithGlobals<GlobalOptions>(), env);
    ctx.profileDir = dir;
    return dir;
  };
  const passphrase = passphraseFromEnv(env);

  program
    .description('Parley: end-to-end encrypted messaging with a blind, self-hostable relay.')
    .version(cliVersion(), '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help')
    .configureHelp({ showGlobalOptions: true })
    .addOption(new Option('--profile <dir>', 'profile directory (default: $PARLEY_PROFILE or ~/.parley)'))
    .showSuggestionAfterError(true)
    .exitOverride()
    .addHelpText(
      'after',
      `
Environment:
  PARLEY_PROFILE     profile directory (same as --profile)
  PARLEY_PASSPHRASE  passphrase that unlocks the profile
  PARLEY_DEBUG=1     print stack traces for unexpected errors

Example:
  parley relay --port 8080 --data ./relay-data
  PARLEY_PASSPHRASE=... parley register alice --server http://127.0.0.1:8080
  parley send bob "hello"
  parley receive
  parley group create "Book club" bob carol
  parley send --group "Book club" "hello all"`,
    );

  const relay = program
    .command('relay')
    .description('run a relay server in the foreground (stop with Ctrl-C or SIGTERM)')
    .option('--host <host>', 'address to listen on (default: $PARLEY_HOST or 127.0.0.1)')
    .option('--port <port>', 'port to listen on; 0 picks a free one (default: $PARLEY_PORT or 8080)', parsePort)
    .option('--data <dir>', 'data directory (default: $PARLEY_DATA_DIR)')
    .option('--invite-code <code>', 'accept registrations only with this code (repeatable)', collect)
    .option('--store <url>', 'sqlite (default) or postgres://… shared by a cluster (default: $PARLEY_STORE)')
    .option('--bus <url>', 'local (default) or nats://… for a cluster (default: $PARLEY_BUS)')
    .option('--rate-limiter <url>', 'memory (default) or redis://… shared by a cluster (default: $PARLEY_RATE_LIMITER)')
    .option('--server-cert <file>', 'sealed-sender server certificate from `parley relay server-cert` (default: $PARLEY_SERVER_CERT, else one generated in the data dir)')
    .action(async (opts: RelayFlags) => {
      result.code = await runRelay(opts);
    });
  relay
    .command('trust-root')
    .description('sealed-sender trust root (keep it offline)')
    .command('create')
    .description('create a trust-root key pair file (mode 0600)')
    .requiredOption('--out <file>', 'where to write it (never overwritten)')
    .action(async (opts: { out: string }) => {
      result.code = await runTrustRootCreate(opts.out);
    });
  relay
    .command('server-cert')
    .description('sign a new sealed-sender server certificate with the trust root')
    .requiredOption('--trust-root <file>', 'trust-root file from `parley relay trust-root create`')
    .requiredOption('--id <n>', 'certificate id (1..4294967295; use a new one on each rotation)', (v: string) => {
      try {
        return parseCertificateId(v);
      } catch (err) {
        throw new InvalidArgumentError(err instanceof Error ? err.message : 'invalid id');
      }
    })
    .requiredOption('--out <file>', 'where to write the certificate and its private key (never overwritten)')
    .action(async (opts: { trustRoot: string; id: number; out: string }) => {
      result.code = await runServerCert(opts);
    });

  program
    .command('register')
    .description('create an account on a relay and a local profile for it')
    .argument('<username>', '3 to 32 of a-z, 0-9, "_" and "."')
    .requiredOption('--server <url>', 'relay URL, e.g. http://127.0.0.1:8080')
    .option('--no-passphrase', 'protect the profile with a key file (mode 0600) instead of PARLEY_PASSPHRASE')
    .option('--invite-code <code>', 'invite code, if the relay requires one')
    .action(async (username: string, opts: { server: string; passphrase: boolean; inviteCode?: string }, cmd: Command) => {
      result.code = await runRegister(
        {
          username,
          server: opts.server,
          passphraseFlag: opts.passphrase,
          ...(opts.inviteCode !== undefined ? { inviteCode: opts.inviteCode } : {}),
          profileDir: profileOf(cmd),
          envPassphrase: passphrase,
        },
        ctx,
      );
    });

  program
    .command('link')
    .description('make this profile a new device of an existing account (approve it with `parley devices add` on the primary)')
    .requiredOption('--server <url>', 'relay URL of the account, e.g. http://127.0.0.1:8080')
    .option('--no-passphrase', 'protect the profile with a key file (mode 0600) instead of PARLEY_PASSPHRASE')
    .option('--timeout <seconds>', 'give up if no approval arrives within this time', parsePositiveSeconds, 600)
    .action(async (opts: { server: string; passphrase: boolean; timeout: number }, cmd: Command) => {
      result.code = await runLink(
        { server: opts.server, passphraseFlag: opts.passphrase, profileDir: profileOf(cmd), envPassphrase: passphrase, timeoutSeconds: opts.timeout },
        ctx,
      );
    });

  const devices = program.command('devices').description("this account's devices");
  devices
    .command('add')
    .description('approve a new device from the link `parley link` shows (primary device only)')
    .argument('<link>', 'the parley://link?… text')
    .option('--timeout <seconds>', 'how long to wait for the new device to register', parsePositiveSeconds, 60)
    .action(async (link: string, opts: { timeout: number }, cmd: Command) => {
      result.code = await runDevicesAdd(profileOf(cmd), passphrase, link, opts.timeout, ctx);
    });
  devices
    .command('list')
    .description('list the devices of this account')
    .option('--json', 'one JSON object per device')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      result.code = await runDevicesList(profileOf(cmd), passphrase, opts.json === true, ctx);
    });
  devices
    .command('remove')
    .description('remove a linked device (the primary removes any, a linked device only itself)')
    .argument('<id>', 'device id (2..127)')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      result.code = await runDevicesRemove(profileOf(cmd), passphrase, id, ctx);
    });

  program
    .command('whoami')
    .description("show this profile's username, account, device and relay")
    .option('--json', 'print one JSON object')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      result.code = await runWhoami(profileOf(cmd), passphrase, opts.json === true, ctx);
    });

  program
    .command('send')
    .description('send an end-to-end encrypted message to a user, or with --group to a group')
    .argument('[username]', 'recipient (left out with --group)')
    .argument('[text]', 'message text (a caption with --file)')
    .option('--group <group>', 'send to a group: its id, an id prefix of 6+ hex digits, or its exact title')
    .option('--stdin', 'send each non-empty line of standard input as a separate message')
    .option('--file <path>', 'attach a file (encrypted before upload; an interrupted upload resumes when run again)')
    .option('--timeout <seconds>', 'give up on a message after this long (not counting the file upload)', parsePositiveSeconds, 30)
    .action(
      async (
        username: string | undefined,
        text: string | undefined,
        opts: { group?: string; stdin?: boolean; file?: string; timeout: number },
        cmd: Command,
      ) => {
        result.code = await runSend(
          profileOf(cmd),
          passphrase,
          {
            username,
            text,
            stdin: opts.stdin === true,
            timeoutSeconds: opts.timeout,
            ...(opts.group !== undefined ? { group: opts.group } : {}),
            ...(opts.file !== undefined ? { file: opts.file } : {}),
          },
          ctx,
        );
      },
    );

  const group = program
    .command('group')
    .description('groups: create, add or remove members, leave, show (the relay keeps no group state)');
  const groupTimeout = (): Option =>
    new Option('--timeout <seconds>', 'give up after this long (the change goes to every member)')
      .argParser(parsePositiveSeconds)
      .default(60);
  const groupRef = 'the group: its id, an id prefix of 6+ hex digits, or its exact title';
  group
    .command('create')
    .description('create a group with you as its admin, and tell every member')
    .argument('<name>', 'the group title (1 to 64 characters), quoted if it has spaces')
    .argument('<member...>', 'usernames of the other members')
    .option('--json', 'print the new group as one JSON object')
    .addOption(groupTimeout())
    .action(async (name: string, members: string[], opts: { json?: boolean; timeout: number }, cmd: Command) => {
      result.code = await runGroupCreate(
        profileOf(cmd),
        passphrase,
        { title: name, members, json: opts.json === true, timeoutSeconds: opts.timeout },
        ctx,
      );
    });
  group
    .command('add')
    .description('add a member (admins only); they see messages sent from now on, not earlier ones')
    .argument('<group>', groupRef)
    .argument('<member>', 'username to add')
    .option('--json', 'print the updated group as one JSON object')
    .addOption(groupTimeout())
    .action(async (ref: string, member: string, opts: { json?: boolean; timeout: number }, cmd: Command) => {
      result.code = await runGroupAdd(profileOf(cmd), passphrase, { group: ref, member, json: opts.json === true, timeoutSeconds: opts.timeout }, ctx);
    });
  group
    .command('remove')
    .description('remove a member (admins only); everyone rekeys, so they cannot read later messages')
    .argument('<group>', groupRef)
    .argument('<member>', 'username to remove')
    .option('--json', 'print the updated group as one JSON object')
    .addOption(groupTimeout())
    .action(async (ref: string, member: string, opts: { json?: boolean; timeout: number }, cmd: Command) => {
      result.code = await runGroupRemove(
        profileOf(cmd),
        passphrase,
        { group: ref, member, json: opts.json === true, timeoutSeconds: opts.timeout },
        ctx,
      );
    });
  group
    .command('leave')
    .description('leave a group; its history stays readable here')
    .argument('<group>', groupRef)
    .addOption(groupTimeout())
    .action(async (ref: string, opts: { timeout: number }, cmd: Command) => {
      result.code = await runGroupLeave(profileOf(cmd), passphrase, { group: ref, timeoutSeconds: opts.timeout }, ctx);
    });
  group
    .command('info')
    .description("show a group's title, id, revision and members (works offline)")
    .argument('<group>', groupRef)
    .option('--json', 'print one JSON object')
    .action(async (ref: string, opts: { json?: boolean }, cmd: Command) => {
      result.code = await runGroupInfo(profileOf(cmd), passphrase, { group: ref, json: opts.json === true }, ctx);
    });
  group
    .command('list')
    .description('list your groups, including ones you left (works offline)')
    .option('--json', 'one JSON object per group')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      result.code = await runGroupList(profileOf(cmd), passphrase, { json: opts.json === true }, ctx);
    });

  program
    .command('receive')
    .description('print queued messages, then exit once the queue is empty')
    .option('--wait <seconds>', 'keep printing new messages this long after the queue is empty', parseSeconds, 0)
    .option('--json', 'one JSON object per line (messages have "type":"message")')
    .option('--timeout <seconds>', 'fail if the queue is not drained within this time', parsePositiveSeconds, 60)
    .action(async (opts: { wait: number; json?: boolean; timeout: number }, cmd: Command) => {
      result.code = await runReceive(
        profileOf(cmd),
        passphrase,
        { waitSeconds: opts.wait, json: opts.json === true, timeoutSeconds: opts.timeout },
        ctx,
      );
    });

  program
    .command('chat')
    .description('interactive conversation with one user (/quit to leave)')
    .argument('<username>', 'who to chat with')
    .action(async (username: string, _opts: unknown, cmd: Command) => {
      result.code = await runChat(profileOf(cmd), passphrase, username, ctx);
    });

  program
    .command('safety-number')
    .description('show the safety number to compare with a contact')
    .argument('<username>', 'contact')
    .action(async (username: string, _opts: unknown, cmd: Command) => {
      result.code = await runSafetyNumber(profileOf(cmd), passphrase, username, ctx);
    });

  program
    .command('verify')
    .description('mark a contact verified after comparing safety numbers')
    .argument('<username>', 'contact')
    .argument('<number...>', 'the safety number (spaces between groups allowed)')
    .action(async (username: string, number: string[], _opts: unknown, cmd: Command) => {
      result.code = await runVerify(profileOf(cmd), passphrase, username, number, ctx);
    });

  // Every command inherits the error handling of the root.
  for (const sub of [...program.commands, ...devices.commands, ...group.commands]) sub.exitOverride().showSuggestionAfterError(true);
  return program;
}

/**
 * `parley group` or `parley devices` without a subcommand: name the ones
 * that exist. Otherwise the generic hint.
 */
export function missingSubcommand(program: Command, args: readonly string[]): string {
  const path: Command[] = [];
  let at = program;
  for (const arg of args) {
    const next = at.commands.find((c) => c.name() === arg);
    if (next === undefined) continue;
    path.push(next);
    at = next;
  }
  if (path.length === 0 || at.commands.length === 0) return "missing command; run 'parley --help' to see the commands";
  const name = path.map((c) => c.name()).join(' ');
  const subs = at.commands.map((c) => c.name()).filter((n) => n !== 'help');
  return `missing command after '${name}' (one of: ${subs.join(', ')}); run 'parley ${name} --help'`;
}

/** commander's error text, reduced to our one-line format. */
function commanderLine(err: CommanderError): string {
  return oneLine(err.message.replace(/^error:\s*/i, ''));
}

/**
 * Runs the CLI and resolves with the exit status. Never throws; all output
 * for errors goes through here.
 */
export async function run(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const ctx: ErrorContext = {};
  const result = { code: ExitCode.Ok as number };
  const program = createProgram(env, ctx, result);
  // commander's own error printing is replaced by the single line below; help
  // printed because a command is missing is dropped for the same reason.
  program.configureOutput({ outputError: () => undefined, writeErr: () => undefined });
  for (const sub of program.commands) {
    sub.configureOutput({ outputError: () => undefined, writeErr: () => undefined });
    for (const inner of sub.commands) inner.configureOutput({ outputError: () => undefined, writeErr: () => undefined });
  }

  try {
    if (argv.length <= 2) {
      eprintln("parley: missing command; run 'parley --help' to see the commands");
      return ExitCode.Usage;
    }
    await program.parseAsync(argv);
    return result.code;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0) return ExitCode.Ok; // --help, --version
      if (err.code === 'commander.help' || err.code === 'commander.executeSubCommandAsync') {
        eprintln(`parley: ${missingSubcommand(program, argv.slice(2))}`);
        return ExitCode.Usage;
      }
      eprintln(`parley: ${commanderLine(err)}`);
      return ExitCode.Usage;
    }
    const secrets = [env.PARLEY_PASSPHRASE ?? ''];
    let isSdkError = (_e: unknown): _e is SdkError => false;
    try {
      const { SdkError } = await import('@parley/sdk');
      isSdkError = (e: unknown): e is SdkError => SdkError.is(e);
    } catch {
      // The SDK failing to load is itself the error being reported.
    }
    const reported = reportError(err, ctx, isSdkError, secrets);
    eprintln(`parley: ${reported.line}`);
    if (env.PARLEY_DEBUG === '1' && reported.debug !== null) eprintln(redact(reported.debug, secrets));
    return reported.exitCode;
  }
}
