package dev.sagaflow.participant;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/** Every file of protocol/vectors, globbed at test time, against both stores. */
class VectorTest {
    static final Path VECTORS = Path.of("..", "..", "protocol", "vectors");

    static List<String> vectorFiles() throws IOException {
        try (Stream<Path> files = Files.list(VECTORS)) {
            List<String> names = files.map(p -> p.getFileName().toString())
                    .filter(n -> n.endsWith(".json")).sorted().toList();
            if (names.isEmpty()) {
                throw new IllegalStateException("no vectors in " + VECTORS.toAbsolutePath());
            }
            return names;
        }
    }

    private static JsonNode load(String file) throws IOException {
        return Json.parse(Files.readAllBytes(VECTORS.resolve(file)));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("vectorFiles")
    void inMemoryStore(String file) throws Exception {
        JsonNode vector = load(file);
        new VectorRunner(vector.get("participant"), new InMemoryStore()).run(vector);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("vectorFiles")
    void postgresStore(String file) throws Exception {
        JsonNode vector = load(file);
        new VectorRunner(vector.get("participant"), TestDatabase.emptyStore()).run(vector);
    }
}
