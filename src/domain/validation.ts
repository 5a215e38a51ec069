import { z } from 'zod';
import { GatewayError, type FieldIssue } from './errors.js';
import { holdsApiKey } from './keys.js';

/** A JSON object: not null, not an array. */
export const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

export const LIMITS = {
  campaignIdLength: 128,
  nameLength: 255,
  descriptionLength: 4096,
  tagCount: 50,
  tagLength: 100,
  idempotencyKeyLength: 255,
} as const;

// C0/C1 control characters (other than tab and newlines in descriptions), and the bidirectional overrides and
// isolates that make text display other than it reads, are never meaningful in these fields. Right-to-left
// scripts, emoji and zero-width joiners are ordinary text and pass.
const NO_CONTROL = /^[^\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]*$/;
const NO_CONTROL_MULTILINE = /^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*$/;

// At least one character that shows: a name of spaces, zero-width or other default-ignorable characters (the Hangul
// fillers, variation selectors, the combining grapheme joiner) or combining marks alone is empty. The blank Braille
// pattern (U+2800), the null notehead (U+1D159) and the object replacement character (U+FFFC) are symbols to Unicode,
// yet draw nothing of their own: a name of them alone looks empty too.
const VISIBLE = /[^\s\p{C}\p{Z}\p{M}\p{Default_Ignorable_Code_Point}\u2800\u{1D159}\uFFFC]/u;

/** One line of text a person can read: something visible, no control or bidirectional formatting characters, valid Unicode. */
export const isReadableLine = (value: string): boolean => VISIBLE.test(value) && NO_CONTROL.test(value) && value.isWellFormed();

/**
 * Lengths are counted in characters as a person counts them, code points: an emoji is one character, though
 * it takes two UTF-16 units. A code point is at most two units, so the limits still bound what is stored.
 */
export const characters = (value: string): number => [...value].length;

/** How the limits count, for the documents that state them. */
export const CHARACTERS = 'characters (Unicode code points: an emoji is one, though it takes two UTF-16 units)';

// Checked first: only the first issue of a field is answered, and a lone surrogate is neither visible nor a control
// character, so any other check would misname what is wrong with it.
const wellFormed = (message: string | ((issue: { input: unknown }) => string)) => z.string({ error: message }).refine((value) => value.isWellFormed(), { message: 'must be valid Unicode' });

/**
 * Text as it is kept and compared: in Unicode's composed form (NFC), so that an `é` typed as `e` and a combining
 * accent is the `é` a tag or campaign was stored with. Lengths are checked on the text as kept.
 */
export const composed = (value: string): string => value.normalize('NFC');

/** A required field that is missing, or holds something other than a string. */
const notAString = ({ input }: { input: unknown }): string => (input === undefined ? 'is required' : 'must be a string');

/**
 * Text as a person reads it, checked as it is kept (see asKept). `typeMessage` answers a value that is no string,
 * `message` one with nothing visible.
 */
const text = (message: string, max: number, typeMessage: string | typeof notAString = notAString) =>
  wellFormed(typeMessage)
    .refine((value) => VISIBLE.test(value), { message })
    .refine((value) => characters(value) <= max, { message: `must be at most ${max} characters` })
    .refine((value) => NO_CONTROL.test(value), { message: 'must not contain control or bidirectional formatting characters' });

const tagName = text('must be a non-empty string', LIMITS.tagLength);

/**
 * A name or description is sent upstream and shown to every reader of the workspace's events: a key pasted into one
 * by mistake is refused, as the CLI refuses one in an operator's reason.
 */
const NO_API_KEY = [(value: string) => !holdsApiKey(value), { message: 'must not hold an API key' }] as const;

const CAMPAIGN_ID_MESSAGE = 'must be a string of the object api identifier';

const duplicateInputSchema = z.object({
  // Braze's wording, whatever is wrong with it, which Braze clients may match on.
  campaignId: text(CAMPAIGN_ID_MESSAGE, LIMITS.campaignIdLength, CAMPAIGN_ID_MESSAGE),
  name: text('must be a non-empty string', LIMITS.nameLength).refine(...NO_API_KEY),
  description: wellFormed('must be a string')
    .refine((value) => characters(value) <= LIMITS.descriptionLength, { message: `must be at most ${LIMITS.descriptionLength} characters` })
    .refine((value) => NO_CONTROL_MULTILINE.test(value), { message: 'must not contain control or bidirectional formatting characters' })
    .refine(...NO_API_KEY)
    .nullish(),
  tagNames: z
    .union([tagName.transform((tag) => [tag]), z.array(tagName, { error: 'must be an array of strings' })], {
      error: 'must be an array of strings',
    })
    .refine((tags) => tags.length <= LIMITS.tagCount, { message: `must have at most ${LIMITS.tagCount} tags` })
    .nullish(),
}, { error: 'must be a JSON object' });

