// The Kafka side: a supervisor that consumes the command topics that exist (and restarts its consumer when
// more appear), processes each record in order, produces its reply or dead-letter copy, and commits the
// offset only after the broker acknowledged that record. A record that fails pauses only its own partition.
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
import { RepeatLimiter, consoleLogger } from './log.js';
import type { Logger } from './log.js';
import { PartitionRetries } from './retry.js';
import { Sleeper } from './sleeper.js';

export type { Logger } from './log.js';

/** How often a lasting "unknown topic(s)" warning is repeated (it is checked every `topicPollIntervalMs`). */
export const UNKNOWN_TOPICS_WARN_EVERY_MS = 60_000;

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
  private readonly unknownTopicsWarning = new RepeatLimiter(UNKNOWN_TOPICS_WARN_EVERY_MS);
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

  /** The configured topics that exist now; "unknown topic" is logged (once a minute per set) and polling goes on. */
  private async existingTopics(): Promise<string[]> {
    try {
      const known = new Set(await this.admin.listTopics());
      const missing = this.options.topics.filter((t) => !known.has(t));
      const warning = `unknown topic(s), waiting for them: ${missing.join(', ')}`;
      if (missing.length === 0) this.unknownTopicsWarning.reset();
      else if (this.unknownTopicsWarning.allows(warning)) this.log.warn(warning);
      return this.options.topics.filter((t) => known.has(t));
    } catch (error) {
      this.log.error('could not list topics', error);
      return [];
    }
  }

  /** Runs one consumer on `topics` until stopping, until more topics exist, or until it crashes. */
  private async consume(topics: string[]): Promise<void> {
    const consumer = this.kafka.consumer(consumerConfig(this.options));
    const retries = new PartitionRetries(
      this.options.retryBackoffMs ?? DEFAULTS.retryBackoffMs,
      this.options.maxRetryBackoffMs ?? DEFAULTS.maxRetryBackoffMs,
    );
    let crashed = false;
    consumer.on(consumer.events.CRASH, (event) => {
      this.log.error(`consumer crashed (restart: ${String(event.payload.restart)})`, event.payload.error);
      crashed = crashed || !event.payload.restart;
      if (crashed) this.sleeper.wakeAll();
    });
    try {
      await consumer.connect();
      await consumer.subscribe({ topics, fromBeginning: SUBSCRIBE_FROM_BEGINNING });
      await consumer.run({ ...RUN_CONFIG, eachMessage: (payload) => this.handle(consumer, retries, payload) });
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
      retries.cancel();
      // Waits for the message in hand, then leaves the group.
      await consumer.disconnect().catch((error: unknown) => this.log.error('consumer disconnect failed', error));
    }
  }

  /**
   * One record: process, produce, commit. A failure rolls the store back, pauses this partition at the record and
   * returns, so the consumer goes on with the other partitions (and heartbeats) while the backoff runs; the
   * record is read again when the partition resumes. Its offset is committed only after its reply is acknowledged.
   */
  private async handle(consumer: Consumer, retries: PartitionRetries, payload: EachMessagePayload): Promise<void> {
    const { topic, partition, message } = payload;
    // Once stopping, records still delivered from the fetched batch are left unread and uncommitted.
    if (this.stopping) return;
    try {
      await this.keepingAlive(() => payload.heartbeat(), () => this.processAndSend(toInbound(topic, partition, message)));
    } catch (error) {
      const control = { pause: () => payload.pause(), seek: (offset: string) => consumer.seek({ topic, partition, offset }) };
      const backoff = retries.failed(topic, partition, message.offset, control);
      this.log.error(`${topic}[${partition}]@${message.offset} failed; trying again in ${backoff} ms`, error);
      return;
    }
    await consumer.commitOffsets([{ topic, partition, offset: nextOffset(message.offset) }]);
    retries.succeeded(topic, partition);
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
