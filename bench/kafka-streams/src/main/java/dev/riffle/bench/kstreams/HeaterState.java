package dev.riffle.bench.kstreams;

import java.nio.ByteBuffer;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * One heater's controller state: its thermostat setting (if one has arrived)
 * and the last command sent to it (if any).
 *
 * <p>Stored as 26 bytes: a flags byte (bit 0: has a setting), the setting's
 * three doubles (zero without one), and the last command (0 ON, 1 OFF,
 * -1 none).
 */
record HeaterState(boolean hasSetting, double temperature, double upDelta, double downDelta,
                   byte lastCommand) {
    static final byte NONE = -1;
    static final byte ON = 0;
    static final byte OFF = 1;
    static final HeaterState EMPTY = new HeaterState(false, 0, 0, 0, NONE);

    private static final int SIZE = 1 + 3 * Double.BYTES + 1;

    HeaterState withSetting(SensorMessage s) {
        return new HeaterState(true, s.temperature, s.upDelta, s.downDelta, lastCommand);
    }

    HeaterState withCommand(byte command) {
        return new HeaterState(hasSetting, temperature, upDelta, downDelta, command);
    }

    static final Serializer<HeaterState> SERIALIZER = (topic, s) -> {
        if (s == null) return null;
        return ByteBuffer.allocate(SIZE)
                .put((byte) (s.hasSetting ? 1 : 0))
                .putDouble(s.temperature)
                .putDouble(s.upDelta)
                .putDouble(s.downDelta)
                .put(s.lastCommand)
                .array();
    };

    static final Deserializer<HeaterState> DESERIALIZER = (topic, bytes) -> {
        if (bytes == null) return null;
        if (bytes.length != SIZE) {
            throw new IllegalArgumentException("heater state of " + bytes.length + " bytes, not " + SIZE);
        }
        ByteBuffer b = ByteBuffer.wrap(bytes);
        return new HeaterState((b.get() & 1) != 0, b.getDouble(), b.getDouble(), b.getDouble(), b.get());
    };

    static Serde<HeaterState> serde() {
        return Serdes.serdeFrom(SERIALIZER, DESERIALIZER);
    }
}
