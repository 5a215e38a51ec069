import { setTimeout as sleep } from 'node:timers/promises';
import { AlreadyExistsError, GatewayError } from './errors.js';
import { exportLines, type ExportLine } from './export.js';
import { isGatewayId, newId } from './ids.js';
import { AllowlistError, parseAllowlist } from './ip-allowlist.js';
import { displayPrefix, generateApiKey, hashApiKey, holdsApiKey } from './keys.js';
import { isPermission, PERMISSIONS, type Permission } from './permissions.js';
import { jobEvent } from './request-events.js';
import { ERASED_IN_BATCHES, type Clock, type GatewayStore, type JobFailure, type WorkspaceDeletion } from './ports.js';
import type { ApiKeyRecord, Campaign, DuplicationJob, JobFilter, JobStatus, NewSecurityEvent, SecurityEventType, Workspace } from './types.js';
import { ACCENT, characters, composed, isReadableLine, quoted } from './validation.js';

/** The longest workspace or key name, in characters (code points). */
export const NAME_LENGTH = 100;
/** The longest reason an operator may give for a key's creation, rotation or revocation. */
export const REASON_LENGTH = 500;
/** The longest label an operator may give themselves in a key's lifecycle events. */
export const OPERATOR_LENGTH = 100;

// Characters Unicode says to draw as nothing (zero-width spaces and joiners, the soft hyphen, word joiners, the BOM):
// a name holding one looks like the name without it, and `--workspace` picks a workspace by the name as typed.
// Variation selectors are kept: they choose how an emoji is drawn (`❤️` is U+2764 U+FE0F) and are folded away below.
// So are the zero-width joiner and non-joiner between two characters that are drawn, where they are part of the text:
// emoji sequences (`👨‍👩‍👧`) and Persian spelling (`تیم‌فروش`); a lookalike without them is still one (lookalikeKey).
const SELECTORS = String.raw`\u180B-\u180D\u180F\uFE00-\uFE0F\u{E0100}-\u{E01EF}`;
const DRAWN = String.raw`(?:[^\s\p{Default_Ignorable_Code_Point}]|[${SELECTORS}])`;
const INVISIBLE = new RegExp(String.raw`(?![${SELECTORS}])(?!(?<=${DRAWN})[\u200C\u200D](?=${DRAWN}))\p{Default_Ignorable_Code_Point}`, 'u');
const DEFAULT_IGNORABLE = /\p{Default_Ignorable_Code_Point}/gu;

// Scripts with letters drawn alike (Latin `A`, Cyrillic `А`, Greek `Α`): a name mixing them is how one is made to look
// like another's, and no one writes a name in two of them. Digits, spaces, punctuation and accents belong to none.
const ALIKE_SCRIPTS = [
  ['Latin', /\p{Script=Latin}/u],
  ['Cyrillic', /\p{Script=Cyrillic}/u],
  ['Greek', /\p{Script=Greek}/u],
] as const;

/** The scripts of ALIKE_SCRIPTS a name has letters of, in that order. */
const alikeScripts = (name: string): string[] => ALIKE_SCRIPTS.filter(([, letters]) => letters.test(name)).map(([script]) => script);

/**
 * U+FFFD, what a byte that is not UTF-8 becomes when an argument is decoded (a Latin-1 `é` typed under LC_ALL=C):
 * kept, the name or reason would say something other than what was typed, for good.
 */
function refuseReplaced(what: string, text: string): void {
  if (text.includes('\uFFFD')) {
    throw new GatewayError('BAD_USER_INPUT', `${what} holds U+FFFD, which an argument that was not UTF-8 becomes: give it in UTF-8 (check LANG or LC_ALL)`);
  }
}

/** A workspace or key name, trimmed and composed; refused (BAD_USER_INPUT) as the rules above say. */
export function requireName(what: 'workspace' | 'key', raw: string): string {
  const name = raw.trim();
  if (!name) throw new GatewayError('BAD_USER_INPUT', `A ${what} needs a name`);
  refuseReplaced(`A ${what} name`, name);
  if (characters(name) > NAME_LENGTH || !isReadableLine(name)) {
    throw new GatewayError('BAD_USER_INPUT', `A ${what} name is 1 to ${NAME_LENGTH} printable characters`);
  }
  if (INVISIBLE.test(name)) {
    throw new GatewayError('BAD_USER_INPUT', `A ${what} name must not hold invisible characters: ${quoted(name)}`);
  }
  const scripts = alikeScripts(name);
  if (scripts.length > 1) {
    throw new GatewayError('BAD_USER_INPUT', `A ${what} name must not mix ${scripts.join(' and ')} letters, which look alike: ${quoted(name)}`);
  }
  return composed(name);
}

