// The records the library produces: a binary-mode reply, or a dead-letter copy of what could not be handled.
import { randomUUID } from 'node:crypto';
import type { Command, Header, InboundMessage, Outcome, OutboundRecord } from './types.js';

const text = (name: string, value: string): Header => [name, Buffer.from(value, 'utf8')];

/** The reply to `command` carrying `outcome`; saga attributes come from this message, not the stored one. */
export function replyRecord(
  command: Command,
  outcome: Outcome,
  source: string,
  traceparent: string | undefined,
): OutboundRecord {
  const headers: Header[] = [
    text('ce_specversion', '1.0'),
    text('ce_id', randomUUID()),
    text('ce_source', source),
    text('ce_type', outcome.replyType),
    text('ce_time', new Date().toISOString()),
    text('content-type', 'application/json'),
    text('ce_sagaid', command.sagaId),
    text('ce_sagastep', command.step),
    text('ce_sagaattempt', String(command.attempt)),
    text('ce_sagaphase', command.phase),
    text('ce_sagatoken', command.token),
  ];
  if (traceparent !== undefined) headers.push(text('traceparent', traceparent));
  if (command.tracestate !== undefined) headers.push(text('tracestate', command.tracestate));
  return {
    topic: command.replyTo,
    key: Buffer.from(command.sagaId, 'utf8'),
    value: Buffer.from(JSON.stringify(outcome.payload ?? null), 'utf8'),
    headers,
  };
}

/** The dead-letter copy: key, value and headers unchanged, then the four `dlq-*` headers sagaflow also writes. */
export function deadLetterRecord(message: InboundMessage, topic: string, reason: string): OutboundRecord {
  return {
    topic,
    key: message.key,
    value: message.value,
    headers: [
      ...message.headers,
      text('dlq-reason', reason),
      text('dlq-original-topic', message.topic),
      text('dlq-original-partition', String(message.partition)),
      text('dlq-original-offset', message.offset),
    ],
  };
}
