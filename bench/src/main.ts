/**
 * `npm run bench`: every measurement in one run, printed and written to
 * bench/results/ (JSON, Markdown tables, SVG plots). Asserts nothing about
 * speed. BENCH_QUICK=1 is the short version CI runs: fewer clients, shorter
 * steps, 1,000 idle connections, a 5,000-message drain, no ejabberd; its
 * files go to a temp dir unless BENCH_OUT is set.
 * BENCH_ONLY=libsignal,sdk,groups,load,memory,drain,cluster picks sections.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchCluster } from './cluster.js';
import { type DrainResult, measureDrain } from './drain.js';
import { groupSendMarkdown, measureGroupSend } from './groups-send.js';
import { benchLibsignal, type Rate } from './libsignal.js';
import type { ParleyMix } from './clients.js';
import { type LoadResult, ladderLabel, runLadder } from './load.js';
import { type MemoryRow, measureIdle } from './memory.js';
import { type SdkReceiveResult, measureSdkReceive } from './sdk-receive.js';
import { type StoreResult, measureStore } from './store.js';
import { type ServerHandle, clusterServicesUp, ejabberdMissing, startEjabberd, startFloor, startParley } from './servers.js';
import { lineChart } from './svg.js';

const quick = process.env.BENCH_QUICK === '1';
const only = new Set((process.env.BENCH_ONLY ?? 'libsignal,sdk,groups,load,memory,store,drain,cluster').split(','));
const OUT =
  process.env.BENCH_OUT ??
  (quick ? join(tmpdir(), 'parley-bench-quick') + sep : fileURLToPath(new URL('../results/', import.meta.url)));
mkdirSync(OUT, { recursive: true });

const machine = `${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`;
console.log(`Parley benchmarks on ${machine}${quick ? ' (quick)' : ''}`);
const f = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '—');
const skipped: string[] = [];

function save(name: string, data: unknown, md: string) {
  writeFileSync(`${OUT}${name}.json`, `${JSON.stringify({ machine, quick, at: new Date().toISOString(), data }, null, 2)}\n`);
  writeFileSync(`${OUT}${name}.md`, md);
}

async function withServer<T>(start: () => Promise<ServerHandle>, fn: (s: ServerHandle) => Promise<T>): Promise<T> {
  const s = await start();
  try {
    return await fn(s);
  } finally {
    await s.stop();
  }
}

/** `mixes`: the Parley traffic mixes the load ladder runs, each against a fresh server (clients.ts). */
type Starter = { label: string; start: () => Promise<ServerHandle>; mixes?: ParleyMix[] };
const starters: Starter[] = [
  { label: 'Parley embedded (SQLite)', start: () => startParley('sqlite'), mixes: ['sealed', 'identified'] },
  { label: 'bare ws relay (floor)', start: () => startFloor(2) },
];
// The floor with Parley's frame pattern bounds what any relay could do with that pattern here (full runs only).
if (!quick) starters.push({ label: 'bare ws relay, four frames (request, answer, push, ack)', start: () => startFloor(4) });
const clusterDown = await clusterServicesUp();
if (clusterDown) skipped.push(`Parley cluster mode: ${clusterDown}`);
else
  starters.splice(1, 0, {
    label: 'Parley cluster, 1 node (PostgreSQL + NATS)',
    start: () => startParley('postgres'),
    // Quick mode keeps CI's time: the cluster runs only the mix real contacts send.
    mixes: quick ? ['sealed'] : ['sealed', 'identified'],
  });
const ejMissing = quick ? 'skipped in quick mode' : ejabberdMissing();
if (ejMissing) skipped.push(`ejabberd: ${ejMissing}`);
else starters.push({ label: 'ejabberd 23.01 (Debian, XMPP)', start: startEjabberd });

// BENCH_SERVERS=embedded,floor keeps only the servers whose label contains one of the words (for profiling one of them).
const pick = process.env.BENCH_SERVERS?.toLowerCase().split(',');
if (pick) starters.splice(0, starters.length, ...starters.filter((s) => pick.some((w) => s.label.toLowerCase().includes(w))));
// BENCH_MIXES=sealed keeps only those Parley traffic mixes (for A/B runs of one path).
const mixPick = process.env.BENCH_MIXES?.split(',');
if (mixPick) for (const s of starters) if (s.mixes) s.mixes = s.mixes.filter((m) => mixPick.includes(m));

