// Runs one protocol/vectors/*.json scenario against Participant.process, as protocol/README.md describes.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Participant, failure, success } from '../src/index.js';
import type { Command, Header, HandlerResult, InboundMessage, OutboundRecord, Store } from '../src/index.js';

/** The shared vectors, found at test time relative to this file (sdks/typescript/test → protocol/vectors). */
export const VECTORS_DIR = fileURLToPath(new URL('../../../protocol/vectors/', import.meta.url));

type HeaderValue = string | { base64: string };
type Expected = string | { prefix: string } | { base64: string };

interface VectorStep {
  message: {
    topic: string;
    partition: number;
    offset: number;
    key: string | null;
    headers: [string, HeaderValue][];
    value: string;
  };
  handler: { call: Record<string, unknown>; result: VectorResult } | null;
  expect:
    | { reply: { topic: string; key: string; headers: Record<string, string>; generated: Record<string, string>; body: unknown } }
    | { dead_letter: { topic: string; key: string | null; value: string; headers: [string, Expected][] } }
    | { skip: true };
}

type VectorResult = { success: unknown } | { failure: { type: string; payload: unknown; retryable: boolean } };

export interface Vector {
  description: string;
  participant: {
    source: string;
    dead_letter_topic: string;
    handlers: { phase: 'command' | 'compensation'; type: string; success: string; refusal?: string }[];
  };
  steps: VectorStep[];
}

export function vectorFiles(): string[] {
  return readdirSync(VECTORS_DIR)
    .filter((name) => name.endsWith('.json'))
    .sort();
}

export function loadVector(file: string): Vector {
  return JSON.parse(readFileSync(`${VECTORS_DIR}${file}`, 'utf8')) as Vector;
}

export async function runVector(vector: Vector, store: Store): Promise<void> {
  const { source, dead_letter_topic: deadLetterTopic, handlers } = vector.participant;
  const participant = new Participant<unknown>({ source, deadLetterTopic, store });
  const calls: Command[] = [];
  let current: VectorStep | undefined;
  const handler = (command: Command): HandlerResult => {
    calls.push(command);
    if (current?.handler == null) throw new Error(`handler called for ${command.type} where the vector expects none`);
    return toResult(current.handler.result);
  };
  for (const h of handlers) {
    if (h.phase === 'command') participant.command(h.type, { success: h.success, refusal: h.refusal }, handler);
    else participant.compensation(h.type, { success: h.success }, handler);
  }
  const replyIds = new Set<string>();
  for (const [index, step] of vector.steps.entries()) {
    current = step;
    calls.length = 0;
    const label = `step ${index}`;
    const disposition = await participant.process(toInbound(step.message));
    checkCall(label, step, calls);
    if ('reply' in step.expect) {
      assert.equal(disposition.kind, 'reply', `${label}: expected a reply`);
      if (disposition.kind === 'reply') checkReply(label, step.expect.reply, disposition.record, replyIds);
    } else if ('dead_letter' in step.expect) {
      assert.equal(disposition.kind, 'dead_letter', `${label}: expected a dead-letter copy`);
      if (disposition.kind === 'dead_letter') checkDeadLetter(label, step.expect.dead_letter, disposition.record);
    } else {
      assert.equal(disposition.kind, 'skip', `${label}: expected nothing produced`);
    }
  }
}

function toResult(result: VectorResult): HandlerResult {
  if ('success' in result) return success(result.success);
  return failure(result.failure.type, result.failure.payload, { retryable: result.failure.retryable });
}

function toInbound(message: VectorStep['message']): InboundMessage {
  const headers: Header[] = message.headers.map(([name, value]) => [
    name,
    typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value.base64, 'base64'),
  ]);
  return {
    topic: message.topic,
    partition: message.partition,
    offset: String(message.offset),
    key: message.key === null ? null : Buffer.from(message.key, 'utf8'),
    value: Buffer.from(message.value, 'utf8'),
    headers,
  };
}

