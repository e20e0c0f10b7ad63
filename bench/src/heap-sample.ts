/**
 * Loaded into a relay with `node --import` when PARLEY_BENCH_HEAP=<dir> is set
 * (cluster.ts, startNode): V8's sampling heap profiler runs from start to
 * SIGTERM and counts objects that garbage collection has already freed as
 * well, so the profile shows where the relay *allocates* (what the young
 * generation has to sweep), not only what is alive at the end. The profile is
 * written to `<dir>/relay-<pid>.heapprofile`; `node bench/dist/profile-top.js`
 * summarises it. Sampling costs CPU: never combine it with measured runs.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

const dir = process.env.PARLEY_BENCH_HEAP;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('HeapProfiler.enable');
  session.post('HeapProfiler.startSampling', {
    samplingInterval: 16_384,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  // Before the relay's own handler (which closes and exits): the in-process session answers synchronously.
  process.prependListener('SIGTERM', () => {
    session.post('HeapProfiler.stopSampling', (err, res) => {
      if (!err) writeFileSync(join(dir, `relay-${process.pid}.heapprofile`), JSON.stringify(res.profile));
    });
  });
}