/** Raw libsignal rates of this run, by operation name (the SDK receive rows compare against them). */
const raw = new Map<string, number>();
if (only.has('libsignal')) {
  const rows: Rate[] = await benchLibsignal(quick);
  for (const r of rows) raw.set(r.name, r.perSecond);
  console.log('\nlibsignal, raw (in-memory stores, one core)');
  for (const r of rows)
    console.log(`  ${r.name.padEnd(40)} ${f(r.perSecond).padStart(8)}/s  ${r.microsEach.toFixed(1).padStart(8)} µs each`);
  save(
    'libsignal',
    rows,
    `| operation | per second | µs each |\n|---|---:|---:|\n${rows.map((r) => `| ${r.name} | ${f(r.perSecond)} | ${r.microsEach.toFixed(1)} |`).join('\n')}\n`,
  );
}

if (only.has('sdk')) {
  console.log('\nSDK receive pipeline (decrypt, commit, ack) against an embedded relay');
  const n = quick ? 200 : 2_000;
  // Each scenario against the raw libsignal call for the same envelopes (bench/src/libsignal.ts).
  const scenarios = [
    { kind: 'prekey', raw: 'decrypt 1 KiB pre-key message, session established' },
    { kind: 'sealed', raw: 'decrypt 1 KiB sealed sender (open + certificate check + ratchet decrypt)' },
  ] as const;
  const rows: Array<SdkReceiveResult & { rawPerSecond: number | null }> = [];
  for (const sc of scenarios) {
    try {
      const r = await withServer(
        () => startParley('sqlite'),
        (srv) => measureSdkReceive(srv, n, sc.kind),
      );
      rows.push({ ...r, rawPerSecond: raw.get(sc.raw) ?? null });
    } catch (err) {
      skipped.push(`sdk receive (${sc.kind}): ${(err as Error).message.slice(0, 200)}`);
    }
  }
  const ratio = (r: (typeof rows)[number]) =>
    r.rawPerSecond ? `${Math.round((100 * r.receivePerSecond) / r.rawPerSecond)} %` : 'n/a';
  save(
    'sdk-receive',
    rows,
    `| envelopes received (${n} × 1 KiB, offline, then drained) | SDK send msg/s | SDK receive msg/s (decrypt + commit + ack) | receive CPU µs/msg | raw libsignal msg/s, same envelopes | SDK / raw |\n|---|---:|---:|---:|---:|---:|\n${rows
      .map(
        (r) =>
          `| ${r.envelopes} | ${f(r.sendPerSecond)} | ${f(r.receivePerSecond)} | ${r.receiveCpuMicrosPerMessage.toFixed(0)} | ${r.rawPerSecond ? f(r.rawPerSecond) : 'n/a'} | ${ratio(r)} |`,
      )
      .join('\n')}\n`,
  );
}

if (only.has('groups')) {
  // Issue #5: time and bytes for one message to a 1,000-member group, and for the rekey after a removal.
  const sizes = quick ? [50] : [10, 100, 1000];
  try {
    const rows = [];
    for (const members of sizes) {
      console.log(`\nGroup of ${members} members: one message, and the rekey after a removal (SDK sender, light members)`);
      rows.push(await measureGroupSend(members));
    }
    save('groups-send', rows, rows.map((r) => groupSendMarkdown(r, machine)).join('\n'));
  } catch (err) {
    skipped.push(`groups: ${(err as Error).message.slice(0, 200)}`);
  }
}

