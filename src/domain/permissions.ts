export const PERMISSIONS = [
  'campaigns.duplicate',
  'campaigns.list',
  'campaigns.details',
  'security_events.read',
] as const;

export type Permission = (typeof PERMISSIONS)[number];

export const isPermission = (value: string): value is Permission =>
  (PERMISSIONS as readonly string[]).includes(value);
