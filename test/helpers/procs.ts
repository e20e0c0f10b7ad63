/**
 * Every child process a test starts is registered here so `killAll()` (called
 * from afterAll) can make sure none outlives the test file.
 */
import type { ChildProcess } from 'node:child_process';

const live = new Set<ChildProcess>();

export function track<T extends ChildProcess>(child: T): T {
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.once('error', () => live.delete(child));
  return child;
}

export function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Resolves when the child has exited (immediately if it already has). */
export function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (!isRunning(child)) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** SIGKILLs every tracked process that is still running and waits for them. */
export async function killAll(): Promise<void> {
  const waits: Array<Promise<unknown>> = [];
  for (const child of live) {
    if (!isRunning(child)) continue;
    waits.push(exited(child));
    child.kill('SIGKILL');
  }
  await Promise.race([Promise.all(waits), new Promise((resolve) => setTimeout(resolve, 5_000))]);
  live.clear();
}
