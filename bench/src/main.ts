/**
 * `npm run bench`: prints figures, asserts nothing about speed.
 * BENCH_QUICK=1 runs a shorter version (what CI may run).
 */
import { cpus } from 'node:os';
import { benchLibsignal, type Rate } from './libsignal.js';

const quick = process.env.BENCH_QUICK === '1';

function table(title: string, rows: Rate[]) {
  console.log(`\n${title}`);
  for (const r of rows) console.log(`  ${r.name.padEnd(40)} ${r.perSecond.toFixed(0).padStart(8)}/s  ${r.microsEach.toFixed(1).padStart(8)} µs each`);
}

console.log(`Parley benchmarks on ${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, node ${process.version}${quick ? ' (quick)' : ''}`);
table('libsignal, raw (in-memory stores, one core)', await benchLibsignal(quick));