export interface DuplicateCampaignInput {
  campaignId: string;
  name: string;
  description: string | null;
  /** null: keep the source campaign's tags. */
  tagNames: string[] | null;
}

/** Whatever the transport received; anything but an object with these fields is refused. */
export type RawDuplicateCampaignInput = unknown;

function toIssues(error: z.ZodError): FieldIssue[] {
  const seen = new Set<string>();
  const issues: FieldIssue[] = [];
  for (const issue of error.issues) {
    const field = String(issue.path[0] ?? 'body');
    if (seen.has(field)) continue;
    seen.add(field);
    issues.push({ field, message: issue.message });
  }
  return issues;
}

/** The message of a validation error: a heading for its issues, which say what is wrong. */
export const INVALID_REQUEST = 'Invalid request';

export function validationError(issues: FieldIssue[]): GatewayError {
  return new GatewayError('BAD_USER_INPUT', INVALID_REQUEST, { issues });
}

const keptName = (value: unknown): unknown => (typeof value === 'string' ? composed(value.trim()) : value);

/**
 * The fields as they are kept, for the schema to check: the name and tags trimmed and composed (NFC), which can make
 * them longer (U+1D160 composes to three code points) or shorter, and the description composed; the campaign id as
 * sent. Done before the schema rather than as its transforms, which cost every accepted request a pipe per field.
 */
function asKept(raw: RawDuplicateCampaignInput): RawDuplicateCampaignInput {
  if (!isRecord(raw)) return raw;
  const { name, description, tagNames } = raw;
  return {
    ...raw,
    name: keptName(name),
    description: typeof description === 'string' ? composed(description) : description,
    tagNames: Array.isArray(tagNames) ? tagNames.map(keptName) : keptName(tagNames),
  };
}

export function parseDuplicateInput(raw: RawDuplicateCampaignInput): DuplicateCampaignInput {
  const result = duplicateInputSchema.safeParse(asKept(raw));
  if (!result.success) throw validationError(toIssues(result.error));
  return normalized(result.data);
}

/** The input as the service uses it, or undefined when it is not valid. */
export function normalizeDuplicateInput(raw: RawDuplicateCampaignInput): DuplicateCampaignInput | undefined {
  const result = duplicateInputSchema.safeParse(asKept(raw));
  return result.success ? normalized(result.data) : undefined;
}

/** The input as the schema left it (names and tags trimmed, text composed), with defaults and repeated tags dropped. */
function normalized({ campaignId, name, description, tagNames }: z.infer<typeof duplicateInputSchema>): DuplicateCampaignInput {
  return { campaignId, name, description: description ?? null, tagNames: tagNames ? [...new Set(tagNames)] : null };
}

// An accent: a combining mark on a Latin, Greek, Cyrillic or common character, which draws onto the character before
// it. Marks of scripts written with them (Devanagari's vowel signs, Hebrew's points) are their text.
const ON_ALIKE_LETTER = String.raw`(?<=[\p{Script=Latin}\p{Script=Greek}\p{Script=Cyrillic}\p{Script=Common}]\p{M}*)\p{M}`;
export const ACCENT = new RegExp(ON_ALIKE_LETTER, 'gu');

// Characters support cannot tell apart on screen: invisible ones (format and other control characters, those Unicode
// says to ignore, spaces other than the ASCII space) and accents left once composed (NFC).
const UNSEEN = new RegExp(String.raw`[\p{C}\p{Default_Ignorable_Code_Point}\p{Z}]|${ON_ALIKE_LETTER}`, 'gu');

/**
 * A value a caller sent, quoted in a message for people to read: in quotes, with every character of UNSEEN written
 * as its escape (`'promo\u200B'`, `'x\u0301'`), so that two values that look alike read differently.
 */
export function quoted(value: string): string {
  const escape = (char: string) => {
    const code = char.codePointAt(0)!;
    const hex = code.toString(16).toUpperCase();
    return code === 0x20 ? char : code > 0xffff ? `\\u{${hex}}` : `\\u${hex.padStart(4, '0')}`;
  };
  return `'${value.replace(UNSEEN, escape)}'`;
}

