/** Writing to stdout/stderr, and waiting until it has reached the OS. */

export function println(line: string): void {
  process.stdout.write(`${line}\n`);
}

export function eprintln(line: string): void {
  process.stderr.write(`${line}\n`);
}

function drain(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || !stream.writable) {
      resolve();
      return;
    }
    stream.write('', () => resolve());
  });
}

/** Resolves once everything written so far to stdout and stderr is flushed. */
export async function flushStdio(): Promise<void> {
  await Promise.all([drain(process.stdout), drain(process.stderr)]);
}
