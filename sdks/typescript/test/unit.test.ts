// Focused tests of what the vectors do not show: Kafka settings, the in-memory lock, rollback, tracing.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  PRODUCER_ACKS,
  RUN_CONFIG,
  SUBSCRIBE_FROM_BEGINNING,
  consumerConfig,
  fromKafkaHeaders,
  nextOffset,
  producerConfig,
  toKafkaHeaders,
} from '../src/kafka-config.js';
import { MemoryStore, Participant, failure, success } from '../src/index.js';
import type { Command, Disposition, InboundMessage } from '../src/index.js';
import { parseTraceparent } from '../src/trace.js';

const SAGA = '019a2b3c-4d5e-7f60-8a1b-2c3d4e5f6a7b';
const PARENT = '00-0af7651916cd43dd8448eb211c80319c-b43262257c1ffd99-01';

describe('Kafka settings', () => {
  test('consumer: own group, short session, no auto-created topics', () => {
    const config = consumerConfig({ brokers: ['b:9092'], groupId: 'payments', topics: ['t'] });
    assert.equal(config.groupId, 'payments');
    assert.equal(config.sessionTimeout, 10_000);
    assert.equal(config.heartbeatInterval, 1_000);
    assert.equal(config.allowAutoTopicCreation, false);
  });

  test('earliest offsets, manual commits, idempotent producer with acks=all', () => {
    assert.equal(SUBSCRIBE_FROM_BEGINNING, true);
    assert.equal(RUN_CONFIG.autoCommit, false);
    assert.equal(producerConfig().idempotent, true);
    assert.equal(producerConfig().maxInFlightRequests, 1);
    assert.equal(PRODUCER_ACKS, -1);
  });

  test('headers survive the kafkajs object form, repeats and bytes included', () => {
    const headers = fromKafkaHeaders({ a: Buffer.from('1'), b: [Buffer.from([0xff]), Buffer.from('2')] });
    assert.deepStrictEqual(headers, [
      ['a', Buffer.from('1')],
      ['b', Buffer.from([0xff])],
      ['b', Buffer.from('2')],
    ]);
    assert.deepStrictEqual(fromKafkaHeaders(toKafkaHeaders(headers)), headers);
  });

  test('the committed offset is the next one to read, beyond 2^53 too', () => {
    assert.equal(nextOffset('41'), '42');
    assert.equal(nextOffset('9007199254740993'), '9007199254740994');
  });
});

describe('in-memory store', () => {
  test('the lock serialises one (saga, step) and lets other steps through', async () => {
    const store = new MemoryStore();
    const events: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const first = store.withStep(SAGA, 's', async () => {
      events.push('first in');
      await held;
      events.push('first out');
    });
    const second = store.withStep(SAGA, 's', () => Promise.resolve(events.push('second in')));
    await store.withStep(SAGA, 'other', () => Promise.resolve(events.push('other step')));
    release();
    await Promise.all([first, second]);
    assert.deepStrictEqual(events, ['first in', 'other step', 'first out', 'second in']);
  });

  test('a handler that throws stores nothing; the retried message runs it again', async () => {
    const participant = new Participant({ source: '/test' });
    let calls = 0;
    participant.command('test.do', { success: 'test.done' }, () => {
      calls += 1;
      if (calls === 1) throw new Error('boom');
      return success({ calls });
    });
    await assert.rejects(participant.process(message()), /boom/);
    const disposition = await participant.process(message());
    assert.equal(disposition.kind, 'reply');
    assert.equal(calls, 2);
  });
});

describe('decision table', () => {
  test('a retryable failure, then its compensation, then a new attempt: the refusal, never the handler', async () => {
    const participant = new Participant({ source: '/test' });
    let calls = 0;
    participant.command('test.do', { success: 'test.done', refusal: 'test.refused' }, () => {
      calls += 1;
      return failure('test.busy', { error: 'busy' }, { retryable: true });
    });
    participant.compensation('test.undo', { success: 'test.undone' }, () => assert.fail('nothing to undo'));
    const at = (id: string, type: string, phase: string): InboundMessage =>
      message([], { ce_id: id, ce_type: type, ce_sagaphase: phase });
    await participant.process(at('c0ffee00-0000-4000-8000-00000000000a', 'test.do', 'command'));
    const undo = await participant.process(at('c0ffee00-0000-4000-8000-00000000000b', 'test.undo', 'compensation'));
    const again = await participant.process(at('c0ffee00-0000-4000-8000-00000000000c', 'test.do', 'command'));
    assert.equal(calls, 1);
    assert.equal(replyType(undo), 'test.undone');
    assert.equal(replyType(again), 'test.refused');
  });
});

describe('decoding and tracing', () => {
  test('an empty binary body is the payload null', async () => {
    let seen: Command | undefined;
    const participant = new Participant({ source: '/test' });
    participant.command('test.do', { success: 'test.done' }, (command) => {
      seen = command;
      return success();
    });
    await participant.process({ ...message(), value: Buffer.alloc(0) });
    assert.equal(seen?.payload, null);
  });

  test('without an OpenTelemetry SDK the reply gets a fresh span id under the command trace', async () => {
    const participant = new Participant({ source: '/test' });
    participant.command('test.do', { success: 'test.done' }, () => success());
    const disposition = await participant.process(message([['traceparent', PARENT]]));
    assert.equal(disposition.kind, 'reply');
    const header = disposition.kind === 'reply' ? disposition.record.headers.find(([n]) => n === 'traceparent') : undefined;
    const reply = parseTraceparent(header?.[1].toString());
    assert.equal(reply?.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.notEqual(reply?.spanId, 'b43262257c1ffd99');
    assert.equal(reply?.flags, '01');
  });

  test('an invalid traceparent is not continued', () => {
    assert.equal(parseTraceparent('00-00000000000000000000000000000000-b43262257c1ffd99-01'), undefined);
    assert.equal(parseTraceparent('garbage'), undefined);
  });
});

function replyType(disposition: Disposition): string | undefined {
  if (disposition.kind !== 'reply') return undefined;
  return disposition.record.headers.find(([name]) => name === 'ce_type')?.[1].toString();
}

function message(extra: [string, string][] = [], replace: Record<string, string> = {}): InboundMessage {
  const base: [string, string][] = [
    ['ce_specversion', '1.0'],
    ['ce_id', 'c0ffee00-0000-4000-8000-000000000002'],
    ['ce_source', '/sagaflow'],
    ['ce_type', 'test.do'],
    ['ce_sagaid', SAGA],
    ['ce_sagastep', 'unit_step'],
    ['ce_sagaattempt', '1'],
    ['ce_sagaphase', 'command'],
    ['ce_sagareplyto', 'test.replies'],
    ['ce_sagatoken', 'token'],
  ];
  const headers = [...base.map(([n, v]): [string, string] => [n, replace[n] ?? v]), ...extra];
  return {
    topic: 'test.commands',
    partition: 0,
    offset: '7',
    key: null,
    value: Buffer.from('{}'),
    headers: headers.map(([n, v]) => [n, Buffer.from(v)]),
  };
}