/**
 * What a workspace name looks like, for telling lookalikes apart: compatibility forms folded (NFKC: `Ａcme` is
 * `Acme`), case folded (upper then lower case, so that `ß` meets `SS` and `ς` meets `σ`), accents dropped once
 * decomposed (`Acmé` is `Acme`; Devanagari's vowel signs stay), characters drawn as nothing removed.
 */
const lookalikeKey = (name: string): string =>
  name.replace(DEFAULT_IGNORABLE, '').normalize('NFKC').toUpperCase().toLowerCase().normalize('NFD').replace(ACCENT, '').normalize('NFC');

/**
 * Text an operator gives a key lifecycle event, as they wrote it: one line of printable characters, never a key
 * (an operator pasting one would otherwise put it in every download of the workspace's events). Undefined when
 * none was given.
 */
function parseOperatorText(what: 'reason' | 'operator', max: number, raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  const text = raw.trim();
  const article = what === 'operator' ? 'An' : 'A';
  refuseReplaced(`${article} ${what}`, text);
  if (!text || characters(text) > max || !isReadableLine(text)) {
    throw new GatewayError('BAD_USER_INPUT', `${article} ${what} is 1 to ${max} printable characters on one line`);
  }
  if (holdsApiKey(text)) throw new GatewayError('BAD_USER_INPUT', `${article} ${what} must not hold an API key`);
  return text;
}

/**
 * Who and why, as the operator says them. Who is a label of their choosing, never read from the system: these
 * events are the workspace's customers' to read, and an OS user or host name is staff's and the network's.
 */
export interface KeyChangeOptions {
  reason?: string;
  operator?: string;
}

/** The details an operator's text adds to a key lifecycle event, refused before anything is written when invalid. */
export function operatorDetails(options: KeyChangeOptions): Record<string, string> {
  const reason = parseOperatorText('reason', REASON_LENGTH, options.reason);
  const operator = parseOperatorText('operator', OPERATOR_LENGTH, options.operator);
  return { ...(operator === undefined ? {} : { operator }), ...(reason === undefined ? {} : { reason }) };
}

export interface CreateKeyInput extends KeyChangeOptions {
  workspace: string;
  name: string;
  permissions: string[];
  expiresAt?: Date | null;
  allowedCidrs?: string[] | null;
}

export interface CreatedKey {
  /** Shown once; only its hash is stored. */
  key: string;
  record: ApiKeyRecord;
  /** The key's workspace, as found before the change: what is said of the key needs no read after it. */
  workspace: Workspace;
}

export interface RotatedKey extends CreatedKey {
  /** Until when the replaced secret keeps working; null: it stopped at once. */
  previousValidUntil: Date | null;
  /**
   * A key keeps one earlier secret: the one an earlier rotation left working stops now. Until when it was
   * to work; null when none was.
   */
  cutShortUntil: Date | null;
}

/** The longest a replaced secret may stay valid after a rotation. */
const MAX_ROTATION_OVERLAP_MS = 30 * 86_400_000;

/**
 * A new key's values, checked without the store (its workspace is looked up apart): the CLI refuses them before it
 * opens the store, so an invalid value is told apart from a store that cannot be reached.
 */
