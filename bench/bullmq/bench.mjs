// BullMQ baseline for `make bench`: add N jobs (addBulk, 50 a round trip)
// while one Worker processes them with concurrency 50, overlapped; prints the
// end-to-end jobs/s from the first add to the last completion.
// usage: node bench.mjs PORT N
import { Queue, Worker } from 'bullmq';

const port = Number(process.argv[2]);
const total = Number(process.argv[3] || 20000);
const connection = { host: '127.0.0.1', port };
const name = 'bench' + process.pid;
const queue = new Queue(name, { connection });
await queue.obliterate({ force: true }).catch(() => {});

let done = 0;
let resolveDone;
const finished = new Promise((r) => { resolveDone = r; });
const t0 = process.hrtime.bigint();
const worker = new Worker(name, async () => 'ok', {
  connection,
  concurrency: 50,
  removeOnComplete: { count: 0 },
});
worker.on('completed', () => {
  if (++done === total) resolveDone();
});
for (let i = 0; i < total; i += 50) {
  const n = Math.min(50, total - i);
  const jobs = Array.from({ length: n }, (_, k) => ({ name: 'bench', data: { n: i + k } }));
  await queue.addBulk(jobs);
}
await finished;
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(JSON.stringify({ jobs: total, seconds: secs, jobs_per_s: total / secs }));
await worker.close();
await queue.obliterate({ force: true }).catch(() => {});
await queue.close();
process.exit(0);
