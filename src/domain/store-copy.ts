import { EXPORT_PAGE_SIZE } from './export.js';
import { EXPORT_TABLES, type ExportPage, type ExportTable, type GatewayStore } from './ports.js';
import type { Workspace } from './types.js';

/** Where a copy has got to: told after each page written, and when a table of a workspace is done. */
export interface CopyProgress {
  workspace: Workspace;
  table: ExportTable;
  /** Rows of this table of this workspace written so far. */
  rows: number;
  done: boolean;
}

/** The workspaces found in the target, which a copy never merges into. */
export class TargetNotEmpty extends Error {
  constructor(readonly workspaces: Workspace[]) {
    const named = workspaces.slice(0, 5).map((workspace) => `"${workspace.name}" (id ${workspace.id})`);
    super(`${workspaces.length} workspace${workspaces.length === 1 ? '' : 's'}: ${named.join(', ')}${workspaces.length > 5 ? ', …' : ''}`);
  }
}

/** The tables whose rows of a workspace the two stores count differently after a copy, with both counts. */
export class CountMismatch extends Error {
  constructor(readonly mismatches: { table: ExportTable; source: number; target: number }[]) {
    super(mismatches.map(({ table, source, target }) => `${table}: ${source} in the source, ${target} in the target`).join('; '));
  }
}

/** What the target's role may not do that a copy does (INSERT on a table, UPDATE on a sequence). */
export class TargetNotWritable extends Error {
  constructor(readonly missing: string[]) {
    super(missing.join(', '));
  }
}

/** A copy told to stop (`reason`, such as the signal), which it did after the page it was writing or the table it was counting. */
export class CopyStopped extends Error {
  constructor(
    readonly reason: string,
    /** Every row was written, and the stores were being counted. */
    readonly counting: boolean,
  ) {
    super(`stopped by ${reason}`);
  }
}

/** A target a copy started into and did not finish: it holds part of a store, which a copy never adds to. */
export class TargetPartlyCopied extends Error {
  constructor(readonly startedAt: Date) {
    super(`a copy into it started at ${startedAt.toISOString()} and did not finish`);
  }
}

function stopIfTold(stopped: () => string | undefined, counting: boolean): void {
  const reason = stopped();
  if (reason !== undefined) throw new CopyStopped(reason, counting);
}

/** What a copy wrote, and the rows of no workspace it left behind, per table. */
export interface CopySummary {
  copied: Record<ExportTable, number>;
  /** Rows whose workspace is gone (erased while a request still wrote them): only the tables that hold any. */
  orphaned: Partial<Record<ExportTable, number>>;
}

/**
 * Copies every row of `source` to `target`, workspace by workspace and, within one, table by table in the export's
 * order (each row after the rows it refers to), a page read (exportRows) and written (importRows, one transaction)
 * at a time: no table is held in memory. Refuses a target whose role may not write every row (TargetNotWritable),
 * one a copy started into and did not finish (TargetPartlyCopied) or one that holds any workspace (TargetNotEmpty).
 * Marks the target as being copied into (markCopyStarted) until the counts match; stops after the page being
 * written, or the table being counted, once `stopped` gives a reason (CopyStopped); once done, tells `onCounting` and
 * compares each table's rows of a workspace in both stores (CountMismatch). Rows of no workspace are not copied, since the workspace they belonged to was erased, only
 * counted. The queue's and limiters' counters are not rows of a workspace and are not copied: see importRows.
 */
export async function copyStore(
  source: GatewayStore,
  target: GatewayStore,
  onProgress: (progress: CopyProgress) => void,
  {
    pageSize = EXPORT_PAGE_SIZE,
    stopped = () => undefined,
    onCounting = () => undefined,
  }: { pageSize?: number; stopped?: () => string | undefined; onCounting?: () => void } = {},
): Promise<CopySummary> {
  const missing = await target.missingImportPrivileges();
  if (missing.length > 0) throw new TargetNotWritable(missing);
  const started = await target.copyStarted();
  if (started !== null) throw new TargetPartlyCopied(started);
  if (await target.hasWorkspaces()) throw new TargetNotEmpty(await target.listWorkspaces());
  // Before any row: a copy that stops leaves a target no gateway starts on (see createStore).
  await target.markCopyStarted(new Date());
  const copied = Object.fromEntries(EXPORT_TABLES.map((table) => [table, 0])) as Record<ExportTable, number>;
  for (const workspace of await source.listWorkspaces()) {
    for (const table of EXPORT_TABLES) {
      let rows = 0;
      let after: string | null = null;
      do {
        const page: ExportPage<ExportTable> = await source.exportRows(workspace.id, table, after, pageSize);
        await target.importRows(table, page.rows);
        rows += page.rows.length;
        copied[table] += page.rows.length;
        after = page.next;
        onProgress({ workspace, table, rows, done: after === null });
        stopIfTold(stopped, false);
      } while (after !== null);
    }
  }
  onCounting();
  const mismatches: { table: ExportTable; source: number; target: number }[] = [];
  const orphaned: CopySummary['orphaned'] = {};
  for (const table of EXPORT_TABLES) {
    const [inSource, inTarget] = await Promise.all([source.countRows(table), target.countRows(table)]);
    if (inSource.ofWorkspaces !== inTarget.ofWorkspaces) mismatches.push({ table, source: inSource.ofWorkspaces, target: inTarget.ofWorkspaces });
    if (inSource.orphaned > 0) orphaned[table] = inSource.orphaned;
    // A count of a very large table takes seconds: a signal then must not leave a target finished, or unmarked, unsaid.
    stopIfTold(stopped, true);
  }
  if (mismatches.length > 0) throw new CountMismatch(mismatches);
  await target.markCopyFinished();
  return { copied, orphaned };
}
