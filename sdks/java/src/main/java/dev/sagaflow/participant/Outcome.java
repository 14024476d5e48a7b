package dev.sagaflow.participant;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * The stored answer for one (saga id, step, phase).
 *
 * @param commandId the {@code ce_id} it answered: tells a repeat from a new attempt
 * @param replyType the {@code ce_type} of the reply
 * @param retryable true only for a retryable failure
 */
public record Outcome(String commandId, String replyType, JsonNode payload, boolean retryable) {}
