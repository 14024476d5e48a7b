/** The two phases a command can be sent in (`ce_sagaphase`). */
export type Phase = 'command' | 'compensation';

/** A Kafka header as read or written: name and raw bytes, in order, repeats kept. */
export type Header = readonly [name: string, value: Buffer];

/** A record as read from Kafka, before anything is decoded. */
export interface InboundMessage {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers: readonly Header[];
}

/** A record the library wants produced (a reply or a dead-letter copy). */
export interface OutboundRecord {
  readonly topic: string;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers: readonly Header[];
}

/** A decoded command (or compensation) as handed to a handler. */
export interface Command {
  readonly id: string;
  readonly type: string;
  readonly source: string;
  readonly sagaId: string;
  readonly definition: string | undefined;
  readonly step: string;
  readonly attempt: number;
  readonly phase: Phase;
  readonly replyTo: string;
  readonly token: string;
  readonly payload: unknown;
  readonly traceparent: string | undefined;
  readonly tracestate: string | undefined;
  /** The raw headers of the Kafka record, for custom headers the definition adds. */
  readonly headers: readonly Header[];
}

/** What a handler returns. Build it with `success()` or `failure()`. */
export type HandlerResult =
  | { readonly kind: 'success'; readonly payload: unknown }
  | { readonly kind: 'failure'; readonly type: string; readonly payload: unknown; readonly retryable: boolean };

/** The reply to a success: the registration's success type with this payload. */
export function success(payload: unknown = {}): HandlerResult {
  return { kind: 'success', payload };
}

/**
 * A failure reply. `retryable` must say what the step's definition says of `type`: the library only uses it to
 * decide whether a later attempt (another `ce_id`) runs the handler again or gets this failure back.
 */
export function failure(type: string, payload: unknown, options: { retryable: boolean }): HandlerResult {
  return { kind: 'failure', type, payload, retryable: options.retryable };
}

/** One stored outcome per (saga id, step, phase). */
export interface Outcome {
  /** The `ce_id` this outcome answered. */
  readonly commandId: string;
  readonly replyType: string;
  readonly payload: unknown;
  readonly retryable: boolean;
}

/** What a handler gets besides the command. */
export interface HandlerContext<Tx> {
  /** The store's open transaction (a `pg.PoolClient` with the PostgreSQL store), committed with the outcome. */
  readonly transaction: Tx;
}

export type Handler<Tx> = (command: Command, context: HandlerContext<Tx>) => HandlerResult | Promise<HandlerResult>;

export interface CommandRegistration {
  /** The reply type of a success. */
  readonly success: string;
  /** A non-retryable failure type, sent when the command arrives after its compensation. */
  readonly refusal?: string;
}

export interface CompensationRegistration {
  /** The reply type of a success (the step's `compensation.reply.success` type). */
  readonly success: string;
}
