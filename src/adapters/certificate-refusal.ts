/**
 * Node's codes for a TLS certificate it does not accept (an unknown CA, a self-signed one, an expired one, a
 * name it does not cover…): no reconnection fixes them.
 */
export const certificateRefusal = (error: unknown): string | undefined => {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /CERT|SIGNATURE|ISSUER/.test(code) ? code : undefined;
};
