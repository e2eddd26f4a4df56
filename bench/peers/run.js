// bench/peers/run.js: BullMQ and bee-queue on the workloads of `make bench` (bench/versus.lua
// runs jobrt's side of each workload in bench/versus_jobrt.lua, the same way).
//
//   node run.js bench  bullmq|bee REDIS-URL 'CONFIG-JSON'   -> one line of JSON: the figures
//   node run.js worker bullmq|bee REDIS-URL QUEUE remove    -> a worker process (concurrency
//        from CONFIG; remove: 1 removes finished records, BullMQ removeOnComplete, bee-queue
//        removeOnSuccess); prints "ready" once it serves, stops on SIGTERM
//
// Workloads (each starts from FLUSHALL; CONFIG names the sizes):
//   memory   `memory` no-op jobs enqueued with the bulk call: Redis used_memory per waiting job
//   bulk     `bulk` no-op jobs enqueued in chunks of `chunk` with the bulk call (timed, with
//            redis-server CPU), then drained by one worker process with `concurrency` and
//            finished records removed (timed from the first job taken to the last one finished,
//            with worker and redis-server CPU over the same span)
//   one      `one` jobs one at a time (enqueue, wait for the result; idle worker): enqueue ->
//            handler start and enqueue -> result seen, and Redis commands per job (INFO
//            commandstats, every command, those run inside scripts included)
//   delayed  `delayed` jobs enqueued one at a time, each due `delay_ms` after its enqueue (so they
//            come due spread out, as fast as they were enqueued): lateness = handler start - due
// Times are wall-clock milliseconds with fractions (performance.timeOrigin + performance.now()),
// so the worker process and this one compare them directly.
'use strict';
const fs = require('fs');
const { performance } = require('perf_hooks');
const { spawn } = require('child_process');
const IORedis = require('ioredis');

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connOpts(url) {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 6379), maxRetriesPerRequest: null };
}

// ---- the two peers: how each enqueues, runs and reports --------------------------------

// The handler of every job: 'noop' does nothing, 'stamp' returns when it started, 'late'
// returns how late it started (ms after due).
function handle(name, due) {
  if (name === 'stamp') return now();
  if (name === 'late') return now() - due;
  return null;
}

