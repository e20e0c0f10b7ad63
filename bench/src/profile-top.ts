/**
 * `node bench/dist/profile-top.js <file.cpuprofile> [n]`: the functions with
 * the most self time in a V8 CPU profile (from `node --cpu-prof`), grouped by
 * name and file, as a share of all samples; plus totals per package.
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
const file = process.argv[2];
if (!file) throw new Error('usage: profile-top <file.cpuprofile> [n]');
const top = Number(process.argv[3] ?? 25);
const prof = JSON.parse(readFileSync(file, 'utf8')) as { nodes: Node[]; samples: number[] };
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map<string, number>();
const byPkg = new Map<string, number>();
for (const id of prof.samples) {
  const n = byId.get(id);
  if (!n) continue;
  const url = n.callFrame.url.replace(/^file:\/\/.*?\/(node_modules|packages)\//, '$1/');
  const key = `${n.callFrame.functionName || '(anonymous)'}  ${url}:${n.callFrame.lineNumber + 1}`;
  self.set(key, (self.get(key) ?? 0) + 1);
  const pkg =
    /^(node_modules\/(@[^/]+\/)?[^/]+|packages\/[^/]+)/.exec(url)?.[0] ??
    (url.startsWith('node:') ? 'node internals' : url === '' ? '(native, gc, idle)' : url);
  byPkg.set(pkg, (byPkg.get(pkg) ?? 0) + 1);
}
const total = prof.samples.length;
const pct = (c: number) => `${((c / total) * 100).toFixed(1).padStart(5)}%`;
console.log(`${total} samples\n\nself time by function:`);
for (const [k, c] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(c)}  ${k}`);
console.log('\nself time by package:');
for (const [k, c] of [...byPkg].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`  ${pct(c)}  ${k}`);
