export { Participant, DEFAULT_DEAD_LETTER_TOPIC } from './participant.js';
export type { Disposition, ParticipantOptions } from './participant.js';
export { ParticipantService } from './service.js';
export type { MessageProcessor } from './service.js';
export type { Logger } from './log.js';
export type { KafkaOptions } from './kafka-config.js';
export { MemoryStore } from './memory-store.js';
export { PostgresStore } from './postgres-store.js';
export type { Store, StepOutcomes, StepTransaction } from './store.js';
export { success, failure } from './types.js';
export type {
  Command,
  CommandRegistration,
  CompensationRegistration,
  Handler,
  HandlerContext,
  HandlerResult,
  Header,
  InboundMessage,
  Outcome,
  OutboundRecord,
  Phase,
} from './types.js';
