import 'reflect-metadata';
import type { GraphQLSchema } from 'graphql';
import { buildSchema } from 'type-graphql';
import { DuplicationResolver, SecurityEventResolver, ViewerResolver } from './resolvers.js';
import { scalarsMap } from './types.js';

let schema: Promise<GraphQLSchema> | undefined;

/** The schema is the same for every app in a process; build it once. */
export function gatewaySchema(): Promise<GraphQLSchema> {
  schema ??= buildSchema({
    resolvers: [DuplicationResolver, SecurityEventResolver, ViewerResolver],
    scalarsMap,
    validate: false,
    emitSchemaFile: false,
  });
  return schema;
}
