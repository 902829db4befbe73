package dev.riffle.bench.kstreams;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadFeature;
import java.io.IOException;

/**
 * A decoded sensor record: a measurement {@code {"measurement": 45.2}} or a
 * thermostat setting {@code {"temperature": 45.0, "up_delta": 1.0, "down_delta": 1.0}}.
 * Decoding follows Riffle's heater (crates/riffle-heater/src/messages.rs):
 * a body with a {@code measurement} field is a measurement; one with any of
 * the setting fields is a setting and needs all three; numbers must be finite
 * and deltas non-negative; other fields are ignored.
 */
final class SensorMessage {
    /** Thrown for a record the controller cannot use; the message is one line. */
    static final class Malformed extends Exception {
        Malformed(String reason) {
            super(reason, null, false, false);
        }
    }

    private static final JsonFactory JSON = JsonFactory.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .build();

    final boolean isMeasurement;
    final double measurement;
    final double temperature;
    final double upDelta;
    final double downDelta;

    private SensorMessage(boolean isMeasurement, double measurement,
                          double temperature, double upDelta, double downDelta) {
        this.isMeasurement = isMeasurement;
        this.measurement = measurement;
        this.temperature = temperature;
        this.upDelta = upDelta;
        this.downDelta = downDelta;
    }

    // Field slots, in the order Riffle checks them.
    private static final int MEASUREMENT = 0, TEMPERATURE = 1, UP_DELTA = 2, DOWN_DELTA = 3;
    private static final String[] FIELDS = {"measurement", "temperature", "up_delta", "down_delta"};

    static SensorMessage decode(byte[] value) throws Malformed {
        if (value == null) {
            throw new Malformed("no value");
        }
        // present[i]: the field is there and not null; numbers[i]: its finite value, else NaN.
        boolean[] present = new boolean[4];
        double[] numbers = {Double.NaN, Double.NaN, Double.NaN, Double.NaN};
        try (JsonParser p = JSON.createParser(value)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                throw new Malformed("not a JSON object");
            }
            JsonToken t;
            while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
                int slot = slot(p.currentName());
                JsonToken v = p.nextToken();
                if (v == JsonToken.START_OBJECT || v == JsonToken.START_ARRAY) {
                    p.skipChildren();
                }
                if (slot < 0) {
                    continue;
                }
                // A JSON null counts as an absent field, as in Riffle.
                present[slot] = v != JsonToken.VALUE_NULL;
                numbers[slot] = Double.NaN;
                if (v == JsonToken.VALUE_NUMBER_INT || v == JsonToken.VALUE_NUMBER_FLOAT) {
                    numbers[slot] = p.getDoubleValue();
                }
            }
            if (t != JsonToken.END_OBJECT || p.nextToken() != null) {
                throw new Malformed("not a JSON object");
            }
        } catch (IOException e) {
            throw new Malformed("not a JSON object: " + firstLine(e.getMessage()));
        }
        if (present[MEASUREMENT]) {
            return new SensorMessage(true, number(present, numbers, MEASUREMENT), 0, 0, 0);
        }
        if (!present[TEMPERATURE] && !present[UP_DELTA] && !present[DOWN_DELTA]) {
            throw new Malformed("neither a measurement nor a setting");
        }
        double temperature = number(present, numbers, TEMPERATURE);
        double up = number(present, numbers, UP_DELTA);
        double down = number(present, numbers, DOWN_DELTA);
        if (up < 0 || down < 0) {
            throw new Malformed("deltas must not be negative (up_delta " + up + ", down_delta " + down + ")");
        }
        return new SensorMessage(false, 0, temperature, up, down);
    }

    private static int slot(String field) {
        switch (field) {
            case "measurement": return MEASUREMENT;
            case "temperature": return TEMPERATURE;
            case "up_delta": return UP_DELTA;
            case "down_delta": return DOWN_DELTA;
            default: return -1;
        }
    }

    private static double number(boolean[] present, double[] numbers, int slot) throws Malformed {
        if (!present[slot]) {
            throw new Malformed("missing field '" + FIELDS[slot] + "'");
        }
        double d = numbers[slot];
        if (!Double.isFinite(d)) {
            throw new Malformed("field '" + FIELDS[slot] + "' must be a number");
        }
        return d;
    }

    private static String firstLine(String s) {
        if (s == null) return "";
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }
}
