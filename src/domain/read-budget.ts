/**
 * Reads are answered on the instance's shared event loop and store connections: a workspace's reads spend its
 * estimated cost per minute (READ_BUDGET_PER_MINUTE), so that one workspace reading flat out cannot slow every other.
 * The default answers the README's job poll (35) 28,571 times a minute, 1,175 without its `first: 2` (851), and the
 * costliest query GRAPHQL_MAX_COST allows 100 times.
 */
export const DEFAULT_READ_BUDGET_PER_MINUTE = 1_000_000;

/** REST's job read costs what GraphQL's duplicationJob asking for the fields REST answers does (a test keeps it so). */
export const JOB_READ_COST = 20;
