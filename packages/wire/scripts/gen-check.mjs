// Regenerates the protobuf code into a temporary folder and fails if it differs
// from what is checked in under src/gen.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const here = process.cwd();
const out = mkdtempSync(join(tmpdir(), 'parley-gen-'));
try {
  execFileSync('npx', ['buf', 'generate', '--output', out], { stdio: 'inherit' });
  const list = (dir) =>
    readdirSync(dir).flatMap((n) => {
      const p = join(dir, n);
      return statSync(p).isDirectory() ? list(p) : [p];
    });
  const fresh = new Map(list(join(out, 'src/gen')).map((p) => [relative(join(out, 'src/gen'), p), readFileSync(p, 'utf8')]));
  const current = new Map(list(join(here, 'src/gen')).map((p) => [relative(join(here, 'src/gen'), p), readFileSync(p, 'utf8')]));
  const stale = [...new Set([...fresh.keys(), ...current.keys()])].filter((k) => fresh.get(k) !== current.get(k));
  if (stale.length > 0) {
    console.error(`generated code is stale, run \`npm run gen\`: ${stale.join(', ')}`);
    process.exit(1);
  }
  console.log(`generated code is fresh (${fresh.size} files)`);
} finally {
  rmSync(out, { recursive: true, force: true });
}
