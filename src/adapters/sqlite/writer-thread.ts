import { parentPort, workerData } from 'node:worker_threads';
import { openConnection } from './connection.js';
import { assertSameFile } from './database-file.js';
import { GroupTransaction, type Outcome } from './group-commit.js';
import type { FromWriter, ToWriter, WriteAnswer, WriteCall, WriteFailure, WriterData } from './writer-protocol.js';
import { SqliteWrites } from './writes.js';

/**
 * The embedded store's writer thread: the only connection that writes. Calls that arrive while a group is
 * being committed (and its WAL fsynced) wait in the port and form the next group, so the main thread keeps
 * serving requests during the fsync instead of blocking on it.
 */
const port = parentPort!;
const { filename, opened } = workerData as WriterData;
const db = openConnection(filename);
db.pragma('synchronous = FULL');
// A group run again with a savepoint per write (after one failed) keeps the undo pages in memory, not in a file.
db.pragma('temp_store = MEMORY');
const writes = new SqliteWrites(db);
// A stat per group, next to its fsync: a 202 is never given for a job written into a deleted or replaced file.
const group = new GroupTransaction(db, () => assertSameFile(filename, opened));
let queue: WriteCall[] = [];
let scheduled = false;

const failure = (error: unknown): WriteFailure => {
  const { name, message, code } = error as { name?: unknown; message?: unknown; code?: unknown };
  return {
    name: typeof name === 'string' ? name : 'Error',
    message: typeof message === 'string' ? message : String(error),
    ...(typeof code === 'string' ? { code } : {}),
  };
};

const answer = (call: WriteCall, outcome: Outcome): WriteAnswer =>
  outcome.ok ? { id: call.id, ok: true, value: outcome.value } : { id: call.id, ok: false, error: failure(outcome.error) };

function flush(): void {
  scheduled = false;
  const calls = queue;
  queue = [];
  let message: FromWriter;
  try {
    const { outcomes, commitMs } = group.run(calls.map((call) => () => Reflect.apply(writes[call.name], writes, call.args)));
    message = { answers: calls.map((call, index) => answer(call, outcomes[index])), commitMs };
  } catch (error) {
    const commitMs = group.lastCommitMs;
    message = { answers: calls.map((call) => answer(call, { ok: false, error })), ...(commitMs === undefined ? {} : { commitMs }) };
  }
  port.postMessage(message);
}

port.on('message', (message: ToWriter) => {
  if ('close' in message) {
    if (queue.length > 0) flush();
    db.close();
    port.close();
    return;
  }
  queue.push(...message.calls);
  if (!scheduled) {
    scheduled = true;
    // After the messages already waiting: every call that arrived during the last commit joins this group.
    setImmediate(flush);
  }
});
