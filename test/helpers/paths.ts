import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is test/helpers/paths.ts). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The built CLI; `npm test` builds it before running vitest. */
export const CLI_MAIN = fileURLToPath(new URL('../../apps/cli/dist/main.js', import.meta.url));

/** Fails with an actionable message when the CLI has not been built. */
export function assertCliBuilt(): void {
  if (!existsSync(CLI_MAIN))
    throw new Error(`${CLI_MAIN} does not exist; run 'npm run build' (or 'npm test', which builds first)`);
}
