import { once } from 'node:events';
import { isIP } from 'node:net';
import { closeSync, createWriteStream, existsSync, fsyncSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { getSystemErrorMap, parseArgs, type ParseArgsConfig } from 'node:util';
import { checkNewFile, createNewFile } from '../adapters/new-file.js';
import { BackupStopped } from '../adapters/sqlite/backup.js';
import { backupStore, createAuthFailureLimiter, createLimiterBackend, createStore, sqliteFilename, type StoreOptions } from '../app.js';
import { ConfigError, loadConfig, type Config } from '../config.js';
import {
  AdminService,
  checkNewKey,
  checkOverlap,
  ErasureInterrupted,
  NAME_LENGTH,
  OPERATOR_LENGTH,
  operatorDetails,
  REASON_LENGTH,
  requireName,
  type CreatedKey,
  type CreateKeyInput,
  type KeyChangeOptions,
} from '../domain/admin.js';
import { AlreadyExistsError, CommandRefusedError, ERROR_CODES, GatewayError, isGatewayError, isUnavailable, unavailableCause } from '../domain/errors.js';
import { clientNetwork } from '../domain/ip-allowlist.js';
import { PERMISSIONS } from '../domain/permissions.js';
import { EXPORT_TABLES, systemClock, type Clock, type GatewayStore } from '../domain/ports.js';
import { JOB_STATUSES, type ApiKeyRecord, type DuplicationJob, type JobFilter, type JobStatus, type Workspace } from '../domain/types.js';
import { describeFailure } from '../readiness.js';
import { Interrupted, stoppableBySignals } from './signals.js';
import { copyConfiguredStore } from './store-copy.js';
import { storeUnavailable, unavailableMessage, unavailableReason } from './store-unavailable.js';

export interface CliIo {
  env: Record<string, string | undefined>;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /**
   * Resolves once what was written to stdout has gone out (a pipe that reads slowly holds it up), rejects if any of
   * it could not be written (a full disk, a closed pipe): absent, at once.
   */
  stdoutWritten?: () => Promise<void>;
  /** Whether stdout goes nowhere (/dev/null): what is printed there is lost. Absent, it goes somewhere. */
  stdoutDiscarded?: () => boolean;
  clock?: Clock;
  /** The schema's migrations in place of this version's (see StoreOptions): tests of a CLI newer than its store. */
  migrations?: StoreOptions['migrations'];
}

/**
 * 0: done; 1: the operation failed (unknown key, invalid value, store unreachable, stdout full); 2: the
 * command line is wrong (a new secret that would go to /dev/null among it);
 * 3: done, but its output was lost (a new key's secret among it), or the command failed after changing something:
 * what was done is said on stderr;
 * 141: the reader of stdout went away (`| head -1`) before the command changed anything: it stopped without a word,
 * with the status a shell gives a process that SIGPIPE ended, as it ends Unix tools.
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, outputLost: 3, readerGone: 141 } as const;

/** How many jobs `jobs list` shows unless --limit says otherwise, and how many it reads at a time. */
const JOBS_LIMIT = 100;
const JOBS_PAGE = 500;

export const USAGE = `Usage: npm run -s cli -- <command> [options]   (-s: npm's own lines would go to stdout)
       node dist/cli/main.js <command> [options]   (a built gateway, as in a container image)

Commands:
  workspaces create <name>
  workspaces list
  workspaces delete <id or name> --confirm <the workspace's name>
                        erase the workspace and everything of it, for good
  workspaces export <id or name> [--out <file>]
                        every row of the workspace as JSON Lines, to a new file only you may read, or to stdout;
                        SIGINT or SIGTERM stops it before its next write, deleting the file (exit 130 or 143)
  keys create --workspace <id or name> --name <name> --permissions <p1,p2,...>
              [--expires-in <30d|12h|15m> | --expires-at <ISO 8601 time>] [--allow-ip <ip or CIDR,...>]
              [--key-file <new file>] [--reason <text>] [--operator <label>]
  keys list [--workspace <id or name>]
  keys revoke <key id> [--reason <text>] [--operator <label>]
  keys rotate <key id> [--overlap <0|1h|7d|...>] [--key-file <new file>] [--reason <text>] [--operator <label>]
  clients unblock <address>
                        lift the block of a client that failed to authenticate too often (Redis or PostgreSQL limits)
  store backup <file>   copy the embedded store as it is while the gateway runs (PostgreSQL: use pg_dump); SIGINT or
                        SIGTERM discards the copy once it is written (exit 130 or 143)
  store copy --to <PostgreSQL URL, a file holding it, or a directory>
                        copy every row of the stopped store into an empty PostgreSQL database (or DATA_DIR),
                        migrated first, and count both (README, "Moving to PostgreSQL"); SIGINT or SIGTERM
                        stops it after the page being written (or the table being counted), saying how to start again (exit 130 or 143)
  jobs list [--workspace <id or name>] [--key <key id>] [--status PENDING|RUNNING|SUCCEEDED|FAILED]
            [--since <ISO 8601 time>] [--limit <n, default ${JOBS_LIMIT}>]
                        duplication jobs, newest first
  jobs fail <job id>... --reason <text> [--operator <label>] --confirm
                        fail jobs no worker holds (PENDING, or RUNNING past their lease) with error CANCELLED,
                        for good: after a restore, those the upstream already has (see "After a restore")
  jobs fail --key <key id> --reason <text> [--operator <label>] --confirm
                        the same, for every job of a key no worker holds: a leaked key's (see "A key has leaked")

Options:
  --json    print JSON instead of text; errors as {"error":{"code":"…","message":"…"}} on stderr
  --help    show this help
  --version show this version
  --key-file <new file>  (keys create, keys rotate) the new secret into a new file only you may read, not to
            stdout: for automation, keeping secrets out of logs

Times (--expires-at, --since) are ISO 8601 with Z or an offset: 2027-01-31T00:00:00Z, 2027-01-31T09:00:00+09:00 (or +0900).
Permissions: ${PERMISSIONS.join(', ')}
Workspace and key names are 1 to ${NAME_LENGTH} characters on one line, without invisible characters (a zero-width
space) or letters of two of Latin, Cyrillic and Greek (Аcme with a Cyrillic А); a workspace name that differs from another's only in case, accents or width (Acme, ACME, Acmé, Ａcme) is refused.
Key events record --reason (up to ${REASON_LENGTH} characters) and --operator, who you say you are (up to ${OPERATOR_LENGTH}
characters; default: GATEWAY_OPERATOR), each one line and never a key, for the workspace's customers to read.
Uses the same configuration as the gateway (DATA_DIR, DATABASE_URL; REDIS_URL for clients unblock). Never upgrades a store: on one an older
version left, every command but 'store backup' refuses until this version's gateway has started on it.
Exit codes: 0 done, 1 the operation failed (a full stdout among it), 2 the command line is wrong (a new
secret to stdout on /dev/null: use --key-file), 3 done but its output was lost, or it failed after changing something
(stderr says what was done: a key whose secret was lost is to be revoked), 141 the reader of stdout went away (| head).`;

/** The command line is wrong: an unknown command or option, a missing argument (exit 2). */
class UsageError extends Error {}
/** An export that a signal stopped, before the chunk it would have written next. */
class ExportStopped extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(signal);
  }
}
/** A known option has a value it cannot take (exit 1, as a value the store refuses). */
class InvalidValue extends Error {}
/** The command did what it was asked, but what it had to print could not be written, or it stopped after a change (exit 3). */
class OutputLost extends Error {}
/** The command printed what it did, and some of what it was asked it refused to do (exit 1). */
class Refused extends Error {}
/** What the command had to print could not be written, and it changed nothing (exit 1). */
class StdoutFailed extends Error {}
/** The reader of stdout went away (EPIPE) before anything was changed: the command stops without a word (exit 141). */
class ReaderGone extends Error {}

