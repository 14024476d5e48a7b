// The per-partition retry state and the warning limiter, without Kafka.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RepeatLimiter } from '../src/log.js';
import { PartitionRetries } from '../src/retry.js';
import type { PartitionControl } from '../src/retry.js';
import { waitFor } from './wait.js';

describe('failed records', () => {
  const recording = (calls: string[], partition: number): PartitionControl => ({
    pause: () => {
      calls.push(`pause ${partition}`);
      return () => calls.push(`resume ${partition}`);
    },
    seek: (offset) => calls.push(`seek ${partition}@${offset}`),
  });

  test('a failure pauses its partition at the record and returns; a timer resumes it after the backoff', async () => {
    const calls: string[] = [];
    const retries = new PartitionRetries(20, 1000);
    // The backoff is not waited for here (eachMessage returns at once, the consumer goes on heartbeating).
    assert.equal(retries.failed('t', 0, '5', recording(calls, 0)), 20);
    assert.deepStrictEqual(calls, ['pause 0', 'seek 0@5']);
    await waitFor(() => calls.includes('resume 0'), 'the partition resumed');
    retries.cancel();
  });

  test('the same record failing again doubles its backoff up to the maximum; other partitions keep their own', () => {
    const calls: string[] = [];
    const retries = new PartitionRetries(100, 300);
    assert.equal(retries.failed('t', 0, '5', recording(calls, 0)), 100);
    assert.equal(retries.failed('t', 0, '5', recording(calls, 0)), 200);
    assert.equal(retries.failed('t', 0, '5', recording(calls, 0)), 300);
    assert.equal(retries.failed('t', 0, '5', recording(calls, 0)), 300);
    assert.equal(retries.failed('t', 1, '5', recording(calls, 1)), 100);
    assert.equal(retries.failed('u', 0, '5', recording(calls, 0)), 100);
    retries.succeeded('t', 0);
    assert.equal(retries.failed('t', 0, '6', recording(calls, 0)), 100);
    retries.cancel();
    assert.ok(!calls.some((call) => call.startsWith('resume')), 'cancel() drops the pending resumptions');
  });
});

describe('repeated warnings', () => {
  test('the same text once a minute; a new text at once; again at once after the condition ended', () => {
    let now = 0;
    const limiter = new RepeatLimiter(60_000, () => now);
    assert.equal(limiter.allows('unknown topic(s): a'), true);
    now = 5_000;
    assert.equal(limiter.allows('unknown topic(s): a'), false);
    assert.equal(limiter.allows('unknown topic(s): a, b'), true);
    now = 64_999;
    assert.equal(limiter.allows('unknown topic(s): a, b'), false);
    now = 65_000;
    assert.equal(limiter.allows('unknown topic(s): a, b'), true);
    limiter.reset();
    assert.equal(limiter.allows('unknown topic(s): a, b'), true);
  });
});