export function checkNewKey(input: Omit<CreateKeyInput, 'workspace'>, now: Date): { name: string; allowedCidrs: string[] | null; said: Record<string, string> } {
  const name = requireName('key', input.name);
  if (input.permissions.length === 0) {
    throw new GatewayError('BAD_USER_INPUT', `A key needs at least one permission (${PERMISSIONS.join(', ')})`);
  }
  const unknown = input.permissions.filter((permission) => !isPermission(permission));
  if (unknown.length > 0) {
    throw new GatewayError('BAD_USER_INPUT', `Unknown permission: ${unknown.join(', ')} (known: ${PERMISSIONS.join(', ')})`);
  }
  const said = operatorDetails(input);
  if (input.expiresAt && input.expiresAt <= now) throw new GatewayError('BAD_USER_INPUT', 'The expiry must be in the future');
  let allowedCidrs: string[] | null = null;
  // No allowlist is null: an empty one, from an empty variable, would open the key to every address.
  if (input.allowedCidrs?.length === 0) {
    throw new GatewayError('BAD_USER_INPUT', 'An IP allowlist needs at least one address or range: leave it out to allow any address');
  }
  if (input.allowedCidrs) {
    try {
      allowedCidrs = parseAllowlist(input.allowedCidrs);
    } catch (error) {
      if (error instanceof AllowlistError) throw new GatewayError('BAD_USER_INPUT', error.message);
      throw error;
    }
  }
  return { name, allowedCidrs, said };
}

/** How long a replaced secret stays valid after a rotation: refused unless between none and MAX_ROTATION_OVERLAP_MS. */
export function checkOverlap(overlapMs: number): void {
  if (!Number.isInteger(overlapMs) || overlapMs < 0 || overlapMs > MAX_ROTATION_OVERLAP_MS) {
    throw new GatewayError('BAD_USER_INPUT', 'The overlap must be between none and 30 days');
  }
}

/**
 * How many times a rotation reads the key and tries to replace the secret it read. Each attempt lost means another
 * rotation of the key committed since the read, so this many rotations of one key started at once all finish.
 */
export const ROTATION_ATTEMPTS = 8;

/** How many of a key's jobs are read at a time when they are counted or failed. */
const KEY_JOBS_PAGE = 500;

/** Rows per transaction of an erasure: on SQLite 2 ms a batch of events (55 ms at worst) with 200,000 of them, on 2 busy cores. */
export const ERASURE_BATCH_SIZE = 500;

/** How long an erasure leaves the store to others after each batch, as a multiple of the time the batch took. */
const ERASURE_PAUSE = 2;

/**
 * An erasure (AdminService.deleteWorkspace) that failed after its first step committed: the workspace has lost its keys
 * and its jobs that could run, and perhaps more of its rows, and erasing it again finishes it. `cause` is the failure.
 */
export class ErasureInterrupted extends Error {
  constructor(
    readonly workspace: Workspace,
    cause: unknown,
  ) {
    super(`the erasure of workspace '${workspace.name}' (id ${workspace.id}) was interrupted`, { cause });
    this.name = 'ErasureInterrupted';
  }
}

/** Operator actions on workspaces and keys (CLI, first-start seeding). */
export class AdminService {
  constructor(
    private readonly store: GatewayStore,
    private readonly clock: Clock,
    /** Rows of a table deleted per transaction when a workspace is erased. */
    private readonly erasureBatchSize = ERASURE_BATCH_SIZE,
  ) {}

  async createWorkspace(name: string): Promise<Workspace> {
    const trimmed = requireName('workspace', name);
    // Commands name a workspace by id or name, the id first: a workspace named as an id could be taken for another.
    if (isGatewayId(trimmed)) throw new GatewayError('BAD_USER_INPUT', `A workspace name must not be shaped like an id (${trimmed}): commands would take it for one`);
    // Not one transaction with the insert: two CLI runs at the same moment (on PostgreSQL, or one SQLite file) may both
    // pass this look and make two lookalikes, which `workspaces list` then shows side by side; the same name twice
    // is still refused by the store's unique name. Rare enough for an operator's command not to take a lock.
    const key = lookalikeKey(trimmed);
    const existing = (await this.store.listWorkspaces()).find((workspace) => lookalikeKey(workspace.name) === key);
    const taken = () => new AlreadyExistsError(`Workspace ${quoted(trimmed)} already exists`);
    if (existing?.name === trimmed) throw taken();
    if (existing) {
      throw new GatewayError(
        'BAD_USER_INPUT',
        `Workspace ${quoted(trimmed)} looks like workspace ${quoted(existing.name)} (id ${existing.id}): choose a name that cannot be mistaken for it`,
      );
    }
    const workspace = { id: newId(), name: trimmed, createdAt: this.clock.now() };
    // Made since the look above, by a command run at the same moment.
    if (!(await this.store.createWorkspace(workspace))) throw taken();
    return workspace;
  }

