package dev.sagaflow.participant;

import java.util.List;

/** A record the participant produces: a reply, or a dead-letter copy. */
public record OutboundRecord(String topic, byte[] key, List<Header> headers, byte[] value) {

    public OutboundRecord {
        headers = List.copyOf(headers);
    }
}
