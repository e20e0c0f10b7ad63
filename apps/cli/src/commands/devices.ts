/** `parley devices add|list|remove`: the devices of this account. */
import { withClient, withTimeout } from '../context.js';
import { type ErrorContext, ExitCode, usageError } from '../errors.js';
import { println } from '../io.js';

export async function runDevicesAdd(profileDir: string, passphrase: string | null, link: string, timeoutSeconds: number, ctx: ErrorContext): Promise<number> {
  await withClient(profileDir, passphrase, async (client) => {
    ctx.serverUrl = client.identity.serverUrl;
    const before = new Set((await client.listDevices()).map((d) => d.deviceId));
    await client.linkDevice(link);
    println('sent the account keys to the new device (end-to-end encrypted)');
    // The new device registers itself; report its id once it appears.
    const deadline = Date.now() + timeoutSeconds * 1000;
    await withTimeout(
      (async () => {
        while (Date.now() < deadline) {
          const added = (await client.listDevices()).filter((d) => !before.has(d.deviceId));
          if (added[0]) {
            println(`linked device ${added[0].deviceId}`);
            return;
          }
          await new Promise((r) => setTimeout(r, 250));
        }
        println('the new device has not registered yet; check with `parley devices list`');
      })(),
      timeoutSeconds * 1000 + 5000,
      'timed out waiting for the new device',
    );
  });
  return ExitCode.Ok;
}

function when(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
}

export async function runDevicesList(profileDir: string, passphrase: string | null, json: boolean, ctx: ErrorContext): Promise<number> {
  await withClient(profileDir, passphrase, async (client) => {
    ctx.serverUrl = client.identity.serverUrl;
    const devices = await client.listDevices();
    for (const d of devices) {
      const me = d.deviceId === client.identity.deviceId;
      if (json) println(JSON.stringify({ deviceId: d.deviceId, primary: d.deviceId === 1, thisDevice: me, createdAt: d.createdAt, lastSeen: d.lastSeen }));
      else
        println(
          `${String(d.deviceId).padStart(3)}  ${d.deviceId === 1 ? 'primary' : 'linked '}  added ${when(d.createdAt)}  last seen ${when(d.lastSeen)}${me ? '  (this device)' : ''}`,
        );
    }
  });
  return ExitCode.Ok;
}

export function parseDeviceIdArg(value: string): number {
  if (!/^[0-9]{1,3}$/.test(value) || Number(value) < 2 || Number(value) > 127)
    throw usageError(`invalid device id '${value}': expected a linked device id from 2 to 127`);
  return Number(value);
}

export async function runDevicesRemove(profileDir: string, passphrase: string | null, id: string, ctx: ErrorContext): Promise<number> {
  const deviceId = parseDeviceIdArg(id);
  await withClient(profileDir, passphrase, async (client) => {
    ctx.serverUrl = client.identity.serverUrl;
    await client.removeDevice(deviceId);
    println(`removed device ${deviceId}`);
  });
  return ExitCode.Ok;
}
