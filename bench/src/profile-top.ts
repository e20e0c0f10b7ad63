/**
 * `node bench/dist/profile-top.js <file> [n] [messages]` summarises a V8 profile:
 * - a CPU profile (`.cpuprofile`, from `node --cpu-prof` / PARLEY_BENCH_PROF):
 *   the functions with the most self time, grouped by name and file, as a
 *   share of all samples, plus totals per package;
 * - a sampling heap profile (`.heapprofile`, from PARLEY_BENCH_HEAP): the
 *   functions and packages that allocated the most bytes. With `messages`
 *   (how many the run delivered) the figures are bytes per message.
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface CpuNode {
  id: number;
  callFrame: CallFrame;
}
interface HeapNode {
  callFrame: CallFrame;
  selfSize: number;
  children: HeapNode[];
}

const file = process.argv[2];
if (!file) throw new Error('usage: profile-top <file.cpuprofile|file.heapprofile> [n] [messages]');
const top = Number(process.argv[3] ?? 25);
const messages = Number(process.argv[4] ?? 0);
const prof = JSON.parse(readFileSync(file, 'utf8')) as { nodes?: CpuNode[]; samples?: number[]; head?: HeapNode };

const self = new Map<string, number>();
const byPkg = new Map<string, number>();
function count(frame: CallFrame, amount: number): void {
  const url = frame.url.replace(/^file:\/\/.*?\/(node_modules|packages)\//, '$1/');
  const key = `${frame.functionName || '(anonymous)'}  ${url}:${frame.lineNumber + 1}`;
  self.set(key, (self.get(key) ?? 0) + amount);
  const pkg =
    /^(node_modules\/(@[^/]+\/)?[^/]+|packages\/[^/]+)/.exec(url)?.[0] ??
    (url.startsWith('node:') ? 'node internals' : url === '' ? '(native, gc, idle)' : url);
  byPkg.set(pkg, (byPkg.get(pkg) ?? 0) + amount);
}

let total = 0;
let fmt: (c: number) => string;
let what: string;
if (prof.head) {
  const walk = (n: HeapNode): void => {
    if (n.selfSize > 0) count(n.callFrame, n.selfSize);
    total += n.selfSize;
    n.children.forEach(walk);
  };
  walk(prof.head);
  fmt = messages > 0 ? (c) => `${(c / messages).toFixed(0).padStart(7)} B/msg` : (c) => `${(c / 2 ** 20).toFixed(1).padStart(8)} MiB`;
  what = 'bytes allocated';
  console.log(`${fmt(total)} allocated in all (sampled; objects already collected included)`);
} else {
  const byId = new Map((prof.nodes ?? []).map((n) => [n.id, n]));
  for (const id of prof.samples ?? []) {
    const n = byId.get(id);
    if (!n) continue;
    count(n.callFrame, 1);
    total++;
  }
  fmt = (c) => `${((c / total) * 100).toFixed(1).padStart(5)}%`;
  what = 'self time';
  console.log(`${total} samples`);
}
console.log(`\n${what} by function:`);
for (const [k, c] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${fmt(c)}  ${k}`);
console.log(`\n${what} by package:`);
for (const [k, c] of [...byPkg].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`  ${fmt(c)}  ${k}`);
