// The consumer span of one message, through the OpenTelemetry API only: with an SDK installed it is recorded and
// exported by the application's tracer provider; without one the API hands back a non-recording span that
// carries the parent's span id, so the reply then gets a fresh span id of our own under the command's trace id.
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
import type { Context, Span } from '@opentelemetry/api';
import type { Command } from './types.js';

const TRACER_NAME = '@sagaflow/participant';
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZEROS = /^0+$/;

interface ParentTrace {
  readonly traceId: string;
  readonly spanId: string;
  readonly flags: string;
}

/** A W3C `traceparent` (version 00), or undefined when it does not parse. */
export function parseTraceparent(value: string | undefined): ParentTrace | undefined {
  const match = value === undefined ? null : TRACEPARENT.exec(value.trim());
  if (match === null) return undefined;
  const [, traceId = '', spanId = '', flags = ''] = match;
  if (ZEROS.test(traceId) || ZEROS.test(spanId)) return undefined;
  return { traceId, spanId, flags };
}

export class ProcessingSpan {
  readonly span: Span;
  readonly context: Context;
  /** The `traceparent` for the reply: the command's trace id and flags, this span's id. */
  readonly replyTraceparent: string | undefined;

  private constructor(span: Span, ctx: Context, replyTraceparent: string | undefined) {
    this.span = span;
    this.context = ctx;
    this.replyTraceparent = replyTraceparent;
  }

  /** Starts the consumer span of a command, a child of its `traceparent` when it has a valid one. */
  static start(command: Command | undefined, topic: string): ProcessingSpan {
    const parent = parseTraceparent(command?.traceparent);
    const parentContext =
      parent === undefined
        ? ROOT_CONTEXT
        : trace.setSpanContext(ROOT_CONTEXT, {
            traceId: parent.traceId,
            spanId: parent.spanId,
            traceFlags: parseInt(parent.flags, 16),
            isRemote: true,
          });
    const span = trace.getTracer(TRACER_NAME).startSpan(
      `${topic} process`,
      { kind: SpanKind.CONSUMER, attributes: spanAttributes(command, topic) },
      parentContext,
    );
    const reply = parent === undefined ? undefined : `00-${parent.traceId}-${ownSpanId(span, parent)}-${parent.flags}`;
    return new ProcessingSpan(span, trace.setSpan(parentContext, span), reply);
  }

  /** Runs `work` with this span as the active one, so the handler's own spans nest under it. */
  run<T>(work: () => Promise<T>): Promise<T> {
    return context.with(this.context, work);
  }

  end(error?: unknown): void {
    if (error !== undefined) {
      this.span.recordException(error instanceof Error ? error : inspect(error));
      this.span.setStatus({ code: SpanStatusCode.ERROR });
    }
    this.span.end();
  }
}

function ownSpanId(span: Span, parent: ParentTrace): string {
  const spanId = span.spanContext().spanId;
  if (spanId !== parent.spanId && !ZEROS.test(spanId) && /^[0-9a-f]{16}$/.test(spanId)) return spanId;
  for (;;) {
    const fresh = randomBytes(8).toString('hex');
    if (fresh !== parent.spanId && !ZEROS.test(fresh)) return fresh;
  }
}

function spanAttributes(command: Command | undefined, topic: string): Record<string, string | number> {
  const attributes: Record<string, string | number> = {
    'messaging.system': 'kafka',
    'messaging.operation.type': 'process',
    'messaging.destination.name': topic,
  };
  if (command !== undefined) {
    attributes['messaging.message.id'] = command.id;
    attributes['cloudevents.event_type'] = command.type;
    attributes['sagaflow.saga_id'] = command.sagaId;
    attributes['sagaflow.step'] = command.step;
    attributes['sagaflow.phase'] = command.phase;
    attributes['sagaflow.attempt'] = command.attempt;
  }
  return attributes;
}
