import { GatewayError } from './errors.js';
import { isGatewayId } from './ids.js';

/**
 * Opaque cursors: base64url of `<kind>:<value>`, so clients cannot depend on what is inside. A row's cursor is
 * its id, which the row shows anyway: a sequence number would tell how many rows every workspace together
 * made between two of the caller's.
 */
export function encodeCursor(kind: string, value: string | number): string {
  return Buffer.from(`${kind}:${value}`).toString('base64url');
}

function decode(kind: string, cursor: string | null | undefined, isValue: (value: string) => boolean): string | undefined {
  if (cursor === null || cursor === undefined || cursor === '') return undefined;
  const decoded = Buffer.from(cursor, 'base64url').toString();
  const separator = decoded.indexOf(':');
  if (decoded.slice(0, separator) !== kind || !isValue(decoded.slice(separator + 1))) {
    throw new GatewayError('BAD_USER_INPUT', 'Invalid cursor', { issues: [{ field: 'after', message: 'is not a cursor this list returned' }] });
  }
  return decoded.slice(separator + 1);
}

/**
 * The id of the row a cursor stands after. A cursor of another shape, such as the sequence numbers cursors
 * carried before, is refused rather than read as an id that matches nothing.
 */
export const decodeRowCursor = (kind: string, cursor: string | null | undefined): string | undefined => decode(kind, cursor, isGatewayId);

/**
 * A cursor whose event is gone (pruned past retention, or never the caller workspace's), which the store refuses
 * rather than answer the empty page that reads as the end of the list. Paging cannot continue from it: the cursor
 * holds only the id, and the place the event had in the list (its sequence number) is not kept anywhere else.
 */
export const eventCursorGone = (): GatewayError =>
  new GatewayError('BAD_USER_INPUT', 'The event this cursor points at is not in this workspace', {
    issues: [
      {
        field: 'after',
        // Which of the two the store does not say: that another workspace's event exists is not the caller's to learn.
        message: "names no event of this workspace (deleted once past its retention period, or never this workspace's): start again from the first page",
      },
    ],
  });

/** A campaigns cursor whose campaign the workspace does not have: campaigns are deleted only with their workspace. */
export const campaignCursorUnknown = (): GatewayError =>
  new GatewayError('BAD_USER_INPUT', 'Invalid cursor', { issues: [{ field: 'after', message: 'names no campaign of this workspace' }] });

/** A position in a list read from elsewhere (the upstream's pages), which has no ids of the gateway's. */
export function decodeOffsetCursor(kind: string, cursor: string | null | undefined): number | undefined {
  const offset = decode(kind, cursor, (value) => /^\d{1,15}$/.test(value));
  return offset === undefined ? undefined : Number(offset);
}
