import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { CLI_ENTRY } from './build.js';

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
  return captured(process.execPath, [CLI_ENTRY, ...argv], env, user);
}

/**
 * cliProcess with no file it writes allowed past `kib` KiB (bash's `ulimit -f`, which needs no privilege): the write
 * that would pass it fails with EFBIG, as on a file system that refuses to grow a file, since Node ignores SIGXFSZ.
 */
export function cliProcessWithFileSizeLimit(kib: number, argv: string[], env: Record<string, string>): Promise<CliRun> {
  return captured('bash', ['-c', 'ulimit -f "$0" && exec "$@"', String(kib), process.execPath, CLI_ENTRY, ...argv], env);
}

function captured(command: string, args: string[], env: Record<string, string>, user?: { uid: number; gid: number }): Promise<CliRun> {
  return new Promise((done) => {
    execFile(
      command,
      args,
      { cwd: ROOT, env: { PATH: process.env.PATH ?? '', HOME: tmpdir(), ...env }, timeout: 60_000, ...user },
      (error, stdout, stderr) => done({ code: error ? error.code : 0, stdout, stderr }),
    );
  });
}

/**
 * `command` run as cliProcess runs the CLI, with its stdout `stdout` and nothing read of it; `started` is done to the
 * child at once.
 */
function withoutReadingStdout(
  command: string,
  args: string[],
  env: Record<string, string>,
  stdout: 'ignore' | 'pipe' | number,
  started: (child: ChildProcess) => void = () => undefined,
): Promise<CliRun> {
  return new Promise((done) => {
    const child = spawn(command, args, {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: tmpdir(), ...env },
      stdio: ['ignore', stdout, 'pipe'],
      timeout: 60_000,
    });
    started(child);
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    child.on('close', (code) => done({ code, stdout: '', stderr }));
  });
}


/** cliProcess with its stdout on `file` (such as /dev/full, where every write fails), as a shell's `> file` puts it. */
export function cliProcessWritingTo(file: string, argv: string[], env: Record<string, string>): Promise<CliRun> {
  const fd = openSync(file, 'w');
  return withoutReadingStdout(process.execPath, [CLI_ENTRY, ...argv], env, fd, () => closeSync(fd));
}

/**
 * cliProcess with nothing to read its stdout: `'ignore'` puts it on /dev/null (opened for reading and writing, as
 * Python's subprocess.DEVNULL does too); `'closed'` starts it with fd 1 closed, as a shell's `>&-` does (Node then
 * opens /dev/null on it, for reading and writing as well).
 */
export function cliProcessWithoutStdout(stdout: 'ignore' | 'closed', argv: string[], env: Record<string, string>): Promise<CliRun> {
  const node = [CLI_ENTRY, ...argv];
  const [command, args] = stdout === 'ignore' ? [process.execPath, node] : ['bash', ['-c', 'exec "$0" "$@" >&-', process.execPath, ...node]];
  return withoutReadingStdout(command, args, env, 'ignore');
}

/** cliProcess with `started` done to the child at once, to act on it while it works (a signal); its stdout is not read. */
export function cliProcessStarted(argv: string[], env: Record<string, string>, started: (child: ChildProcess) => void): Promise<CliRun> {
  return withoutReadingStdout(process.execPath, [CLI_ENTRY, ...argv], env, 'ignore', started);
}

/**
 * cliProcess with its stdout a pipe whose reader has gone away before the CLI writes (a `| head` that has exited):
 * every write fails with EPIPE. The read end is closed here at once, so no write can reach it first.
 */
export function cliProcessWithReaderGone(argv: string[], env: Record<string, string>): Promise<CliRun> {
  return withoutReadingStdout(process.execPath, [CLI_ENTRY, ...argv], env, 'pipe', (child) => child.stdout!.destroy());
}

/**
 * cliProcess, with `act` done to it once its stderr matches `when` (a line of progress): a signal sent, as an
 * operator's Ctrl-C or a `kill`, or its database taken away. `via: 'npm'` starts it as `npm run -s cli --`, so
 * that `act` is done to npm's process, as a supervisor or a CI job's cancel does to the process it started;
 * `via: 'npm in its own process group'` too, in a process group of its own, as a terminal starts a command, for `act`
 * to signal the whole group as a terminal's Ctrl-C does.
 */
export function cliProcessActedOn(
  argv: string[],
  env: Record<string, string>,
  when: RegExp,
  act: (child: ChildProcess) => unknown,
  via: 'node' | 'npm' | 'npm in its own process group' = 'node',
): Promise<CliRun> {
  const [command, args] = via === 'node' ? [process.execPath, [CLI_ENTRY, ...argv]] : ['npm', ['run', '-s', 'cli', '--', ...argv]];
  return new Promise((done) => {
    const child = spawn(command, args, {
      detached: via === 'npm in its own process group',
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: tmpdir(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60_000,
    });
    let stdout = '';
    let stderr = '';
    let acted: unknown;
    child.stdout!.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
      if (acted === undefined && when.test(stderr)) acted = Promise.resolve(act(child));
    });
    child.on('close', (code, signal) => void Promise.resolve(acted).then(() => done({ code: code ?? signal, stdout, stderr })));
  });
}
