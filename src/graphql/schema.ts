import 'reflect-metadata';
import type { GraphQLSchema } from 'graphql';
import { buildSchema } from 'type-graphql';
import { CampaignResolver, DuplicationJobResolver, DuplicationResolver, SecurityEventResolver, ViewerResolver } from './resolvers.js';
import { scalarsMap } from './types.js';

const QUERY_DESCRIPTION =
  'What an API key may read: itself (viewer), its jobs, security events and campaigns. Every field is nullable: one that is refused is null, with its error at its path, and the others keep their answers.';
const MUTATION_DESCRIPTION = 'What an API key may do: duplicate campaigns.';

let schema: Promise<GraphQLSchema> | undefined;

/** The schema is the same for every app in a process; build it once. */
export function gatewaySchema(): Promise<GraphQLSchema> {
  schema ??= buildSchema({
    resolvers: [DuplicationResolver, DuplicationJobResolver, CampaignResolver, SecurityEventResolver, ViewerResolver],
    scalarsMap,
    validate: false,
    emitSchemaFile: false,
  }).then((built) => {
    // type-graphql takes no description for the root types; they are new here, seen by nobody yet.
    built.getQueryType()!.description = QUERY_DESCRIPTION;
    built.getMutationType()!.description = MUTATION_DESCRIPTION;
    return built;
  });
  return schema;
}
