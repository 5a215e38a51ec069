import { fstatSync, statSync } from 'node:fs';
import { runCli } from './commands.js';

/**
 * Writes to `stream`, keeping its first failure (a full disk, a reader that closed the pipe) instead of letting
 * the stream's 'error' end the process with a stack trace: the command decides what a lost output means.
 */
function output(stream: NodeJS.WriteStream) {
  let failure: Error | undefined;
  let last: Promise<void> = Promise.resolve();
  stream.on('error', (error) => {
    failure ??= error;
  });
  return {
    write(text: string) {
      if (failure) return;
      // Callbacks run in the order of the writes: the last one's says every one before it is out too.
      last = new Promise((resolve) =>
        stream.write(text, (error) => {
          if (error) failure ??= error;
          resolve();
        }),
      );
    },
    async written() {
      await last;
      if (failure) throw failure;
    },
  };
}

/**
 * Whether fd 1 is the null device: a shell's `> /dev/null`, or a stdout closed at start, which Node opens on
 * /dev/null. The same character device (its rdev) under any name, not a file that happens to be called so.
 */
function discarded(fd: number): boolean {
  let out;
  try {
    out = fstatSync(fd);
  } catch (error) {
    // Closed, and not reopened: nothing written there is read.
    if ((error as NodeJS.ErrnoException).code === 'EBADF') return true;
    throw error;
  }
  const devNull = statSync('/dev/null', { throwIfNoEntry: false });
  return out.isCharacterDevice() && devNull !== undefined && devNull.isCharacterDevice() && out.rdev === devNull.rdev;
}

const stdout = output(process.stdout);
const stderr = output(process.stderr);

process.exitCode = await runCli(process.argv.slice(2), {
  env: process.env,
  stdout: stdout.write,
  stderr: stderr.write,
  stdoutWritten: stdout.written,
  stdoutDiscarded: () => discarded(1),
});
