// The Kafka side: a supervisor that consumes the command topics that exist (and restarts its consumer when
// more appear), processes each record in order, produces its reply or dead-letter copy, and commits the
// offset only after the broker acknowledged that record.
import kafkajs from 'kafkajs';
import type { Admin, Consumer, EachMessagePayload, Kafka, Producer } from 'kafkajs';
import {
  DEFAULTS,
  PRODUCER_ACKS,
  RUN_CONFIG,
  SUBSCRIBE_FROM_BEGINNING,
  consumerConfig,
  nextOffset,
  producerConfig,
  toInbound,
  toKafkaMessage,
} from './kafka-config.js';
import type { KafkaOptions } from './kafka-config.js';
import type { Disposition } from './participant.js';
import type { InboundMessage } from './types.js';
import { Sleeper } from './sleeper.js';

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string, error?: unknown): void;
}

const consoleLogger: Logger = {
  info: (message) => console.log(`[sagaflow-participant] ${message}`),
  warn: (message) => console.warn(`[sagaflow-participant] ${message}`),
  error: (message, error) => console.error(`[sagaflow-participant] ${message}`, error ?? ''),
};

/** What the service drives: a `Participant`, or anything that turns a record into a disposition. */
export interface MessageProcessor {
  process(message: InboundMessage): Promise<Disposition>;
}

export class ParticipantService {
  /** Resolves when the service has stopped (after `stop()`), rejects if it could not run at all. */
  readonly done: Promise<void>;
  private readonly kafka: Kafka;
  private readonly producer: Producer;
  private readonly admin: Admin;
  private readonly sleeper = new Sleeper();
  private stopping = false;

  private constructor(
    private readonly participant: MessageProcessor,
    private readonly options: KafkaOptions,
    private readonly log: Logger,
  ) {
    this.kafka = new kafkajs.Kafka({
      brokers: [...options.brokers],
      clientId: options.clientId ?? DEFAULTS.clientId,
      logLevel: options.logLevel ?? kafkajs.logLevel.WARN,
    });
    this.producer = this.kafka.producer(producerConfig());
    this.admin = this.kafka.admin();
    this.done = this.supervise();
  }

  /** Starts consuming in the background; call `stop()` (e.g. on SIGTERM) to finish gracefully. */
  static start(participant: MessageProcessor, options: KafkaOptions, logger: Logger = consoleLogger): ParticipantService {
    return new ParticipantService(participant, options, logger);
  }

  /** Finishes the message in hand, commits it, leaves the group, flushes the producer. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.sleeper.wakeAll();
    await this.done;
  }

  private async supervise(): Promise<void> {
    try {
      await this.retrying('connect the producer', async () => {
        await this.producer.connect();
        await this.admin.connect();
      });
      while (!this.stopping) {
        const topics = await this.existingTopics();
        if (topics.length > 0) await this.consume(topics);
        else await this.sleeper.sleep(this.interval());
      }
    } finally {
      await Promise.allSettled([this.producer.disconnect(), this.admin.disconnect()]);
      this.log.info('stopped');
    }
  }

  /** The configured topics that exist now; "unknown topic" is logged and polling goes on. */
  private async existingTopics(): Promise<string[]> {
    try {
      const known = new Set(await this.admin.listTopics());
      const missing = this.options.topics.filter((t) => !known.has(t));
      if (missing.length > 0) this.log.warn(`unknown topic(s), waiting for them: ${missing.join(', ')}`);
      return this.options.topics.filter((t) => known.has(t));
    } catch (error) {
      this.log.error('could not list topics', error);
      return [];
    }
  }

