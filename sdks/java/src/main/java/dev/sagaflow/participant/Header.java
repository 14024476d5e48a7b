package dev.sagaflow.participant;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/** One Kafka record header, its value kept as raw bytes (they may not be UTF-8). */
public record Header(String name, byte[] value) {

    static Header utf8(String name, String value) {
        return new Header(name, value.getBytes(StandardCharsets.UTF_8));
    }

    @Override
    public boolean equals(Object other) {
        return other instanceof Header h && name.equals(h.name) && Arrays.equals(value, h.value);
    }

    @Override
    public int hashCode() {
        return 31 * name.hashCode() + Arrays.hashCode(value);
    }

    @Override
    public String toString() {
        return name + "=" + new String(value, StandardCharsets.UTF_8);
    }
}
