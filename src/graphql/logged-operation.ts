import type { ApolloServerPlugin } from '@apollo/server';
import { Kind, type DocumentNode, type OperationDefinitionNode, type SelectionSetNode } from 'graphql';
import type { LoggedOperation } from '../domain/service.js';
import type { GraphQLContext } from './context.js';

/**
 * More than the schema's root fields and introspection's together: a validated operation never reaches the
 * bound. Names are the schema's (validated), cut to a length all of them fit in.
 */
const MAX_FIELDS = 12;
const MAX_NAME_LENGTH = 64;

/**
 * What a GraphQL request's log line says it asked for: the operation's type and its top-level field names, those
 * in fragments spread at the top included, each once, in order, never aliases, arguments or variables (the
 * caller's text). So that a `securityEvents` read can be told from a `campaigns` read in the log.
 */
export function loggedOperation(operation: OperationDefinitionNode, document: DocumentNode): LoggedOperation {
  const fields = new Set<string>();
  const spread = new Set<string>();
  const visit = (selections: SelectionSetNode): void => {
    for (const selection of selections.selections) {
      if (fields.size >= MAX_FIELDS) return;
      if (selection.kind === Kind.FIELD) fields.add(selection.name.value.slice(0, MAX_NAME_LENGTH));
      else if (selection.kind === Kind.INLINE_FRAGMENT) visit(selection.selectionSet);
      else if (!spread.has(selection.name.value)) {
        spread.add(selection.name.value);
        const fragment = document.definitions.find((definition) => definition.kind === Kind.FRAGMENT_DEFINITION && definition.name.value === selection.name.value);
        if (fragment?.kind === Kind.FRAGMENT_DEFINITION) visit(fragment.selectionSet);
      }
    }
  };
  visit(operation.selectionSet);
  return { operation: operation.operation, fields: [...fields] };
}

/** Puts the operation Apollo resolved on its request's log line (the prepared path keeps its own: prepared.ts). */
export const operationLogPlugin = (): ApolloServerPlugin<GraphQLContext> => ({
  requestDidStart: async () => ({
    didResolveOperation: async ({ operation, document, contextValue }) => {
      const { trace } = contextValue.request;
      if (trace && operation) trace.graphql = loggedOperation(operation, document);
    },
  }),
});
