import { randomUUID } from 'node:crypto';
import { GatewayError } from './errors.js';
import { displayPrefix, generateApiKey, hashApiKey } from './keys.js';
import { isPermission, type Permission } from './permissions.js';
import type { Clock, GatewayStore } from './ports.js';
import type { ApiKeyRecord, Campaign, Workspace } from './types.js';

export interface CreateKeyInput {
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
}

/** Operator actions on workspaces and keys (CLI, first-start seeding). */
export class AdminService {
  constructor(
    private readonly store: GatewayStore,
    private readonly clock: Clock,
  ) {}

  async createWorkspace(name: string): Promise<Workspace> {
    const trimmed = name.trim();
    if (!trimmed) throw new GatewayError('BAD_USER_INPUT', 'A workspace needs a name');
    if (await this.store.findWorkspace(trimmed)) throw new GatewayError('BAD_USER_INPUT', `Workspace '${trimmed}' already exists`);
    const workspace = { id: randomUUID(), name: trimmed, createdAt: this.clock.now() };
    await this.store.createWorkspace(workspace);
    return workspace;
  }

  async requireWorkspace(idOrName: string): Promise<Workspace> {
    const workspace = await this.store.findWorkspace(idOrName);
    if (!workspace) throw new GatewayError('NOT_FOUND', `No workspace '${idOrName}'`);
    return workspace;
  }

  async createKey(input: CreateKeyInput): Promise<CreatedKey> {
    const workspace = await this.requireWorkspace(input.workspace);
    const name = input.name.trim();
    if (!name) throw new GatewayError('BAD_USER_INPUT', 'A key needs a name');
    const unknown = input.permissions.filter((permission) => !isPermission(permission));
    if (unknown.length > 0) throw new GatewayError('BAD_USER_INPUT', `Unknown permission: ${unknown.join(', ')}`);
    const key = generateApiKey();
    const now = this.clock.now();
    const record: ApiKeyRecord = {
      id: randomUUID(),
      workspaceId: workspace.id,
      name,
      hash: hashApiKey(key),
      prefix: displayPrefix(key),
      permissions: [...new Set(input.permissions)] as Permission[],
      allowedCidrs: input.allowedCidrs ?? null,
      previousHash: null,
      previousHashExpiresAt: null,
      createdAt: now,
      lastUsedAt: null,
      expiresAt: input.expiresAt ?? null,
      revokedAt: null,
    };
    await this.store.insertApiKey(record, {
      id: randomUUID(),
      workspaceId: workspace.id,
      type: 'API_KEY_CREATED',
      occurredAt: now,
      apiKeyId: record.id,
      apiKeyName: record.name,
      channel: null,
      ip: null,
      jobId: null,
      campaignId: null,
      details: { permissions: record.permissions, expiresAt: record.expiresAt?.toISOString() ?? null },
    });
    return { key, record };
  }

  async revokeKey(id: string): Promise<ApiKeyRecord> {
    const record = await this.store.findApiKey(id);
    if (!record) throw new GatewayError('NOT_FOUND', `No key '${id}'`);
    const now = this.clock.now();
    await this.store.revokeApiKey(id, now, {
      id: randomUUID(),
      workspaceId: record.workspaceId,
      type: 'API_KEY_REVOKED',
      occurredAt: now,
      apiKeyId: record.id,
      apiKeyName: record.name,
      channel: null,
      ip: null,
      jobId: null,
      campaignId: null,
      details: {},
    });
    return { ...record, revokedAt: record.revokedAt ?? now };
  }

  async addCampaign(workspaceId: string, fields: Pick<Campaign, 'name' | 'description' | 'tagNames' | 'body'> & { draft?: boolean }): Promise<Campaign> {
    const now = this.clock.now();
    await this.store.upsertTags(workspaceId, fields.tagNames);
    const campaign: Campaign = {
      id: randomUUID(),
      workspaceId,
      name: fields.name,
      description: fields.description,
      tagNames: fields.tagNames,
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
