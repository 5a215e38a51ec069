import { connect, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';

export interface FullListener {
  /** `http://127.0.0.1:<port>`: a connection to it never opens. */
  url: string;
  close(): Promise<void>;
}

/**
 * A loopback port that is listened on but never accepts: its thread is blocked, and the connections its backlog holds
 * are taken, so the kernel drops every further connection's SYN and the connect neither opens nor fails. Linux holds
 * backlog + 1 connections unaccepted.
 */
export async function startFullListener(): Promise<FullListener> {
  const release = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
    const server = require('node:net').createServer();
    server.listen({ host: '127.0.0.1', port: 0, backlog: 1 }, () => {
      parentPort.postMessage(server.address().port);
      Atomics.wait(workerData, 0, 0);
      server.close();
    });`,
    { eval: true, workerData: release },
  );
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const held: Socket[] = [];
  for (let index = 0; index < 2; index++) {
    const socket = connect(port, '127.0.0.1');
    await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    held.push(socket);
  }
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      for (const socket of held) socket.destroy();
      Atomics.store(release, 0, 1);
      Atomics.notify(release, 0);
      await worker.terminate();
    },
  };
}
