// Decoding a Kafka record into a Command: CloudEvents binary mode (ce_* headers, JSON body) or structured mode
// (one JSON object). Anything that is not a command sagaflow could have sent becomes a dead-letter reason.
import type { Command, Header, InboundMessage, Phase } from './types.js';

export type Decoded = { readonly ok: true; readonly command: Command } | { readonly ok: false; readonly reason: string };

/** A decode failure: its message is the `dlq-reason`. */
class Rejected extends Error {}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const STRUCTURED = 'application/cloudevents+json';
const CORE = new Set(['specversion', 'id', 'source', 'type']);

/** Reads one attribute (without the `ce_` prefix): a string, an integer (structured mode only) or absent. */
type AttributeReader = (name: string) => string | number | undefined;

export function decode(message: InboundMessage): Decoded {
  try {
    return { ok: true, command: decodeOrThrow(message) };
  } catch (error) {
    if (error instanceof Rejected) return { ok: false, reason: error.message };
    throw error;
  }
}

function decodeOrThrow(message: InboundMessage): Command {
  const headers = textHeaders(message.headers);
  // Header names compare case-insensitively and the first of a repeated name counts.
  const header = (name: string): string | undefined => headers.find(([n]) => n.toLowerCase() === name)?.[1];
  const contentType = header('content-type')?.trim().toLowerCase() ?? '';
  if (contentType.startsWith(STRUCTURED)) {
    const event = structuredBody(message.value);
    const read = structuredReader(event);
    const attributes = readAttributes(read);
    return {
      ...attributes,
      payload: event.data ?? null,
      traceparent: optionalString(read('traceparent')) ?? header('traceparent'),
      tracestate: optionalString(read('tracestate')) ?? header('tracestate'),
      headers: message.headers,
    };
  }
  const attributes = readAttributes((name) => header(`ce_${name}`));
  return {
    ...attributes,
    payload: binaryBody(message.value),
    traceparent: header('traceparent'),
    tracestate: header('tracestate'),
    headers: message.headers,
  };
}

function textHeaders(headers: readonly Header[]): Array<[string, string]> {
  return headers.map(([name, value]) => {
    try {
      return [name, utf8.decode(value)];
    } catch {
      throw new Rejected(`header \`${name}\` is not valid UTF-8`);
    }
  });
}

type Attributes = Omit<Command, 'payload' | 'traceparent' | 'tracestate' | 'headers'>;

function readAttributes(read: AttributeReader): Attributes {
  const required = (name: string): string => {
    const value = read(name);
    if (value === undefined) throw new Rejected(`missing CloudEvents attribute \`${name}\``);
    if (typeof value !== 'string') throw invalid(name, 'must be a string');
    return value;
  };
  const specversion = required('specversion');
  if (specversion !== '1.0') throw new Rejected(`unsupported specversion \`${specversion}\` (expected 1.0)`);
  const id = required('id');
  const source = required('source');
  const type = required('type');
  const sagaId = required('sagaid');
  if (!UUID.test(sagaId)) throw invalid('sagaid', `\`${sagaId}\` is not a UUID`);
  const step = required('sagastep');
  const attempt = parseAttempt(read('sagaattempt'));
  const phase = parsePhase(required('sagaphase'));
  const replyTo = required('sagareplyto');
  const token = required('sagatoken');
  const definition = optionalString(read('sagadefinition'));
  return { id, type, source, sagaId, definition, step, attempt, phase, replyTo, token };
}

function parseAttempt(value: string | number | undefined): number {
  if (value === undefined) throw new Rejected('missing CloudEvents attribute `sagaattempt`');
  const attempt = typeof value === 'number' ? value : /^[0-9]+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(attempt) || attempt < 1) {
    throw invalid('sagaattempt', `\`${String(value)}\` is not an integer ≥ 1`);
  }
  return attempt;
}

function parsePhase(value: string): Phase {
  if (value === 'command' || value === 'compensation') return value;
  throw invalid('sagaphase', `\`${value}\` is neither \`command\` nor \`compensation\``);
}

function invalid(name: string, why: string): Rejected {
  return new Rejected(`attribute \`${name}\` is invalid: ${why}`);
}

function optionalString(value: string | number | undefined): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** Binary mode: the body is the payload as JSON; an empty body is `null`. */
function binaryBody(value: Buffer | null): unknown {
  if (value === null || value.length === 0) return null;
  try {
    return JSON.parse(utf8.decode(value)) as unknown;
  } catch (error) {
    throw new Rejected(`body is not valid JSON: ${(error as Error).message}`);
  }
}

function structuredBody(value: Buffer | null): Record<string, unknown> {
  let event: unknown;
  try {
    event = JSON.parse(utf8.decode(value ?? Buffer.alloc(0)));
  } catch (error) {
    throw new Rejected(`body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof event !== 'object' || event === null || Array.isArray(event)) {
    throw new Rejected('body is not valid JSON: a structured-mode event must be a JSON object');
  }
  return event as Record<string, unknown>;
}

/** Structured mode: attributes are members; `sagaattempt` may be an integer, the others must be strings. */
function structuredReader(event: Record<string, unknown>): AttributeReader {
  return (name) => {
    const value = event[name];
    if (value === undefined || value === null) return undefined;
    if (typeof value === 'string') return value;
    if (name === 'sagaattempt' && typeof value === 'number') return value;
    if (CORE.has(name) || name.startsWith('saga')) throw invalid(name, 'must be a string');
    return undefined;
  };
}
