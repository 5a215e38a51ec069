import { createRequire } from 'node:module';
import type { ApolloServerPlugin } from '@apollo/server';
import {
  BREAK,
  getVariableValues,
  GraphQLError,
  Kind,
  visit,
  type DocumentNode,
  type FragmentDefinitionNode,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValidationRule,
} from 'graphql';
import type { ComplexityEstimator } from 'graphql-query-complexity/cjs';
import { DEFAULT_PAGE_SIZE } from '../domain/service.js';

// The CommonJS entry, required: the ESM build imports graphql/index.mjs, a second copy of graphql in the
// process, and an ESM import of the CommonJS entry sees its re-exports differently under Node and vitest.
const { getComplexity, simpleEstimator } = createRequire(import.meta.url)(
  'graphql-query-complexity',
) as typeof import('graphql-query-complexity/cjs');

export interface GraphQLLimits {
  /** Nesting of fields below the operation (introspection fields excepted: the introspection switch governs them). */
  maxDepth: number;
  /** Estimated cost: one per field, list fields times their `first` argument. */
  maxCost: number;
  /** Aliased fields in an operation, fragments counted each time they are spread. */
  maxAliases: number;
  /** duplicateCampaign fields in an operation. */
  maxDuplicatesPerOperation: number;
}

/** Apollo answers errors carrying this code with HTTP 400, like any other invalid document. */
const LIMIT_CODE = 'GRAPHQL_VALIDATION_FAILED';

interface Shape {
  depth: number;
  aliases: number;
  duplicates: number;
}

/**
 * Depth, aliases and duplicateCampaign fields of a selection set, fragments expanded. Each fragment is
 * measured once, so a document of fragments spreading fragments costs linear time to measure however
 * large it expands to.
 */
function measure(
  set: SelectionSetNode,
  definitions: ReadonlyMap<string, FragmentDefinitionNode>,
  fragments: Map<string, Shape>,
  visiting: Set<string>,
): Shape {
  const shape: Shape = { depth: 0, aliases: 0, duplicates: 0 };
  const add = (inner: Shape, extraDepth: number) => {
    shape.depth = Math.max(shape.depth, inner.depth + extraDepth);
    shape.aliases += inner.aliases;
    shape.duplicates += inner.duplicates;
  };
  for (const selection of set.selections) {
    if (selection.kind === Kind.FIELD) {
      if (selection.name.value.startsWith('__')) continue;
      if (selection.alias) shape.aliases += 1;
      if (selection.name.value === 'duplicateCampaign') shape.duplicates += 1;
      const inner = selection.selectionSet ? measure(selection.selectionSet, definitions, fragments, visiting) : { depth: 0, aliases: 0, duplicates: 0 };
      add(inner, 1);
    } else if (selection.kind === Kind.INLINE_FRAGMENT) {
      add(measure(selection.selectionSet, definitions, fragments, visiting), 0);
    } else {
      const name = selection.name.value;
      // A cycle is its own validation error (NoFragmentCycles); it adds nothing here.
      if (visiting.has(name)) continue;
      let inner = fragments.get(name);
      if (!inner) {
        const definition = definitions.get(name);
        if (!definition) continue;
        visiting.add(name);
        inner = measure(definition.selectionSet, definitions, fragments, visiting);
        visiting.delete(name);
        fragments.set(name, inner);
      }
      add(inner, 0);
    }
  }
  return shape;
}

/**
 * Every operation of the document, while it is validated: an operation type the schema has (graphql-js 16
 * would only find out while executing, and call it an internal error).
 */
export const operationTypeRule: ValidationRule = (context) => ({
  OperationDefinition(node) {
    if (context.getSchema().getRootType(node.operation)) return;
    context.reportError(new GraphQLError(`This API has no ${node.operation} operations`, { nodes: [node] }));
  },
});

/** How refusals name the operation: a document may hold several, and only the one asked for is measured. */
const operationLabel = (operation: OperationDefinitionNode): string =>
  operation.name ? `Operation ${operation.name.value}` : 'The operation';

/** A refusal of the operation by a limit, pointing at the operation. */
const limitError = (operation: OperationDefinitionNode, message: string, extensions: Record<string, unknown> = {}) =>
  new GraphQLError(message, { nodes: [operation], extensions: { code: LIMIT_CODE, ...extensions, http: { status: 400 } } });