if (only.has('load')) {
  console.log('\nRelay load: open loop, 1 KiB messages, latency send → delivery');
  const opts = quick
    ? { clients: 100, rates: [1000, 2000, 5000], stepSeconds: 2, graceSeconds: 2 }
    : { clients: 1000, rates: [1000, 2000, 5000, 10000, 15000, 20000, 30000], stepSeconds: 5, graceSeconds: 4 };
  const results: LoadResult[] = [];
  for (const s of starters)
    for (const mix of s.mixes ?? [undefined]) {
      const name = ladderLabel(s.label, mix);
      try {
        results.push(await withServer(s.start, (srv) => runLadder(srv, { ...opts, mix })));
      } catch (err) {
        skipped.push(`load, ${name}: ${(err as Error).message.slice(0, 200)}`);
        console.log(`  ${name}: failed: ${(err as Error).message.slice(0, 200)}`);
      }
    }
  const best = (r: LoadResult) => Math.max(0, ...r.steps.filter((s) => !s.saturated).map((s) => s.deliveredPerSecond));
  const bestPerCore = (r: LoadResult) =>
    Math.max(0, ...r.steps.filter((s) => !s.saturated && s.offered >= 2000).map((s) => s.perCore));
  let md = `Open loop, ${opts.clients} connected clients, 1 KiB messages, ${opts.stepSeconds} s per step; machine: ${machine}.\n`;
  md +=
    'Parley mixes: sealed = type-6 sends over an anonymous socket with the access key, no receipt (what the SDK sends between contacts); identified = type-1 sends over the device socket, with a delivery receipt back to the sender.\n\n';
  md +=
    '| server | offered/s | delivered/s | lost | p50 ms | p99 ms | p99.9 ms | server cores | of which PostgreSQL + NATS | main thread cores | server µs/msg | generator cores | msg/s per server core | saturated |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n';
  for (const r of results)
    for (const s of r.steps)
      md += `| ${r.server} | ${s.offered} | ${f(s.deliveredPerSecond)} | ${s.lost} | ${f(s.p50Ms, 1)} | ${f(s.p99Ms, 1)} | ${f(s.p999Ms, 1)} | ${f(s.serverCores, 2)} | ${s.serviceCores ? f(s.serviceCores, 2) : '—'} | ${f(s.mainThreadCores, 2)} | ${f(s.serverMicrosPerMessage)} | ${f(s.generatorCores, 2)} | ${f(s.perCore)} | ${s.why || 'no'} |\n`;
  // The same figures where delivery stayed quick (p99 <= 50 ms): what an operator would run at.
  const lowLatencySteps = (r: LoadResult) => r.steps.filter((s) => !s.saturated && s.p99Ms <= 50);
  const maxOf = (xs: number[]) => (xs.length > 0 ? Math.max(...xs) : NaN);
  md +=
    '\n| server | highest unsaturated delivered/s | the same, p99 ≤ 50 ms | best msg/s per server core (≥ 2k offered) | the same, p99 ≤ 50 ms |\n|---|---:|---:|---:|---:|\n';
  for (const r of results) {
    const low = lowLatencySteps(r);
    const lowPerCore = maxOf(low.filter((s) => s.offered >= 2000).map((s) => s.perCore));
    md += `| ${r.server} | ${f(best(r))} | ${f(maxOf(low.map((s) => s.deliveredPerSecond)))} | ${f(bestPerCore(r))} | ${f(lowPerCore)} |\n`;
  }
  console.log(`\n${md}`);
  save('relay-load', results, md);
  writeFileSync(
    `${OUT}relay-latency.svg`,
    lineChart({
      title: `p99 delivery latency vs offered load (${opts.clients} clients, 1 KiB)`,
      xLabel: 'offered messages/s',
      yLabel: 'p99 latency, ms (log)',
      logY: true,
      series: results.map((r) => ({ name: r.server, points: r.steps.map((s) => [s.offered, s.p99Ms] as [number, number]) })),
    }),
  );
  writeFileSync(
    `${OUT}relay-throughput.svg`,
    lineChart({
      title: `delivered vs offered messages/s (${opts.clients} clients, 1 KiB)`,
      xLabel: 'offered messages/s',
      yLabel: 'delivered messages/s',
      series: results.map((r) => ({
        name: r.server,
        points: r.steps.map((s) => [s.offered, s.deliveredPerSecond] as [number, number]),
      })),
    }),
  );
}

