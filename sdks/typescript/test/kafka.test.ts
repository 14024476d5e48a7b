// The service against Apache Kafka at SAGAFLOW_TEST_KAFKA (default 127.0.0.1:29092), on a topic of its own:
// a record that keeps failing holds back only its own partition, and is committed once it succeeds.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import kafkajs from 'kafkajs';
import { ParticipantService } from '../src/index.js';
import type { Disposition, InboundMessage, Logger } from '../src/index.js';
import { waitFor } from './wait.js';

const BROKERS = [process.env.SAGAFLOW_TEST_KAFKA ?? '127.0.0.1:29092'];
const quiet: Logger = { info: () => undefined, warn: () => undefined, error: () => undefined };

test('a failing record pauses only its partition; the others go on; it is committed once it succeeds', async () => {
  const topic = `sdk-typescript-test.${randomUUID()}`;
  const kafka = new kafkajs.Kafka({ brokers: BROKERS, clientId: 'sdk-typescript-test', logLevel: kafkajs.logLevel.NOTHING });
  const admin = kafka.admin();
  const producer = kafka.producer({ createPartitioner: kafkajs.Partitioners.DefaultPartitioner });
  await Promise.all([admin.connect(), producer.connect()]);
  await admin.createTopics({ topics: [{ topic, numPartitions: 2, replicationFactor: 1 }], waitForLeaders: true });
  const seen: string[] = []; // `partition@offset` of every attempt, in order
  const done: string[] = [];
  let partitionZeroDown = true;
  const processor = {
    process(message: InboundMessage): Promise<Disposition> {
      const at = `${message.partition}@${message.offset}`;
      seen.push(at);
      if (message.partition === 0 && partitionZeroDown) return Promise.reject(new Error('store down'));
      done.push(at);
      return Promise.resolve({ kind: 'skip' });
    },
  };
  const options = { brokers: BROKERS, groupId: topic, topics: [topic], retryBackoffMs: 50, maxRetryBackoffMs: 200 };
  const service = ParticipantService.start(processor, { ...options, logLevel: kafkajs.logLevel.NOTHING }, quiet);
  try {
    await producer.send({ topic, messages: [0, 0].map((partition, i) => ({ partition, value: `p0-${i}` })) });
    await waitFor(() => seen.includes('0@0'), 'the first record of partition 0 tried', 30_000);
    await producer.send({ topic, messages: [{ partition: 1, value: 'p1-0' }] });
    // Partition 0 keeps failing meanwhile: with one partition consumed at a time, a retry loop inside
    // eachMessage would hold partition 1 back until partition 0 recovered.
    await waitFor(() => done.includes('1@0'), 'partition 1 processed while partition 0 fails', 15_000);
    await waitFor(() => seen.filter((at) => at === '0@0').length >= 3, 'the failed record read again', 15_000);
    assert.ok(!seen.includes('0@1'), 'the record after the failing one waits for it');
    partitionZeroDown = false;
    await waitFor(() => done.includes('0@1'), 'partition 0 processed in order after recovering', 15_000);
    assert.deepStrictEqual(done, ['1@0', '0@0', '0@1']);
    const committed = async (): Promise<string> => {
      const [offsets] = await admin.fetchOffsets({ groupId: topic, topics: [topic] });
      return (offsets?.partitions ?? []).map((p) => `${p.partition}:${p.offset}`).sort().join(' ');
    };
    await waitFor(async () => (await committed()) === '0:2 1:1', 'both partitions committed', 10_000);
  } finally {
    await service.stop();
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await Promise.all([admin.disconnect(), producer.disconnect()]);
  }
});
