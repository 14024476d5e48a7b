// The example services of protocol/README.md: one process that plays every participant of the example sagas
// (order-fulfilment, subscription-signup, trip-booking), configured by environment variables.
import { MemoryStore, Participant, ParticipantService, PostgresStore, failure, success } from '../src/index.js';
import type { Command, HandlerResult, Store } from '../src/index.js';

interface ExampleStep {
  readonly command: string;
  readonly success: string;
  /** Its failure type, non-retryable unless `retryable` says otherwise; also the refusal. */
  readonly failure?: string;
  readonly retryable?: boolean;
  /** The one field of the success payload, `"<field>-<first 8 characters of the saga id>"`. */
  readonly field?: string;
  readonly compensation?: { readonly type: string; readonly success: string };
}

const STEPS: readonly ExampleStep[] = [
  {
    command: 'inventory.reserve_stock',
    success: 'inventory.stock_reserved',
    failure: 'inventory.out_of_stock',
    field: 'reservation_id',
    compensation: { type: 'inventory.release_stock', success: 'inventory.stock_released' },
  },
  {
    command: 'payments.authorize',
    success: 'payments.authorized',
    failure: 'payments.declined',
    field: 'authorization_id',
    compensation: { type: 'payments.void_authorization', success: 'payments.authorization_voided' },
  },
  { command: 'payments.capture', success: 'payments.captured', failure: 'payments.capture_rejected', field: 'payment_id' },
  {
    command: 'shipping.create_shipment',
    success: 'shipping.shipment_created',
    failure: 'shipping.carrier_unavailable',
    retryable: true, // as the definition declares it
    field: 'tracking_number',
  },
  {
    command: 'billing.create_account',
    success: 'billing.account_created',
    failure: 'billing.account_rejected',
    field: 'billing_account_id',
    compensation: { type: 'billing.close_account', success: 'billing.account_closed' },
  },
  {
    command: 'billing.start_subscription',
    success: 'billing.subscription_started',
    failure: 'billing.payment_method_missing',
    field: 'subscription_id',
  },
  { command: 'fulfilment.send_gift', success: 'fulfilment.gift_dispatched' },
  { command: 'notifications.send_email', success: 'notifications.email_sent' },
  {
    command: 'travel.flight.book',
    success: 'travel.flight.booked',
    failure: 'travel.flight.sold_out',
    field: 'booking_ref',
    compensation: { type: 'travel.flight.cancel', success: 'travel.flight.cancelled' },
  },
  {
    command: 'travel.hotel.book',
    success: 'travel.hotel.booked',
    failure: 'travel.hotel.no_vacancy',
    field: 'reservation_id',
    compensation: { type: 'travel.hotel.cancel', success: 'travel.hotel.cancelled' },
  },
  {
    command: 'travel.car.book',
    success: 'travel.car.booked',
    failure: 'travel.car.unavailable',
    field: 'rental_id',
    compensation: { type: 'travel.car.cancel', success: 'travel.car.cancelled' },
  },
  { command: 'travel.trip.confirm', success: 'travel.trip.confirmed' },
];

const COMMAND_TOPICS = [
  'inventory.commands',
  'payments.commands',
  'shipping.commands',
  'billing.commands',
  'fulfilment.commands',
  'notifications.commands',
  'travel.flights.commands',
  'travel.hotels.commands',
  'travel.cars.commands',
  'travel.notifications.commands',
];

const list = (value: string | undefined): string[] =>
  (value ?? '')
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');

function commandHandler(step: ExampleStep, failSteps: ReadonlySet<string>) {
  return (command: Command): HandlerResult => {
    if (failSteps.has(command.step) && step.failure !== undefined) {
      const payload = { error: `${command.step} failed on purpose` };
      return failure(step.failure, payload, { retryable: step.retryable === true });
    }
    const payload = step.field === undefined ? {} : { [step.field]: `${step.field}-${command.sagaId.slice(0, 8)}` };
    return success(payload);
  };
}

function register(participant: Participant<unknown>, failSteps: ReadonlySet<string>): void {
  for (const step of STEPS) {
    // A refusal must be a non-retryable failure type; shipping's only failure is retryable (and it has no
    // compensation, so it is never refused anyway).
    const refusal = step.retryable === true ? undefined : step.failure;
    participant.command(step.command, { success: step.success, refusal }, commandHandler(step, failSteps));
    if (step.compensation !== undefined) {
      const compensated = step.compensation.success;
      participant.compensation(step.compensation.type, { success: compensated }, () => success({ undone: true }));
    }
  }
}

async function main(): Promise<void> {
  const env = process.env;
  const databaseUrl = env.DATABASE_URL;
  const store: Store = databaseUrl ? await PostgresStore.connect(databaseUrl) : new MemoryStore();
  const participant = new Participant<unknown>({
    source: env.SOURCE ?? '/example-typescript',
    deadLetterTopic: env.DEAD_LETTER_TOPIC ?? 'participants.dead-letter',
    store,
  });
  register(participant, new Set(list(env.FAIL_STEPS)));
  const topics = list(env.TOPICS);
  const service = ParticipantService.start(participant, {
    brokers: list(env.BOOTSTRAP_SERVERS ?? 'localhost:9092'),
    groupId: env.GROUP_ID ?? 'sagaflow-example-typescript',
    topics: topics.length > 0 ? topics : COMMAND_TOPICS,
    clientId: 'sagaflow-example-typescript',
  });
  const shutdown = (signal: string): void => {
    console.log(`[example] ${signal}: stopping`);
    void service.stop();
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  console.log(`[example] started (store: ${databaseUrl ? 'PostgreSQL' : 'in-memory'})`);
  await service.done;
  await store.close();
  console.log('[example] stopped cleanly');
}

main().catch((error: unknown) => {
  console.error('[example] fatal', error);
  process.exit(1);
});