const PEERS = {
  bullmq: {
    keys: { wait: ['bull:Q:wait', 'bull:Q:prioritized'], active: 'bull:Q:active' },
    async producer(url) {
      const { Queue, QueueEvents } = require('bullmq');
      const queue = new Queue('Q', { connection: connOpts(url) });
      await queue.waitUntilReady();
      let events = null;
      return {
        async bulk(jobs, remove) {   // jobs: [{ name, delay_ms? }]
          await queue.addBulk(jobs.map((j) => ({ name: j.name, data: {},
            opts: Object.assign(remove ? { removeOnComplete: true } : {}, j.delay_ms ? { delay: j.delay_ms } : {}) })));
        },
        async events() {
          if (!events) {
            events = new QueueEvents('Q', { connection: connOpts(url) });
            await events.waitUntilReady();
          }
          return events;
        },
        async delayed(name, ms) { await queue.add(name, {}, { delay: ms }); },
        async run(name) {           // enqueue one job and wait for its result
          const ev = await this.events();
          const job = await queue.add(name, {});
          return job.waitUntilFinished(ev);
        },
        async collect(n) {          // the next n results (returnvalue) of the queue
          const ev = await this.events();
          const out = [];
          return new Promise((resolve) => {
            const f = ({ returnvalue }) => {
              out.push(Number(returnvalue));
              if (out.length === n) { ev.off('completed', f); resolve(out); }
            };
            ev.on('completed', f);
          });
        },
        due_of: null,
        async close() { if (events) await events.close(); await queue.close(); },
      };
    },
    async worker(url, remove, concurrency) {
      const { Worker } = require('bullmq');
      const w = new Worker('Q', async (job) => handle(job.name, job.timestamp + (job.opts.delay || 0)),   // job.delay is 0 once promoted
        { connection: connOpts(url), concurrency });
      await w.waitUntilReady();
      return { async close() { await w.close(); } };
    },
  },

  bee: {
    keys: { wait: ['bq:Q:waiting'], active: 'bq:Q:active' },
    async producer(url) {
      const Queue = require('bee-queue');
      const queue = new Queue('Q', { redis: connOpts(url), isWorker: false, getEvents: true });
      await queue.ready();
      return {
        async bulk(jobs) {
          const made = jobs.map((j) => {
            const job = queue.createJob({ name: j.name, due: j.delay_ms ? Date.now() + j.delay_ms : 0 });
            if (j.delay_ms) job.delayUntil(job.data.due);
            return job;
          });
          const errors = await queue.saveAll(made);
          if (errors.size) throw errors.values().next().value;
        },
        async delayed(name, ms) {
          const due = Date.now() + ms;
          await queue.createJob({ name, due }).delayUntil(due).save();
        },
        // by the queue's events, keyed by id: a job may finish before save() has resolved (the
        // worker is idle and fast), and bee-queue's job.on('succeeded') would miss that
        waiters: new Map(), early: new Map(),
        async run(name) {
          if (!this.listening) {
            this.listening = true;
            queue.on('job succeeded', (id, result) => {
              const w = this.waiters.get(id);
              if (w) { this.waiters.delete(id); w(result); } else this.early.set(id, result);
            });
          }
          const job = await queue.createJob({ name }).save();
          if (this.early.has(job.id)) {
            const v = this.early.get(job.id);
            this.early.delete(job.id);
            return v;
          }
          return new Promise((resolve) => this.waiters.set(job.id, resolve));
        },
        async collect(n) {
          const out = [];
          return new Promise((resolve) => {
            const f = (id, result) => {
              out.push(Number(result));
              if (out.length === n) { queue.removeListener('job succeeded', f); resolve(out); }
            };
            queue.on('job succeeded', f);
          });
        },
        async close() { await queue.close(); },
      };
    },
    async worker(url, remove, concurrency) {
      const Queue = require('bee-queue');
      const queue = new Queue('Q', { redis: connOpts(url), removeOnSuccess: remove, activateDelayedJobs: true,
        getEvents: false });
      await queue.ready();
      queue.process(concurrency, async (job) => handle(job.data.name, job.data.due));
      return { async close() { await queue.close(); } };
    },
  },
};

// ---- measuring ----------------------------------------------------------------------------

function cpuOfPid(pid) {      // utime + stime of a process, in µs (clock ticks of 10 ms)
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) * 10000;
}

async function redisCpu(r) {  // redis-server user + system CPU, µs
  const info = await r.info('cpu');
  const sys = Number(info.match(/used_cpu_sys:([\d.]+)/)[1]);
  const user = Number(info.match(/used_cpu_user:([\d.]+)/)[1]);
  return (sys + user) * 1e6;
}

async function commands(r) {  // every command counted by Redis, INFO itself left out
  const info = await r.info('commandstats');
  let total = 0;
  for (const m of info.matchAll(/cmdstat_([\w|]+):calls=(\d+)/g)) {
    if (m[1] !== 'info') total += Number(m[2]);
  }
  return total;
}

async function usedMemory(r) {
  const info = await r.info('memory');
  return Number(info.match(/used_memory:(\d+)/)[1]);
}

function pct(a, p) {
  const s = a.slice().sort((x, y) => x - y);
  return s[Math.max(0, Math.ceil(s.length * p) - 1)];
}

// Starts a worker process of this file; resolves once it printed "ready".
function startWorker(sys, url, remove, concurrency) {
  const child = spawn(process.execPath, [__filename, 'worker', sys, url, remove ? '1' : '0', String(concurrency)],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('ready')) resolve(child);
    });
    child.on('exit', (code) => reject(new Error(`${sys} worker exited with ${code} before it was ready`)));
  });
}

