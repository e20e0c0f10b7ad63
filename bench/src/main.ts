/**
 * `npm run bench`: prints figures, asserts nothing about speed.
 * BENCH_QUICK=1 runs a shorter version (what CI may run).
 */
import { cpus } from 'node:os';
import { benchCluster } from './cluster.js';
import { benchLibsignal, type Rate } from './libsignal.js';

const quick = process.env.BENCH_QUICK === '1';

function table(title: string, rows: Rate[]) {
  console.log(`\n${title}`);
  for (const r of rows)
    console.log(`  ${r.name.padEnd(40)} ${r.perSecond.toFixed(0).padStart(8)}/s  ${r.microsEach.toFixed(1).padStart(8)} µs each`);
}

console.log(
  `Parley benchmarks on ${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, node ${process.version}${quick ? ' (quick)' : ''}`,
);
table('libsignal, raw (in-memory stores, one core)', await benchLibsignal(quick));

const cluster = await benchCluster(quick);
const base = cluster.rows.find((r) => r.nodes === 1 && r.label.startsWith('cluster'))?.perSecond ?? NaN;
console.log(
  '\nRelay, 1 KiB messages over WebSocket, senders and receivers on different nodes (load generator on the same 2 cores)',
);
console.log(
  `  ${'configuration'.padEnd(40)} ${'msg/s'.padStart(8)} ${'× 1 node'.padStart(9)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'relay µs/msg'.padStart(13)} ${'PG µs/msg'.padStart(10)} ${'NATS µs/msg'.padStart(12)}`,
);
for (const r of cluster.rows) {
  const ratio = r.label.startsWith('cluster') ? (r.perSecond / base).toFixed(2) : '—';
  const f = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '—');
  console.log(
    `  ${r.label.padEnd(40)} ${f(r.perSecond).padStart(8)} ${ratio.padStart(9)} ${f(r.p50Ms, 1).padStart(7)} ${f(r.p99Ms, 1).padStart(7)} ${f(r.relayMicros).padStart(13)} ${f(r.dbMicros).padStart(10)} ${f(r.natsMicros).padStart(12)}`,
  );
}
if (cluster.skipped) console.log(`  cluster rows skipped: ${cluster.skipped}`);
