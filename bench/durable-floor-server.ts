import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import Fastify from 'fastify';
import { newId } from '../src/domain/ids.js';
import type { FloorRow } from './durable-floor-writer.js';

/**
 * The floor under any durable accept on this machine: the baseline's route, except that each request first
 * commits one small row the way the gateway commits a job. The rows of one event-loop turn go to a writer
 * thread in one message, the thread commits what has arrived in one transaction with `synchronous = FULL`,
 * and the 202 goes out once that COMMIT (and its fsync) has returned. No key, quota, validation or event:
 * what separates the gateway from this route is the gateway's own work, and what separates this route from
 * the baseline is the durable commit.
 */
const dataDir = process.env.DATA_DIR;
if (!dataDir) throw new Error('DATA_DIR must name the directory for the durable floor’s database');
mkdirSync(dataDir, { recursive: true });

// A worker thread does not inherit the loader that compiles TypeScript.
const writerPath = fileURLToPath(new URL('./durable-floor-writer.ts', import.meta.url));
const thread = new Worker(`require('tsx/cjs/api').register(); require(${JSON.stringify(writerPath)});`, {
  eval: true,
  workerData: { filename: join(dataDir, 'durable-floor.db') },
});
thread.on('error', (error) => {
  process.stderr.write(`durable floor: the writer thread failed: ${error.message}\n`);
  process.exit(1);
});

const waiting = new Map<string, () => void>();
let outbox: FloorRow[] = [];
thread.on('message', (ids: string[]) => {
  for (const id of ids) {
    waiting.get(id)?.();
    waiting.delete(id);
  }
});

const commit = (row: FloorRow) =>
  new Promise<void>((resolve) => {
    waiting.set(row.id, resolve);
    if (outbox.length === 0) {
      setImmediate(() => {
        thread.postMessage(outbox);
        outbox = [];
      });
    }
    outbox.push(row);
  });

const app = Fastify();
app.post('/campaigns/duplicate', async (request, reply) => {
  const id = newId();
  await commit({ id, body: JSON.stringify(request.body) });
  return reply.status(202).send({ message: 'success', job_id: id, status: 'pending' });
});
const url = await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' });
process.stdout.write(`${JSON.stringify({ msg: 'durable floor is listening', url })}\n`);
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
