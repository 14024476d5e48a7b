package dev.sagaflow.participant;

import com.fasterxml.jackson.databind.JsonNode;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.StatusCode;
import io.opentelemetry.context.Scope;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The message-processing function: from a record read off a command topic to the one record to
 * produce (a reply or a dead-letter copy), or none. No Kafka here, so the shared test vectors
 * drive it directly.
 */
final class Processor {
    private static final Logger LOG = LoggerFactory.getLogger(Processor.class);
    static final String REFUSAL_ERROR = "the step was compensated before it ran";

    private final String source;
    private final String deadLetterTopic;
    private final OutcomeStore store;
    private final Tracing tracing;
    private final Map<String, Registration> registrations = new HashMap<>();
    private final Set<String> commandSuccessTypes = new HashSet<>();

    Processor(String source, String deadLetterTopic, List<Registration> registrations,
            OutcomeStore store) {
        this(source, deadLetterTopic, registrations, store, Tracing.global());
    }

    Processor(String source, String deadLetterTopic, List<Registration> registrations,
            OutcomeStore store, Tracing tracing) {
        this.source = source;
        this.tracing = tracing;
        this.deadLetterTopic = deadLetterTopic;
        this.store = store;
        for (Registration r : registrations) {
            if (this.registrations.putIfAbsent(key(r.phase(), r.type()), r) != null) {
                throw new IllegalArgumentException(
                        "two handlers for " + r.phase().wireName() + " type " + r.type());
            }
            if (r.phase() == Phase.COMMAND) {
                commandSuccessTypes.add(r.success());
            }
        }
    }

    /**
     * Processes one message. Throws when the handler (or the store) does: nothing was stored and
     * nothing may be produced; the caller tries the same message again later.
     */
    Optional<OutboundRecord> process(InboundMessage message) throws Exception {
        Envelope.Decoded decoded;
        try {
            decoded = Envelope.decode(message);
        } catch (DecodeException e) {
            return Optional.of(deadLetter(message, e.getMessage(),
                    Tracing.rawHeader(message, "traceparent"), Tracing.rawHeader(message, "tracestate")));
        }
        Command command = decoded.command();
        Registration registration = registrations.get(key(command.phase(), command.type()));
        if (registration == null) {
            return Optional.of(deadLetter(message, "unknown " + command.phase().wireName()
                    + " type `" + command.type() + "`", decoded.traceparent(), decoded.tracestate()));
        }
        Tracing.Processing processing =
                tracing.start(command, decoded.traceparent(), decoded.tracestate());
        Span span = processing.span();
        Scope scope = span.makeCurrent();
        try {
            Optional<Outcome> outcome = store.withLock(command.sagaId(), command.step(),
                    tx -> decide(registration, command, tx));
            return outcome.map(o -> Replies.reply(source, decoded, o, processing.traceparent()));
        } catch (Exception | Error e) {
            span.recordException(e);
            span.setStatus(StatusCode.ERROR);
            throw e;
        } finally {
            scope.close();
            span.end();
        }
    }

    /** The decision table of protocol/README.md, under the lock on (saga id, step). */
    private Optional<Outcome> decide(Registration registration, Command command,
            OutcomeStore.Transaction tx) throws Exception {
        Optional<Outcome> mine = tx.read(command.phase());
        if (mine.isPresent() && answers(mine.get(), command)) {
            return mine;
        }
        if (command.phase() == Phase.COMMAND) {
            // Compensated before it succeeded (never ran, or only failed retryably): a new
            // attempt is refused, never run, or it would redo work that was already undone.
            if (tx.read(Phase.COMPENSATION).isPresent()) {
                return refuse(registration, command, tx);
            }
            return Optional.of(run(registration, command, tx));
        }
        if (mine.isPresent()) {
            // A new attempt after a retryable failure of the compensation itself.
            return Optional.of(run(registration, command, tx));
        }
        Optional<Outcome> commandOutcome = tx.read(Phase.COMMAND);
        if (commandOutcome.isPresent() && isSuccess(commandOutcome.get())) {
            return Optional.of(run(registration, command, tx));
        }
        // The command failed here, or never reached us: there is nothing to undo.
        return Optional.of(store(tx, command,
                new Outcome(command.id(), registration.success(), Json.MAPPER.createObjectNode(), false)));
    }

    /** A stored outcome answers a message unless it is a retryable failure of another attempt. */
    private static boolean answers(Outcome stored, Command command) {
        return !stored.retryable() || stored.commandId().equals(command.id());
    }

    /**
     * The shared table has no success flag: a command outcome is a success when its type is the
     * success type of one of the registered commands.
     */
    private boolean isSuccess(Outcome commandOutcome) {
        return !commandOutcome.retryable() && commandSuccessTypes.contains(commandOutcome.replyType());
    }

    private static Optional<Outcome> refuse(Registration registration, Command command,
            OutcomeStore.Transaction tx) throws Exception {
        if (registration.refusal() == null) {
            LOG.info("skipping {} {} of saga {}: its step was compensated before it ran and no refusal"
                    + " type is registered", command.type(), command.id(), command.sagaId());
            return Optional.empty();
        }
        JsonNode body = Json.MAPPER.createObjectNode().put("error", REFUSAL_ERROR);
        return Optional.of(store(tx, command,
                new Outcome(command.id(), registration.refusal(), body, false)));
    }

    private static Outcome run(Registration registration, Command command,
            OutcomeStore.Transaction tx) throws Exception {
        Result result = registration.handler().handle(command.inTransaction(tx.connection()));
        if (result == null) {
            throw new IllegalStateException("the handler of " + command.type() + " returned null");
        }
        Outcome outcome = result.isSuccess()
                ? new Outcome(command.id(), registration.success(), result.payload(), false)
                : new Outcome(command.id(), result.failureType(), result.payload(), result.retryable());
        return store(tx, command, outcome);
    }

    private static Outcome store(OutcomeStore.Transaction tx, Command command, Outcome outcome)
            throws Exception {
        tx.write(command.phase(), outcome);
        return outcome;
    }

    /** The dead-letter copy, under a consumer span of its own (contract item 6: one per message). */
    private OutboundRecord deadLetter(InboundMessage message, String reason, String traceparent,
            String tracestate) {
        Span span = tracing.startDeadLetter(message, traceparent, tracestate, reason);
        Scope scope = span.makeCurrent();
        try {
            LOG.warn("dead-lettering {}/{}@{}: {}", message.topic(), message.partition(),
                    message.offset(), reason);
            return Replies.deadLetter(deadLetterTopic, message, reason);
        } finally {
            scope.close();
            span.end();
        }
    }

    private static String key(Phase phase, String type) {
        return phase.wireName() + " " + type;
    }
}
