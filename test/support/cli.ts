import { execFile } from 'node:child_process';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface CliRun {
  /** 0, the CLI's exit code, or the spawn error's code. */
  code: number | string | null | undefined;
  stdout: string;
  stderr: string;
}

/**
 * The CLI as its own process, as `npm run cli` starts it: `argv` with `env` (DATA_DIR, DATABASE_URL…) and no
 * other variable but PATH and HOME, as `user` when given (the test must then be root).
 */
export function cliProcess(argv: string[], env: Record<string, string>, user?: { uid: number; gid: number }): Promise<CliRun> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', ...argv],
      { cwd: ROOT, env: { PATH: process.env.PATH ?? '', HOME: tmpdir(), ...env }, timeout: 60_000, ...user },
      (error, stdout, stderr) => done({ code: error ? error.code : 0, stdout, stderr }),
    );
  });
}