  /** Runs one consumer on `topics` until stopping, until more topics exist, or until it crashes. */
  private async consume(topics: string[]): Promise<void> {
    const consumer = this.kafka.consumer(consumerConfig(this.options));
    let crashed = false;
    consumer.on(consumer.events.CRASH, (event) => {
      this.log.error(`consumer crashed (restart: ${String(event.payload.restart)})`, event.payload.error);
      crashed = crashed || !event.payload.restart;
      if (crashed) this.sleeper.wakeAll();
    });
    try {
      await consumer.connect();
      await consumer.subscribe({ topics, fromBeginning: SUBSCRIBE_FROM_BEGINNING });
      await consumer.run({ ...RUN_CONFIG, eachMessage: (payload) => this.handle(consumer, payload) });
      this.log.info(`consuming ${topics.join(', ')} as group ${this.options.groupId}`);
      while (!this.stopping && !crashed) {
        await this.sleeper.sleep(this.interval());
        if (this.stopping || crashed) break;
        if ((await this.existingTopics()).length > topics.length) break;
      }
    } catch (error) {
      this.log.error('consumer failed; starting again', error);
      await this.sleeper.sleep(this.interval());
    } finally {
      // Waits for the message in hand, then leaves the group.
      await consumer.disconnect().catch((error: unknown) => this.log.error('consumer disconnect failed', error));
    }
  }

  /**
   * One record: process, produce, commit. A failure rolls the store back and tries the same record again after
   * a backoff, so the partition does not move on; heartbeats keep the group membership meanwhile.
   */
  private async handle(consumer: Consumer, payload: EachMessagePayload): Promise<void> {
    const { topic, partition, message } = payload;
    const heartbeat = (): Promise<void> => payload.heartbeat();
    // Once stopping, records still delivered from the fetched batch are left unread and uncommitted.
    if (this.stopping) return;
    const inbound = toInbound(topic, partition, message);
    let backoff = this.options.retryBackoffMs ?? DEFAULTS.retryBackoffMs;
    for (;;) {
      try {
        await this.keepingAlive(heartbeat, () => this.processAndSend(inbound));
        break;
      } catch (error) {
        this.log.error(`${topic}[${partition}]@${message.offset} failed; trying again in ${backoff} ms`, error);
        if (this.stopping) return; // not committed: read again after the restart
        await this.sleeper.sleep(backoff);
        if (this.stopping) return;
        await heartbeat();
        backoff = Math.min(backoff * 2, this.options.maxRetryBackoffMs ?? DEFAULTS.maxRetryBackoffMs);
      }
    }
    await consumer.commitOffsets([{ topic, partition, offset: nextOffset(message.offset) }]);
  }

  private async processAndSend(inbound: InboundMessage): Promise<void> {
    const disposition = await this.participant.process(inbound);
    if (disposition.kind === 'skip') return;
    if (disposition.kind === 'dead_letter') {
      this.log.warn(`${inbound.topic}[${inbound.partition}]@${inbound.offset} dead-lettered: ${disposition.reason}`);
    }
    const record = disposition.record;
    await this.producer.send({ topic: record.topic, acks: PRODUCER_ACKS, messages: [toKafkaMessage(record)] });
  }

  /** Heartbeats while a slow handler works, so its session does not expire (kafkajs has no poll thread). */
  private async keepingAlive<T>(heartbeat: () => Promise<void>, work: () => Promise<T>): Promise<T> {
    const interval = this.options.heartbeatIntervalMs ?? DEFAULTS.heartbeatIntervalMs;
    const timer = setInterval(() => {
      heartbeat().catch((error: unknown) => this.log.warn(`heartbeat failed: ${String(error)}`));
    }, interval);
    try {
      return await work();
    } finally {
      clearInterval(timer);
    }
  }

  private async retrying(what: string, work: () => Promise<void>): Promise<void> {
    while (!this.stopping) {
      try {
        return await work();
      } catch (error) {
        this.log.error(`could not ${what}; trying again`, error);
        await this.sleeper.sleep(this.interval());
      }
    }
  }

  private interval(): number {
    return this.options.topicPollIntervalMs ?? DEFAULTS.topicPollIntervalMs;
  }
}
