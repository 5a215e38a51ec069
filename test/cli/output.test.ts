import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepareWorkspace, seedFinishedJobs } from '../../bench/lib/store.js';
import { EXIT, runCli } from '../../src/cli/commands.js';
import { CLI_ENTRY } from '../support/build.js';
import { cliProcess, cliProcessStarted, cliProcessWithoutStdout, cliProcessWithReaderGone, cliProcessWritingTo } from '../support/cli.js';
import { waitFor } from '../support/wait.js';

const FULL = 'the output could not be written (ENOSPC: no space left on device)';

/** Jobs in the workspace "big", each with two events: its export and its jobs list are far more than a pipe holds. */
const JOBS = 5_000;

describe('the CLI whose output cannot be written', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'cgw-cli-output-'));
  const env = { DATA_DIR: dataDir };

  beforeAll(async () => {
    seedFinishedJobs(dataDir, await prepareWorkspace(dataDir, 'big'), 0, JOBS);
  });

  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('stops a streamed export on a full disk, saying so in one line, and quietly once its reader is gone; a closed stdout is /dev/null', async () => {
    const exportBig = ['workspaces', 'export', 'big'];
    const [full, closed, gone, discarded] = await Promise.all([
      cliProcessWritingTo('/dev/full', exportBig, env),
      cliProcessWithoutStdout('closed', exportBig, env),
      cliProcessWithReaderGone(exportBig, env),
      cliProcessWritingTo('/dev/null', exportBig, env),
    ]);
    expect(full.code, full.stderr).toBe(EXIT.failed);
    // Not one row reached the full disk: the rows of the write that failed are not counted.
    expect(full.stderr).toBe(`campaign-gateway: ${FULL}: the export stopped after 0 rows and the rows on stdout are not the whole workspace\n`);
    expect(gone).toEqual({ code: EXIT.readerGone, stdout: '', stderr: '' });
    // `> /dev/null` is a choice, and `>&-` cannot be told from the /dev/null a parent hands over: the export runs,
    // and its summary is on stderr.
    for (const run of [discarded, closed]) {
      expect(run.code, run.stderr).toBe(EXIT.ok);
      expect(run.stderr).toContain(`  jobs              ${JOBS}\n`);
    }
  }, 60_000);

  it('ends quietly under `| head -1`, as Unix tools do, with the status of a process SIGPIPE ended', async () => {
    const { stdout, stderr } = await promisify(execFile)(
      'bash',
      ['-c', '"$0" "$@" | head -1; echo "exit ${PIPESTATUS[0]}" >&2', process.execPath, CLI_ENTRY, 'workspaces', 'export', 'big'],
      { cwd: new URL('../..', import.meta.url), env: { PATH: process.env.PATH ?? '', HOME: tmpdir(), ...env }, timeout: 60_000 },
    );
    expect(JSON.parse(stdout)).toMatchObject({ table: 'workspaces', name: 'big' });
    expect(stderr).toBe(`exit ${EXIT.readerGone}\n`);
  }, 60_000);

  it('stops reading the store at the first page stdout does not take', async () => {
    const printed: string[] = [];
    let stderr = '';
    const code = await runCli(['workspaces', 'export', 'big'], {
      env,
      stdout: (text) => printed.push(text),
      stderr: (text) => (stderr += text),
      stdoutWritten: async () => {
        throw Object.assign(new Error('EPIPE: broken pipe, write'), { code: 'EPIPE' });
      },
    });
    expect({ code, stderr, pages: printed.length }).toEqual({ code: EXIT.readerGone, stderr: '', pages: 1 });
  });

  it('fails a listing printed at once on a full disk, and ends quietly once its reader is gone', async () => {
    const list = ['jobs', 'list', '--limit', String(JOBS)];
    const [full, fullJson, gone, listed] = await Promise.all([
      cliProcessWritingTo('/dev/full', list, env),
      cliProcessWritingTo('/dev/full', [...list, '--json'], env),
      cliProcessWithReaderGone(list, env),
      cliProcess(list, env),
    ]);
    expect(full).toEqual({ code: EXIT.failed, stdout: '', stderr: `campaign-gateway: ${FULL}\n` });
    expect(fullJson).toEqual({ code: EXIT.failed, stdout: '', stderr: `${JSON.stringify({ error: { code: 'FAILED', message: FULL } })}\n` });
    expect(gone).toEqual({ code: EXIT.readerGone, stdout: '', stderr: '' });
    expect(listed.stdout.split('\n')).toHaveLength(JOBS + 2);
  }, 60_000);

  it('says what it changed when its reader is gone', async () => {
    const gone = await cliProcessWithReaderGone(['workspaces', 'create', 'made unseen'], env);
    expect(gone.code, gone.stderr).toBe(EXIT.outputLost);
    expect(gone.stderr).toMatch(/^campaign-gateway: workspace 'made unseen' was created \(id [0-9a-f-]{36}\) but the output could not be written \(EPIPE: broken pipe\)\n$/);
    const names = JSON.parse((await cliProcess(['workspaces', 'list', '--json'], env)).stdout).map(({ name }: { name: string }) => name);
    expect(names).toEqual(['big', 'made unseen']);
  }, 60_000);
});

