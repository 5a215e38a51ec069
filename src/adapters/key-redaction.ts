/**
 * The shortest run of the key's leading characters redacted wherever it appears. Systems that print part of a
 * secret print its start, often 8 to 16 characters; a run this long of a random key does not occur in ordinary
 * words, where a shorter one (a Braze key of hex digits starting `dead`, `cafe`) could.
 */
const KEY_PREFIX_LENGTH = 8;
/**
 * The shortest run of the key's characters, from anywhere in it, redacted wherever it appears: what is left of a
 * key cut at its start, or printed in part from its middle, is as good as the key to whoever can guess the rest.
 */
const KEY_RUN_LENGTH = 12;
/** The multiplier of the rolling hash that finds candidate runs (FNV's prime). */
const HASH_BASE = 0x01000193;
/** HASH_BASE to the power KEY_RUN_LENGTH - 1, 32-bit: what the character leaving a run weighs in its hash. */
const HASH_TOP = Array.from({ length: KEY_RUN_LENGTH - 1 }).reduce<number>((power) => Math.imul(power, HASH_BASE), 1);
const SEPARATOR = /[\s\p{Cc}\p{Cf}]/u;

/**
 * A character as runs compare it: lower-cased, or -1 for one that is skipped. Spaces, control and invisible
 * formatting characters are skipped, so that a key printed with its characters spaced out is still a run.
 */
function fold(code: number): number {
  if (code < 0x80) {
    if (code <= 0x20 || code === 0x7f) return -1;
    return code >= 0x41 && code <= 0x5a ? code + 0x20 : code;
  }
  const character = String.fromCharCode(code);
  if (SEPARATOR.test(character)) return -1;
  const lower = character.toLowerCase();
  return lower.length === 1 ? lower.charCodeAt(0) : code;
}

/** Where a run's hash has its bit in a filter of runs' hashes: one bit for each value of its top 16 bits. */
const filterIndex = (hash: number): number => hash >>> 19;
const filterBit = (hash: number): number => 1 << ((hash >>> 16) & 7);

/**
 * Calls `found` with each run of KEY_RUN_LENGTH characters that count in `text` (every run, or only those whose
 * hash has its bit set in `filter`): the run folded, its hash, and where it starts and ends in `text`. Only those
 * runs cost a string.
 */
function scanRuns(text: string, filter: Uint8Array | null, found: (folded: string, hash: number, start: number, end: number) => void): void {
  const codes = new Int32Array(KEY_RUN_LENGTH);
  const starts = new Int32Array(KEY_RUN_LENGTH);
  // The slot of the run's oldest character, which the next one replaces.
  let slot = 0;
  let count = 0;
  let hash = 0;
  for (let index = 0; index < text.length; index++) {
    const code = fold(text.charCodeAt(index));
    if (code === -1) continue;
    hash = (Math.imul((hash - Math.imul(codes[slot], HASH_TOP)) | 0, HASH_BASE) + code) | 0;
    codes[slot] = code;
    starts[slot] = index;
    slot = slot === KEY_RUN_LENGTH - 1 ? 0 : slot + 1;
    if (++count >= KEY_RUN_LENGTH && (filter === null || (filter[filterIndex(hash)] & filterBit(hash)) !== 0)) {
      found(String.fromCharCode(...codes.subarray(slot), ...codes.subarray(0, slot)), hash, starts[slot], index + 1);
    }
  }
}

/**
 * The key's base64, in both alphabets: whole (padding included), and as it reads inside any base64 that holds it
 * (`user:key` for Basic auth, say).
 */
function base64Forms(key: string): string[] {
  const bytes = Buffer.from(key, 'utf8');
  const forms = [bytes.toString('base64'), bytes.toString('base64url')];
  // The key may start at any of the three places in a group of three bytes: the characters that also carry a
  // neighbour's bits are left out, the rest is the same whatever the neighbours.
  for (let shift = 0; shift < 3; shift++) {
    const shifted = Buffer.concat([Buffer.alloc(shift), bytes]);
    const from = Math.ceil((8 * shift) / 6);
    const to = Math.floor((8 * shifted.length) / 6);
    forms.push(shifted.toString('base64').slice(from, to), shifted.toString('base64url').slice(from, to));
  }
  return forms;
}

/**
 * Finds the upstream key in upstream text, built once per key. Redacted: the key in any case and any run of its
 * first KEY_PREFIX_LENGTH or more characters; any run of KEY_RUN_LENGTH or more of its characters from anywhere in
 * it, in any case, spaced out or not; and the same runs of its base64 and URL-encoded forms.
 */
export class KeyRedaction {
  private readonly prefix: RegExp;
  /** Every run of KEY_RUN_LENGTH characters of the key's forms, folded. */
  private readonly keyRuns = new Set<string>();
  /** Their hashes, as a filter (see filterIndex): almost every run of other text is passed over on one read. */
  private readonly keyRunHashes = new Uint8Array(1 << 13);

  constructor(key: string) {
    const characters = [...key].map((character) => character.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'));
    const required = Math.min(KEY_PREFIX_LENGTH, characters.length);
    // Each further character only after the one before it, as far as the text goes on like the key: the longest run is redacted.
    const rest = characters.slice(required).reduceRight((tail, character) => `(?:${character}${tail})?`, '');
    this.prefix = new RegExp(characters.slice(0, required).join('') + rest, 'gi');
    const forms = [key, encodeURIComponent(key), new URLSearchParams({ k: key }).toString().slice(2), ...base64Forms(key)];
    for (const form of forms) {
      scanRuns(form, null, (folded, hash) => {
        this.keyRuns.add(folded);
        this.keyRunHashes[filterIndex(hash)] |= filterBit(hash);
      });
    }
  }

  /** Whether the text holds the key in any of the shapes `redact` takes out. */
  holds(text: string): boolean {
    return this.found(text).length > 0;
  }

  redact(text: string): string {
    const found = this.found(text);
    if (found.length === 0) return text;
    let redacted = '';
    let at = 0;
    for (const [start, end] of found) {
      redacted += `${text.slice(at, start)}[redacted]`;
      at = end;
    }
    return redacted + text.slice(at);
  }

  /** Where the key's shapes are in the text: ranges [start, end), in order, overlapping ones joined. */
  private found(text: string): [number, number][] {
    const ranges: [number, number][] = [...text.matchAll(this.prefix)].map((match) => [match.index, match.index + match[0].length]);
    scanRuns(text, this.keyRunHashes, (folded, _hash, start, end) => {
      if (this.keyRuns.has(folded)) ranges.push([start, end]);
    });
    ranges.sort((a, b) => a[0] - b[0]);
    const joined: [number, number][] = [];
    for (const range of ranges) {
      const last = joined.at(-1);
      if (last && range[0] <= last[1]) last[1] = Math.max(last[1], range[1]);
      else joined.push(range);
    }
    return joined;
  }
}
