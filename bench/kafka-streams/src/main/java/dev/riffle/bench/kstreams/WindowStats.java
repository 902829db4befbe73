package dev.riffle.bench.kstreams;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.TimestampExtractor;
import org.apache.kafka.streams.state.WindowStore;

/**
 * Per-heater statistics over tumbling windows of event time, the peer of
 * Riffle's {@code Windowed} app in the benchmark's windowed workload
 * (crates/riffle-bench/src/windowed.rs), written with the DSL as Kafka
 * Streams' documentation shows it: the event time from the value through a
 * {@link TimestampExtractor}, {@code TimeWindows.ofSizeAndGrace}, an
 * {@code aggregate} of count, sum, minimum and maximum in a windowed store,
 * and {@code suppress(untilWindowCloses)} so that each window sends one
 * final result.
 *
 * <p>Input: records keyed by heater id with values
 * {@code {"measurement": 45.2, ..., "ts": 1718000012345}} ({@code ts}: event
 * time, ms since the epoch). Output, keyed by heater id, one per closed
 * window, with Riffle's fields in Riffle's order:
 * {@code {"count":60,"end":...,"final":true,"key":"heater-00017","max":...,"mean":...,"min":...,"start":...,"sum":...}}.
 */
final class WindowStats {
    private WindowStats() {}

    /** The windowed store's name (its changelog topic is named after it). */
    static final String STORE = "heater-window-stats";

    static Topology topology(String input, String output, Duration size, Duration grace) {
        StreamsBuilder b = new StreamsBuilder();
        b.stream(input, Consumed.with(Serdes.String(), Measurement.SERDE)
                        .withTimestampExtractor(new EventTime()))
                .groupByKey(Grouped.with(Serdes.String(), Measurement.SERDE))
                .windowedBy(TimeWindows.ofSizeAndGrace(size, grace))
                .aggregate(Stats::new, (heater, m, stats) -> stats.add(m.value),
                        Materialized.<String, Stats, WindowStore<Bytes, byte[]>>as(STORE)
                                .withKeySerde(Serdes.String())
                                .withValueSerde(Stats.SERDE))
                .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
                .toStream()
                .map((w, stats) -> KeyValue.pair(w.key(),
                        stats.json(w.key(), w.window().start(), w.window().end())))
                .to(output, Produced.with(Serdes.String(), Serdes.ByteArray()));
        return b.build();
    }

    /** A measurement and its event time; null for a value that is neither. */
    record Measurement(double value, long ts) {
        private static final JsonFactory JSON = new JsonFactory();

        static Measurement parse(byte[] bytes) {
            if (bytes == null) return null;
            double value = Double.NaN;
            long ts = -1;
            try (JsonParser p = JSON.createParser(bytes)) {
                if (p.nextToken() != JsonToken.START_OBJECT) return null;
                while (p.nextToken() == JsonToken.FIELD_NAME) {
                    String field = p.currentName();
                    JsonToken t = p.nextToken();
                    if (field.equals("measurement") && t.isNumeric()) {
                        value = p.getDoubleValue();
                    } else if (field.equals("ts") && t == JsonToken.VALUE_NUMBER_INT) {
                        ts = p.getLongValue();
                    } else {
                        p.skipChildren();
                    }
                }
            } catch (IOException e) {
                return null;
            }
            return Double.isFinite(value) && ts >= 0 ? new Measurement(value, ts) : null;
        }

        /**
         * Writes what {@link #parse} reads; used only if a record had to
         * cross a repartition topic (none here: the key is the input's).
         */
        private static final Serializer<Measurement> SERIALIZER = (topic, m) -> m == null ? null
                : ("{\"measurement\":" + m.value + ",\"ts\":" + m.ts + "}").getBytes(StandardCharsets.UTF_8);

        private static final Deserializer<Measurement> DESERIALIZER = (topic, bytes) -> parse(bytes);

        static final Serde<Measurement> SERDE = Serdes.serdeFrom(SERIALIZER, DESERIALIZER);
    }

    /**
     * The event time of a record: its measurement's {@code ts}. A record
     * that is no measurement gets -1, which Kafka Streams skips with a
     * warning.
     */
    static final class EventTime implements TimestampExtractor {
        @Override
        public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
            return record.value() instanceof Measurement m ? m.ts : -1;
        }
    }

    /** A window's running count, sum, minimum and maximum. */
    static final class Stats {
        long count;
        double sum;
        double min;
        double max;

        Stats add(double v) {
            if (count == 0) {
                min = v;
                max = v;
            } else {
                min = Math.min(min, v);
                max = Math.max(max, v);
            }
            count++;
            sum += v;
            return this;
        }

        byte[] json(String key, long start, long end) {
            double mean = count == 0 ? 0.0 : sum / count;
            StringBuilder s = new StringBuilder(192);
            s.append("{\"count\":").append(count)
                    .append(",\"end\":").append(end)
                    .append(",\"final\":true,\"key\":\"").append(key).append('"')
                    .append(",\"max\":").append(max)
                    .append(",\"mean\":").append(mean)
                    .append(",\"min\":").append(min)
                    .append(",\"start\":").append(start)
                    .append(",\"sum\":").append(sum)
                    .append('}');
            return s.toString().getBytes(StandardCharsets.UTF_8);
        }

        private static final int SIZE = Long.BYTES + 3 * Double.BYTES;

        static final Serde<Stats> SERDE = Serdes.serdeFrom(
                (topic, s) -> s == null ? null : ByteBuffer.allocate(SIZE)
                        .putLong(s.count).putDouble(s.sum).putDouble(s.min).putDouble(s.max).array(),
                (topic, bytes) -> {
                    if (bytes == null) return null;
                    if (bytes.length != SIZE) {
                        throw new IllegalArgumentException("window stats of " + bytes.length + " bytes, not " + SIZE);
                    }
                    ByteBuffer b = ByteBuffer.wrap(bytes);
                    Stats s = new Stats();
                    s.count = b.getLong();
                    s.sum = b.getDouble();
                    s.min = b.getDouble();
                    s.max = b.getDouble();
                    return s;
                });
    }
}
