import { isIPv4 } from 'node:net';
import ipaddr from 'ipaddr.js';

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** Strict forms only: `10.1` or `0x0a.0.0.1` are valid to ipaddr.js but never what an operator means. */
function parseEntry(entry: string): Range | null {
  const text = entry.trim();
  const [address, bits, extra] = text.split('/');
  if (extra !== undefined || !address) return null;
  if (ipaddr.IPv4.isValidFourPartDecimal(address)) {
    return bits === undefined ? [ipaddr.IPv4.parse(address), 32] : ipaddr.IPv4.isValidCIDRFourPartDecimal(text) ? ipaddr.IPv4.parseCIDR(text) : null;
  }
  if (ipaddr.IPv6.isValid(address) && !address.includes('%')) {
    return bits === undefined ? [ipaddr.IPv6.parse(address), 128] : ipaddr.IPv6.isValidCIDR(text) ? ipaddr.IPv6.parseCIDR(text) : null;
  }
  return null;
}

const canonical = ([address, bits]: Range): string => {
  const network =
    address.kind() === 'ipv4'
      ? ipaddr.IPv4.networkAddressFromCIDR(`${address.toString()}/${bits}`)
      : ipaddr.IPv6.networkAddressFromCIDR(`${address.toString()}/${bits}`);
  return `${network.toString()}/${bits}`;
};

export class AllowlistError extends Error {}

/**
 * Parses allowlist entries (an IPv4 or IPv6 address, or a CIDR range) into canonical CIDR ranges:
 * `10.1.2.3/8` → `10.0.0.0/8`, `::1` → `::1/128`. Throws on the first entry that is neither.
 */
export function parseAllowlist(entries: readonly string[]): string[] {
  const ranges = entries.map((entry) => {
    const range = parseEntry(entry);
    if (!range) throw new AllowlistError(`'${entry}' is not an IP address or CIDR range`);
    return canonical(range);
  });
  return [...new Set(ranges)];
}

const IPV6_BITS = 128n;
const IPV4_MAPPED_START = 0xffffn << 32n;

/** A range as the first and last address it holds, IPv4 as IPv4-mapped IPv6, so both families share one line. */
function span(text: string): [bigint, bigint] | null {
  const range = parseEntry(text);
  if (!range) return null;
  const [address, bits] = range;
  const bytes = address.kind() === 'ipv4' ? (address as ipaddr.IPv4).toIPv4MappedAddress().toByteArray() : address.toByteArray();
  const prefix = BigInt(address.kind() === 'ipv4' ? bits + 96 : bits);
  const start = bytes.reduce((value, byte) => (value << 8n) | BigInt(byte), 0n);
  return [start, start + (1n << (IPV6_BITS - prefix)) - 1n];
}

/**
 * Whether the ranges together hold every IPv4 address, or every IPv6 one: `0.0.0.0/0`, but also
 * `::ffff:0:0/96` or `0.0.0.0/1,128.0.0.0/1`.
 */
export function coversEveryAddress(ranges: readonly string[]): boolean {
  const spans = ranges.map(span).filter((value) => value !== null).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const covers = (first: bigint, last: bigint): boolean => {
    let next = first;
    for (const [start, end] of spans) {
      if (start > next) break;
      if (end >= next) next = end + 1n;
      if (next > last) return true;
    }
    return false;
  };
  return covers(IPV4_MAPPED_START, IPV4_MAPPED_START + 0xffffffffn) || covers(0n, (1n << IPV6_BITS) - 1n);
}

/**
 * Whether the client address is inside one of the ranges. IPv4-mapped IPv6 addresses count as IPv4, and an IPv4
 * address is inside an IPv4-mapped range that holds it (`::ffff:10.0.0.0/104`), as fastify's own proxy check has it.
 */
export function isAllowedIp(ip: string, ranges: readonly string[]): boolean {
  if (!ipaddr.isValid(ip)) return false;
  const address = ipaddr.process(ip);
  return ranges.some((text) => {
    const range = parseEntry(text);
    if (range === null) return false;
    if (range[0].kind() === address.kind()) return address.match(range);
    const mappedRange = range[0].kind() === 'ipv6' && range[1] >= 96 && (range[0] as ipaddr.IPv6).isIPv4MappedAddress();
    return mappedRange && (address as ipaddr.IPv4).toIPv4MappedAddress().match(range);
  });
}

const IPV4_WITH_PORT = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/;
const IPV6_WITH_PORT = /^\[([0-9a-f:.]+)\]:\d{1,5}$/i;

/**
 * A client address as a proxy reported it, without the port some proxies append (`203.0.113.9:41234`,
 * `[2001:db8::1]:41234`): the client picks its port, so counting per port would count nothing.
 */
export function withoutPort(address: string): string {
  const match = IPV4_WITH_PORT.exec(address) ?? IPV6_WITH_PORT.exec(address);
  return match && ipaddr.isValid(match[1]) ? match[1] : address;
}

/**
 * fastify's `trustProxy` for the proxies' ranges: whether an address, the TCP peer or an X-Forwarded-For entry, is
 * one of the proxies. An entry is checked without the port a load balancer may append to it: with the port it is no
 * address, so fastify's own check of the ranges distrusted it and took the inner proxy for the client.
 */
export const trustedProxies =
  (ranges: readonly string[]) =>
  (address: string): boolean =>
    isAllowedIp(withoutPort(address), ranges);

/**
 * The network a client address stands for when counting what it does: an IPv4 address is one client, an
 * IPv6 address is its /64, which one subscriber or host usually holds whole and can pick addresses from at will.
 * Anything that is no IP address is returned as it is.
 */
export function clientNetwork(ip: string): string {
  // Asked on every authenticated request: the common case skips parsing.
  if (isIPv4(ip) || !ipaddr.isValid(ip)) return ip;
  const address = ipaddr.process(ip);
  if (address.kind() === 'ipv4') return address.toString();
  return `${ipaddr.IPv6.networkAddressFromCIDR(`${address.toString()}/64`).toString()}/64`;
}