const DURATION = /^(\d+)([smhdw])$/;
const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3600_000, d: 86_400_000, w: 7 * 86_400_000 };

/** The longest duration an option takes: past it, an expiry or an overlap means "never", which is said otherwise. */
const LONGEST_DURATION_DAYS = 36_500;

/** `90s`, `15m`, `12h`, `30d`, `2w` → milliseconds; `0` needs no unit. */
function parseDuration(option: string, text: string): number {
  if (text.trim() === '0') return 0;
  const match = DURATION.exec(text.trim());
  if (!match) throw new InvalidValue(`--${option} must be a number followed by s, m, h, d or w (like 30d), got '${text}'`);
  const ms = Number(match[1]) * UNIT_MS[match[2]];
  if (ms > LONGEST_DURATION_DAYS * UNIT_MS.d) throw new InvalidValue(`--${option} must be at most ${LONGEST_DURATION_DAYS}d (100 years), got '${text}'`);
  return ms;
}

const INSTANT = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(?:Z|([+-])(\d{2}):?(\d{2}))$/;

/**
 * An ISO 8601 time with its offset: one without would be read in the runner's time zone, which a CI machine and
 * an operator's laptop do not share. A date or time that does not exist (February 30th, 24:00) is refused, not
 * rolled over into the next month. Any fraction of a second is taken (Python's isoformat gives microseconds), to
 * the millisecond, and an offset with or without its colon (+09:00, +0900).
 */
function parseInstant(option: string, text: string): Date {
  const match = INSTANT.exec(text);
  const [year, month, day, hour, minute, second = '0', fraction = '', sign = '+', offsetHours = '0', offsetMinutes = '0'] = (match ?? []).slice(1);
  const calendar = new Date(Date.UTC(Number(year), Number(month) - 1, Number(day)));
  const exists =
    match !== null &&
    calendar.getUTCFullYear() === Number(year) &&
    calendar.getUTCMonth() === Number(month) - 1 &&
    calendar.getUTCDate() === Number(day) &&
    Number(hour) < 24 &&
    Number(minute) < 60 &&
    Number(second) < 60 &&
    Number(offsetHours) < 24 &&
    Number(offsetMinutes) < 60;
  if (!exists) {
    throw new InvalidValue(`--${option} must be an ISO 8601 time with Z or an offset, like 2027-01-31T00:00:00Z, got '${text}'`);
  }
  const offsetMs = (sign === '-' ? -1 : 1) * (Number(offsetHours) * 60 + Number(offsetMinutes)) * 60_000;
  const ms = Number(fraction.slice(0, 3).padEnd(3, '0'));
  return new Date(Date.UTC(Number(year), Number(month) - 1, Number(day), Number(hour), Number(minute), Number(second), ms) - offsetMs);
}

const list = (text: string | undefined): string[] =>
  (text ?? '')
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0);

type Options = NonNullable<ParseArgsConfig['options']>;
const COMMON: Options = { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } };
/** What the key commands let an operator say in the event they write. */
const SAID: Options = { reason: { type: 'string' }, operator: { type: 'string' } };

/**
 * parseArgs' refusal in the CLI's words: its own messages run on into advice about `--` that quotes the option
 * unevenly, and would be followed by ours.
 */
function usageError(error: unknown): UsageError {
  const { code, message } = error as { code?: string; message?: string };
  // An option with a short form is quoted as both ('-h, --help'): the long one names it.
  const option = /'(?:-[^-' ], )?(-[^' ,]+)/.exec(message ?? '')?.[1];
  if (option && code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return new UsageError(`unknown option ${option}`);
  if (option && code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    if (/argument missing/.test(message ?? '')) return new UsageError(`option ${option} needs a value`);
    // "Ambiguous": an option follows where the value should be (`--name --permissions x`), or a value starts with a dash.
    if (/ambiguous/.test(message ?? '')) return new UsageError(`option ${option} needs a value (one starting with a dash is written ${option}=-…)`);
    return new UsageError(`option ${option} takes no value`);
  }
  return new UsageError(message ?? String(error));
}

/** How many arguments a command takes: a number, one or more ('some'), or any number, which its check sees to ('any'). */
type Positionals = number | 'some' | 'any';

function parse(args: string[], options: Options, positionals: Positionals) {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...COMMON, ...options }, allowPositionals: true, strict: true });
  } catch (error) {
    throw usageError(error);
  }
  const count = parsed.positionals.length;
  const wrong = positionals === 'some' ? count === 0 : positionals !== 'any' && count !== positionals;
  if (!parsed.values.help && wrong) {
    throw new UsageError(positionals === 0 ? `unexpected argument '${parsed.positionals[0]}'` : 'wrong number of arguments');
  }
  return parsed as { values: Record<string, string | boolean | undefined>; positionals: string[] };
}

const iso = (date: Date | null): string => (date ? date.toISOString() : '-');

function keyStatus(key: ApiKeyRecord, now: Date): string {
  if (key.revokedAt) return 'revoked';
  if (key.expiresAt && key.expiresAt <= now) return 'expired';
  return 'active';
}

const GRAPHEMES = new Intl.Segmenter();
// Drawn two columns wide by terminals: East Asian wide and fullwidth characters, and emoji shown as emoji.
const WIDE = /[\u1100-\u115F\u2E80-\uA4CF\uAC00-\uD7A3\uF900-\uFAFF\uFE30-\uFE4F\uFF00-\uFF60\uFFE0-\uFFE6\u{20000}-\u{3FFFD}\p{Emoji_Presentation}]|\p{Extended_Pictographic}\uFE0F/u;
// Drawn as nothing on their own: marks on the character before them, controls, characters Unicode says to ignore.
const ZERO_WIDTH = /^[\p{M}\p{Cc}\p{Cf}\p{Default_Ignorable_Code_Point}]*$/u;

