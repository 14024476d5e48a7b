// The Kafka settings the library imposes (docs/protocol.md "Consumer settings"), and the conversions between
// kafkajs records and the library's own, kept apart from the I/O so that tests can check them.
import kafkajs from 'kafkajs';
import type { ConsumerConfig, ConsumerRunConfig, IHeaders, KafkaMessage, Message, ProducerConfig } from 'kafkajs';
import type { Header, InboundMessage, OutboundRecord } from './types.js';

export interface KafkaOptions {
  /** Bootstrap servers, e.g. `['localhost:9092']`. */
  readonly brokers: readonly string[];
  /** The participant's own consumer group, shared by its replicas. */
  readonly groupId: string;
  /** The command topics to read. Missing ones are waited for, not fatal. */
  readonly topics: readonly string[];
  /** Default `sagaflow-participant`. */
  readonly clientId?: string;
  /** Default 10000: a dead replica's partitions are handed over quickly. */
  readonly sessionTimeoutMs?: number;
  /** Default 1000. */
  readonly heartbeatIntervalMs?: number;
  /** How long a rebalance waits for members; default 60000. */
  readonly rebalanceTimeoutMs?: number;
  /**
   * First wait before a failed message is tried again (only its partition waits); doubles up to
   * `maxRetryBackoffMs`. Default 500.
   */
  readonly retryBackoffMs?: number;
  /** Default 30000. */
  readonly maxRetryBackoffMs?: number;
  /** How often missing topics are looked for again. Default 5000. */
  readonly topicPollIntervalMs?: number;
  /** kafkajs's own log level; default WARN. */
  readonly logLevel?: kafkajs.logLevel;
}

export const DEFAULTS = {
  clientId: 'sagaflow-participant',
  sessionTimeoutMs: 10_000,
  heartbeatIntervalMs: 1_000,
  rebalanceTimeoutMs: 60_000,
  retryBackoffMs: 500,
  maxRetryBackoffMs: 30_000,
  topicPollIntervalMs: 5_000,
} as const;

export function consumerConfig(options: KafkaOptions): ConsumerConfig {
  return {
    groupId: options.groupId,
    sessionTimeout: options.sessionTimeoutMs ?? DEFAULTS.sessionTimeoutMs,
    heartbeatInterval: options.heartbeatIntervalMs ?? DEFAULTS.heartbeatIntervalMs,
    rebalanceTimeout: options.rebalanceTimeoutMs ?? DEFAULTS.rebalanceTimeoutMs,
    // A stop waits for the fetch in flight: a long poll of 1 s (kafkajs's default is 5 s) keeps it quick.
    maxWaitTimeInMs: 1_000,
    // Command topics are sagaflow's to create; never create one by subscribing to it.
    allowAutoTopicCreation: false,
  };
}

/** `auto.offset.reset=earliest`: a new group reads the commands sent before it first joined. */
export const SUBSCRIBE_FROM_BEGINNING = true;

/** No automatic commits: the runner commits each offset after its reply is acknowledged. */
export const RUN_CONFIG = { autoCommit: false, partitionsConsumedConcurrently: 1 } as const satisfies Omit<
  ConsumerRunConfig,
  'eachMessage' | 'eachBatch'
>;

/** Idempotent producer; with one request in flight kafkajs keeps the order of retried sends. */
export function producerConfig(): ProducerConfig {
  return {
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    createPartitioner: kafkajs.Partitioners.DefaultPartitioner,
  };
}

/** `acks=all`: a reply counts as sent once every in-sync replica has it. */
export const PRODUCER_ACKS = -1;

/** kafkajs groups repeated header names into an array at the first one's place; flatten back to a list. */
export function fromKafkaHeaders(headers: IHeaders | undefined): Header[] {
  const list: Header[] = [];
  for (const [name, value] of Object.entries(headers ?? {})) {
    const values = Array.isArray(value) ? value : [value];
    for (const v of values) {
      if (v !== undefined) list.push([name, typeof v === 'string' ? Buffer.from(v, 'utf8') : v]);
    }
  }
  return list;
}

export function toKafkaHeaders(headers: readonly Header[]): IHeaders {
  const object: Record<string, Buffer[]> = {};
  for (const [name, value] of headers) (object[name] ??= []).push(value);
  return Object.fromEntries(Object.entries(object).map(([name, values]) => [name, values.length === 1 ? values[0] : values]));
}

export function toInbound(topic: string, partition: number, message: KafkaMessage): InboundMessage {
  return {
    topic,
    partition,
    offset: message.offset,
    key: message.key,
    value: message.value,
    headers: fromKafkaHeaders(message.headers),
  };
}

export function toKafkaMessage(record: OutboundRecord): Message {
  return { key: record.key, value: record.value, headers: toKafkaHeaders(record.headers) };
}

/** The offset to commit after `offset`: Kafka's committed offset is the next one to read. */
export function nextOffset(offset: string): string {
  return (BigInt(offset) + 1n).toString();
}
