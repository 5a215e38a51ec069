import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { graphql, isEnumType, isInputObjectType, isObjectType, isScalarType, type GraphQLField } from 'graphql';
import { MAX_PAGE_SIZE } from '../../src/domain/service.js';
import { SECURITY_EVENT_TYPES } from '../../src/domain/types.js';
import { LIMITS } from '../../src/domain/validation.js';
import { gatewaySchema } from '../../src/graphql/schema.js';
import { printGatewaySchema } from '../../src/graphql/sdl.js';

describe('schema.graphql', () => {
  it('is what the code emits (run `npm run schema` after changing the schema)', async () => {
    const committed = readFileSync(new URL('../../schema.graphql', import.meta.url), 'utf8');
    expect(committed).toBe(await printGatewaySchema());
  });

  it('keeps the root fields of the contract (docs/DESIGN.md §3; the payload and the lists nullable, §10)', async () => {
    const schema = await gatewaySchema();
    const signature = (field: GraphQLField<unknown, unknown>) =>
      `${field.name}(${[...field.args].sort((a, b) => a.name.localeCompare(b.name)).map((arg) => `${arg.name}: ${String(arg.type)}${arg.defaultValue === undefined ? '' : ` = ${String(arg.defaultValue)}`}`).join(', ')}): ${String(field.type)}`;
    expect(signature(schema.getMutationType()!.getFields().duplicateCampaign)).toBe(
      'duplicateCampaign(input: DuplicateCampaignInput!): DuplicateCampaignPayload',
    );
    expect(Object.values(schema.getQueryType()!.getFields()).map(signature).sort()).toEqual(
      expect.arrayContaining([
        'campaign(id: ID!): Campaign',
        'campaigns(after: String, first: Int = 50): CampaignConnection',
        'duplicationJob(id: ID!): DuplicationJob',
        'securityEvents(after: String, filter: SecurityEventFilter, first: Int = 50): SecurityEventConnection',
      ]),
    );
  });

  it('says on every page size the maximum the service enforces', async () => {
    const fields = Object.values((await gatewaySchema()).getQueryType()!.getFields());
    const pageSizes = fields.flatMap((field) => field.args.filter((arg) => arg.name === 'first').map((arg): [string, string] => [field.name, arg.description ?? '']));
    expect(pageSizes.map(([field]) => field).sort()).toEqual(['campaigns', 'securityEvents']);
    for (const [field, description] of pageSizes) expect(description, field).toContain(`At most ${MAX_PAGE_SIZE}.`);
  });

  it('says the limits the validation enforces, counted as it counts them', async () => {
    const input = (await gatewaySchema()).getType('DuplicateCampaignInput');
    if (!isInputObjectType(input)) throw new Error('DuplicateCampaignInput is not an input type');
    const fields = input.getFields();
    expect(fields.name.description).toContain(`at most ${LIMITS.nameLength} characters (Unicode code points`);
    expect(fields.description.description).toContain(`at most ${LIMITS.descriptionLength} characters (Unicode code points`);
    expect(fields.tagNames.description).toContain(`at most ${LIMITS.tagCount} of at most ${LIMITS.tagLength} characters (Unicode code points`);
    expect(fields.idempotencyKey.description).toContain(`1 to ${LIMITS.idempotencyKeyLength} visible ASCII characters`);
  });

  // Codegen types a custom scalar by what introspection says of it: without a specification it is `unknown`, and
  // strictScalars refuses it.
  it('says by introspection which specification DateTime follows, and describes what it takes and gives', async () => {
    const schema = await gatewaySchema();
    const { data } = await graphql({ schema, source: '{ __type(name: "DateTime") { specifiedByURL description } }' });
    expect(data?.__type).toEqual({ specifiedByURL: 'https://www.rfc-editor.org/rfc/rfc3339#section-5.6', description: expect.stringContaining('RFC 3339') });
    const dateTime = schema.getType('DateTime');
    if (!isScalarType(dateTime)) throw new Error('DateTime is not a scalar');
    // Given out in UTC with milliseconds, taken with any offset, never a date alone or without an offset.
    expect(JSON.stringify(dateTime.serialize(dateTime.parseValue('2024-05-01T12:00:00+02:00')))).toBe('"2024-05-01T10:00:00.000Z"');
    // Finer than a millisecond, rounded up, as events are stamped to the millisecond; a whole millisecond stays.
    expect(JSON.stringify(dateTime.parseValue('2024-05-01T12:00:00.123456Z'))).toBe('"2024-05-01T12:00:00.124Z"');
    expect(JSON.stringify(dateTime.parseValue('2024-05-01T12:00:00.999000Z'))).toBe('"2024-05-01T12:00:00.999Z"');
    expect(() => dateTime.parseValue('2024-05-01')).toThrow();
    expect(() => dateTime.parseValue('2024-05-01T12:00:00')).toThrow();
    expect(dateTime.description).toMatch(/UTC with milliseconds.*any offset.*A date alone .* is refused/s);
  });

  it("says what an event's details hold for every type, and that an allowlist refusal is a PERMISSION_DENIED", async () => {
    const schema = await gatewaySchema();
    const event = schema.getType('SecurityEvent');
    const types = schema.getType('SecurityEventType');
    if (!isObjectType(event) || !isEnumType(types)) throw new Error('SecurityEvent or SecurityEventType changed kind');
    const details = event.getFields().details.description ?? '';
    for (const type of SECURITY_EVENT_TYPES) expect(details, type).toContain(type);
    for (const key of ['permissions', 'expiresAt', 'allowedCidrs', 'previousValidUntil', 'ip_not_allowed', 'unrecordedBefore']) expect(details, key).toContain(key);
    expect(types.getValue('PERMISSION_DENIED')?.description).toContain('ip_not_allowed');
  });

  /** Every type, field, argument and enum value of the schema a client sees, by name, with its description. */
  async function described(): Promise<[string, string | null | undefined][]> {
    const entries: [string, string | null | undefined][] = [];
    for (const type of Object.values((await gatewaySchema()).getTypeMap())) {
      if (type.name.startsWith('__')) continue;
      entries.push([type.name, type.description]);
      if (isObjectType(type) || isInputObjectType(type)) {
        for (const field of Object.values(type.getFields())) {
          entries.push([`${type.name}.${field.name}`, field.description]);
          for (const arg of 'args' in field ? field.args : []) entries.push([`${type.name}.${field.name}(${arg.name})`, arg.description]);
        }
      }
      if (isEnumType(type)) for (const value of type.getValues()) entries.push([`${type.name}.${value.name}`, value.description]);
    }
    return entries;
  }

  it('describes every type, field, argument and enum value a client sees', async () => {
    expect((await described()).filter(([, description]) => !description?.trim()).map(([name]) => name)).toEqual([]);
  });

  it('says what a client sees, never which operator setting decides it', async () => {
    const config = readFileSync(new URL('../../src/config.ts', import.meta.url), 'utf8');
    const variables = new Set([...config.matchAll(/\benv(?:\.|, ')([A-Z][A-Z0-9_]+)/g)].map((match) => match[1]));
    expect([...variables]).toEqual(expect.arrayContaining(['JOB_RETENTION_DAYS', 'EVENT_RETENTION_DAYS', 'IDEMPOTENCY_TTL_HOURS', 'DUPLICATE_RATE_LIMIT']));
    const words = (description: string | null | undefined) => new Set(description?.match(/\w+/g));
    const naming = (await described()).filter(([, description]) => [...variables].some((variable) => words(description).has(variable)));
    expect(naming).toEqual([]);
  });
});
