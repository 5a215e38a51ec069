import { execFileSync, spawnSync } from 'node:child_process';
import { accessSync, chmodSync, chownSync, constants, existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { buildApp, createStore } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { GATEWAY_ENTRY } from '../support/build.js';
import { cliProcess } from '../support/cli.js';
import { http, startGateway } from '../support/gateway.js';
import { spawnGateway, startFailureOf, type GatewayProcess, type SpawnOptions } from '../support/process.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const NOBODY = { uid: 65534, gid: 65534 };

/** How a test makes a store path unwritable for the gateway, and as which user the gateway and CLI then run. */
interface Unwritable {
  /** The user the gateway and CLI run as; the test's own when absent. */
  user?: { uid: number; gid: number };
  uid: number;
  /** Makes `path` unwritable for that user; what the gateway names it as. */
  make(path: string): string;
  undo(path: string): void;
}

/** By its mode, for a user whom modes bind: anyone but root. */
const byMode = (uid: number, user?: { uid: number; gid: number }): Unwritable => ({
  user,
  uid,
  make(path) {
    chmodSync(path, 0o400);
    return `${path} (owner uid ${uid}, mode 0400; chmod u+w ${path})`;
  },
  undo: (path) => chmodSync(path, 0o600),
});

/** Immutable, which binds root too: the OS refuses it a write as a mode refuses anyone else. */
const byChattr: Unwritable = {
  uid: 0,
  make(path) {
    const mode = `0${(statSync(path).mode & 0o777).toString(8)}`;
    execFileSync('chattr', ['+i', path]);
    return `${path} (owner uid 0, mode ${mode}; immutable or append-only; chattr -i -a ${path})`;
  },
  undo: (path) => execFileSync('chattr', ['-i', path]),
};

/**
 * Whether chattr makes a file immutable in `dir`: it needs the binary, a file system with the flag and
 * CAP_LINUX_IMMUTABLE, which Docker's default capabilities lack.
 */
function chattrWorks(dir: string): boolean {
  const probe = join(dir, 'chattr-probe');
  writeFileSync(probe, '');
  try {
    execFileSync('chattr', ['+i', probe], { stdio: 'ignore' });
  } catch {
    rmSync(probe);
    return false;
  }
  try {
    accessSync(probe, constants.W_OK);
    return false;
  } catch {
    return true;
  } finally {
    execFileSync('chattr', ['-i', probe]);
    rmSync(probe);
  }
}

/** Whether nobody can run the gateway from this checkout, which may sit where only root reads (/root is 0700). */
const nobodyCanRun = (): boolean =>
  spawnSync(process.execPath, ['-e', `require('node:fs').readFileSync('${GATEWAY_ENTRY}')`], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: tmpdir() },
    stdio: 'ignore',
    ...NOBODY,
  }).status === 0;

/**
 * How to make a path of `dataDir` unwritable here, or why it cannot be done. Modes do not bind root: as root, an
 * immutable file if chattr works, else modes with the gateway run as nobody (the data directory given to nobody).
 */
function unwritableHere(dataDir: string): Unwritable | string {
  const uid = process.getuid!();
  if (uid !== 0) return byMode(uid);
  if (chattrWorks(dataDir)) return byChattr;
  if (!nobodyCanRun()) return `running as root, where chattr +i does not work and uid ${NOBODY.uid} cannot run the gateway from ${ROOT}`;
  chownSync(dataDir, NOBODY.uid, NOBODY.gid);
  return byMode(NOBODY.uid, NOBODY);
}

/** The CLI as its own process on `dataDir`. */
const cli = (dataDir: string, argv: string[], user?: { uid: number; gid: number }) => cliProcess(argv, { DATA_DIR: dataDir }, user);

