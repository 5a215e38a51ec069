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
import type { GraphQLContext } from './context.js';

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
 * graphql-js's OverlappingFieldsCanBeMergedRule compares every two fields of a selection set that share a response
 * name, and every two fragments spread into it, fragments expanded: a few kilobytes of `viewer { workspaceId }`
 * repeated, or of fragments spread side by side, cost it a tenth of a second to seconds, before any key is checked.
 * No real operation comes near these bounds. Within them the rule can still cost tens of milliseconds (50 same-named
 * fields each selecting a dozen more), past which graphql-js's own budget refuses the document ("Validation aborted").
 */
const MAX_FIELDS_PER_RESPONSE_NAME = 50;
const MAX_FRAGMENTS_PER_SELECTION = 50;

/** What one selection set merges: its fields by response name, and the fragments spread into it. */
interface Merged {
  names: Map<string, number>;
  fragments: Set<string>;
}

/**
 * The first selection set of the document that merges more same-named fields or more fragments than the rule can
 * afford, as a refusal, or null. Fragments count as the rule takes them: once per set, however often spread. Linear:
 * each fragment is merged once, and a set stops being merged at the first bound it passes.
 */
function mergeRefusal(document: DocumentNode): string | null {
  const definitions = new Map<string, FragmentDefinitionNode>();
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) definitions.set(definition.name.value, definition);
  }
  const mergedFragments = new Map<string, Merged>();
  const visiting = new Set<string>();
  let refusal: string | null = null;

  /** Adds `count` fields of one response name to the set, refusing past the bound. */
  const addFields = (into: Merged, name: string, count: number): void => {
    const total = (into.names.get(name) ?? 0) + count;
    into.names.set(name, total);
    if (total > MAX_FIELDS_PER_RESPONSE_NAME) {
      refusal = `A selection set merges ${total} fields named "${name}"; at most ${MAX_FIELDS_PER_RESPONSE_NAME} are allowed`;
    }
  };
  const merge = (set: SelectionSetNode, into: Merged): void => {
    for (const selection of set.selections) {
      if (refusal) return;
      if (selection.kind === Kind.FIELD) {
        addFields(into, selection.alias?.value ?? selection.name.value, 1);
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        merge(selection.selectionSet, into);
      } else {
        // Spread again, a fragment adds nothing to compare: graphql-js compares each fragment of a set once.
        if (into.fragments.has(selection.name.value)) continue;
        const fragment = fragmentMerged(selection.name.value);
        if (!fragment) continue;
        into.fragments.add(selection.name.value);
        for (const name of fragment.fragments) into.fragments.add(name);
        if (into.fragments.size > MAX_FRAGMENTS_PER_SELECTION) {
          refusal = `A selection set spreads ${into.fragments.size} fragments; at most ${MAX_FRAGMENTS_PER_SELECTION} are allowed`;
          return;
        }
        for (const [name, count] of fragment.names) {
          addFields(into, name, count);
          if (refusal) return;
        }
      }
    }
  };
  // A cycle or an unknown fragment is a validation error of its own; it merges nothing here.
  const fragmentMerged = (name: string): Merged | undefined => {
    const known = mergedFragments.get(name);
    if (known) return known;
    const definition = definitions.get(name);
    if (!definition || visiting.has(name)) return undefined;
    visiting.add(name);
    const merged: Merged = { names: new Map(), fragments: new Set() };
    merge(definition.selectionSet, merged);
    visiting.delete(name);
    mergedFragments.set(name, merged);
    return merged;
  };

  visit(document, {
    SelectionSet(set) {
      merge(set, { names: new Map(), fragments: new Set() });
      return refusal ? BREAK : undefined;
    },
  });
  return refusal;
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

/**
 * The estimated cost of one operation of `document` with these variables: one per field, a list times its `first`.
 * What GRAPHQL_MAX_COST bounds and the read budget charges. Throws a GraphQLError for a document too large to estimate.
 */
export function estimatedCost(
  schema: GraphQLSchema,
  document: DocumentNode,
  operation: OperationDefinitionNode,
  variables: Record<string, unknown> | undefined,
): number {
  // Only the operation that runs, with the fragments: the library trips over anonymous operations when given an
  // operation name.
  const query: DocumentNode = {
    kind: Kind.DOCUMENT,
    definitions: [operation, ...document.definitions.filter((definition) => definition.kind === Kind.FRAGMENT_DEFINITION)],
  };
  return getComplexity({ schema, query, variables: variables ?? {}, estimators: [paginatedEstimator, simpleEstimator({ defaultComplexity: 1 })] });
}

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

