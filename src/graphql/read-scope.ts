import type { ApolloServerPlugin } from '@apollo/server';
import type { OperationTypeNode } from 'graphql';
import { currentReadScope } from '../domain/read-scope.js';
import type { GraphQLContext } from './context.js';

/**
 * A query's fields read the store as of one moment, in the read scope the request runs in (domain/read-scope.ts),
 * until its execution ends; a mutation's reads are each their own, to see what it wrote.
 */
export function beginOperationReads(operation: OperationTypeNode | undefined): void {
  if (operation === 'query') currentReadScope()?.begin();
}

/** What the view held (a connection) is given up once execution ends, before the answer is serialized and sent. */
export const endOperationReads = async (): Promise<void> => currentReadScope()?.end();

/** Apollo's executions begin and end their read scopes as prepared operations do. */
export function readScopePlugin(): ApolloServerPlugin<GraphQLContext> {
  return {
    requestDidStart: async () => ({
      executionDidStart: async ({ operation }) => {
        beginOperationReads(operation?.operation);
        return { executionDidEnd: endOperationReads };
      },
    }),
  };
}