if (only.has('memory')) {
  console.log('\nMemory per idle connection (server RSS before/after)');
  // 18,000: the most this container's open-file limit (20,000 per process) leaves room for; 50,000 needs a host where it can be raised.
  const counts = quick ? [1000] : [10_000, 18_000];
  const rows: MemoryRow[] = [];
  for (const s of starters.filter((x) => !x.label.includes('cluster') && !x.label.includes('four frames')))
    for (const n of counts) {
      try {
        rows.push(await withServer(s.start, (srv) => measureIdle(srv, n)));
      } catch (err) {
        skipped.push(`memory, ${s.label}, ${n}: ${(err as Error).message.slice(0, 200)}`);
      }
    }
  const md = `| server | idle connections | RSS before MiB | RSS after MiB | KiB per connection |\n|---|---:|---:|---:|---:|\n${rows.map((r) => `| ${r.server} | ${r.connections} | ${f(r.rssBeforeKiB / 1024, 1)} | ${f(r.rssAfterKiB / 1024, 1)} | ${f(r.perConnectionKiB, 1)} |`).join('\n')}\n`;
  save('memory', rows, md);
}

if (only.has('store')) {
  // The embedded store alone: SQLite cost per message (send + ack) in group commits, after a history of kept keys.
  console.log('\nEmbedded store alone (SQLite group commits of sends and acks)');
  const rows: StoreResult[] = [];
  for (const history of quick ? [10_000] : [0, 300_000])
    rows.push(await measureStore({ history, rounds: quick ? 10 : 100, group: 1024 }));
  for (const r of rows)
    console.log(
      `  ${f(r.history).padStart(8)} keys kept: ${r.mainThreadMicrosPerMessage.toFixed(1)} µs/msg main thread CPU, ${r.cpuMicrosPerMessage.toFixed(1)} µs/msg process CPU`,
    );
  save(
    'store',
    rows,
    `| idempotency keys kept before | messages measured (groups of ${rows[0]?.group ?? 0} sends + acks) | main thread CPU µs per message | process CPU µs per message |\n|---:|---:|---:|---:|\n${rows
      .map(
        (r) =>
          `| ${f(r.history)} | ${f(r.messages)} | ${r.mainThreadMicrosPerMessage.toFixed(1)} | ${r.cpuMicrosPerMessage.toFixed(1)} |`,
      )
      .join('\n')}\n`,
  );
}

if (only.has('drain')) {
  console.log('\nOffline drain to one reconnecting device');
  const n = quick ? 5_000 : 100_000;
  const rows: DrainResult[] = [];
  rows.push(
    await withServer(
      () => startParley('sqlite'),
      (srv) => measureDrain(srv, n),
    ),
  );
  if (!clusterDown)
    rows.push(
      await withServer(
        () => startParley('postgres'),
        (srv) => measureDrain(srv, n),
      ),
    );
  const md = `| server | messages | queued msg/s (WebSocket sends, 256 in flight) | drain msg/s | drain seconds |\n|---|---:|---:|---:|---:|\n${rows.map((r) => `| ${r.server} | ${r.messages} | ${f(r.enqueuePerSecond)} | ${f(r.drainPerSecond)} | ${f(r.drainSeconds, 1)} |`).join('\n')}\n`;
  save('drain', rows, md);
}

if (only.has('cluster')) {
  const cluster = await benchCluster(quick);
  console.log('\nCluster scaling, closed loop (senders and receivers on different nodes)');
  let md =
    '| configuration | msg/s | p50 ms | p99 ms | relay µs/msg | PG µs/msg | NATS µs/msg |\n|---|---:|---:|---:|---:|---:|---:|\n';
  for (const r of cluster.rows)
    md += `| ${r.label} | ${f(r.perSecond)} | ${f(r.p50Ms, 1)} | ${f(r.p99Ms, 1)} | ${f(r.relayMicros)} | ${f(r.dbMicros)} | ${f(r.natsMicros)} |\n`;
  if (cluster.skipped) md += `\nCluster rows skipped: ${cluster.skipped}\n`;
  console.log(md);
  save('cluster', cluster.rows, md);
}

if (skipped.length > 0) console.log(`\nSkipped:\n${skipped.map((s) => `  - ${s}`).join('\n')}`);
if (!process.env.BENCH_ONLY) writeFileSync(`${OUT}skipped.md`, skipped.map((s) => `- ${s}\n`).join(''));