  async requireWorkspace(idOrName: string): Promise<Workspace> {
    // Names are kept composed: `café` typed with a combining accent is the workspace `café`.
    const workspace = (await this.store.findWorkspace(idOrName)) ?? (await this.store.findWorkspace(composed(idOrName)));
    if (!workspace) throw new GatewayError('NOT_FOUND', `No workspace ${quoted(idOrName)}`);
    return workspace;
  }

  /**
   * Erases a workspace and everything of it (its keys, campaigns, tags, jobs, events, idempotency keys, counters kept
   * in the store), for an erasure request. `confirm` must be the workspace's name, as it is (either Unicode form of
   * an accent), so that a mistyped id cannot erase another customer. Refused, deleting nothing, while one of its jobs
   * runs. Returns the rows this call deleted from each table.
   *
   * Not one transaction: a workspace of a million rows would hold the store's writer for many seconds, and every
   * other workspace's requests with it. A first short transaction makes the workspace one no key can use and no
   * job can start for; its other rows then go in batches of `erasureBatchSize`, each its own transaction, so that
   * other writes take turns; its row goes last, with whatever a request still in flight wrote meanwhile. Stopped
   * part-way, the workspace is still there, with fewer rows, and erasing it again finishes it: a failure after the
   * first step is an ErasureInterrupted, so that it never reads as one that changed nothing.
   */
  async deleteWorkspace(idOrName: string, confirm: string): Promise<{ workspace: Workspace; rows: Record<string, number> }> {
    const workspace = await this.requireWorkspace(idOrName);
    if (composed(confirm) !== composed(workspace.name)) {
      throw new GatewayError('BAD_USER_INPUT', `The confirmation ${quoted(confirm)} is not the name of workspace ${workspace.id}: nothing was deleted`);
    }
    const rows: Record<string, number> = {};
    const add = (deleted: Record<string, number>) => {
      for (const [table, count] of Object.entries(deleted)) rows[table] = (rows[table] ?? 0) + count;
    };
    add(this.erased(idOrName, workspace, await this.store.startWorkspaceErasure(workspace.id, this.clock.now()), 'nothing was deleted'));
    let lastStep: WorkspaceDeletion | null;
    try {
      for (const table of ERASED_IN_BATCHES) {
        // Until a batch finds nothing: one finds fewer than it asks for whenever another transaction (the pruner) took
        // some of the rows it chose, and stopping there would leave the rest to the last step's one transaction.
        for (let deleted = -1; deleted !== 0; ) {
          const started = performance.now();
          deleted = await this.store.eraseWorkspaceRows(workspace.id, table, this.erasureBatchSize);
          add({ [table]: deleted });
          // Another process's writer waiting on the lock polls for it now and then (SQLite's busy handler, up to
          // every 100 ms): taken again at once, the lock would be free only by chance when it looks. Free twice as
          // long as it was held, it is found free most times; the erasure takes three times as long.
          await sleep(ERASURE_PAUSE * (performance.now() - started));
        }
      }
      lastStep = await this.store.deleteWorkspace(workspace.id, this.clock.now());
    } catch (error) {
      throw new ErasureInterrupted(workspace, error);
    }
    // Refused only for a job that a request in flight enqueued after the first step, and a worker claimed since.
    const last = this.erased(idOrName, workspace, lastStep, 'its keys and most of its rows are deleted');
    // In the order of the last step's tables, every table: the order the rows went in when they went at once.
    return { workspace, rows: { ...last, ...Object.fromEntries(Object.entries(rows).map(([table, count]) => [table, count + (last[table] ?? 0)])) } };
  }