function checkCall(label: string, step: VectorStep, calls: Command[]): void {
  if (step.handler === null) {
    assert.equal(calls.length, 0, `${label}: no handler may be called`);
    return;
  }
  assert.equal(calls.length, 1, `${label}: exactly one handler call`);
  const [c] = calls as [Command];
  const got = {
    id: c.id,
    type: c.type,
    phase: c.phase,
    saga_id: c.sagaId,
    definition: c.definition ?? null,
    step: c.step,
    attempt: c.attempt,
    reply_to: c.replyTo,
    token: c.token,
    payload: c.payload,
  };
  assert.deepStrictEqual(got, step.handler.call, `${label}: the handler's command`);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const RFC3339_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

type ReplyExpectation = Extract<VectorStep['expect'], { reply: unknown }>['reply'];

function checkReply(label: string, expected: ReplyExpectation, record: OutboundRecord, replyIds: Set<string>): void {
  assert.equal(record.topic, expected.topic, `${label}: reply topic`);
  assert.equal(record.key?.toString('utf8'), expected.key, `${label}: reply key`);
  const headers = new Map<string, string>();
  for (const [name, value] of record.headers) {
    assert.ok(!headers.has(name.toLowerCase()), `${label}: header ${name} appears twice`);
    headers.set(name.toLowerCase(), value.toString('utf8'));
  }
  const wanted = [...Object.keys(expected.headers), ...Object.keys(expected.generated)].map((n) => n.toLowerCase());
  assert.deepStrictEqual([...headers.keys()].sort(), wanted.sort(), `${label}: reply header names`);
  for (const [name, value] of Object.entries(expected.headers)) {
    assert.equal(headers.get(name.toLowerCase()), value, `${label}: header ${name}`);
  }
  for (const [name, kind] of Object.entries(expected.generated)) {
    checkGenerated(`${label}: header ${name}`, kind, headers.get(name.toLowerCase()) ?? '', replyIds);
  }
  assert.deepStrictEqual(JSON.parse(record.value?.toString('utf8') ?? ''), expected.body, `${label}: reply body`);
}

function checkGenerated(label: string, kind: string, value: string, replyIds: Set<string>): void {
  if (kind === 'uuid') {
    assert.match(value, UUID, label);
    assert.ok(!replyIds.has(value), `${label}: ce_id ${value} reused`);
    replyIds.add(value);
  } else if (kind === 'rfc3339') {
    assert.match(value, RFC3339_MS, label);
  } else if (kind.startsWith('child_of:')) {
    const [, traceId, parentSpan, flags] = kind.slice('child_of:'.length).split('-');
    const match = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(value);
    assert.ok(match, `${label}: ${value} is not a traceparent`);
    assert.equal(match[1], traceId, `${label}: trace id`);
    assert.notEqual(match[2], parentSpan, `${label}: span id must be our own`);
    assert.doesNotMatch(match[2] ?? '', /^0+$/, `${label}: span id all zero`);
    assert.equal(match[3], flags, `${label}: flags`);
  } else {
    assert.fail(`${label}: unknown generated kind ${kind}`);
  }
}

type DeadLetterExpectation = Extract<VectorStep['expect'], { dead_letter: unknown }>['dead_letter'];

function checkDeadLetter(label: string, expected: DeadLetterExpectation, record: OutboundRecord): void {
  assert.equal(record.topic, expected.topic, `${label}: dead-letter topic`);
  assert.equal(record.key?.toString('utf8') ?? null, expected.key, `${label}: dead-letter key`);
  assert.deepStrictEqual(record.value, Buffer.from(expected.value, 'utf8'), `${label}: dead-letter value`);
  assert.equal(record.headers.length, expected.headers.length, `${label}: dead-letter header count`);
  expected.headers.forEach(([name, value], i) => {
    const [gotName, gotValue] = record.headers[i] ?? ['', Buffer.alloc(0)];
    assert.equal(gotName, name, `${label}: dead-letter header ${i} name`);
    if (typeof value === 'string') {
      assert.deepStrictEqual(gotValue, Buffer.from(value, 'utf8'), `${label}: dead-letter header ${name}`);
    } else if ('prefix' in value) {
      assert.ok(gotValue.toString('utf8').startsWith(value.prefix), `${label}: ${name} \`${gotValue.toString()}\``);
    } else {
      assert.deepStrictEqual(gotValue, Buffer.from(value.base64, 'base64'), `${label}: dead-letter header ${name}`);
    }
  });
}