describe.skipIf(process.platform === 'win32')('starting on DATA_DIR', () => {
  const dirs: string[] = [];
  const running: GatewayProcess[] = [];
  const undo: (() => void)[] = [];

  const dataDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'cgw-start-'));
    dirs.push(dir);
    return dir;
  };
  const spawn = async (env: Record<string, string>, options: SpawnOptions = {}) => {
    const gateway = await spawnGateway(env, options);
    running.push(gateway);
    return gateway;
  };

  afterEach(async () => {
    for (const gateway of running.splice(0)) {
      gateway.child.kill('SIGKILL');
      await gateway.exited;
    }
    // An immutable file cannot be removed, not even by root.
    for (const step of undo.splice(0)) step();
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a store file, -wal or -shm the gateway cannot write, naming each with its owner and mode, and starts once they are writable', async (context) => {
    const dir = dataDir();
    const way = unwritableHere(dir);
    if (typeof way === 'string') {
      // Nothing may be skipped in CI.
      if (process.env.CI) throw new Error(`cannot make a store path unwritable: ${way}`);
      return context.skip(way);
    }
    const { user, uid } = way;
    const env = { DATA_DIR: dir, SEED_DEMO: 'false' };
    const file = join(dir, 'gateway.db');
    const [wal, shm] = [`${file}-wal`, `${file}-shm`];
    // Killed, it leaves its -wal and -shm beside the file.
    const first = await spawn(env, { user });
    first.child.kill('SIGKILL');
    await first.exited;
    expect([existsSync(wal), existsSync(shm)]).toEqual([true, true]);

    for (const path of [file, wal, shm]) undo.push(() => existsSync(path) && way.undo(path));
    const [named, namedWal, namedShm] = [file, wal, shm].map((path) => way.make(path));
    const failure = await startFailureOf(env, { user });
    expect(failure).toContain(
      `campaign-gateway: failed to start: the embedded store is not writable by this process (uid ${uid}), and SQLite would open it read-only ` +
        `and refuse every write: ${named}, ${namedWal}, ${namedShm}; fix each, then start again\n`,
    );
    // The CLI opens the store as the gateway does.
    const listed = await cli(dir, ['workspaces', 'list'], user);
    expect(listed).toMatchObject({ code: 1, stderr: expect.stringContaining(`campaign-gateway: the embedded store is not writable by this process (uid ${uid})`) });

    // The file made writable again, its -wal and -shm still not.
    way.undo(file);
    const left = await startFailureOf(env, { user });
    expect(left).toContain(`and refuse every write: ${namedWal}, ${namedShm}; fix each, then start again\n`);

    for (const path of [wal, shm]) way.undo(path);
    const gateway = await spawn(env, { user });
    // Ready means the store took a write (each readiness check commits one).
    expect((await http(gateway.baseUrl, 'GET', '/readyz')).body).toMatchObject({ status: 'ready' });
  }, 120_000);

  it('names DATA_DIR, and that it must be writable, when it cannot make the data directory', async (context) => {
    const parent = dataDir();
    const dir = join(parent, 'data');
    chmodSync(parent, 0o555);
    // Modes do not bind root: then the gateway runs as nobody, who may pass through the parent but not write in it.
    const asRoot = process.getuid!() === 0;
    if (asRoot && !nobodyCanRun()) {
      if (process.env.CI) throw new Error(`running as root, and uid ${NOBODY.uid} cannot run the gateway from ${ROOT}`);
      return context.skip('running as root, and nobody cannot run the gateway from this checkout');
    }
    const failure = await startFailureOf({ DATA_DIR: dir, SEED_DEMO: 'false' }, asRoot ? { user: NOBODY } : {});
    expect(failure).toContain(
      `campaign-gateway: failed to start: DATA_DIR ${dir} cannot be made (EACCES: permission denied, mkdir '${dir}'): DATA_DIR must name a directory ` +
        `this process (uid ${asRoot ? NOBODY.uid : process.getuid!()}) can write, such as a subdirectory of a writable volume\n`,
    );
  });

  // SHUTDOWN_GRACE_SECONDS=1: a second gateway waits 1 s (grace) + 0 s (drain) + 5 s for the first to stop.
  const WAITING = 'waiting up to 6 s for it to exit';

  it('waits for a second gateway on the same DATA_DIR as long as the first may take to stop, then refuses it; the CLI works beside', async () => {
    const dir = dataDir();
    const env = { DATA_DIR: dir, SEED_DEMO: 'false', SHUTDOWN_GRACE_SECONDS: '1' };
    const first = await spawn(env);
    const lock = join(dir, 'gateway.lock');
    const said = `campaign-gateway: another gateway process holds DATA_DIR ${dir} (${lock}): ${WAITING}\n`;
    const refusal = `campaign-gateway: failed to start: another gateway process uses DATA_DIR ${dir} (it holds ${lock})`;
    const refused = await startFailureOf(env);
    expect(refused).toContain(refusal);
    expect(refused.split(said)).toHaveLength(2);
    expect(await cli(dir, ['workspaces', 'create', 'beside the gateway'])).toMatchObject({ code: 0, stderr: '' });
    // The lock's transaction writes nothing, so no journal sits beside it, nor is left by a process killed.
    expect(readdirSync(dir).filter((name) => name.startsWith('gateway.lock'))).toEqual(['gateway.lock']);

    first.child.kill('SIGKILL');
    await first.exited;
    expect(readdirSync(dir).filter((name) => name.startsWith('gateway.lock'))).toEqual(['gateway.lock']);
    const afterKill = await spawn(env);
    expect(await startFailureOf(env)).toContain(refusal);
    afterKill.child.kill('SIGTERM');
    expect((await afterKill.exited).code).toBe(0);
    await spawn(env);
  }, 120_000);

  it('starts a second gateway begun while the first runs once the first stops on SIGTERM', async () => {
    const dir = dataDir();
    const env = { DATA_DIR: dir, SEED_DEMO: 'false', SHUTDOWN_GRACE_SECONDS: '1' };
    const first = await spawn(env);
    let waiting!: () => void;
    const saidWaiting = new Promise<void>((resolve) => (waiting = resolve));
    const second = spawn(env, { onOutput: (output) => output.includes(WAITING) && waiting() });
    // A second refused at once ends the race too, and fails the test.
    await Promise.race([saidWaiting, second]);
    first.child.kill('SIGTERM');
    expect((await first.exited).code).toBe(0);
    const gateway = await second;
    expect(gateway.output().split(WAITING)).toHaveLength(2);
    expect((await http(gateway.baseUrl, 'GET', '/readyz')).body).toMatchObject({ status: 'ready' });
  }, 120_000);

  it('ends a start still waiting for DATA_DIR at once on SIGTERM, saying so', async () => {
    const dir = dataDir();
    const env = { DATA_DIR: dir, SEED_DEMO: 'false', SHUTDOWN_GRACE_SECONDS: '1' };
    await spawn(env);
    let signalled = false;
    const failure = await startFailureOf(env, {
      onOutput: (output, child) => {
        if (signalled || !output.includes(WAITING)) return;
        signalled = true;
        child.kill('SIGTERM');
      },
    });
    // Exit code 143 (128 + SIGTERM), as a shell reports a process the signal ended, but with a word on why.
    expect(failure).toContain('exited with 143 before listening');
    expect(failure).toContain('campaign-gateway: stopped by SIGTERM before it started\n');
    expect(failure).not.toContain('failed to start');
  }, 120_000);

  it('is let go of by a start that fails after the store opened, so that the next start need not wait for it', async () => {
    const dir = dataDir();
    const config = loadConfig({ DATA_DIR: dir, SHUTDOWN_GRACE_SECONDS: '1' });
    // The logger is made with the HTTP server, after the store, the limiters and the metrics: pino refuses the level there.
    await expect(buildApp(config, { logger: { level: 'loudest' } })).rejects.toThrow('loudest');
    // Without waiting: a DATA_DIR still held would be waited for (6 s here), then refused.
    const next = await buildApp(config, { logger: false });
    await next.close();
  });

  it('is held by a gateway in this process until it is closed, and waited for meanwhile', async () => {
    const dir = dataDir();
    const config = loadConfig({ DATA_DIR: dir });
    const told: string[] = [];
    const open = (waitMs: number, onWait: (message: string) => void = (message) => told.push(message)) =>
      createStore(config, { olderSchema: 'upgrade', holdDataDir: { waitMs, onWait } });
    const first = await startGateway({ DATA_DIR: dir });
    await expect(open(0)).rejects.toThrow(`another gateway process uses DATA_DIR ${dir}`);
    expect(told).toEqual([]);

    let waiting!: () => void;
    const saidWaiting = new Promise<void>((resolve) => (waiting = resolve));
    const second = open(60_000, (message) => {
      told.push(message);
      waiting();
    });
    await Promise.race([saidWaiting, second]);
    await first.close();
    await (await second).close();
    expect(told).toEqual([`another gateway process holds DATA_DIR ${dir} (${join(dir, 'gateway.lock')}): waiting up to 60 s for it to exit`]);
  });
});
