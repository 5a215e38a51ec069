import { accessSync, constants as fsConstants, readFileSync, realpathSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createStore, databaseName, sqliteFilename, startAgainAfterCopy, type StoreOptions } from '../app.js';
import type { Config } from '../config.js';
import { DataDirHeld } from '../adapters/sqlite/data-dir-lock.js';
import { accessRefusal } from '../adapters/new-file.js';
import { AlreadyExistsError, GatewayError, unavailableCause } from '../domain/errors.js';
import { EXPORT_TABLES, type GatewayStore } from '../domain/ports.js';
import { Interrupted, stoppableBySignals } from './signals.js';
import { storeUnavailable } from './store-unavailable.js';
import { copyStore, CopyStopped, CountMismatch, TargetNotEmpty, TargetNotWritable, TargetPartlyCopied, type CopyProgress, type CopySummary } from '../domain/store-copy.js';

/** Where `store copy` writes: a PostgreSQL database, or an embedded store's DATA_DIR. */
interface CopyTarget {
  config: Config;
  /** The target in messages: never a URL's user name or password. */
  name: string;
  /** How to make the target empty again after a copy that stopped half-way. */
  startAgain: string;
}

const POSTGRES_URL = /^postgres(ql)?:\/\//i;

/**
 * `--to` that this process may not read (or, a directory, write in): BAD_USER_INPUT, as a wrong path is, naming the
 * path and the reason only, never the file's text, which holds a password. Any other failure as it is.
 */
function deniedTo(to: string, error: unknown, what: string): unknown {
  const { code } = error as NodeJS.ErrnoException;
  const refused = accessRefusal(code);
  if (refused === undefined) return error;
  const uid = process.getuid?.();
  const reason = code === 'EROFS' ? refused : `${refused} to this process${uid === undefined ? '' : ` (uid ${uid})`}`;
  return new GatewayError('BAD_USER_INPUT', `--to ${to}: cannot ${what}: ${reason}. Nothing was copied.`, { cause: error });
}

/** `--to`: a PostgreSQL URL, a file holding one (kept out of the shell's history and `ps`), or a directory (DATA_DIR). */
function copyTarget(config: Config, to: string): CopyTarget {
  let url = to;
  if (!POSTGRES_URL.test(to)) {
    let stats: ReturnType<typeof statSync>;
    try {
      stats = statSync(to, { throwIfNoEntry: false });
    } catch (error) {
      throw deniedTo(to, error, 'look it up (a directory of its path may not be entered)');
    }
    if (stats === undefined) throw new GatewayError('BAD_USER_INPUT', `--to ${to}: no such file or directory (give a postgres:// URL, a file holding one, or a DATA_DIR)`);
    if (stats.isDirectory()) {
      try {
        accessSync(to, fsConstants.W_OK | fsConstants.X_OK);
      } catch (error) {
        throw deniedTo(to, error, 'make an embedded store in this directory');
      }
      const file = join(to, 'gateway.db');
      // Its lock would otherwise be reported as held by something to stop, which is the copy itself.
      const source = sqliteFilename(config);
      if (source !== null && realpathSync(to) === realpathSync(dirname(source))) {
        throw new GatewayError('BAD_USER_INPUT', `--to ${to} is the store being copied (${source}): give an empty directory or a PostgreSQL database. Nothing was copied.`);
      }
      return { config: { ...config, databaseUrl: null, dataDir: to }, name: `the embedded store ${file}`, startAgain: startAgainAfterCopy({ file }) };
    }
    try {
      url = readFileSync(to, 'utf8').trim();
    } catch (error) {
      throw deniedTo(to, error, 'read the file');
    }
    // Its text is not repeated: the file is where a password is kept.
    if (!POSTGRES_URL.test(url)) throw new GatewayError('BAD_USER_INPUT', `--to ${to}: the file holds no postgres:// URL`);
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new GatewayError('BAD_USER_INPUT', '--to: the PostgreSQL URL is not a valid URL');
  }
  const database = databaseName(url);
  return { config: { ...config, databaseUrl: url }, name: `the PostgreSQL database ${database} on ${parsed.host}`, startAgain: startAgainAfterCopy({ database }) };
}

