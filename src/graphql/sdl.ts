import { lexicographicSortSchema, printSchema } from 'graphql';
import { gatewaySchema } from './schema.js';

const HEADER = '# Generated from the code by `npm run schema`. Do not edit by hand.\n\n';

/** The SDL committed as schema.graphql; a test fails when the committed file differs. */
export async function printGatewaySchema(): Promise<string> {
  return HEADER + printSchema(lexicographicSortSchema(await gatewaySchema())) + '\n';
}