// Printable ASCII: one column per character, so no grapheme needs finding (ids, times and most names are).
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/** The columns a terminal draws text in, a character as a user sees it (a grapheme) at a time: names are in any script. */
function displayWidth(text: string): number {
  if (PRINTABLE_ASCII.test(text)) return text.length;
  let width = 0;
  for (const { segment } of GRAPHEMES.segment(text)) width += ZERO_WIDTH.test(segment) ? 0 : WIDE.test(segment) ? 2 : 1;
  return width;
}

function table(rows: string[][]): string {
  const cellWidths = rows.map((row) => row.map(displayWidth));
  // Not Math.max(...widths): spread arguments overflow the stack past about 120,000 rows.
  const widths = rows[0].map((_, column) => cellWidths.reduce((widest, row) => Math.max(widest, row[column]), 0));
  return rows.map((row, index) => row.map((cell, column) => cell + ' '.repeat(widths[column] - cellWidths[index][column])).join('  ').trimEnd()).join('\n');
}

const keyJson = (key: ApiKeyRecord, workspaces: Map<string, Workspace>, now: Date) => ({
  id: key.id,
  name: key.name,
  workspace: { id: key.workspaceId, name: workspaces.get(key.workspaceId)?.name ?? null },
  permissions: key.permissions,
  prefix: key.prefix,
  status: keyStatus(key, now),
  allowedCidrs: key.allowedCidrs,
  createdAt: key.createdAt.toISOString(),
  lastUsedAt: key.lastUsedAt?.toISOString() ?? null,
  expiresAt: key.expiresAt?.toISOString() ?? null,
  revokedAt: key.revokedAt?.toISOString() ?? null,
  previousSecretValidUntil: key.previousHash ? (key.previousHashExpiresAt?.toISOString() ?? null) : null,
});

/** This version, as package.json gives it: two directories up from this file, in src/cli and in dist/cli alike. */
const version = (): string => JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;

/**
 * Creates or rotates a key (`change`), with --key-file its secret going into a new file (createNewFile) made before
 * the change, so that a path that cannot be one changes nothing. Once the key is changed, a secret that could not be
 * written, to the file or later to stdout, leaves a key no one has: exit 3, saying to revoke it.
 */
async function changeKey<T extends CreatedKey>(
  { values, changed }: CommandContext,
  verb: 'created' | 'rotated',
  change: () => Promise<T>,
): Promise<T & { keyFile: string | undefined }> {
  const keyFile = values['key-file'] as string | undefined;
  const fd = keyFile === undefined ? undefined : createNewFile(keyFile, '--key-file', verb);
  let changedKey: T;
  try {
    changedKey = await change();
  } catch (error) {
    if (fd !== undefined) {
      closeSync(fd);
      rmSync(keyFile!, { force: true });
    }
    throw error;
  }
  const { id } = changedKey.record;
  const lost = (why: string) => `key ${id} was ${verb} but its ${verb === 'rotated' ? 'new ' : ''}secret could not be written (${why}): revoke it (keys revoke ${id})`;
  changed(lost);
  if (fd !== undefined) {
    try {
      writeSync(fd, `${changedKey.key}\n`);
      fsyncSync(fd);
    } catch (error) {
      rmSync(keyFile!, { force: true });
      throw new OutputLost(lost(`${keyFile}: ${error instanceof Error ? error.message : String(error)}`));
    } finally {
      closeSync(fd);
    }
    // The secret is safe in the file: output lost now loses nothing to revoke.
    changed((why) => `key ${id} was ${verb}, its ${verb === 'rotated' ? 'new ' : ''}secret is in ${keyFile}, but the output could not be written (${why})`);
  }
  return { ...changedKey, keyFile };
}

/** Where a new secret is: in the output, or in the --key-file named. */
const secretLines = (key: string, keyFile: string | undefined, what: string): string[] =>
  keyFile === undefined
    ? [`${what} is shown only once; store it now:`, '', `  ${key}`]
    : [`${what} is in ${keyFile}, which only you may read: it is not shown anywhere else.`];

const secretJson = (key: string, keyFile: string | undefined) => (keyFile === undefined ? { key } : { keyFile });

/**
 * Refuses, before any key is changed, a new secret that would be printed to nowhere: stdout on /dev/null (`> /dev/null`,
 * or closed at start, which Node opens on /dev/null) would take it and the command would succeed, leaving a key no
 * one has.
 */
function checkSecretDestination(values: Record<string, string | boolean | undefined>, io: CliIo, verb: 'created' | 'rotated'): void {
  const keyFile = values['key-file'];
  if (typeof keyFile === 'string') {
    checkNewFile(keyFile, '--key-file', verb);
    return;
  }
  if (io.stdoutDiscarded?.()) {
    throw new UsageError(`stdout is /dev/null (or was closed), where the new secret would be lost: give --key-file <new file>, or send stdout where it can be read; nothing was ${verb}`);
  }
}

/** `keys create`'s values as the key is made of them, but its workspace's look-up. */
function newKey(values: Record<string, string | boolean | undefined>, now: Date, said: KeyChangeOptions): CreateKeyInput {
  let expiresAt: Date | null = null;
  if (typeof values['expires-in'] === 'string') {
    const ms = parseDuration('expires-in', values['expires-in']);
    if (ms === 0) throw new InvalidValue('--expires-in must be longer than 0');
    expiresAt = new Date(now.getTime() + ms);
  }
  if (typeof values['expires-at'] === 'string') expiresAt = parseInstant('expires-at', values['expires-at']);
  return {
    workspace: values.workspace as string,
    name: values.name as string,
    permissions: list(values.permissions as string),
    expiresAt,
    allowedCidrs: values['allow-ip'] === undefined ? null : list(values['allow-ip'] as string),
    ...said,
  };
}

/** `keys rotate --overlap`, in milliseconds: none unless given. */
const overlap = (values: Record<string, string | boolean | undefined>): number =>
  typeof values.overlap === 'string' ? parseDuration('overlap', values.overlap) : 0;

/** The client `clients unblock` names: an address, or an IPv6 client's /64 as the gateway's warning names it. */
function blockedClient(argument: string): string {
  // Any address in the /64, or the network itself, lifts it.
  const address = argument.replace(/\/64$/, '');
  if (isIP(address) === 0) {
    throw new InvalidValue(`'${argument}' is no IP address: give the client the gateway's warning names, such as 203.0.113.7 or 2001:db8::/64`);
  }
  return clientNetwork(address);
}

