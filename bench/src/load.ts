/**
 * Open-loop relay load: a fixed ladder of offered rates, each held for a fixed
 * time against N connected clients sending 1 KiB messages to each other
 * (client k sends to client k + N/2). Sends are scheduled by the clock, not by
 * answers, so a slow server shows up as latency and loss rather than as a
 * slower sender. Latency is send→delivery at the receiving client, both
 * stamped by this process. Server and generator CPU come from /proc.
 *
 * A step is saturated when under 95 % of its messages arrive within the grace
 * time after the step, when the p99 passes 5 s, or when the generator itself
 * could not keep the schedule; the ladder stops after a saturated step.
 *
 * Parley runs one ladder per traffic mix (`ParleyMix` in clients.ts), named
 * after the server and the mix.
 */
import { cpuMicros, percentile } from './cluster.js';
import { type Fleet, type ParleyMix, openFleet } from './clients.js';
import type { ServerHandle } from './servers.js';

export interface LoadStep {
  offered: number;
  sent: number;
  deliveredPerSecond: number;
  lost: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  /** Server CPU over the step, in cores (1.0 = one core busy), its services' included. */
  serverCores: number;
  /** Of that, the services a cluster node needs (PostgreSQL and NATS), in cores; 0 for the others. */
  serviceCores: number;
  /** The server's main thread alone (Node's event loop; for ejabberd, its first thread), in cores. */
  mainThreadCores: number;
  generatorCores: number;
  /** Delivered messages per second per core of server CPU. */
  perCore: number;
  /** Server CPU per delivered message, µs (1e6 / perCore). */
  serverMicrosPerMessage: number;
  /** Send answers that were not 200 during the step and its grace time. */
  errors: number;
  saturated: boolean;
  why: string;
}

export interface LoadResult {
  server: string;
  clients: number;
  stepSeconds: number;
  steps: LoadStep[];
}

/** What a ladder is called in tables and plots: the server, and for Parley the traffic mix. */
export const ladderLabel = (server: string, mix?: ParleyMix) => (mix ? `${server}, ${mix}` : server);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Open loop: send `total` messages at `rate`/s on a 2 ms clock from time `t0`,
 * whatever the server answers; client k sends to client k + n/2. `behind`
 * counts ticks owing more than 100 ms of schedule (the generator was the
 * bottleneck).
 */
function sendPaced(fleet: Fleet, rate: number, total: number, k0: number, t0: number): Promise<{ sent: number; behind: number }> {
  const n = fleet.size;
  const half = Math.floor(n / 2);
  let sent = 0;
  let behind = 0;
  return new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * rate));
      if (due - sent > rate / 10) behind++;
      const burst = Math.min(due - sent, Math.max(50, rate / 50));
      for (let i = 0, k = k0 + sent; i < burst; i++, k++) fleet.send(k % n, (k + half) % n);
      sent += burst;
      if (sent >= total) {
        clearInterval(timer);
        resolve({ sent, behind });
      }
    };
    const timer = setInterval(tick, 2);
  });
}

export async function runLadder(
  server: ServerHandle,
  opts: { clients: number; rates: number[]; stepSeconds: number; graceSeconds: number; mix?: ParleyMix },
): Promise<LoadResult> {
  const label = ladderLabel(server.label, opts.mix);
  const fleet = await openFleet(server, opts.clients, opts.mix);
  const steps: LoadStep[] = [];
  let windowStart = Infinity;
  let windowEnd = -Infinity;
  let latencies: number[] = [];
  fleet.onDeliver = (sentAt) => {
    if (sentAt >= windowStart && sentAt < windowEnd) latencies.push(performance.now() - sentAt);
  };
  let k = 0;
  try {
    // Warm-up: one second at the lowest rate, not measured (first connections, JIT, SQLite caches).
    const warmRate = opts.rates[0] ?? 100;
    await sendPaced(fleet, warmRate, warmRate, 0, performance.now());
    await sleep(1000);
    for (const rate of opts.rates) {
      latencies = [];
      const total = Math.round(rate * opts.stepSeconds);
      const errors0 = fleet.errors;
      const services = server.servicesCpuMicros ?? (() => 0);
      const cpu0 = { s: cpuMicros(server.pid), m: cpuMicros(server.pid, server.pid), x: services(), g: process.cpuUsage() };
      const t0 = performance.now();
      windowStart = t0;
      windowEnd = Infinity;
      const { sent, behind } = await sendPaced(fleet, rate, total, k, t0);
      k += sent;
      windowEnd = performance.now();
      const elapsed = (windowEnd - t0) / 1000;
      const cpuS = cpuMicros(server.pid) - cpu0.s;
      const cpuM = cpuMicros(server.pid, server.pid) - cpu0.m;
      const cpuX = services() - cpu0.x;
      const g = process.cpuUsage(cpu0.g);
      // Grace: wait for stragglers until everything arrived or time is up.
      const graceEnd = performance.now() + opts.graceSeconds * 1000;
      while (latencies.length < sent && performance.now() < graceEnd) await sleep(20);
      const delivered = latencies.length;
      latencies.sort((a, b) => a - b);
      const serviceCores = cpuX / 1e6 / elapsed;
      const serverCores = cpuS / 1e6 / elapsed + serviceCores;
      const lost = sent - delivered;
      const p99 = percentile(latencies, 0.99);
      const why =
        lost > sent * 0.05
          ? `${((lost / sent) * 100).toFixed(0)}% not delivered in ${opts.graceSeconds}s`
          : p99 > 5000
            ? 'p99 > 5 s'
            : behind > 5
              ? 'generator could not keep the schedule'
              : '';
      const deliveredPerSecond = Math.min(delivered, sent) / elapsed;
      steps.push({
        offered: rate,
        sent,
        deliveredPerSecond,
        lost,
        p50Ms: percentile(latencies, 0.5),
        p99Ms: p99,
        p999Ms: percentile(latencies, 0.999),
        serverCores,
        serviceCores,
        // BEAM runs its schedulers on other threads: ejabberd's first thread says nothing.
        mainThreadCores: server.kind === 'xmpp' ? NaN : cpuM / 1e6 / elapsed,
        generatorCores: (g.user + g.system) / 1e6 / elapsed,
        perCore: serverCores > 0 ? deliveredPerSecond / serverCores : NaN,
        serverMicrosPerMessage: delivered > 0 ? (serverCores * 1e6) / deliveredPerSecond : NaN,
        errors: fleet.errors - errors0,
        saturated: why !== '',
        why,
      });
      const s = steps[steps.length - 1] as LoadStep;
      console.log(
        `  ${label}: offered ${rate}/s → ${s.deliveredPerSecond.toFixed(0)}/s, p50 ${s.p50Ms.toFixed(1)} p99 ${s.p99Ms.toFixed(1)} p99.9 ${s.p999Ms.toFixed(1)} ms, server ${s.serverCores.toFixed(2)} cores (${s.serviceCores ? `PostgreSQL + NATS ${s.serviceCores.toFixed(2)}, ` : ''}main thread ${Number.isFinite(s.mainThreadCores) ? s.mainThreadCores.toFixed(2) : '—'}, ${s.serverMicrosPerMessage.toFixed(0)} µs/msg), generator ${s.generatorCores.toFixed(2)}${s.errors ? `, ${s.errors} error answers` : ''}${why ? ` — saturated: ${why}` : ''}`,
      );
      if (s.saturated) break;
      // Let the server drain before the next step.
      await sleep(500);
    }
  } finally {
    windowStart = Infinity;
    await fleet.close();
  }
  return { server: label, clients: fleet.size, stepSeconds: opts.stepSeconds, steps };
}
