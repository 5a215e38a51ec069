import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepareWorkspace, seedFinishedJobs } from '../../bench/lib/store.js';
import { EXIT, runCli } from '../../src/cli/commands.js';
import { cliProcess, cliProcessWithoutStdout, cliProcessWithReaderGone, cliProcessWritingTo } from '../support/cli.js';

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
    const rows = /^campaign-gateway: the output could not be written \(ENOSPC: no space left on device\): the export stopped after (\d+) rows and the rows on stdout are not the whole workspace\n$/.exec(full.stderr)?.[1];
    // It read no further than the page it could not write.
    expect(Number(rows)).toBeLessThan(JOBS);
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
      ['-c', '"$0" "$@" | head -1; echo "exit ${PIPESTATUS[0]}" >&2', process.execPath, '--import', 'tsx', 'src/cli/main.ts', 'workspaces', 'export', 'big'],
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