/** Runs one CLI command against the configured store. Never throws: errors become one line and an exit code. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const clock = io.clock ?? systemClock;
  // --json before the command is --json after it: `cli --json keys list` is how some scripts put it.
  const leading = argv.findIndex((word) => word !== '--json');
  const words = leading <= 0 ? argv : [...argv.slice(leading), ...argv.slice(0, leading)];
  const [group, action, ...rest] = leading === -1 ? [] : words;
  const json = argv.includes('--json');
  const isHelp = (word: string | undefined) => word === 'help' || word === '--help' || word === '-h';
  if (group === undefined) {
    io.stderr(`${USAGE}\n`);
    return EXIT.usage;
  }
  let store: GatewayStore | undefined;
  // What was done, for the line that says so if the output is then lost; unset until the command changed something.
  let done: ((why: string) => string) | undefined;
  /** Prints what needs no store, and waits for it to be written. */
  const printOnly = async (text: string) => {
    io.stdout(`${text}\n`);
    await written(io, undefined);
    return EXIT.ok;
  };
  try {
    // `keys --help` asks for help as much as `--help` does.
    if (isHelp(group) || isHelp(action)) return await printOnly(USAGE);
    if (group === '--version') return await printOnly(json ? JSON.stringify({ version: version() }) : version());
    // Only the words of the command: an option after one word is not part of its name.
    const command = [group, action].filter((word) => word !== undefined && !word.startsWith('-')).join(' ');
    const spec = COMMANDS[command];
    if (!spec) throw new UsageError(`unknown command '${command || group}'`);
    const { values, positionals } = parse(rest, spec.options, spec.positionals);
    if (values.help) return await printOnly(USAGE);
    const said: KeyChangeOptions = {
      reason: values.reason as string | undefined,
      // An empty variable is one unset, as a shell's `GATEWAY_OPERATOR= npm run cli …` means it.
      operator: (values.operator as string | undefined) ?? (io.env.GATEWAY_OPERATOR || undefined),
    };
    const now = clock.now();
    // Before the store is opened: a wrong command line (exit 2), or a value no store would take (exit 1), is
    // answered the same whether or not the store can be reached.
    spec.check?.(values, positionals, { said, now, io });
    if ('reason' in spec.options) operatorDetails(said);
    const config = loadConfig(io.env);
    const filename = sqliteFilename(config);
    const newStore = filename !== null && !existsSync(filename);
    // A mistyped DATA_DIR would otherwise get a store of its own, whose keys the gateway never sees.
    if (newStore && !spec.mayCreateStore) {
      throw new GatewayError('NOT_FOUND', `there is no store at ${filename}: check DATA_DIR, or start the gateway (or run 'workspaces create') to make one`);
    }
    const print = (text: string | (() => string), json: unknown) =>
      io.stdout(`${values.json ? JSON.stringify(json, null, 2) : typeof text === 'function' ? text() : text}\n`);
    const changed = (what: (why: string) => string) => {
      done = what;
    };
    const context = { values, positionals, print, now, config, said, io, changed };
    if (spec.run) {
      // Upgrading a store is its gateway's: an older one may still be running on it, and the README has a
      // backup taken first, which must restore under that older version.
      store = await createStore(config, { olderSchema: 'refuse', migrations: io.migrations }).catch((error: unknown) => {
        throw storeUnavailable(error) ?? error;
      });
      await spec.run({ ...context, admin: new AdminService(store, clock), store });
    } else {
      await spec.runWithoutStore(context);
    }
    // Whatever the output: a script reading JSON on stdout still learns that it made a store.
    if (newStore) io.stderr(`(A new store was made at ${filename}.)\n`);
    await written(io, done);
    return EXIT.ok;
  } catch (caught) {
    if (caught instanceof ReaderGone) return EXIT.readerGone;
    // A failure once something was changed must not read as one that changed nothing: run again, it would change it twice.
    const error = done && !(caught instanceof OutputLost) && !(caught instanceof Refused) ? new OutputLost(done(`it stopped: ${failure(caught).message}`)) : caught;
    const { exit, code, message } = failure(error);
    if (json) io.stderr(`${JSON.stringify({ error: { code, message } })}\n`);
    else io.stderr(`campaign-gateway: ${message}${exit === EXIT.usage ? ' (see --help)' : ''}\n`);
    return exit;
  } finally {
    await store?.close();
  }
}

/**
 * Waits for stdout to take what the command printed. If it could not (a full disk, a reader that went away), a
 * command that changed something says what it did on stderr (exit 3): run again, it would do it twice. A reader that
 * went away from a command that changed nothing is no failure to report (`| head -1`): ReaderGone.
 */
async function written(io: CliIo, done: ((why: string) => string) | undefined): Promise<void> {
  try {
    await io.stdoutWritten?.();
  } catch (error) {
    const why = writeFailure(error);
    if (done) throw new OutputLost(done(why));
    if ((error as NodeJS.ErrnoException).code === 'EPIPE') throw new ReaderGone(why);
    throw new StdoutFailed(`the output could not be written (${why})`);
  }
}

/**
 * Why a write failed, as its errno and what that means (`EPIPE: broken pipe`): a pipe's error says only `write EPIPE`,
 * a file's adds the call (`ENOSPC: no space left on device, write`).
 */
function writeFailure(error: unknown): string {
  const { code, errno } = error as NodeJS.ErrnoException;
  const meaning = typeof errno === 'number' ? getSystemErrorMap().get(errno)?.[1] : undefined;
  if (typeof code === 'string' && meaning !== undefined) return `${code}: ${meaning}`;
  return error instanceof Error ? error.message : String(error);
}

/**
 * An erasure that failed after its first step, in words that never say nothing was changed (the store's busy wait
 * does, for the commands it rolls back whole): what stopped it, what is left, and that the same command finishes it.
 * Its code stays the failure's (UNAVAILABLE for a store busy or unreachable).
 */
function interruptedErasure(error: ErasureInterrupted): Error {
  const { cause } = error;
  const why = isUnavailable(cause) ? unavailableReason(cause) : failure(cause).message;
  const message = `${error.message} (${why}): the workspace is still listed, with no key, no job that can run and fewer rows; run the same command again and it finishes the erasure`;
  return isGatewayError(cause) ? new GatewayError(cause.code, message, { cause }) : new Error(message, { cause });
}