/**
 * Object fields and list items that variables may hold in all before their errors are found one at a time: below
 * it, graphql-js's 50 errors, each quoting the whole value (its objects' every field), cost next to nothing.
 */
const PLAIN_VARIABLE_ENTRIES = 100;

/** Whether `value` holds more than PLAIN_VARIABLE_ENTRIES object fields and list items, counted until it does. */
export function holdsManyEntries(value: unknown): boolean {
  let left = PLAIN_VARIABLE_ENTRIES;
  const walk = (node: unknown): boolean => {
    if (typeof node !== 'object' || node === null) return false;
    if (Array.isArray(node)) {
      left -= node.length;
      if (left < 0) return true;
      for (const item of node) if (walk(item)) return true;
      return false;
    }
    for (const key in node) {
      left -= 1;
      if (left < 0 || walk((node as Record<string, unknown>)[key])) return true;
    }
    return false;
  };
  return walk(value);
}

/**
 * The first reason the request's variables do not fit the operation, answered as Apollo answers it (400,
 * BAD_USER_INPUT), or null. Apollo would leave it to graphql-js's execute, which reports up to 50, each quoting the
 * whole value: for a value with thousands of unknown fields, a tenth of a second and megabytes of answer.
 */
function firstVariableError(schema: GraphQLSchema, operation: OperationDefinitionNode, variables: Record<string, unknown> | undefined): GraphQLError | null {
  const definitions = operation.variableDefinitions ?? [];
  if (definitions.length === 0) return null;
  const [first] = getVariableValues(schema, definitions, variables ?? {}, { maxErrors: 1 }).errors ?? [];
  if (!first) return null;
  return new GraphQLError(first.message, { nodes: first.nodes, extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } } });
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
  /** The empty documents validated in place of documents that merge too much, with the refusal each stands for. */
  private readonly refusedMerges = new WeakMap<DocumentNode, string>();

  /** Refuses, as a validation error, a document the plugin found to merge too much (see mergeRefusal). */
  readonly validationRule: ValidationRule = (context) => ({
    Document: (node) => {
      const refusal = this.refusedMerges.get(node);
      if (refusal) context.reportError(new GraphQLError(refusal));
    },
  });

  constructor(
    private readonly schema: GraphQLSchema,
    private readonly limits: GraphQLLimits,
  ) {}

  /** The operation's cost once it is known to be within the limits at that cost, whatever its variables. */
  fixedCost(operation: OperationDefinitionNode): number | undefined {
    const seen = this.known.get(operation);
    return typeof seen === 'number' ? seen : undefined;
  }

  /** Refuses operations over a limit, and gives the context of every other its estimated cost (its reads' price). */
  plugin(): ApolloServerPlugin<GraphQLContext> {
    const { schema, limits, known, refusedMerges } = this;
    /** The operation's estimated cost, once it is known to be within every limit with these variables; else a refusal. */
    const checkedCost = (document: DocumentNode, operation: OperationDefinitionNode, variables: Record<string, unknown> | undefined): number => {
      const seen = known.get(operation);
      // Within the limits whatever its variables: only variables large enough to make their errors costly are
      // checked here, the rest by execute.
      if (typeof seen === 'number' && !holdsManyEntries(variables)) return seen;
      if (seen === undefined) {
        const refusal = shapeRefusal(document, operation, limits);
        if (refusal) throw limitError(operation, refusal);
      }
      const variableError = firstVariableError(schema, operation, variables);
      if (variableError) throw variableError;
      if (typeof seen === 'number') return seen;
      let cost: number;
      try {
        cost = estimatedCost(schema, document, operation, variables);
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
      return cost;
    };
    return {
      async requestDidStart() {
        return {
          // Apollo validates the document it holds once this returns: one that merges too much is swapped for an
          // empty one, whose validation reports the refusal, so that graphql-js never compares its fields.
          async validationDidStart(requestContext) {
            const refusal = mergeRefusal(requestContext.document);
            if (!refusal) return;
            const standIn: DocumentNode = { kind: Kind.DOCUMENT, definitions: [] };
            refusedMerges.set(standIn, refusal);
            Object.assign(requestContext, { document: standIn });
          },
          async didResolveOperation({ request, document, operation, contextValue }) {
            // No such operation: Apollo answers that itself, with its own code.
            if (!operation) return;
            contextValue.setOperationCost(checkedCost(document, operation, request.variables));
          },
        };
      },
    };
  }
}
