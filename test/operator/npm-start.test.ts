import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/wait.js';

const packageJson = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };

/** Stands in for the built gateway: says when it runs, and whether SIGTERM reached it. */
const STAND_IN = `
process.on('SIGTERM', () => { console.log('SIGTERM reached the gateway'); process.exit(0); });
console.log('running');
setInterval(() => {}, 1000);
`;

describe('npm start', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cgw-npm-start-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('hands SIGTERM to the gateway, so a container whose command is `npm start` drains and stops', async () => {
    mkdirSync(join(dir, 'dist'));
    writeFileSync(join(dir, 'dist', 'main.js'), STAND_IN);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'stand-in', version: '1.0.0', scripts: { start: packageJson.scripts.start } }));
    // --ignore-scripts skips only the prestart build; the start script itself runs through npm and its shell as usual.
    // A process group of its own, so that whatever the start script left running can be killed with it.
    const npm = spawn('npm', ['start', '--ignore-scripts'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let output = '';
    npm.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    npm.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => npm.once('exit', resolve));
    try {
      await waitFor(async () => output.includes('running'));
      npm.kill('SIGTERM');
      await waitFor(async () => output.includes('SIGTERM reached the gateway'), 5_000).catch(() => undefined);
      expect(output).toContain('SIGTERM reached the gateway');
      expect(await exited).toBe(0);
    } finally {
      try {
        process.kill(-npm.pid!, 'SIGKILL');
      } catch {
        // The group has already ended: nothing is left to kill.
      }
    }
  });
});
