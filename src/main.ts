import { constants } from 'node:os';
import { buildApp, type App } from './app.js';
import { ConfigError, loadConfig, longestStopMs, type Config } from './config.js';
import { demoBanner, seedDemoWorkspace } from './seed.js';

let stopping = false;

/**
 * SIGTERM/SIGINT before the app exists (it may be waiting for another gateway to free DATA_DIR): nothing to close
 * yet, so start-up ends at once. Without a handler the signal would do the same, except as PID 1 in a container,
 * where a signal without a handler is ignored and the stop would wait for the whole start-up.
 */
function stopStarting(signal: 'SIGTERM' | 'SIGINT'): void {
  process.stderr.write(`campaign-gateway: stopped by ${signal} before it started\n`);
  process.exit(128 + constants.signals[signal]);
}

/** SIGTERM/SIGINT: close the app (the drain, then the grace period for requests and jobs), then exit. */
function handleStopSignals(app: App, config: Config): void {
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.http.log.info({ signal }, 'shutting down');
    // Closing waits for the drain and then the grace period at most; this only fires when something hangs beyond them.
    setTimeout(() => {
      app.http.log.error({ drainMs: config.shutdownDrainMs, graceMs: config.shutdownGraceMs }, 'shutdown did not finish in time; exiting');
      process.exit(1);
    }, longestStopMs(config)).unref();
    app
      .close()
      .then(() => process.exit(0))
      .catch((error: unknown) => {
        app.http.log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      });
  };
  process.off('SIGTERM', stopStarting).off('SIGINT', stopStarting);
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function main(): Promise<void> {
  const config = loadConfig();
  process.on('SIGTERM', stopStarting).on('SIGINT', stopStarting);
  const app = await buildApp(config);
  // Before the port opens: from then on a signal stops gracefully instead of ending the process at once,
  // in-flight requests with it.
  handleStopSignals(app, config);
  await app.http.listen({ port: config.port, host: config.host });
  if (stopping) return;
  // After listen: a first start that cannot bind its port must not make a key it never shows.
  const seed = config.seedDemo ? await seedDemoWorkspace(app.store, app.admin, { upstream: config.upstreamUrl !== null }) : null;
  if (!config.seedDemo && !(await app.store.hasWorkspaces())) {
    // In production the gateway runs from dist/, where `npm run cli` (tsx, from src/) may not work: a read-only image.
    const cli = config.production ? 'node dist/cli/main.js --help' : 'npm run cli -- --help';
    app.http.log.info(`no workspace yet: create one and its keys with the CLI (${cli})`);
  }
  if (stopping) return;
  app.start();
  const address = app.http.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const baseUrl = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  if (seed) process.stdout.write(demoBanner(seed, baseUrl, config.explorer) + '\n');
  app.http.log.info({ url: baseUrl, store: app.store.kind, quota: app.quotaBackend }, 'campaign-gateway is listening');
}

main().catch((error: unknown) => {
  // A stop during start-up fails what it closes under it (listening, seeding); the stop itself exits.
  if (stopping) return;
  if (error instanceof ConfigError) {
    process.stderr.write(`campaign-gateway: ${error.message}\n`);
  } else {
    process.stderr.write(`campaign-gateway: failed to start: ${error instanceof Error ? error.message : String(error)}\n`);
  }
  process.exit(1);
});