/** `text` as the start of a sentence. */
const sentence = (text: string): string => text.charAt(0).toUpperCase() + text.slice(1);

/**
 * What stopped a copy, in the words of the error under the gateway's UNAVAILABLE (which says only "Service
 * unavailable"), with its code: `terminating connection due to administrator command (57P01)`.
 */
function stopCause(error: unknown): string {
  const cause = unavailableCause(error) ?? error;
  const message = cause instanceof Error ? cause.message : String(cause);
  const code = (cause as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code !== '' && !message.includes(code) ? `${message} (${code})` : message;
}

/** Why copyStore failed, and what the target holds now. */
function copyFailure(error: unknown, target: CopyTarget): Error {
  if (error instanceof TargetNotEmpty) {
    return new AlreadyExistsError(`${target.name} already holds ${error.message}: a copy goes only into a store without workspaces, never into or over one. Nothing was copied.`);
  }
  if (error instanceof TargetNotWritable) {
    return new GatewayError('BAD_USER_INPUT', `${target.name}: the role in --to may not write every row a copy writes (it lacks ${error.message}): run the copy as the role that owns the tables. Nothing was copied.`);
  }
  if (error instanceof TargetPartlyCopied) {
    return new GatewayError('BAD_USER_INPUT', `${target.name} holds part of a store (${error.message}), on which no gateway may start: ${target.startAgain}. Nothing was copied.`);
  }
  if (error instanceof CopyStopped) {
    const signal = error.reason as NodeJS.Signals;
    const holds = error.counting
      ? `while counting the rows of each table in both stores. ${sentence(target.name)} holds every row, not yet counted against the source`
      : `after the page it was writing. ${sentence(target.name)} holds part of the store`;
    return new Interrupted(`the copy stopped on ${signal}, ${holds}, on which no gateway may start: ${target.startAgain}.`, signal);
  }
  const what = error instanceof CountMismatch ? `the stores count different rows after the copy (${error.message})` : `the copy stopped: ${stopCause(error)}`;
  return new Error(`${what}. ${sentence(target.name)} holds part of the store, on which no gateway may start: ${target.startAgain}.`);
}

export interface StoreCopyIo {
  stderr: (text: string) => void;
  print: (text: string | (() => string), json: unknown) => void;
  migrations?: StoreOptions['migrations'];
  /** Lays out rows as the CLI's tables. */
  table: (rows: string[][]) => string;
}

/** A line of progress at most every this many rows of a table, besides one when it is done. */
const PROGRESS_ROWS = 100_000;

/**
 * `store copy`: the configured store (the source, only read) into an empty store, then both counted. An embedded
 * source's DATA_DIR is held for the copy, as a gateway holds it, so that a running gateway makes the copy refuse
 * instead of writing rows the copy would miss.
 */
export async function copyConfiguredStore(config: Config, to: string, io: StoreCopyIo): Promise<void> {
  const target = copyTarget(config, to);
  const sourceFile = sqliteFilename(config);
  const sourceName = sourceFile === null ? 'the PostgreSQL database in DATABASE_URL' : `the embedded store ${sourceFile}`;
  const hold = { waitMs: 0, onWait: () => undefined };
  const stores: GatewayStore[] = [];
  try {
    const source = await createStore(config, { olderSchema: 'refuse', migrations: io.migrations, holdDataDir: hold, keepReservations: true }).catch((error: unknown) => {
      if (!(error instanceof DataDirHeld)) throw storeUnavailable(error) ?? error;
      // UNAVAILABLE: a script tries again once the gateway is stopped, as it does a store it cannot reach.
      throw new GatewayError(
        'UNAVAILABLE',
        `${sourceName} is in use by a running gateway (it holds ${error.file}): stop it first, so that the copy misses nothing it writes, then try again. Nothing was copied.`,
        { cause: error },
      );
    });
    stores.push(source);
    if (sourceFile === null) io.stderr('The source is a PostgreSQL database: the copy cannot tell whether a gateway still uses it; stop every one first.\n');
    // Migrated as a gateway's start migrates it, so that a gateway starts on the copy without changing it.
    const targetStore = await createStore(target.config, { olderSchema: 'upgrade', migrations: io.migrations, holdDataDir: hold, partlyCopied: 'open' }).catch((error: unknown) => {
      if (error instanceof DataDirHeld) {
        throw new GatewayError('UNAVAILABLE', `${target.name} is in use (${error.file} is held): stop what uses it, then try again. Nothing was copied.`, { cause: error });
      }
      const message = `${target.name}: ${error instanceof Error ? error.message.replaceAll('DATABASE_URL', '--to') : String(error)}. Nothing was copied.`;
      // A login refused (class 28) or no such database is --to's to change: the same --to again fails the same way.
      // A running gateway's store reads the first as an outage (a password changed under it), not the copy.
      const sqlstate = (error as { cause?: { code?: unknown } } | null)?.cause?.code;
      if (typeof sqlstate === 'string' && (sqlstate.startsWith('28') || sqlstate === '3D000')) throw new GatewayError('BAD_USER_INPUT', message, { cause: error });
      // UNAVAILABLE, as for the configured store: a script may try again once the target can be reached.
      throw storeUnavailable(error) ? new GatewayError('UNAVAILABLE', message, { cause: error }) : new Error(message);
    });
    stores.push(targetStore);
    io.stderr(`Copying ${sourceName} to ${target.name}.\n`);
    const started = performance.now();
    const running = await source.countJobs('RUNNING');
    let summary: CopySummary;
    try {
      // One line per workspace once its last table is done, and one per PROGRESS_ROWS of a large table meanwhile:
      // a store of thousands of small workspaces does not print seven lines for each.
      let workspaceRows: string[] = [];
      const progress = ({ workspace, table, rows, done }: CopyProgress) => {
        if (!done) {
          if (rows % PROGRESS_ROWS === 0) io.stderr(`  "${workspace.name}": ${table} ${rows} rows…\n`);
          return;
        }
        if (rows > 0 && table !== 'workspaces') workspaceRows.push(`${table} ${rows}`);
        if (table !== EXPORT_TABLES.at(-1)) return;
        io.stderr(`  "${workspace.name}": ${workspaceRows.length === 0 ? 'no rows but the workspace' : workspaceRows.join(', ')}\n`);
        workspaceRows = [];
      };
      summary = await stoppableBySignals(io.stderr, 'the page being written', ({ stopped, stopsAfter }) =>
        copyStore(source, targetStore, progress, {
          stopped,
          onCounting: () => {
            stopsAfter('the table being counted');
            io.stderr("Every row written: counting each table's rows in both stores…\n");
          },
        }),
      );
    } catch (error) {
      throw copyFailure(error, target);
    }
    const seconds = (performance.now() - started) / 1000;
    const { copied, orphaned } = summary;
    const left = Object.entries(orphaned).map(([table, count]) => `${table} ${count}`);
    const total = Object.values(copied).reduce((sum, count) => sum + count, 0);
    io.print(
      () =>
        [
          `Copied ${sourceName} to ${target.name} in ${seconds.toFixed(1)} s${seconds >= 1 ? ` (${Math.round(total / seconds)} rows/s)` : ''}. Rows copied, counted again in both stores:`,
          io.table(Object.entries(copied).map(([table, count]) => [`  ${table}`, String(count)])),
          ...(left.length > 0 ? [`Not copied, rows of erased workspaces (their workspace_id names no workspace): ${left.join(', ')}.`] : []),
          ...(running > 0
            ? [
                `${running} job${running === 1 ? ' was' : 's were'} RUNNING when the source stopped: copied as they were, the target's gateway takes them over ` +
                  // An embedded store's gateway holds it alone, and ends the leases it finds as it starts (endOrphanedLeases).
                  `${target.config.databaseUrl === null ? 'as it starts' : 'once their leases end'}, as it takes over the jobs of a gateway that was killed.`,
              ]
            : []),
        ].join('\n'),
      { source: sourceName, target: target.name, copied, orphaned, runningJobs: running, seconds: Number(seconds.toFixed(3)) },
    );
  } finally {
    for (const store of stores.reverse()) await store.close();
  }
}
