import { EXPORT_TABLES, type ExportPage, type ExportRows, type ExportTable, type GatewayStore } from './ports.js';

/** One line of an export: the table its row is from, then the row's fields as the gateway names them. */
export type ExportLine = { table: ExportTable } & Record<string, unknown>;

/** Rows read per statement: a page costs one seek and a few hundred kilobytes however large the workspace. */
export const EXPORT_PAGE_SIZE = 1000;

/**
 * Each table's row as it is exported. A key's secrets (its hash, the replaced secret's hash) and an idempotency
 * key's request hash, which only tells a reservation from another, are left out, as is the instance running a job
 * (`leaseOwner`: a host name and process id of the operator's, no data of the workspace's); the other tables hold no secret.
 */
const LINES: { [T in ExportTable]: (row: ExportRows[T]) => Record<string, unknown> } = {
  workspaces: (workspace) => ({ ...workspace }),
  api_keys: (key) => ({
    id: key.id,
    workspaceId: key.workspaceId,
    name: key.name,
    prefix: key.prefix,
    permissions: key.permissions,
    allowedCidrs: key.allowedCidrs,
    createdAt: key.createdAt,
    lastUsedAt: key.lastUsedAt,
    expiresAt: key.expiresAt,
    revokedAt: key.revokedAt,
    previousSecretValidUntil: key.previousHash === null ? null : key.previousHashExpiresAt,
  }),
  tags: (tag) => ({ ...tag }),
  campaigns: (campaign) => ({ ...campaign }),
  jobs: ({ leaseOwner: _instance, ...job }) => job,
  security_events: (event) => ({ ...event }),
  idempotency_keys: (record) => ({ workspaceId: record.workspaceId, key: record.key, jobId: record.jobId, createdAt: record.createdAt, expiresAt: record.expiresAt }),
};

/** Every row the store holds of the workspace, table by table, a page at a time. */
export async function* exportLines(store: GatewayStore, workspaceId: string, pageSize = EXPORT_PAGE_SIZE): AsyncGenerator<ExportLine> {
  for (const table of EXPORT_TABLES) {
    let after: string | null = null;
    do {
      const page: ExportPage<ExportTable> = await store.exportRows(workspaceId, table, after, pageSize);
      for (const row of page.rows) yield { table, ...(LINES[table] as (row: unknown) => Record<string, unknown>)(row) };
      after = page.next;
    } while (after !== null);
  }
}
