package dev.sagaflow.participant;

import com.fasterxml.jackson.databind.JsonNode;
import java.sql.Connection;
import java.util.List;
import java.util.Optional;
import java.util.UUID;

/**
 * A decoded command or compensation, as a handler receives it.
 *
 * @param definition  {@code ce_sagadefinition}, or null when the message had none
 * @param payload     the JSON body ({@code data} in structured mode); a JSON null when empty
 * @param headers     the record's headers as read, custom ones included
 * @param transaction the store's open transaction (PostgreSQL store only): writes made on it
 *                    commit atomically with the stored outcome, so the work is done at most once
 */
public record Command(
        String id,
        String type,
        UUID sagaId,
        String definition,
        String step,
        int attempt,
        Phase phase,
        String replyTo,
        String token,
        JsonNode payload,
        List<Header> headers,
        Optional<Connection> transaction) {

    public Command {
        headers = List.copyOf(headers);
    }

    Command inTransaction(Optional<Connection> connection) {
        return new Command(id, type, sagaId, definition, step, attempt, phase, replyTo, token,
                payload, headers, connection);
    }
}
