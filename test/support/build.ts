import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { TestProject } from 'vitest/node';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** The gateway and CLI as `npm start` runs them, compiled before any test starts them as processes. */
export const GATEWAY_ENTRY = 'dist/main.js';
export const CLI_ENTRY = 'dist/cli/main.js';

/**
 * Vitest's global setup: `npm run build`, before the first run and each rerun in watch mode, so that no test starts
 * a build older than the sources. Tests start the compiled build rather than the sources through tsx, as operators
 * run it, and each start is half a second to a second faster without the loader. The build is incremental, so a run
 * with nothing changed spends a few seconds on it.
 */
export default async function setup(project: TestProject): Promise<void> {
  project.onTestsRerun(build);
  await build();
}

async function build(): Promise<void> {
  try {
    await promisify(execFile)('npm', ['run', '-s', 'build'], { cwd: ROOT });
  } catch (error) {
    const { stdout, message } = error as { stdout?: string; message: string };
    throw new Error(`the build the tests run failed:\n${stdout || message}`);
  }
}