  /** The rows a step of an erasure deleted; thrown, what it refused or found gone. */
  private erased(idOrName: string, workspace: Workspace, deletion: WorkspaceDeletion | null, left: string): Record<string, number> {
    // Deleted by another command since it was found: the answer that command's lookup would have had.
    if (deletion === null) throw new GatewayError('NOT_FOUND', `No workspace ${quoted(idOrName)}`);
    if (!deletion.deleted) {
      const jobs = deletion.running === 1 ? '1 job' : `${deletion.running} jobs`;
      throw new GatewayError(
        'BAD_USER_INPUT',
        `Workspace '${workspace.name}' has ${jobs} running, leased until ${deletion.leaseEndsAt.toISOString()}: ${left}. ` +
          'Try again once it has finished, or after its lease if its worker has stopped',
      );
    }
    return deletion.rows;
  }

  /**
   * Every row the store holds of a workspace, for an access or portability request: read a page at a time as `lines`
   * is iterated, never a table whole. Only reads, so gateways may keep running on the store.
   */
  async exportWorkspace(idOrName: string): Promise<{ workspace: Workspace; lines: AsyncIterable<ExportLine> }> {
    const workspace = await this.requireWorkspace(idOrName);
    return { workspace, lines: exportLines(this.store, workspace.id) };
  }

  listWorkspaces(): Promise<Workspace[]> {
    return this.store.listWorkspaces();
  }

  async createKey(input: CreateKeyInput): Promise<CreatedKey> {
    const workspace = await this.requireWorkspace(input.workspace);
    const now = this.clock.now();
    const { name, allowedCidrs, said } = checkNewKey(input, now);
    const key = generateApiKey();
    const record: ApiKeyRecord = {
      id: newId(),
      workspaceId: workspace.id,
      name,
      hash: hashApiKey(key),
      prefix: displayPrefix(key),
      permissions: [...new Set(input.permissions)] as Permission[],
      allowedCidrs,
      previousHash: null,
      previousHashExpiresAt: null,
      createdAt: now,
      lastUsedAt: null,
      expiresAt: input.expiresAt ?? null,
      revokedAt: null,
    };
    const inserted = await this.store.insertApiKey(
      record,
      keyEvent(record, 'API_KEY_CREATED', now, {
        permissions: record.permissions,
        expiresAt: record.expiresAt?.toISOString() ?? null,
        allowedCidrs: record.allowedCidrs,
      }, said),
    );
    // Deleted since it was found, by a command run at the same moment.
    if (!inserted) throw new GatewayError('NOT_FOUND', `No workspace ${quoted(input.workspace)}`);
    return { key, record, workspace };
  }

  /** Keys of one workspace (found with requireWorkspace), or of all. */
  listKeys(workspace?: Workspace): Promise<ApiKeyRecord[]> {
    return this.store.listApiKeys(workspace?.id);
  }

  async requireKey(id: string): Promise<ApiKeyRecord> {
    const record = await this.store.findApiKey(id);
    if (!record) throw new GatewayError('NOT_FOUND', `No key '${id}'`);
    return record;
  }

  /**
   * Revokes a key; the very next request with it is refused. Revoking a revoked key changes nothing
   * (`alreadyRevoked`).
   */
  async revokeKey(id: string, options: KeyChangeOptions = {}): Promise<{ record: ApiKeyRecord; alreadyRevoked: boolean }> {
    const said = operatorDetails(options);
    const record = await this.requireKey(id);
    const now = this.clock.now();
    const revoked = await this.store.revokeApiKey(id, now, keyEvent(record, 'API_KEY_REVOKED', now, {}, said));
    if (!revoked) return { record: await this.requireKey(id), alreadyRevoked: true };
    return { record: { ...record, revokedAt: now }, alreadyRevoked: false };
  }

  /**
   * Gives a key a new secret, keeping its id, permissions and history. The old secret keeps working for
   * `overlapMs` (0: not at all), so callers can switch without downtime. What it says of the secrets it replaced
   * is what the store replaced: a rotation whose key another rotation changed since it read it is read and tried
   * again, and refused (UNAVAILABLE: try again) once it has lost ROTATION_ATTEMPTS times.
   */
  async rotateKey(id: string, overlapMs = 0, options: KeyChangeOptions = {}): Promise<RotatedKey> {
    checkOverlap(overlapMs);
    const said = operatorDetails(options);
    for (let attempt = 1; attempt <= ROTATION_ATTEMPTS; attempt += 1) {
      const rotated = await this.rotateOnce(id, overlapMs, said);
      if (rotated) return rotated;
    }
    // The last attempt may have lost to a revocation rather than a rotation: that is refused as it is.
    await this.rotatableKey(id);
    throw new GatewayError(
      'UNAVAILABLE',
      `Key '${id}' was rotated by other commands each of the ${ROTATION_ATTEMPTS} times this rotation tried: it changed nothing; try again`,
    );
  }

