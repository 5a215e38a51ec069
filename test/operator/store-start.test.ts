import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { http, startGateway } from '../support/gateway.js';
import { spawnGateway, startFailureOf, type GatewayProcess } from '../support/process.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const uid = process.getuid?.();

/**
 * Makes `path` unwritable for this process and says how the gateway should name it. Modes do not bind root, so
 * as root the file is made immutable instead (CI runs as root); either way the OS refuses this process a write.
 */
function makeUnwritable(path: string): string {
  const mode = `0${(statSync(path).mode & 0o777).toString(8)}`;
  if (uid === 0) {
    execFileSync('chattr', ['+i', path]);
    return `${path} (owner uid 0, mode ${mode}; immutable or append-only; chattr -i -a ${path})`;
  }
  chmodSync(path, 0o400);
  return `${path} (owner uid ${uid}, mode 0400; chmod u+w ${path})`;
}

function makeWritable(path: string): void {
  if (uid === 0) execFileSync('chattr', ['-i', path]);
  else chmodSync(path, 0o600);
}

/** The CLI as its own process on `dataDir`. */
const cli = (dataDir: string, argv: string[]) =>
  new Promise<{ code: number | string | null | undefined; stderr: string }>((done) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', ...argv],
      { cwd: ROOT, env: { PATH: process.env.PATH ?? '', HOME: tmpdir(), DATA_DIR: dataDir }, timeout: 60_000 },
      (error, _stdout, stderr) => done({ code: error ? error.code : 0, stderr }),
    );
  });

describe.skipIf(process.platform === 'win32')('starting on DATA_DIR', () => {
  const dirs: string[] = [];
  const running: GatewayProcess[] = [];
  const immutable: string[] = [];

  const dataDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'cgw-start-'));
    dirs.push(dir);
    return dir;
  };
  const spawn = async (env: Record<string, string>) => {
    const gateway = await spawnGateway(env);
    running.push(gateway);
    return gateway;
  };

  afterEach(async () => {
    for (const gateway of running.splice(0)) {
      gateway.child.kill('SIGKILL');
      await gateway.exited;
    }
    // An immutable file cannot be removed, not even by root.
    for (const path of immutable.splice(0)) if (existsSync(path)) makeWritable(path);
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a store file, -wal or -shm the gateway cannot write, naming each with its owner and mode, and starts once they are writable', async () => {
    const dir = dataDir();
    const env = { DATA_DIR: dir, SEED_DEMO: 'false' };
    const file = join(dir, 'gateway.db');
    const [wal, shm] = [`${file}-wal`, `${file}-shm`];
    // Killed, it leaves its -wal and -shm beside the file.
    const first = await spawn(env);
    first.child.kill('SIGKILL');
    await first.exited;
    expect([existsSync(wal), existsSync(shm)]).toEqual([true, true]);

    immutable.push(file, wal, shm);
    const [named, namedWal, namedShm] = [file, wal, shm].map(makeUnwritable);
    const failure = await startFailureOf(env);
    expect(failure).toContain(
      `campaign-gateway: failed to start: the embedded store is not writable by this process (uid ${uid}), and SQLite would open it read-only ` +
        `and refuse every write: ${named}, ${namedWal}, ${namedShm}; fix each, then start again\n`,
    );
    // The CLI opens the store as the gateway does.
    const listed = await cli(dir, ['workspaces', 'list']);
    expect(listed).toEqual({ code: 1, stderr: expect.stringContaining(`campaign-gateway: the embedded store is not writable by this process (uid ${uid})`) });

    // The file made writable again, its -wal and -shm still not.
    makeWritable(file);
    const left = await startFailureOf(env);
    expect(left).toContain(`and refuse every write: ${namedWal}, ${namedShm}; fix each, then start again\n`);

    for (const path of [wal, shm]) makeWritable(path);
    const gateway = await spawn(env);
    // Ready means the store took a write (each readiness check commits one).
    expect((await http(gateway.baseUrl, 'GET', '/readyz')).body).toMatchObject({ status: 'ready' });
  }, 120_000);

  it('refuses a second gateway on the same DATA_DIR while the first runs, beside which the CLI works, and starts once the first is gone', async () => {
    const dir = dataDir();
    const env = { DATA_DIR: dir, SEED_DEMO: 'false' };
    const first = await spawn(env);
    const refusal = `campaign-gateway: failed to start: another gateway process uses DATA_DIR ${dir} (it holds ${join(dir, 'gateway.lock')})`;
    expect(await startFailureOf(env)).toContain(refusal);
    expect(await cli(dir, ['workspaces', 'create', 'beside the gateway'])).toEqual({ code: 0, stderr: '' });

    first.child.kill('SIGKILL');
    await first.exited;
    const afterKill = await spawn(env);
    expect(await startFailureOf(env)).toContain(refusal);
    afterKill.child.kill('SIGTERM');
    expect((await afterKill.exited).code).toBe(0);
    await spawn(env);
  }, 120_000);

  it('is held by a gateway in this process until it is closed', async () => {
    const dir = dataDir();
    const first = await startGateway({ DATA_DIR: dir });
    await expect(startGateway({ DATA_DIR: dir })).rejects.toThrow(`another gateway process uses DATA_DIR ${dir}`);
    await first.close();
    const second = await startGateway({ DATA_DIR: dir });
    await second.close();
  });
});
