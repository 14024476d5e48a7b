package dev.sagaflow.participant;

import java.util.List;

/** A record as read from a command topic: what the message-processing function receives. */
public record InboundMessage(
        String topic, int partition, long offset, byte[] key, List<Header> headers, byte[] value) {

    public InboundMessage {
        headers = List.copyOf(headers);
    }
}