function stopWorker(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.on('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

function noops(n, name) {
  const a = new Array(n);
  for (let i = 0; i < n; i++) a[i] = { name: name || 'noop' };
  return a;
}

async function bench(sys, url, conf) {
  const peer = PEERS[sys];
  const probe = new IORedis(connOpts(url));
  const out = { system: sys };
  const fresh = async () => { await probe.flushall(); };

  const note = (s) => process.env.BENCH_DEBUG && process.stderr.write(`${sys}: ${s}\n`);
  // memory per waiting job
  await fresh();
  note('memory');
  {
    const p = await peer.producer(url);
    const m0 = await usedMemory(probe);
    for (let i = 0; i < conf.memory; i += conf.chunk) await p.bulk(noops(Math.min(conf.chunk, conf.memory - i)), false);
    out.mem_per_job = ((await usedMemory(probe)) - m0) / conf.memory;
    await p.close();
  }

  // bulk enqueue, then drain by one worker process
  await fresh();
  note('bulk');
  {
    const p = await peer.producer(url);
    const c0 = await redisCpu(probe);
    const t0 = now();
    for (let i = 0; i < conf.bulk; i += conf.chunk) await p.bulk(noops(Math.min(conf.chunk, conf.bulk - i)), true);
    const t1 = now();
    out.enqueue_rate = conf.bulk / ((t1 - t0) / 1000);
    out.redis_us_per_enqueue = ((await redisCpu(probe)) - c0) / conf.bulk;
    const remaining = async () => {
      const m = probe.multi();
      for (const k of peer.keys.wait) m.type(k);
      const types = await m.exec();
      const m2 = probe.multi();
      peer.keys.wait.forEach((k, i) => {
        if (types[i][1] === 'zset') m2.zcard(k); else m2.llen(k);
      });
      m2.llen(peer.keys.active);
      let n = 0;
      for (const [, v] of await m2.exec()) n += Number(v);
      return n;
    };
    const child = await startWorker(sys, url, true, conf.concurrency);
    let r0, s0, w0, c2;
    for (;;) {
      const r = await remaining();
      if (r < conf.bulk) {
        r0 = r; s0 = now(); w0 = cpuOfPid(child.pid); c2 = await redisCpu(probe);
        break;
      }
      await sleep(2);
    }
    while ((await remaining()) > 0) await sleep(5);
    const s1 = now();
    out.process_rate = r0 / ((s1 - s0) / 1000);
    out.worker_us_per_job = (cpuOfPid(child.pid) - w0) / r0;
    out.redis_us_per_process = ((await redisCpu(probe)) - c2) / r0;
    await stopWorker(child);
    await p.close();
  }

  // one at a time, then delayed jobs: one idle worker, records kept (the defaults)
  await fresh();
  {
    const p = await peer.producer(url);
    const child = await startWorker(sys, url, false, conf.concurrency);
    note('one at a time');
    for (let i = 0; i < 20; i++) await p.run('stamp');           // warm up
    const start = [], seen = [];
    const k0 = await commands(probe);
    for (let i = 0; i < conf.one; i++) {
      const t = now();
      const v = Number(await p.run('stamp'));
      seen.push(now() - t);
      start.push(v - t);
    }
    out.cmds_per_job = ((await commands(probe)) - k0) / conf.one;
    out.start_p50 = pct(start, 0.5); out.start_p99 = pct(start, 0.99);
    out.seen_p50 = pct(seen, 0.5); out.seen_p99 = pct(seen, 0.99);

    note('delayed');
    const results = p.collect(conf.delayed);
    for (let i = 0; i < conf.delayed; i++) await p.delayed('late', conf.delay_ms);   // one at a time
    const late = await results;
    out.late_p50 = pct(late, 0.5); out.late_p99 = pct(late, 0.99); out.late_max = Math.max(...late);
    await stopWorker(child);
    await p.close();
  }
  await probe.flushall();
  probe.disconnect();
  return out;
}

async function main() {
  const [mode, sys, url] = process.argv.slice(2, 5);
  if (!PEERS[sys] || !url) {
    process.stderr.write('usage: node run.js bench bullmq|bee REDIS-URL CONFIG-JSON | worker bullmq|bee REDIS-URL REMOVE CONCURRENCY\n');
    process.exit(2);
  }
  if (mode === 'worker') {
    const w = await PEERS[sys].worker(url, process.argv[5] === '1', Number(process.argv[6] || 50));
    process.on('SIGTERM', async () => { await w.close(); process.exit(0); });
    process.stdout.write('ready\n');
    return;
  }
  const conf = Object.assign({ memory: 100000, bulk: 50000, chunk: 1000, one: 1000, delayed: 2000, delay_ms: 200,
    concurrency: 50 }, JSON.parse(process.argv[5] || '{}'));
  const out = await bench(sys, url, conf);
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

main().catch((e) => { process.stderr.write(`bench/peers/run.js: ${e && e.stack || e}\n`); process.exit(1); });
