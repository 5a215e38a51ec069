import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { freePort } from './process.js';
import { waitFor } from './wait.js';

/** Whether a redis-server can be started here; suites that need one skip without it, except under CI. */
export const hasRedisServer = (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(join(dir, 'redis-server')));
export const skipWithoutRedisServer = !hasRedisServer && !process.env.CI;

/** Whether anything on the port answers a PING in Redis's protocol (a refusal to an unauthenticated client counts). */
function answersPing(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ port, host: '127.0.0.1' }, () => socket.write('PING\r\n'));
    socket.setTimeout(1000, () => {
      socket.destroy();
      done(false);
    });
    socket.once('data', (reply) => {
      socket.destroy();
      done(/^[+-]/.test(reply.toString()));
    });
    socket.once('error', () => done(false));
  });
}

/**
 * A Redis of a suite's own on a free loopback port, which it may stop, pause and start again at will (the
 * shared one serves other suites). `args` are redis-server options, e.g. `['--requirepass', 'secret']`.
 */
export class PrivateRedis {
  private process: ChildProcess | undefined;

  private constructor(readonly port: number) {}

  static async start(args: string[] = []): Promise<PrivateRedis> {
    const redis = new PrivateRedis(await freePort());
    await redis.start(args);
    return redis;
  }

  /** `redis://…` for this Redis, with the credentials given. */
  url(credentials = ''): string {
    return `redis://${credentials ? `${credentials}@` : ''}127.0.0.1:${this.port}`;
  }

  async start(args: string[] = []): Promise<void> {
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...args], {
      stdio: 'ignore',
    });
    this.process = child;
    await waitFor(async () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`redis-server for port ${this.port} exited (${child.exitCode ?? child.signalCode}) before it answered`);
      }
      return answersPing(this.port);
    });
  }

  /** SIGSTOP pauses it (connections are still accepted, nothing is answered); SIGCONT resumes it. */
  signal(signal: NodeJS.Signals): void {
    this.process?.kill(signal);
  }

  /** Kills it (its data is gone) and waits until it has exited. */
  async stop(): Promise<void> {
    const child = this.process;
    this.process = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }
}