  /** The key as it is now, and the time it was read at, refused if it cannot be rotated. */
  private async rotatableKey(id: string): Promise<{ record: ApiKeyRecord; workspace: Workspace; now: Date }> {
    const record = await this.requireKey(id);
    const workspace = await this.requireWorkspace(record.workspaceId);
    const now = this.clock.now();
    if (record.revokedAt !== null) throw new GatewayError('BAD_USER_INPUT', `Key '${id}' is revoked; create a new one`);
    if (record.expiresAt !== null && record.expiresAt <= now) throw new GatewayError('BAD_USER_INPUT', `Key '${id}' has expired; create a new one`);
    return { record, workspace, now };
  }

  /** One rotation of the key as read now; null when it was revoked, or another rotation replaced its secret, since that read. */
  private async rotateOnce(id: string, overlapMs: number, said: Record<string, string>): Promise<RotatedKey | null> {
    const { record, workspace, now } = await this.rotatableKey(id);
    const key = generateApiKey();
    const hash = hashApiKey(key);
    const prefix = displayPrefix(key);
    const previousValidUntil = overlapMs > 0 ? new Date(now.getTime() + overlapMs) : null;
    // A key keeps one earlier secret: one an earlier rotation left working stops now, and the event says so.
    const cutShortUntil =
      record.previousHash !== null && record.previousHashExpiresAt !== null && record.previousHashExpiresAt > now ? record.previousHashExpiresAt : null;
    const event = keyEvent(
      record,
      'API_KEY_ROTATED',
      now,
      {
        previousValidUntil: previousValidUntil?.toISOString() ?? null,
        ...(cutShortUntil ? { earlierSecretCutShortFrom: cutShortUntil.toISOString() } : {}),
      },
      said,
    );
    // Revoked since it was read, or rotated by another command: the next read tells which. The old hash is kept without
    // an overlap too: its later use is then refused as rotated_out and recorded as the key's, not taken for an unknown key.
    if (!(await this.store.rotateApiKey(id, record.hash, hash, prefix, previousValidUntil, event))) return null;
    return {
      key,
      record: { ...record, hash, prefix, previousHash: record.hash, previousHashExpiresAt: previousValidUntil },
      workspace,
      previousValidUntil,
      cutShortUntil,
    };
  }

  /** Up to `first` jobs that match `filter`, newest first, older than the job `beforeId` (null: from the newest). */
  async listJobs(filter: JobFilter, first: number, beforeId: string | null): Promise<DuplicationJob[]> {
    return this.store.listJobs(filter, first, beforeId);
  }

  /**
   * The jobs of a key in one status (or in any), newest first, a page at a time: any number of them, never all held
   * at once. Read among its workspace's jobs, which an index (jobs_workspace) gives in order.
   */
  private async *keyJobs(record: ApiKeyRecord, status?: JobStatus): AsyncGenerator<DuplicationJob[]> {
    const filter: JobFilter = { workspaceId: record.workspaceId, apiKeyId: record.id, ...(status === undefined ? {} : { status }) };
    for (let after: string | null = null; ; ) {
      const page = await this.store.listJobs(filter, KEY_JOBS_PAGE, after);
      if (page.length > 0) yield page;
      if (page.length < KEY_JOBS_PAGE) return;
      after = page[page.length - 1].id;
    }
  }

  /** How many of a key's jobs are waiting to run and running: what revoking the key leaves to run. */
  async countKeyJobs(record: ApiKeyRecord): Promise<{ pending: number; running: number }> {
    const count = async (status: JobStatus) => {
      let jobs = 0;
      for await (const page of this.keyJobs(record, status)) jobs += page.length;
      return jobs;
    };
    return { pending: await count('PENDING'), running: await count('RUNNING') };
  }