describe('commands writing a file, stopped by a signal', () => {
  // Far more than the commands write in the moment between their first bytes and the signal.
  const LARGE_JOBS = 40_000;
  const dataDir = mkdtempSync(join(tmpdir(), 'cgw-cli-signalled-'));
  const env = { DATA_DIR: dataDir };

  beforeAll(async () => {
    seedFinishedJobs(dataDir, await prepareWorkspace(dataDir, 'large'), 0, LARGE_JOBS);
  });

  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  /**
   * `argv` run, and `signal` sent to it once `started` finds what it writes begun. The process is frozen for the
   * sending, so that it cannot finish between the look and the signal: it takes the signal mid-work.
   */
  async function signalledOnceStarted(argv: string[], started: () => boolean, signal: NodeJS.Signals) {
    let signalled: Promise<void> | undefined;
    const run = await cliProcessStarted(argv, env, (child) => {
      signalled = waitFor(async () => started()).then(() => {
        child.kill('SIGSTOP');
        child.kill(signal);
        child.kill('SIGCONT');
      });
    });
    await signalled;
    return run;
  }

  const written = (file: string) => existsSync(file) && statSync(file).size > 0;

  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)('deletes the part of an export it wrote on %s, and says how far it got (exit %i)', async (signal, exit) => {
    const out = join(dataDir, `${signal}.jsonl`);
    const stopped = await signalledOnceStarted(['workspaces', 'export', 'large', '--out', out], () => written(out), signal);
    expect(stopped.code, stopped.stderr).toBe(exit);
    const rows = new RegExp(
      `^${signal}: stopping after the rows being written…\ncampaign-gateway: the export stopped on ${signal} after (\\d+) rows and ${out} was deleted\n$`,
    ).exec(stopped.stderr)?.[1];
    expect(Number(rows)).toBeGreaterThan(0);
    expect(Number(rows)).toBeLessThan(3 * LARGE_JOBS);
    expect(existsSync(out)).toBe(false);
  }, 60_000);

  const partials = (parent: string) => readdirSync(parent).filter((name) => name.startsWith('backup.db.partial-'));

  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)('discards a backup stopped on %s once its copy is written, leaving no file (exit %i)', async (signal, exit) => {
    const parent = mkdtempSync(join(tmpdir(), 'cgw-cli-backup-signalled-'));
    try {
      const backup = join(parent, 'backup.db');
      const stopped = await signalledOnceStarted(['store', 'backup', backup], () => partials(parent).some((name) => written(join(parent, name))), signal);
      expect(stopped.code, stopped.stderr).toBe(exit);
      expect(stopped.stderr).toBe(`${signal}: stopping after the copy being written…\ncampaign-gateway: the backup stopped on ${signal}: nothing was written to ${backup}\n`);
      expect(readdirSync(parent)).toEqual([]);
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  }, 60_000);

  it("leaves nothing at a backup's name when it is killed while it copies: what it wrote is named as partial", async () => {
    const parent = mkdtempSync(join(tmpdir(), 'cgw-cli-backup-killed-'));
    try {
      const backup = join(parent, 'backup.db');
      const killed = await signalledOnceStarted(['store', 'backup', backup], () => partials(parent).some((name) => written(join(parent, name))), 'SIGKILL');
      expect(killed.code).toBeNull();
      // The copy, and SQLite's journal of it if it had one yet.
      const left = readdirSync(parent);
      expect(left.filter((name) => /^backup\.db\.partial-[0-9a-f]{8}$/.test(name))).toHaveLength(1);
      expect(left.filter((name) => !/^backup\.db\.partial-[0-9a-f]{8}(-journal)?$/.test(name))).toEqual([]);
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  }, 60_000);
});