/** The exit code, the code a script reads under --json, and the line a person reads. */
function failure(error: unknown): { exit: number; code: string; message: string } {
  if (error instanceof UsageError) return { exit: EXIT.usage, code: 'USAGE', message: error.message };
  if (error instanceof OutputLost) return { exit: EXIT.outputLost, code: 'OUTPUT_LOST', message: error.message };
  if (error instanceof Interrupted) return { exit: error.exit, code: 'INTERRUPTED', message: error.message };
  if (error instanceof InvalidValue) return { exit: EXIT.failed, code: 'BAD_USER_INPUT', message: error.message };
  if (error instanceof ConfigError) return { exit: EXIT.failed, code: 'CONFIGURATION', message: error.message };
  if (isUnavailable(error)) {
    // The gateway's words when it has its own (storeUnavailable), else words for the cause.
    const message = error.message !== ERROR_CODES.UNAVAILABLE.message ? error.message : unavailableMessage(error);
    return { exit: EXIT.failed, code: 'UNAVAILABLE', message };
  }
  if (error instanceof AlreadyExistsError) return { exit: EXIT.failed, code: 'ALREADY_EXISTS', message: error.message };
  if (isGatewayError(error)) return { exit: EXIT.failed, code: error.code, message: error.message };
  return { exit: EXIT.failed, code: 'FAILED', message: error instanceof Error ? error.message : String(error) };
}

interface CommandContext {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
  /** Prints `json` under --json, the text otherwise; a function is asked for its text only when it is printed. */
  print: (text: string | (() => string), json: unknown) => void;
  now: Date;
  config: Config;
  /** --reason and --operator (or GATEWAY_OPERATOR), for the key commands that take them. */
  said: KeyChangeOptions;
  io: CliIo;
  /** Says, once the change is made, what was done, in the words stderr gives it should the output then be lost. */
  changed: (what: (why: string) => string) => void;
}

interface CommandOptions {
  options: Options;
  positionals: Positionals;
  /** Whether the command may start a deployment: the others refuse to work on a store that does not exist yet. */
  mayCreateStore?: boolean;
  /**
   * Refuses a command line the command cannot run, before the store is opened (UsageError, InvalidValue, a
   * GatewayError BAD_USER_INPUT): every value that can be checked without the store is checked here.
   */
  check?(values: Record<string, string | boolean | undefined>, positionals: string[], context: Pick<CommandContext, 'said' | 'now' | 'io'>): void;
}

/** A command works on the store opened at this version's schema, or on the configured store as it is, unopened. */
type Command = CommandOptions &
  (
    | { run(context: CommandContext & { admin: AdminService; store: GatewayStore }): Promise<void>; runWithoutStore?: never }
    | { runWithoutStore(context: CommandContext): Promise<void>; run?: never }
  );