/** The widest window one security-event download may cover. */
export const MAX_EVENT_RANGE_DAYS = 366;

export interface EventRange {
  /** Inclusive. */
  start: Date;
  /** Exclusive. */
  end: Date;
}

const RANGE_BOUND_HINT = 'an ISO 8601 date (2024-05-01) or date-time with a time zone (2024-05-01T12:00:00Z)';
// A date-time without a zone would be read in the server's zone: refuse it rather than guess. Seconds are optional.
const rangeBound = z.union([z.iso.date(), z.iso.datetime({ offset: true }), z.iso.datetime({ offset: true, precision: -1 })]);

/**
 * A bound of a window of events, from a date-time's text already checked. Events are stamped to the millisecond and
 * Date cuts finer digits off, so that `since …13.6279Z` would take in an event of …13.627Z and `until …13.6281Z` leave
 * out one of …13.628Z: a bound finer than a millisecond is rounded up to the next, which keeps "the start is
 * included, the end excluded" exact. A bound already whole stays.
 */
export function eventTimeBound(text: string): Date {
  const date = new Date(text);
  const finerThanMilliseconds = /\.\d{3}(\d+)/.exec(text)?.[1] ?? '';
  return /[1-9]/.test(finerThanMilliseconds) ? new Date(date.getTime() + 1) : date;
}

const PLUS_HINT = '; a + in a query string is read as a space: URL-encode the offset\'s + as %2B (2024-05-01T12:00:00%2B01:00)';

/** A date-time whose offset's `+` was sent unencoded in the query string, which makes it a space. */
const lostItsPlus = (raw: unknown): boolean => typeof raw === 'string' && raw.includes(' ') && rangeBound.safeParse(raw.replace(' ', '+')).success;

function parseRangeBound(field: 'start' | 'end', raw: unknown, issues: FieldIssue[]): Date | null {
  if (raw === undefined || raw === '') {
    issues.push({ field, message: `is required: ${RANGE_BOUND_HINT}` });
    return null;
  }
  if (!rangeBound.safeParse(raw).success) {
    issues.push({ field, message: `must be ${RANGE_BOUND_HINT}${lostItsPlus(raw) ? PLUS_HINT : ''}` });
    return null;
  }
  return eventTimeBound(raw as string);
}

const invalidRange = (issues: FieldIssue[]) => new GatewayError('BAD_USER_INPUT', 'Invalid date range', { issues });

/**
 * A window of events whose end (exclusive) is not after its start (inclusive) holds no event, which a caller
 * can only have meant by mistake: the end is named, as the bound that is wrong for it. Equal bounds are said to be
 * equal to the millisecond: the caller's may have differed finer than that (…00.0001Z and …00.0009Z both come to
 * …00.001Z), and a bare "must be after" would contradict what they sent.
 */
function emptyWindowIssue(start: Date, end: Date, names: { start: string; end: string }): FieldIssue | null {
  if (end > start) return null;
  const same = end.getTime() === start.getTime();
  return {
    field: names.end,
    message: same
      ? `must be after ${names.start}: both come to ${end.toISOString()}, as each is taken to the millisecond, a finer fraction rounded up to the next`
      : `must be after ${names.start}`,
  };
}

/** `start` and `end` as a transport received them (query string values), checked and turned into a range. */
export function parseEventRange(raw: { start?: unknown; end?: unknown }): EventRange {
  const issues: FieldIssue[] = [];
  const start = parseRangeBound('start', raw.start, issues);
  const end = parseRangeBound('end', raw.end, issues);
  if (start && end) {
    const empty = emptyWindowIssue(start, end, { start: 'start', end: 'end' });
    if (empty) issues.push(empty);
    else if (end.getTime() - start.getTime() > MAX_EVENT_RANGE_DAYS * 86_400_000) {
      issues.push({ field: 'end', message: `must be at most ${MAX_EVENT_RANGE_DAYS} days after start` });
    }
  }
  if (issues.length > 0 || !start || !end) throw invalidRange(issues);
  return { start, end };
}

/** A list's optional `since` and `until`, refused as the download's range is when both are given and hold no event. */
export function checkEventWindow(since: Date | undefined, until: Date | undefined): void {
  const empty = since && until ? emptyWindowIssue(since, until, { start: 'since', end: 'until' }) : null;
  if (empty) throw invalidRange([empty]);
}
