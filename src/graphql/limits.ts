import { createRequire } from 'node:module';
import type { ApolloServerPlugin } from '@apollo/server';
import {
  BREAK,
  getVariableValues,
  GraphQLError,
  Kind,
  visit,
  type DocumentNode,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValidationContext,
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
function measure(context: ValidationContext, set: SelectionSetNode, fragments: Map<string, Shape>, visiting: Set<string>): Shape {
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
      const inner = selection.selectionSet ? measure(context, selection.selectionSet, fragments, visiting) : { depth: 0, aliases: 0, duplicates: 0 };
      add(inner, 1);
    } else if (selection.kind === Kind.INLINE_FRAGMENT) {
      add(measure(context, selection.selectionSet, fragments, visiting), 0);
    } else {
      const name = selection.name.value;
      // A cycle is its own validation error (NoFragmentCycles); it adds nothing here.
      if (visiting.has(name)) continue;
      let inner = fragments.get(name);
      if (!inner) {
        const fragment = context.getFragment(name);
        if (!fragment) continue;
        visiting.add(name);
        inner = measure(context, fragment.selectionSet, fragments, visiting);
        visiting.delete(name);
        fragments.set(name, inner);
      }
      add(inner, 0);
    }
  }
  return shape;
}

/**
 * Per operation, while the document is validated: an operation type the schema has, and the depth, aliases
 * and duplicateCampaign fields within the limits.
 */
export function operationShapeRule(limits: GraphQLLimits): ValidationRule {
  return (context) => {
    const fragments = new Map<string, Shape>();
    return {
      OperationDefinition(node) {
        const report = (message: string) => context.reportError(new GraphQLError(message, { nodes: [node] }));
        // graphql-js 16 would only find out while executing, and call it an internal error.
        if (!context.getSchema().getRootType(node.operation)) {
          report(`This API has no ${node.operation} operations`);
          return;
        }
        const shape = measure(context, node.selectionSet, fragments, new Set());
        if (shape.depth > limits.maxDepth) report(`The operation is nested ${shape.depth} levels deep; at most ${limits.maxDepth} are allowed`);
        if (shape.aliases > limits.maxAliases) report(`The operation has ${shape.aliases} aliases; at most ${limits.maxAliases} are allowed`);
        if (shape.duplicates > limits.maxDuplicatesPerOperation) {
          report(`The operation has ${shape.duplicates} duplicateCampaign fields; at most ${limits.maxDuplicatesPerOperation} are allowed`);
        }
      },
    };
  };
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
 * The estimated cost of the operation, with the request's variables, refused above the limit before anything
 * is executed. An operation whose estimate reads no variable costs the same on every request: once it is known
 * to be within the limit it is not estimated again (Apollo hands the same document, and so the same operation
 * node, for a repeated query text). Costs over the limit and requests with variables that do not fit are never
 * remembered, so their answers are worked out as on the first request.
 */
export class CostLimit {
  /** A cost within the limit, or VARIABLE when the estimate depends on the request's variables. */
  private readonly known = new WeakMap<OperationDefinitionNode, number | typeof VARIABLE>();

  constructor(
    private readonly schema: GraphQLSchema,
    private readonly maxCost: number,
  ) {}

  /** True once the operation is known to cost the same, within the limit, whatever its variables. */
  isFixedWithinLimit(operation: OperationDefinitionNode): boolean {
    return typeof this.known.get(operation) === 'number';
  }

  plugin(): ApolloServerPlugin {
    const { schema, maxCost, known } = this;
    return {
      async requestDidStart() {
        return {
          async didResolveOperation({ request, document, operation }) {
            // No such operation, or variables that do not fit it: Apollo answers those itself, with its own codes.
            if (!operation) return;
            const seen = known.get(operation);
            if (typeof seen === 'number') return;
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
              throw new GraphQLError(error.message, { extensions: { code: LIMIT_CODE, http: { status: 400 } } });
            }
            if (cost > maxCost) {
              throw new GraphQLError(`The operation's estimated cost is ${cost}; at most ${maxCost} is allowed`, {
                extensions: { code: LIMIT_CODE, cost, maxCost, http: { status: 400 } },
              });
            }
            if (seen === undefined) known.set(operation, costReadsVariables(document, operation) ? VARIABLE : cost);
          },
        };
      },
    };
  }
}