const COMMANDS: Record<string, Command> = {
  'workspaces create': {
    options: {},
    positionals: 1,
    mayCreateStore: true,
    check(_values, positionals) {
      requireName('workspace', positionals[0]);
    },
    async run({ admin, positionals, print, changed }) {
      const workspace = await admin.createWorkspace(positionals[0]);
      changed((why) => `workspace '${workspace.name}' was created (id ${workspace.id}) but the output could not be written (${why})`);
      print(`Created workspace "${workspace.name}" (id ${workspace.id}).`, {
        id: workspace.id,
        name: workspace.name,
        createdAt: workspace.createdAt.toISOString(),
      });
    },
  },

  'workspaces list': {
    options: {},
    positionals: 0,
    async run({ admin, print }) {
      const workspaces = await admin.listWorkspaces();
      print(
        () =>
          workspaces.length === 0
            ? 'No workspaces yet: npm run -s cli -- workspaces create <name>'
            : table([['ID', 'NAME', 'CREATED'], ...workspaces.map((w) => [w.id, w.name, iso(w.createdAt)])]),
        workspaces.map((w) => ({ id: w.id, name: w.name, createdAt: w.createdAt.toISOString() })),
      );
    },
  },

  'workspaces delete': {
    options: { confirm: { type: 'string' } },
    positionals: 1,
    check(values) {
      if (typeof values.confirm !== 'string') throw new UsageError("--confirm <the workspace's name> is required");
    },
    async run({ admin, values, positionals, print, changed }) {
      const { workspace, rows } = await admin.deleteWorkspace(positionals[0], values.confirm as string).catch((error: unknown) => {
        throw error instanceof ErasureInterrupted ? interruptedErasure(error) : error;
      });
      changed((why) => `workspace '${workspace.name}' (id ${workspace.id}) was deleted but the output could not be written (${why})`);
      print(
        () =>
          [
            `Deleted workspace "${workspace.name}" (id ${workspace.id}) and every row of it. Rows deleted:`,
            table(Object.entries(rows).map(([name, count]) => [`  ${name}`, String(count)])),
          ].join('\n'),
        { id: workspace.id, name: workspace.name, deleted: rows },
      );
    },
  },

  'workspaces export': {
    options: { out: { type: 'string' } },
    positionals: 1,
    check(values) {
      if (typeof values.out === 'string') checkNewFile(values.out, 'an export', 'exported');
    },
    async run({ admin, values, positionals, print, io }) {
      const { workspace, lines } = await admin.exportWorkspace(positionals[0]);
      const out = values.out as string | undefined;
      const sink = out === undefined ? stdoutSink(io) : fileSink(out);
      const rows: Record<string, number> = Object.fromEntries(EXPORT_TABLES.map((table) => [table, 0]));
      // Counted once written: a chunk that failed is no rows of the export.
      let rowsWritten = 0;
      try {
        await stoppableBySignals(io.stderr, 'the rows being written', async ({ stopped }) => {
          let chunk = '';
          let chunkRows = 0;
          const write = async () => {
            const signal = stopped();
            if (signal !== undefined) throw new ExportStopped(signal);
            await sink.write(chunk);
            rowsWritten += chunkRows;
            chunk = '';
            chunkRows = 0;
          };
          for await (const line of lines) {
            rows[line.table] += 1;
            chunk += `${JSON.stringify(line)}\n`;
            chunkRows += 1;
            if (chunk.length >= 65_536) await write();
          }
          await write();
          await sink.end();
        });
      } catch (error) {
        sink.abort();
        if (error instanceof ReaderGone) throw error;
        const left = out === undefined ? 'the rows on stdout are not the whole workspace' : `${out} was deleted`;
        if (error instanceof ExportStopped) throw new Interrupted(`the export stopped on ${error.signal} after ${rowsWritten} rows and ${left}`, error.signal);
        const why = error instanceof Error ? error.message : String(error);
        // Said first when it is stdout that failed: the one line names it, as every other command's does.
        if (error instanceof StdoutFailed) throw new Error(`${why}: the export stopped after ${rowsWritten} rows and ${left}`);
        throw new Error(`the export stopped after ${rowsWritten} rows and ${left}: ${why}`);
      }
      const text = () =>
        [
          `Exported workspace "${workspace.name}" (id ${workspace.id})${out === undefined ? '' : ` to ${out}`}. Rows exported:`,
          table(Object.entries(rows).map(([name, count]) => [`  ${name}`, String(count)])),
        ].join('\n');
      const json = { id: workspace.id, name: workspace.name, ...(out === undefined ? {} : { file: out }), exported: rows };
      // On stdout the rows alone, so that it can be read as JSON Lines: the summary goes to stderr.
      if (out === undefined) io.stderr(`${values.json ? JSON.stringify(json, null, 2) : text()}\n`);
      else print(text, json);
    },
  },

  'keys create': {
    options: {
      workspace: { type: 'string' },
      name: { type: 'string' },
      permissions: { type: 'string' },
      'expires-in': { type: 'string' },
      'expires-at': { type: 'string' },
      'allow-ip': { type: 'string' },
      'key-file': { type: 'string' },
      ...SAID,
    },
    positionals: 0,
    check(values, _positionals, { said, now, io }) {
      for (const required of ['workspace', 'name', 'permissions']) {
        if (typeof values[required] !== 'string') throw new UsageError(`--${required} is required`);
      }
      if (values['expires-in'] !== undefined && values['expires-at'] !== undefined) {
        throw new UsageError('give --expires-in or --expires-at, not both');
      }
      // An empty templated variable must not open a key to every address.
      if (values['allow-ip'] !== undefined && list(values['allow-ip'] as string).length === 0) {
        throw new InvalidValue('--allow-ip has no address: leave the option out to allow any address');
      }
      checkNewKey(newKey(values, now, said), now);
      checkSecretDestination(values, io, 'created');
    },
    async run(context) {
      const { admin, values, now, said } = context;
      const { key, record, workspace, keyFile } = await changeKey(context, 'created', () => admin.createKey(newKey(values, now, said)));
      context.print(
        [
          `Created key "${record.name}" (id ${record.id}) in workspace "${workspace.name}".`,
          `Permissions: ${record.permissions.join(', ')}`,
          `Expires:     ${record.expiresAt ? record.expiresAt.toISOString() : 'never'}`,
          `Allowed IPs: ${record.allowedCidrs ? record.allowedCidrs.join(', ') : 'any'}`,
          '',
          ...secretLines(key, keyFile, 'This key'),
        ].join('\n'),
        { ...secretJson(key, keyFile), ...keyJson(record, new Map([[workspace.id, workspace]]), now) },
      );
    },
  },

  'keys list': {
    options: { workspace: { type: 'string' } },
    positionals: 0,
    async run({ admin, values, print, now }) {
      const only = values.workspace === undefined ? undefined : await admin.requireWorkspace(values.workspace as string);
      const keys = await admin.listKeys(only);
      // One workspace's keys need only that workspace's name.
      const named = only === undefined ? await admin.listWorkspaces() : [only];
      const workspaces = new Map(named.map((w) => [w.id, w]));
      const rows = () => keys.map((key) => [
        key.id,
        key.name,
        workspaces.get(key.workspaceId)?.name ?? key.workspaceId,
        key.permissions.join(','),
        `${key.prefix}…`,
        keyStatus(key, now),
        iso(key.createdAt),
        iso(key.lastUsedAt),
        iso(key.expiresAt),
        iso(key.revokedAt),
        key.allowedCidrs?.join(',') ?? 'any',
      ]);
      print(
        () =>
          keys.length === 0
            ? 'No keys.'
            : table([['ID', 'NAME', 'WORKSPACE', 'PERMISSIONS', 'KEY', 'STATUS', 'CREATED', 'LAST USED', 'EXPIRES', 'REVOKED', 'ALLOWED IPS'], ...rows()]),
        keys.map((key) => keyJson(key, workspaces, now)),
      );
    },
  },

  'keys revoke': {
    options: SAID,
    positionals: 1,
    async run({ admin, positionals, print, now, said, changed, io, values }) {
      const { record, alreadyRevoked } = await admin.revokeKey(positionals[0], said);
      changed((why) => `key ${record.id} is revoked but the output could not be written (${why})`);
      // Revoking fails none of them: a retired integration's accepted work is still to be done.
      const { pending, running } = await admin.countKeyJobs(record);
      const failCommand = `npm run -s cli -- jobs fail --key ${record.id} --reason '<why>' --confirm`;
      print(
        alreadyRevoked
          ? `Key "${record.name}" (id ${record.id}) was already revoked at ${iso(record.revokedAt)}.`
          : `Revoked key "${record.name}" (id ${record.id}); requests with it are refused from now on.`,
        { id: record.id, name: record.name, revokedAt: iso(record.revokedAt), alreadyRevoked, status: keyStatus(record, now), jobs: { pending, running, failCommand } },
      );
      // On stderr, so that stdout stays the one line scripts read.
      if (!values.json && pending + running > 0) {
        io.stderr(
          `Its jobs still run: ${pending} PENDING, ${running} RUNNING (jobs list --key ${record.id}). ` +
            `To fail those no worker holds, for good: ${failCommand}\n`,
        );
      }
    },
  },

  'keys rotate': {
    options: { overlap: { type: 'string' }, 'key-file': { type: 'string' }, ...SAID },
    positionals: 1,
    check(values, _positionals, { io }) {
      checkOverlap(overlap(values));
      checkSecretDestination(values, io, 'rotated');
    },
    async run(context) {
      const { admin, values, positionals, said, now } = context;
      const overlapMs = overlap(values);
      const { key, record, workspace, keyFile, previousValidUntil, cutShortUntil } = await changeKey(context, 'rotated', () =>
        admin.rotateKey(positionals[0], overlapMs, said),
      );
      context.print(
        [
          `Rotated key "${record.name}" (id ${record.id}).`,
          previousValidUntil
            ? `The previous secret stays valid until ${previousValidUntil.toISOString()}.`
            : 'The previous secret no longer works.',
          ...(cutShortUntil
            ? [`The secret replaced before it, which was to stay valid until ${cutShortUntil.toISOString()}, no longer works: a key keeps one earlier secret.`]
            : []),
          '',
          ...secretLines(key, keyFile, 'The new key'),
        ].join('\n'),
        {
          ...secretJson(key, keyFile),
          ...keyJson(record, new Map([[workspace.id, workspace]]), now),
          previousSecretValidUntil: previousValidUntil?.toISOString() ?? null,
          earlierSecretWasValidUntil: cutShortUntil?.toISOString() ?? null,
        },
      );
    },
  },

  'clients unblock': {
    options: {},
    positionals: 1,
    check(_values, positionals) {
      blockedClient(positionals[0]);
    },
    async run({ store, config, positionals, print }) {
      const client = blockedClient(positionals[0]);
      const limiters = await createLimiterBackend(config, store);
      try {
        if (limiters.kind === 'memory') {
          throw new Error(
            'each gateway keeps its failed authentications in its own memory (no REDIS_URL, no DATABASE_URL), which this command cannot ' +
              "reach: restart the gateway to lift every block, or wait for the block to end (AUTH_FAILURE_BLOCK_SECONDS)",
          );
        }
        await limiters.connect();
        const lifted = await createAuthFailureLimiter(config, limiters, true)
          .unblock(client)
          .catch((error: unknown) => {
            const where = limiters.kind === 'redis' ? 'the Redis in REDIS_URL' : 'the database in DATABASE_URL';
            const cause = unavailableCause(error) ?? error;
            if (cause instanceof CommandRefusedError) throw new Error(`${where} refuses it (${describeFailure(error)}): nothing was unblocked`);
            // The operator's own terminal: the driver's words, which /readyz keeps to itself, say what to fix.
            const why = cause instanceof Error ? cause.message : describeFailure(error);
            throw new GatewayError('UNAVAILABLE', `${where} cannot be reached (${why}): nothing was unblocked; try again`);
          });
        print(
          lifted
            ? `Lifted the block of ${client} and forgot its failed authentications, on every instance sharing ${limiters.kind === 'redis' ? 'this Redis' : 'this database'}.`
            : `${client} was not blocked and had no failed authentications counted.`,
          { client, unblocked: lifted, backend: limiters.kind },
        );
      } finally {
        await limiters.close();
      }
    },
  },

  'store backup': {
    options: {},
    positionals: 1,
    check(_values, [destination]) {
      checkNewFile(destination, 'a backup', 'backed up');
    },
    async runWithoutStore({ config, positionals, print, io }) {
      const [destination] = positionals;
      const { file } = await stoppableBySignals(io.stderr, 'the copy being written', async ({ stopped }) => {
        try {
          return await backupStore(config, destination, () => stopped() !== undefined);
        } catch (error) {
          const signal = stopped();
          if (error instanceof BackupStopped && signal !== undefined) throw new Interrupted(`the backup stopped on ${signal}: nothing was written to ${destination}`, signal);
          throw error;
        }
      });
      const { size } = statSync(destination);
      print(
        `Backed up the store to ${destination} (${size} bytes). To restore it, stop every gateway, delete ${file}-wal and ` +
          `${file}-shm (either may be missing), put the copy in place of ${file} and chown it to the gateway's user, then ` +
          'follow "After a restore" in the README before the gateways send jobs again: the jobs, keys and idempotency ' +
          'keys of the store go back to the time of this backup.',
        { file: destination, bytes: size },
      );
    },
  },

  'store copy': {
    options: { to: { type: 'string' } },
    positionals: 0,
    check(values) {
      if (typeof values.to !== 'string') throw new UsageError('--to <PostgreSQL URL, a file holding it, or a directory> is required');
      // An empty templated variable: refused as empty, whether or not the store can be reached.
      if (values.to.trim() === '') throw new InvalidValue('--to names nothing: give a postgres:// URL, a file holding one, or a DATA_DIR');
    },
    async runWithoutStore({ config, values, print, io, changed }) {
      // The summary is printed once every row is copied and counted.
      const summary: typeof print = (text, json) => {
        changed((why) => `the store was copied, and its counts checked, but the summary could not be written (${why})`);
        print(text, json);
      };
      await copyConfiguredStore(config, values.to as string, { stderr: io.stderr, print: summary, migrations: io.migrations, table });
    },
  },

  ...jobCommands(),
};

