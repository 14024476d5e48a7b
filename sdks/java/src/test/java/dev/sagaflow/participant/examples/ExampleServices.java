package dev.sagaflow.participant.examples;

import dev.sagaflow.participant.Command;
import dev.sagaflow.participant.Handler;
import dev.sagaflow.participant.Participant;
import dev.sagaflow.participant.PostgresStore;
import dev.sagaflow.participant.Result;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;

/**
 * Plays every participant of the example sagas in sagas/ (protocol/README.md, "The example
 * services"), configured by environment variables; SIGTERM stops it gracefully.
 */
public final class ExampleServices {
    private static final String DEFAULT_TOPICS = "inventory.commands,payments.commands,"
            + "shipping.commands,billing.commands,fulfilment.commands,notifications.commands,"
            + "travel.flights.commands,travel.hotels.commands,travel.cars.commands,"
            + "travel.notifications.commands";

    /** One row of the table: a command, its replies, and its compensation if it has one. */
    private record Service(String command, String success, String failure, String field,
            String compensation, String compensated) {}

    private static final List<Service> SERVICES = List.of(
            new Service("inventory.reserve_stock", "inventory.stock_reserved", "inventory.out_of_stock",
                    "reservation_id", "inventory.release_stock", "inventory.stock_released"),
            new Service("payments.authorize", "payments.authorized", "payments.declined",
                    "authorization_id", "payments.void_authorization", "payments.authorization_voided"),
            new Service("payments.capture", "payments.captured", "payments.capture_rejected",
                    "payment_id", null, null),
            new Service("shipping.create_shipment", "shipping.shipment_created",
                    "shipping.carrier_unavailable", "tracking_number", null, null),
            new Service("billing.create_account", "billing.account_created", "billing.account_rejected",
                    "billing_account_id", "billing.close_account", "billing.account_closed"),
            new Service("billing.start_subscription", "billing.subscription_started",
                    "billing.payment_method_missing", "subscription_id", null, null),
            new Service("fulfilment.send_gift", "fulfilment.gift_dispatched", null, null, null, null),
            new Service("notifications.send_email", "notifications.email_sent", null, null, null, null),
            new Service("travel.flight.book", "travel.flight.booked", "travel.flight.sold_out",
                    "booking_ref", "travel.flight.cancel", "travel.flight.cancelled"),
            new Service("travel.hotel.book", "travel.hotel.booked", "travel.hotel.no_vacancy",
                    "reservation_id", "travel.hotel.cancel", "travel.hotel.cancelled"),
            new Service("travel.car.book", "travel.car.booked", "travel.car.unavailable",
                    "rental_id", "travel.car.cancel", "travel.car.cancelled"),
            new Service("travel.trip.confirm", "travel.trip.confirmed", null, null, null, null));

    /** The only failure type the example sagas declare retryable. */
    private static final String RETRYABLE_FAILURE = "shipping.carrier_unavailable";

    private ExampleServices() {}

    public static void main(String[] args) throws Exception {
        Set<String> failSteps = list(env("FAIL_STEPS", "")).stream().collect(Collectors.toSet());
        Participant.Builder builder = Participant.builder()
                .bootstrapServers(env("BOOTSTRAP_SERVERS", "localhost:9092"))
                .groupId(env("GROUP_ID", "sagaflow-example-java"))
                .source(env("SOURCE", "/example-java"))
                .deadLetterTopic(env("DEAD_LETTER_TOPIC", "participants.dead-letter"))
                .topics(list(env("TOPICS", DEFAULT_TOPICS)));
        String databaseUrl = System.getenv("DATABASE_URL");
        if (databaseUrl != null && !databaseUrl.isBlank()) {
            // A connection per message is fine for the example; a service would pass a pool to
            // PostgresStore.create(dataSource) (README, "Example").
            builder.store(PostgresStore.connect(databaseUrl));
        }
        for (Service service : SERVICES) {
            builder.onCommand(service.command(), service.success(), service.failure(),
                    command(service, failSteps));
            if (service.compensation() != null) {
                builder.onCompensation(service.compensation(), service.compensated(),
                        cmd -> Result.success(Map.of("undone", true)));
            }
        }
        Participant participant = builder.build();
        Thread main = Thread.currentThread();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            participant.close();
            try {
                main.join(10_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            // Stopped gracefully (message finished, committed, group left, producer flushed):
            // exit 0 rather than the JVM's 143 for a SIGTERM, as a process handling it would.
            Runtime.getRuntime().halt(0);
        }, "shutdown"));
        participant.run();
    }

    private static Handler command(Service service, Set<String> failSteps) {
        return (Command cmd) -> {
            if (service.failure() != null && failSteps.contains(cmd.step())) {
                return Result.failure(service.failure(),
                        Map.of("error", cmd.step() + " failed on purpose"),
                        service.failure().equals(RETRYABLE_FAILURE));
            }
            if (service.field() == null) {
                return Result.success(Map.of());
            }
            String sagaPrefix = cmd.sagaId().toString().substring(0, 8);
            return Result.success(Map.of(service.field(), service.field() + "-" + sagaPrefix));
        };
    }

    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isBlank() ? fallback : value;
    }

    private static List<String> list(String commaSeparated) {
        return Arrays.stream(commaSeparated.split(",")).map(String::trim)
                .filter(s -> !s.isEmpty()).toList();
    }
}
