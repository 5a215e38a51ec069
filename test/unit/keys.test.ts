import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { isAllowedIp, parseAllowlist } from '../../src/domain/ip-allowlist.js';
import { displayPrefix, generateApiKey, hashApiKey, hashesEqual, isWellFormedApiKey, KEY_PREFIX } from '../../src/domain/keys.js';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

describe('API key format', () => {
  it('is cgw_ + 32 base62 characters of randomness (over 160 bits) + a 6-character checksum', () => {
    const keys = Array.from({ length: 500 }, generateApiKey);
    for (const key of keys) {
      expect(key).toMatch(/^cgw_[0-9A-Za-z]{38}$/);
      expect(isWellFormedApiKey(key)).toBe(true);
    }
    expect(32 * Math.log2(62)).toBeGreaterThan(160);
    expect(new Set(keys).size).toBe(keys.length);
    // Every base62 character shows up in the random part: the alphabet is used in full.
    const seen = new Set(keys.flatMap((key) => [...key.slice(4, 36)]));
    expect(seen.size).toBe(62);
  });

  it('refuses a key when any single character is changed, cut or added', () => {
    const key = generateApiKey();
    for (let index = KEY_PREFIX.length; index < key.length; index += 1) {
      const replacement = BASE62[(BASE62.indexOf(key[index]) + 1) % 62];
      expect(isWellFormedApiKey(key.slice(0, index) + replacement + key.slice(index + 1))).toBe(false);
    }
    for (const bad of [key.slice(0, -1), `${key}A`, key.replace('cgw_', 'CGW_'), key.replace('cgw_', 'cgx_'), '', 'cgw_', `${key.slice(0, 20)}\u0000${key.slice(21)}`]) {
      expect(isWellFormedApiKey(bad)).toBe(false);
    }
  });

  it('accepts keys issued before: the checksum is computed the same way', () => {
    for (const key of ['cgw_XQM48P2KtCrvCjYhs9yEfPrc1yww9L3VRMYD23', 'cgw_TubSksPMQTsFi3WQZdQ3HoF5M9p3ABLJZkJU0d', 'cgw_QNDIO2ytpeVDhv5oDCdFemYJ54RbTZ3nisJXfJ']) {
      expect(isWellFormedApiKey(key)).toBe(true);
    }
  });

  it('is stored as its SHA-256 and compared as bytes of equal length', () => {
    const key = generateApiKey();
    const hash = hashApiKey(key);
    expect(hash).toBe(createHash('sha256').update(key).digest('hex'));
    expect(hash).not.toContain(key.slice(KEY_PREFIX.length));
    expect(hashesEqual(hash, hashApiKey(key))).toBe(true);
    expect(hashesEqual(hash, hashApiKey(generateApiKey()))).toBe(false);
    expect(hashesEqual(hash, hash.slice(0, 62))).toBe(false);
    expect(hashesEqual(hash, '')).toBe(false);
  });

  it('shows only the prefix and six characters in listings', () => {
    const key = generateApiKey();
    expect(displayPrefix(key)).toBe(key.slice(0, 10));
  });
});

describe('IP allowlists', () => {
  it('canonicalises addresses and CIDR ranges, IPv4 and IPv6', () => {
    expect(parseAllowlist(['10.1.2.3/8', '192.168.1.7', '::1', '2001:DB8::5/32', ' 10.0.0.0/8 '])).toEqual([
      '10.0.0.0/8',
      '192.168.1.7/32',
      '::1/128',
      '2001:db8::/32',
    ]);
  });

  it.each(['10.0.0.300', '10.1', '0x0a.0.0.1', '10.0.0.0/33', '::1/129', '10.0.0.0/8/8', 'localhost', '', '*', 'fe80::1%eth0', '10.0.0.0/-1'])(
    'refuses %j',
    (entry) => {
      expect(() => parseAllowlist([entry])).toThrow(/not an IP address or CIDR range/);
    },
  );

  it.each([
    ['10.20.30.40', ['10.0.0.0/8'], true],
    ['11.0.0.1', ['10.0.0.0/8'], false],
    ['::ffff:10.1.2.3', ['10.0.0.0/8'], true],
    ['::1', ['::1/128'], true],
    ['::2', ['::1/128'], false],
    ['2001:db8:1::9', ['2001:db8::/32'], true],
    ['2001:db9::1', ['2001:db8::/32'], false],
    ['127.0.0.1', ['::1/128'], false],
    ['127.0.0.1', ['192.0.2.0/24', '127.0.0.1/32'], true],
    ['10.1.2.3', ['::ffff:a00:0/104'], true],
    ['::ffff:10.1.2.3', ['::ffff:a00:0/104'], true],
    ['11.1.2.3', ['::ffff:a00:0/104'], false],
    ['10.1.2.3', ['::/64'], false],
    ['not-an-ip', ['0.0.0.0/0'], false],
    ['10.0.0.1', [], false],
  ] as const)('%s in %j → %s', (ip, ranges, expected) => {
    expect(isAllowedIp(ip, ranges)).toBe(expected);
  });
});
