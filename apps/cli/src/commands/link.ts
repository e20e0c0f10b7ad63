/** `parley link`: make this profile a new device of an existing account (approved with `parley devices add` on the primary). */
import qrcode from 'qrcode-terminal';
import { loadSdk } from '../context.js';
import { type ErrorContext, ExitCode } from '../errors.js';
import { flushStdio, println } from '../io.js';
import { choosePassphrase, parseServerUrl } from './register.js';

export interface LinkArgs {
  server: string;
  passphraseFlag: boolean;
  profileDir: string;
  envPassphrase: string | null;
  timeoutSeconds: number;
}

function qr(text: string): Promise<string> {
  return new Promise((resolve) => qrcode.generate(text, { small: true }, resolve));
}

export async function runLink(args: LinkArgs, ctx: ErrorContext): Promise<number> {
  const serverUrl = parseServerUrl(args.server);
  const passphrase = choosePassphrase(args.passphraseFlag, args.envPassphrase);
  ctx.serverUrl = serverUrl;
  const { ParleyClient } = await loadSdk();
  const client = await ParleyClient.link({
    profileDir: args.profileDir,
    serverUrl,
    passphrase,
    timeoutMs: args.timeoutSeconds * 1000,
    onHistory: (n) => {
      if (n > 0) println(`imported ${n} message${n === 1 ? '' : 's'} of history from the primary device`);
    },
    onLink: (link) => {
      void qr(link).then(async (code) => {
        println('Scan this code, or on your primary device run:');
        println(`  parley devices add '${link}'`);
        println(code);
        println(`link: ${link}`);
        println('waiting for approval…');
        await flushStdio();
      });
    },
  });
  try {
    const id = client.identity;
    ctx.username = id.username;
    println(`linked as ${id.username} (account ${id.accountId}, device ${id.deviceId})`);
  } finally {
    await client.close().catch(() => undefined);
  }
  return ExitCode.Ok;
}