/** `jobs list`'s --status, --limit and --since, refused when invalid. */
function jobsWanted(values: Record<string, string | boolean | undefined>): { status: JobStatus | undefined; limit: number; createdSince: Date | undefined } {
  const status = values.status as string | undefined;
  if (status !== undefined && !(JOB_STATUSES as readonly string[]).includes(status)) {
    throw new InvalidValue(`--status must be one of ${JOB_STATUSES.join(', ')}, got '${status}'`);
  }
  const limit = values.limit === undefined ? JOBS_LIMIT : Number(values.limit);
  if (!/^\d+$/.test(String(values.limit ?? limit)) || !Number.isSafeInteger(limit) || limit < 1) {
    throw new InvalidValue(`--limit must be a whole number of at least 1, got '${values.limit}'`);
  }
  const createdSince = typeof values.since === 'string' ? parseInstant('since', values.since) : undefined;
  return { status: status as JobStatus | undefined, limit, createdSince };
}

/** The job commands, for an operator after a restore (README, "After a restore"). */
function jobCommands(): Record<string, Command> {
  return {
    'jobs list': {
      options: { workspace: { type: 'string' }, key: { type: 'string' }, status: { type: 'string' }, since: { type: 'string' }, limit: { type: 'string' } },
      positionals: 0,
      check(values) {
        jobsWanted(values);
      },
      async run({ admin, values, print, io }) {
        const { status, limit, createdSince } = jobsWanted(values);
        let only = values.workspace === undefined ? undefined : await admin.requireWorkspace(values.workspace as string);
        const key = values.key === undefined ? undefined : await admin.requireKey(values.key as string);
        if (key !== undefined && only !== undefined && key.workspaceId !== only.id) {
          throw new InvalidValue(`key ${key.id} is not of workspace "${only.name}": leave out --workspace`);
        }
        // A key's jobs are read among its workspace's, which an index gives in order.
        if (key !== undefined) only ??= await admin.requireWorkspace(key.workspaceId);
        const filter: JobFilter = { workspaceId: only?.id, apiKeyId: key?.id, status, createdSince };
        // A page at a time, each after the last job of the one before: no read holds every job at once.
        const jobs: DuplicationJob[] = [];
        for (;;) {
          const wanted = Math.min(limit - jobs.length, JOBS_PAGE);
          const page = await admin.listJobs(filter, wanted, jobs.at(-1)?.id ?? null);
          jobs.push(...page);
          if (page.length < wanted || jobs.length === limit) break;
        }
        // On stderr, so that a script reading stdout gets the jobs alone, yet a person sees the list is cut.
        if (jobs.length === limit && (await admin.listJobs(filter, 1, jobs.at(-1)!.id)).length > 0) {
          io.stderr(`Showing the newest ${limit === 1 ? 'job' : `${limit} jobs`}: more match, raise --limit to see them.\n`);
        }
        const workspaces = new Map((only === undefined ? await admin.listWorkspaces() : [only]).map((w) => [w.id, w]));
        print(
          () =>
            jobs.length === 0
              ? 'No jobs.'
              : table([
                  ['ID', 'WORKSPACE', 'STATUS', 'CREATED', 'ATTEMPTS', 'LEASE ENDS', 'FINISHED', 'SOURCE CAMPAIGN', 'REQUEST ID', 'ERROR'],
                  ...jobs.map((job) => [
                    job.id,
                    workspaces.get(job.workspaceId)?.name ?? job.workspaceId,
                    job.status,
                    iso(job.createdAt),
                    String(job.attempts),
                    iso(job.leaseExpiresAt),
                    iso(job.finishedAt),
                    job.sourceCampaignId,
                    job.requestId ?? '-',
                    job.error?.code ?? '-',
                  ]),
                ]),
          jobs.map((job) => jobJson(job, workspaces)),
        );
      },
    },

    'jobs fail': {
      options: { confirm: { type: 'boolean' }, key: { type: 'string' }, ...SAID },
      positionals: 'any',
      check(values, positionals) {
        if ((values.key === undefined) === (positionals.length === 0)) throw new UsageError('give job ids or --key <key id>, one or the other');
        if (values.confirm !== true) throw new UsageError('--confirm is required: a failed job is never run again');
        if (values.reason === undefined) throw new UsageError('--reason is required');
      },
      async run(context) {
        const { admin, positionals, print, said, changed, values } = context;
        if (values.key !== undefined) return failKeyJobs(context, values.key as string);
        const results: { id: string; job: DuplicationJob | null; failed: boolean }[] = [];
        for (const id of positionals) {
          const result = await admin.failJob(id, said);
          results.push(result);
          if (result.failed) {
            changed((why) => `${results.filter(({ failed }) => failed).length} of ${positionals.length} jobs were failed but the output could not be written (${why}): jobs list shows them`);
          }
        }
        const workspaces = new Map((await admin.listWorkspaces()).map((w) => [w.id, w]));
        // The lease end is the database's time on PostgreSQL: compared with this machine's clock it could tell an
        // operator to try again at once while the lease still runs.
        const line = ({ id, job, failed }: { id: string; job: DuplicationJob | null; failed: boolean }) =>
          job === null
            ? `Job ${id} was not failed: not found.`
            : failed
              ? `Failed job ${job.id} (error CANCELLED): it will not run.`
              : job.status === 'RUNNING'
                ? `Job ${job.id} was not failed: a worker holds it, its lease ends at ${iso(job.leaseExpiresAt)} (try again after it).`
                : `Job ${job.id} was not failed: it is ${job.status} already.`;
        print(
          () => results.map(line).join('\n'),
          results.map(({ id, job, failed }) => (job === null ? { id, found: false, failed } : { ...jobJson(job, workspaces), found: true, failed })),
        );
        const refused = results.filter((result) => !result.failed).length;
        if (refused > 0) throw new Refused(`${refused} of ${results.length} jobs were not failed`);
      },
    },
  };
}

