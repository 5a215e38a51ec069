import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

/**
 * The durable floor's writer thread (durable-floor-server.ts): rows that arrive while a group commits wait in
 * the port and form the next group, one transaction and one fsync each, as in the gateway's writer thread.
 */
export interface FloorRow {
  id: string;
  body: string;
}

const port = parentPort!;
const db = new Database((workerData as { filename: string }).filename);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.exec('CREATE TABLE IF NOT EXISTS accepted (id TEXT PRIMARY KEY, body TEXT NOT NULL)');
const insert = db.prepare('INSERT INTO accepted (id, body) VALUES (?, ?)');
const commitGroup = db.transaction((rows: FloorRow[]) => {
  for (const row of rows) insert.run(row.id, row.body);
});
let queue: FloorRow[] = [];
let scheduled = false;

port.on('message', (rows: FloorRow[]) => {
  queue.push(...rows);
  if (scheduled) return;
  scheduled = true;
  setImmediate(() => {
    scheduled = false;
    const group = queue;
    queue = [];
    commitGroup.immediate(group);
    port.postMessage(group.map((row) => row.id));
  });
});