/** The first of the depth, alias and duplicateCampaign limits the operation is over, or null. */
function shapeRefusal(document: DocumentNode, operation: OperationDefinitionNode, limits: GraphQLLimits): string | null {
  const definitions = new Map<string, FragmentDefinitionNode>();
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) definitions.set(definition.name.value, definition);
  }
  const shape = measure(operation.selectionSet, definitions, new Map(), new Set());
  const label = operationLabel(operation);
  if (shape.depth > limits.maxDepth) return `${label} is nested ${shape.depth} levels deep; at most ${limits.maxDepth} are allowed`;
  if (shape.aliases > limits.maxAliases) return `${label} has ${shape.aliases} aliases; at most ${limits.maxAliases} are allowed`;
  if (shape.duplicates > limits.maxDuplicatesPerOperation) {
    return `${label} has ${shape.duplicates} duplicateCampaign fields; at most ${limits.maxDuplicatesPerOperation} are allowed`;
  }
  return null;
}

/** A page of n items costs n times one item; `first: null` asks for the default page, as the resolvers answer it. */
const paginatedEstimator: ComplexityEstimator = ({ args, childComplexity }) => {
  if (!('first' in args)) return undefined;
  const first = typeof args.first === 'number' ? args.first : DEFAULT_PAGE_SIZE;
  return 1 + Math.max(0, first) * childComplexity;
};

/** Whether a variable reaches a `first` argument or a directive (@include/@skip): what the estimate reads of them. */
function costReadsVariables(document: DocumentNode, operation: OperationDefinitionNode): boolean {
  let reading = 0;
  let found = false;
  const fragments = document.definitions.filter((definition) => definition.kind === Kind.FRAGMENT_DEFINITION);
  for (const node of [operation, ...fragments]) {
    visit(node, {
      Directive: {
        enter: () => {
          reading += 1;
        },
        leave: () => {
          reading -= 1;
        },
      },
      Argument: {
        enter: (argument) => {
          if (argument.name.value === 'first') reading += 1;
        },
        leave: (argument) => {
          if (argument.name.value === 'first') reading -= 1;
        },
      },
      Variable: () => {
        if (reading === 0) return undefined;
        found = true;
        return BREAK;
      },
    });
    if (found) return true;
  }
  return false;
}

const VARIABLE = Symbol('depends on variables');

/**
 * The limits of the operation being run, refused before anything is executed: only that one, since a document
 * may hold others (the explorer's holds three) that this request does not run. First its depth, aliases and
 * duplicateCampaign fields, then its estimated cost with the request's variables. An operation whose estimate
 * reads no variable costs the same on every request: once it is known to be within the limits it is not
 * measured again (Apollo hands the same document, and so the same operation node, for a repeated query text).
 * Operations over a limit and requests with variables that do not fit are never remembered, so their answers
 * are worked out as on the first request.
 */
export class OperationLimits {
  /** Within every limit: its cost, or VARIABLE when the estimate depends on the request's variables. */
  private readonly known = new WeakMap<OperationDefinitionNode, number | typeof VARIABLE>();

  constructor(
    private readonly schema: GraphQLSchema,
    private readonly limits: GraphQLLimits,
  ) {}

  /** True once the operation is known to be within the limits, at the same cost, whatever its variables. */
  isFixedWithinLimits(operation: OperationDefinitionNode): boolean {
    return typeof this.known.get(operation) === 'number';
  }

  plugin(): ApolloServerPlugin {
    const { schema, limits, known } = this;
    return {
      async requestDidStart() {
        return {
          async didResolveOperation({ request, document, operation }) {
            // No such operation, or variables that do not fit it: Apollo answers those itself, with its own codes.
            if (!operation) return;
            const seen = known.get(operation);
            if (typeof seen === 'number') return;
            if (seen === undefined) {
              const refusal = shapeRefusal(document, operation, limits);
              if (refusal) throw limitError(operation, refusal);
            }
            if (getVariableValues(schema, operation.variableDefinitions ?? [], request.variables ?? {}).errors) return;
            // Only the operation that runs, with the fragments: the library trips over anonymous operations
            // when given an operation name.
            const query: DocumentNode = {
              kind: Kind.DOCUMENT,
              definitions: [operation, ...document.definitions.filter((definition) => definition.kind === Kind.FRAGMENT_DEFINITION)],
            };
            let cost: number;
            try {
              cost = getComplexity({
                schema,
                query,
                variables: request.variables ?? {},
                estimators: [paginatedEstimator, simpleEstimator({ defaultComplexity: 1 })],
              });
            } catch (error) {
              // Too many nodes to even estimate: about the request. Anything else is a fault of ours.
              if (!(error instanceof GraphQLError)) throw error;
              throw limitError(operation, error.message);
            }
            if (cost > limits.maxCost) {
              const message = `${operationLabel(operation)}'s estimated cost is ${cost}; at most ${limits.maxCost} is allowed`;
              throw limitError(operation, message, { cost, maxCost: limits.maxCost });
            }
            if (seen === undefined) known.set(operation, costReadsVariables(document, operation) ? VARIABLE : cost);
          },
        };
      },
    };
  }
}
