package dev.riffle.bench.kstreams;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The thermostat rule, one state per heater in a persistent key-value store.
 *
 * <p>With setting Td, up, down: a measurement above Td + up turns the heater
 * OFF, one below Td - down turns it ON, anything in between changes nothing.
 * A command is sent only when it differs from the last one sent to that
 * heater; measurements before the first setting are ignored. The state is
 * written only when it changes (a setting, or a command sent).
 *
 * <p>Records it cannot use (no key, a key that is not UTF-8, a body that is
 * neither message) go to the dead-letter sink when there is one, in Riffle's
 * dead-letter format, and are logged otherwise.
 */
final class HeaterProcessor implements Processor<byte[], byte[], byte[], byte[]> {
    static final String STORE = "heaters";
    static final String COMMANDS = "commands";
    static final String DEAD_LETTERS = "dead-letters";

    private static final Logger LOG = LoggerFactory.getLogger(HeaterProcessor.class);
    private static final AtomicLong MALFORMED = new AtomicLong();
    private static final JsonFactory JSON = new JsonFactory();

    // Byte-identical to Riffle's Command::to_json.
    private static final byte[] ON_JSON = "{\"control\":0}".getBytes(StandardCharsets.UTF_8);
    private static final byte[] OFF_JSON = "{\"control\":1}".getBytes(StandardCharsets.UTF_8);

    private final boolean deadLetters;
    private final CharsetDecoder utf8 = StandardCharsets.UTF_8.newDecoder()
            .onMalformedInput(CodingErrorAction.REPORT)
            .onUnmappableCharacter(CodingErrorAction.REPORT);
    private ProcessorContext<byte[], byte[]> context;
    private KeyValueStore<String, HeaterState> store;

    HeaterProcessor(boolean deadLetters) {
        this.deadLetters = deadLetters;
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
        this.store = context.getStateStore(STORE);
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        String id;
        SensorMessage msg;
        try {
            id = heaterId(record.key());
            msg = SensorMessage.decode(record.value());
        } catch (SensorMessage.Malformed e) {
            malformed(record, e.getMessage());
            return;
        }

        HeaterState state = store.get(id);
        if (state == null) {
            state = HeaterState.EMPTY;
        }
        if (!msg.isMeasurement) {
            store.put(id, state.withSetting(msg));
            return;
        }
        if (!state.hasSetting()) {
            return;
        }
        byte wanted;
        if (msg.measurement > state.temperature() + state.upDelta()) {
            wanted = HeaterState.OFF;
        } else if (msg.measurement < state.temperature() - state.downDelta()) {
            wanted = HeaterState.ON;
        } else {
            return;
        }
        if (wanted == state.lastCommand()) {
            return;
        }
        store.put(id, state.withCommand(wanted));
        context.forward(record.withValue(wanted == HeaterState.ON ? ON_JSON : OFF_JSON)
                .withHeaders(new RecordHeaders()), COMMANDS);
    }

    private String heaterId(byte[] key) throws SensorMessage.Malformed {
        if (key == null) {
            throw new SensorMessage.Malformed("no key");
        }
        if (key.length == 0) {
            throw new SensorMessage.Malformed("empty heater id");
        }
        try {
            return utf8.decode(ByteBuffer.wrap(key)).toString();
        } catch (CharacterCodingException e) {
            throw new SensorMessage.Malformed("key is not UTF-8");
        }
    }

    private void malformed(Record<byte[], byte[]> record, String reason) {
        long n = MALFORMED.incrementAndGet();
        Optional<RecordMetadata> meta = context.recordMetadata();
        if (n <= 10 || n % 10_000 == 0) {
            LOG.warn("skipping record {} (malformed record #{}): {}",
                    meta.map(m -> m.topic() + "/" + m.partition() + "@" + m.offset()).orElse("?"), n, reason);
        }
        if (deadLetters) {
            context.forward(record.withValue(envelope(record, meta, reason))
                    .withHeaders(new RecordHeaders()), DEAD_LETTERS);
        }
    }

    /** Riffle's dead-letter value: the error and where and what the record was. */
    private static byte[] envelope(Record<byte[], byte[]> record, Optional<RecordMetadata> meta, String reason) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(128);
        try (JsonGenerator g = JSON.createGenerator(out)) {
            g.writeStartObject();
            g.writeStringField("error", reason);
            if (meta.isPresent()) {
                g.writeStringField("topic", meta.get().topic());
                g.writeNumberField("partition", meta.get().partition());
                g.writeNumberField("offset", meta.get().offset());
            }
            String key = strictUtf8(record.key());
            if (key != null) {
                g.writeStringField("key", key);
            }
            if (record.value() != null) {
                String value = strictUtf8(record.value());
                if (value != null) {
                    g.writeStringField("value", value);
                } else {
                    g.writeStringField("value_base64", Base64.getEncoder().encodeToString(record.value()));
                }
            }
            g.writeEndObject();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toByteArray();
    }

    private static String strictUtf8(byte[] bytes) {
        if (bytes == null) return null;
        try {
            CharBuffer c = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes));
            return c.toString();
        } catch (CharacterCodingException e) {
            return null;
        }
    }
}
