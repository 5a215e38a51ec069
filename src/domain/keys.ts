import { hash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Keys look like `cgw_<32 base62 chars><6 base62 chars of checksum>`: 190 random bits, a prefix secret
 * scanners can match, and a checksum that lets the gateway refuse a mistyped or forged key before any
 * store lookup.
 */
export const KEY_PREFIX = 'cgw_';
const BODY_LENGTH = 32;
const CHECKSUM_LENGTH = 6;
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const KEY_PATTERN = new RegExp(`^${KEY_PREFIX}[0-9A-Za-z]{${BODY_LENGTH + CHECKSUM_LENGTH}}$`);

function toBase62(bytes: Buffer, length: number): string {
  let value = BigInt(`0x${bytes.toString('hex')}`);
  let out = '';
  while (out.length < length) {
    out = BASE62[Number(value % 62n)] + out;
    value /= 62n;
  }
  return out;
}

const CHECKSUM_SPACE = 62n ** BigInt(CHECKSUM_LENGTH);

/**
 * The last six base62 digits of the first 8 bytes of the body's SHA-256. Every authenticated request checks it,
 * so it is computed from the one-shot hex digest with a single BigInt step and plain numbers after that.
 */
function checksum(body: string): string {
  let value = Number(BigInt(`0x${hash('sha256', body, 'hex').slice(0, 16)}`) % CHECKSUM_SPACE);
  let out = '';
  for (let index = 0; index < CHECKSUM_LENGTH; index += 1) {
    out = BASE62[value % 62] + out;
    value = Math.floor(value / 62);
  }
  return out;
}

export function generateApiKey(): string {
  const body = toBase62(randomBytes(24), BODY_LENGTH);
  return `${KEY_PREFIX}${body}${checksum(body)}`;
}

/** True when the key has the right shape and its checksum matches. */
export function isWellFormedApiKey(key: string): boolean {
  if (!KEY_PATTERN.test(key)) return false;
  // The checksum is a public function of the key's body: comparing it leaks nothing an attacker cannot compute.
  return checksum(key.slice(KEY_PREFIX.length, KEY_PREFIX.length + BODY_LENGTH)) === key.slice(KEY_PREFIX.length + BODY_LENGTH);
}

export function hashApiKey(key: string): string {
  return hash('sha256', key, 'hex');
}

export function hashesEqual(a: string, b: string): boolean {
  const left = Buffer.from(a, 'hex');
  const right = Buffer.from(b, 'hex');
  return left.length === right.length && timingSafeEqual(left, right);
}

/** What listings show of a key: enough to tell keys apart, never enough to use one. */
export const displayPrefix = (key: string): string => key.slice(0, KEY_PREFIX.length + 6);

/** A character as it is, or percent-encoded (a URL or a Host header may carry it either way). */
const spelledAnyWay = (character: string): string => {
  const code = character.charCodeAt(0).toString(16);
  return `(?:${character.replace(/[^0-9A-Za-z]/, '\\$&')}|%${code[0]}[${code[1].toLowerCase()}${code[1].toUpperCase()}])`;
};

// Anything that starts like a key, even truncated, mistyped or percent-encoded: logs must never carry one.
const KEY_LIKE = new RegExp(`${[...KEY_PREFIX].map(spelledAnyWay).join('')}(?:[0-9A-Za-z]|%[0-9A-Fa-f]{2}){4,}`, 'g');

/** Replaces every key-shaped token in a text. */
export const redactApiKeys = (text: string): string => text.replace(KEY_LIKE, `${KEY_PREFIX}[redacted]`);

const ANY_KEY_LIKE = new RegExp(KEY_LIKE.source);

/** Whether a text holds anything key-shaped (see KEY_LIKE). */
export const holdsApiKey = (text: string): boolean => ANY_KEY_LIKE.test(text);
