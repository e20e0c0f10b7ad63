/** `parley whoami`: show the identity of the current profile. */
import { withClient } from '../context.js';
import { type ErrorContext, ExitCode } from '../errors.js';
import { println } from '../io.js';

export async function runWhoami(
  profileDir: string,
  passphrase: string | null,
  json: boolean,
  ctx: ErrorContext,
): Promise<number> {
  await withClient(profileDir, passphrase, async (client) => {
    const id = client.identity;
    ctx.serverUrl = id.serverUrl;
    if (json) {
      println(
        JSON.stringify({
          username: id.username,
          accountId: id.accountId,
          deviceId: id.deviceId,
          serverUrl: id.serverUrl,
          profile: profileDir,
        }),
      );
      return;
    }
    println(`username  ${id.username}`);
    println(`account   ${id.accountId}`);
    println(`device    ${id.deviceId}`);
    println(`server    ${id.serverUrl}`);
    println(`profile   ${profileDir}`);
  });
  return ExitCode.Ok;
}