  /**
   * Fails, as failJob each, every job of a key that no worker holds: PENDING, and RUNNING under an expired lease.
   * `onFailed` hears of each as it is failed. Returns how many were, and the jobs it left PENDING or RUNNING: those a
   * worker holds, and any handed back to the queue after the last pass read them.
   */
  async failKeyJobs(
    id: string,
    options: KeyChangeOptions,
    onFailed: (failed: number) => void,
  ): Promise<{ record: ApiKeyRecord; failed: number; held: DuplicationJob[] }> {
    if (operatorDetails(options).reason === undefined) throw new GatewayError('BAD_USER_INPUT', 'Failing a job needs a reason');
    const record = await this.requireKey(id);
    let failed = 0;
    let failedInPass: number;
    let held: DuplicationJob[];
    // Each pass reads every job of the key once, whatever its status: one read per status would miss a job a worker
    // hands back, or claims, between the two. A job a worker held when its pass reached it may be handed back
    // after (retried, or released at shutdown): passes go on until one fails nothing, and what it left is named.
    do {
      failedInPass = 0;
      held = [];
      for await (const page of this.keyJobs(record)) {
        for (const job of page) {
          if (job.status !== 'PENDING' && job.status !== 'RUNNING') continue;
          const result = await this.failJob(job.id, options);
          if (result.failed) {
            failedInPass += 1;
            onFailed((failed += 1));
          } else if (result.job?.status === 'PENDING' || result.job?.status === 'RUNNING') held.push(result.job);
        }
      }
    } while (failedInPass > 0);
    return { record, failed, held };
  }

  /**
   * Fails a job no worker holds (PENDING, or RUNNING under an expired lease) with error CANCELLED and its
   * CAMPAIGN_DUPLICATION_FAILED event, as a job that failed: after a restore, for a job the upstream already has,
   * which the worker would otherwise send again. `failed` false: the job is finished, or a worker holds it; `job`
   * null: there is no such job (answered, not thrown, so that one unknown id among many stops none of the others).
   */
  async failJob(id: string, options: KeyChangeOptions): Promise<{ id: string; job: DuplicationJob | null; failed: boolean }> {
    const said = operatorDetails(options);
    if (said.reason === undefined) throw new GatewayError('BAD_USER_INPUT', 'Failing a job needs a reason');
    const job = await this.store.findJob(id);
    if (!job) return { id, job: null, failed: false };
    const now = this.clock.now();
    const error = { code: 'CANCELLED' as const, message: `Failed by an operator: ${said.reason}` };
    const failure: JobFailure = {
      status: 'FAILED',
      resultCampaignId: null,
      error,
      event: jobEvent(job, 'CAMPAIGN_DUPLICATION_FAILED', now, { sourceCampaignId: job.sourceCampaignId, name: job.name, attempts: job.attempts, error, ...said }),
    };
    const failed = await this.store.cancelJob(job.id, failure, now);
    return { id, job: (await this.store.findJob(job.id)) ?? job, failed };
  }

  async addCampaign(workspaceId: string, fields: Pick<Campaign, 'name' | 'description' | 'tagNames' | 'body'> & { draft?: boolean }): Promise<Campaign> {
    const now = this.clock.now();
    // Kept composed, as duplications name them (validation.ts).
    const tagNames = fields.tagNames.map(composed);
    await this.store.upsertTags(workspaceId, tagNames);
    const campaign: Campaign = {
      id: newId(),
      workspaceId,
      name: composed(fields.name),
      description: fields.description === null ? null : composed(fields.description),
      tagNames,
      draft: fields.draft ?? false,
      body: fields.body,
      createdAt: now,
      updatedAt: now,
      duplicatedFrom: null,
    };
    await this.store.insertCampaign(campaign);
    return campaign;
  }
}

/** Key lifecycle events are written by operators, not requests: no channel, no ip; who ran it, and why, in details. */
function keyEvent(record: ApiKeyRecord, type: SecurityEventType, at: Date, details: Record<string, unknown>, said: Record<string, string>): NewSecurityEvent {
  return {
    id: newId(),
    workspaceId: record.workspaceId,
    type,
    occurredAt: at,
    apiKeyId: record.id,
    apiKeyName: record.name,
    channel: null,
    ip: null,
    jobId: null,
    campaignId: null,
    details: { ...details, ...said },
  };
}
