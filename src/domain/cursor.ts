import { GatewayError } from './errors.js';

/** Opaque cursors: base64url of `<kind>:<sequence>`, so clients cannot depend on what is inside. */
export function encodeCursor(kind: string, seq: number): string {
  return Buffer.from(`${kind}:${seq}`).toString('base64url');
}

export function decodeCursor(kind: string, cursor: string | null | undefined): number | undefined {
  if (cursor === null || cursor === undefined || cursor === '') return undefined;
  const decoded = Buffer.from(cursor, 'base64url').toString();
  const match = /^([a-z]+):(\d{1,15})$/.exec(decoded);
  if (!match || match[1] !== kind) {
    throw new GatewayError('BAD_USER_INPUT', 'Invalid cursor', { issues: [{ field: 'after', message: 'is not a cursor this list returned' }] });
  }
  return Number(match[2]);
}