/**
 * `jobs fail --key`: every job of the key no worker holds, read and failed a page at a time. What it says is counted,
 * not listed, as the jobs can be any number: `jobs list --key` lists them. The jobs a worker holds are named, and
 * refused as `jobs fail` refuses them, and so is one a worker handed back too late to be failed: it may still run.
 */
async function failKeyJobs({ admin, print, said, changed }: CommandContext & { admin: AdminService }, keyId: string): Promise<void> {
  const { record, failed, held } = await admin.failKeyJobs(keyId, said, (count) =>
    changed((why) => `${count} jobs of key ${keyId} were failed but the output could not be written (${why}): jobs list --key ${keyId} shows them`),
  );
  const workspaces = new Map([[record.workspaceId, await admin.requireWorkspace(record.workspaceId)]]);
  print(
    () =>
      [
        failed === 0
          ? `Failed no job of key "${record.name}" (id ${record.id}): none was PENDING${held.length > 0 ? '' : ' or RUNNING'}.`
          : `Failed ${failed === 1 ? '1 job' : `${failed} jobs`} of key "${record.name}" (id ${record.id}) with error CANCELLED: ${failed === 1 ? 'it' : 'they'} will not run.`,
        ...held.map((job) =>
          job.status === 'RUNNING'
            ? `Job ${job.id} was not failed: a worker holds it, its lease ends at ${iso(job.leaseExpiresAt)} (try again after it).`
            : `Job ${job.id} was not failed: a worker handed it back to the queue as this ran (try again now).`,
        ),
      ].join('\n'),
    { key: { id: record.id, name: record.name }, failed, held: held.map((job) => jobJson(job, workspaces)) },
  );
  if (held.length > 0) {
    const one = held.length === 1;
    const why = held.every((job) => job.status === 'RUNNING') ? `a worker holds ${one ? 'it' : 'them'}` : `${one ? 'it is' : 'they are'} still PENDING or RUNNING`;
    throw new Refused(`${held.length} ${one ? 'job' : 'jobs'} of key ${record.id} ${one ? 'was' : 'were'} not failed: ${why}`);
  }
}

const jobJson = (job: DuplicationJob, workspaces: Map<string, Workspace>) => ({
  id: job.id,
  workspace: { id: job.workspaceId, name: workspaces.get(job.workspaceId)?.name ?? null },
  status: job.status,
  sourceCampaignId: job.sourceCampaignId,
  name: job.name,
  channel: job.channel,
  apiKey: { id: job.apiKeyId, name: job.apiKeyName },
  /** The address of the client whose request queued the job. */
  ip: job.ip,
  requestId: job.requestId,
  attempts: job.attempts,
  createdAt: job.createdAt.toISOString(),
  runAt: job.runAt.toISOString(),
  leaseExpiresAt: job.leaseExpiresAt?.toISOString() ?? null,
  finishedAt: job.finishedAt?.toISOString() ?? null,
  error: job.error,
});

/** Where an export writes its lines: `write` resolves once the sink can take more. */
interface ExportSink {
  write(text: string): Promise<void>;
  end(): Promise<void>;
  /** After a failure: a file cut short is deleted, so that no partial export passes for a whole one. */
  abort(): void;
}

function stdoutSink(io: CliIo): ExportSink {
  return {
    async write(text) {
      io.stdout(text);
      await written(io, undefined);
    },
    async end() {},
    abort() {},
  };
}

/** A new file (createNewFile), made before the first row is read. */
function fileSink(file: string): ExportSink {
  const stream = createWriteStream('', { fd: createNewFile(file, 'an export', 'exported') });
  // A failed write also fails the next `write` or `end`, which is where it is reported.
  const failed = new Promise<never>((_, reject) => stream.once('error', reject));
  failed.catch(() => undefined);
  return {
    async write(text) {
      if (!stream.write(text)) await Promise.race([once(stream, 'drain'), failed]);
    },
    async end() {
      await Promise.race([new Promise<void>((resolve) => stream.end(resolve)), failed]);
    },
    abort() {
      stream.destroy();
      rmSync(file, { force: true });
    },
  };
}
