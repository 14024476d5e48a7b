// Registrations and the message-processing function: everything between "a record was read" and "produce this
// record", with no Kafka involved (the runner in kafka.ts does the I/O around it).
import { decide } from './decide.js';
import { decode } from './envelope.js';
import { MemoryStore } from './memory-store.js';
import { deadLetterRecord, replyRecord } from './records.js';
import type { Store, StepTransaction } from './store.js';
import { ProcessingSpan } from './trace.js';
import type {
  Command,
  CommandRegistration,
  CompensationRegistration,
  Handler,
  HandlerResult,
  InboundMessage,
  Outcome,
  OutboundRecord,
  Phase,
} from './types.js';

export const DEFAULT_DEAD_LETTER_TOPIC = 'participants.dead-letter';

export interface ParticipantOptions<Tx> {
  /** `ce_source` of the replies, e.g. `/payments`. */
  readonly source: string;
  /** Where messages that are not commands (or of no registered type) are copied. */
  readonly deadLetterTopic?: string;
  /** Where outcomes are kept; default: a new MemoryStore. */
  readonly store?: Store<Tx>;
}

/** What to do with one record: produce a reply, produce a dead-letter copy, or nothing. */
export type Disposition =
  | { readonly kind: 'reply'; readonly record: OutboundRecord }
  | { readonly kind: 'dead_letter'; readonly record: OutboundRecord; readonly reason: string }
  | { readonly kind: 'skip' };

interface Registration<Tx> {
  readonly success: string;
  readonly refusal: string | undefined;
  readonly handler: Handler<Tx>;
}

export class Participant<Tx = undefined> {
  readonly source: string;
  readonly deadLetterTopic: string;
  readonly store: Store<Tx>;
  private readonly registrations = new Map<string, Registration<Tx>>();
  private readonly commandSuccessTypes = new Set<string>();

  constructor(options: ParticipantOptions<Tx>) {
    this.source = options.source;
    this.deadLetterTopic = options.deadLetterTopic ?? DEFAULT_DEAD_LETTER_TOPIC;
    // Without a store the transaction handle is `undefined`, which is what MemoryStore hands out.
    this.store = options.store ?? (new MemoryStore() as unknown as Store<Tx>);
  }

  /** Registers the handler of a command type. */
  command(type: string, registration: CommandRegistration, handler: Handler<Tx>): this {
    this.register('command', type, { success: registration.success, refusal: registration.refusal, handler });
    this.commandSuccessTypes.add(registration.success);
    return this;
  }

  /** Registers the handler of a compensation type. */
  compensation(type: string, registration: CompensationRegistration, handler: Handler<Tx>): this {
    this.register('compensation', type, { success: registration.success, refusal: undefined, handler });
    return this;
  }

  /**
   * Processes one record: decodes it, decides under the store's lock, calls the handler when the decision table
   * says so, and returns the record to produce. Throws when the handler (or the store) does; the store is then
   * rolled back and the same record must be processed again later.
   */
  async process(message: InboundMessage): Promise<Disposition> {
    const decoded = decode(message);
    if (!decoded.ok) return this.deadLetter(message, decoded.reason);
    const command = decoded.command;
    const registration = this.registrations.get(key(command.phase, command.type));
    if (registration === undefined) {
      return this.deadLetter(message, `unknown ${command.phase} type \`${command.type}\``);
    }
    const span = ProcessingSpan.start(command, message.topic);
    try {
      const outcome = await span.run(() =>
        this.store.withStep(command.sagaId, command.step, (tx) => this.settle(command, registration, tx)),
      );
      span.end();
      if (outcome === undefined) return { kind: 'skip' };
      return { kind: 'reply', record: replyRecord(command, outcome, this.source, span.replyTraceparent) };
    } catch (error) {
      span.end(error);
      throw error;
    }
  }

  private register(phase: Phase, type: string, registration: Registration<Tx>): void {
    if (this.registrations.has(key(phase, type))) throw new Error(`${phase} type \`${type}\` is already registered`);
    this.registrations.set(key(phase, type), registration);
  }

  /** Runs under the lock: returns the outcome to reply with, or undefined for no reply. */
  private async settle(command: Command, registration: Registration<Tx>, tx: StepTransaction<Tx>) {
    const decision = decide({
      command,
      outcomes: tx.outcomes,
      successType: registration.success,
      refusalType: registration.refusal,
      isCommandSuccess: (outcome) => !outcome.retryable && this.commandSuccessTypes.has(outcome.replyType),
    });
    switch (decision.kind) {
      case 'replay':
        return decision.outcome;
      case 'skip':
        return undefined;
      case 'record':
        await tx.save(command.phase, decision.outcome);
        return decision.outcome;
      case 'run': {
        const result = await registration.handler(command, { transaction: tx.handle });
        const outcome = toOutcome(command, registration, result);
        await tx.save(command.phase, outcome);
        return outcome;
      }
    }
  }

  private deadLetter(message: InboundMessage, reason: string): Disposition {
    ProcessingSpan.start(undefined, message.topic).end();
    return { kind: 'dead_letter', record: deadLetterRecord(message, this.deadLetterTopic, reason), reason };
  }
}

function key(phase: Phase, type: string): string {
  return `${phase}\u0000${type}`;
}

function toOutcome<Tx>(command: Command, registration: Registration<Tx>, result: HandlerResult): Outcome {
  // A handler written in plain JavaScript may return anything: refuse it like a thrown error, so nothing is sent.
  if (result?.kind === 'success') {
    return { commandId: command.id, replyType: registration.success, payload: result.payload ?? null, retryable: false };
  }
  if (result?.kind === 'failure' && typeof result.type === 'string') {
    return { commandId: command.id, replyType: result.type, payload: result.payload ?? null, retryable: result.retryable };
  }
  throw new TypeError(`the handler of \`${command.type}\` returned neither success(...) nor failure(...)`);
}
