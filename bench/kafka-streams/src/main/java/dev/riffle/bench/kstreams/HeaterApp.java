package dev.riffle.bench.kstreams;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.state.Stores;

/**
 * The heater applications on Kafka Streams, run until SIGTERM. With
 * {@code --app heater} (the default), the heater controller: reads
 * measurements and settings keyed by heater id, keeps each heater's state in
 * a RocksDB store backed by a changelog topic, and writes ON/OFF commands
 * keyed by heater id. With {@code --app windows}, per-heater statistics over
 * tumbling windows of event time ({@link WindowStats}).
 */
public final class HeaterApp {
    private static final String USAGE = String.join("\n",
            "usage: run.sh --brokers HOST:PORT --input TOPIC[,TOPIC...] --output TOPIC --group ID",
            "              --guarantee at-least-once|exactly-once [--threads N] [--dead-letter TOPIC]",
            "              [--state-dir DIR] [--config KEY=VALUE]...",
            "              [--app heater|windows] [--window-ms MS] [--grace-ms MS]",
            "",
            "Runs until SIGTERM or SIGINT, then closes Kafka Streams (commit, leave the group).",
            "--threads       stream threads (default: the number of cores)",
            "--group         the application.id: consumer group, prefix of internal topics",
            "--dead-letter   topic for records that cannot be used (default: log and skip)",
            "--state-dir     where to make this run's state directory, deleted on exit, so each",
            "                run restores its stores from their changelogs (default: java.io.tmpdir)",
            "--config        any Kafka Streams, consumer (consumer.*) or producer (producer.*) setting",
            "--app           heater: the heater controller (default); windows: per-heater count, sum,",
            "                min, max and mean of the measurements over tumbling windows of event time",
            "                (the value's ts, ms), one final result per window",
            "--window-ms     windows: the window size (default 60000)",
            "--grace-ms      windows: how long after its end a window takes records, in stream time",
            "                (the partition's latest event time); its result follows (default 0)");

    public static void main(String[] args) throws Exception {
        String brokers = null, input = null, output = null, group = null, guarantee = null;
        String deadLetter = null, stateParent = null, app = "heater";
        long windowMs = 60_000, graceMs = 0;
        int threads = Runtime.getRuntime().availableProcessors();
        List<String> extra = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("-h") || a.equals("--help")) {
                System.out.println(USAGE);
                return;
            }
            if (i + 1 >= args.length) die("missing value after " + a);
            String v = args[++i];
            switch (a) {
                case "--brokers", "-b" -> brokers = v;
                case "--input" -> input = v;
                case "--output" -> output = v;
                case "--group" -> group = v;
                case "--guarantee" -> guarantee = v;
                case "--threads" -> threads = Integer.parseInt(v);
                case "--dead-letter" -> deadLetter = v;
                case "--state-dir" -> stateParent = v;
                case "--config", "-X" -> extra.add(v);
                case "--app" -> app = v;
                case "--window-ms" -> windowMs = Long.parseLong(v);
                case "--grace-ms" -> graceMs = Long.parseLong(v);
                default -> die("unknown argument " + a);
            }
        }
        if (brokers == null || input == null || output == null || group == null || guarantee == null) {
            die("--brokers, --input, --output, --group and --guarantee are required");
        }
        String processingGuarantee = switch (guarantee) {
            case "at-least-once", "at_least_once" -> StreamsConfig.AT_LEAST_ONCE;
            case "exactly-once", "exactly_once_v2", "exactly-once-v2" -> StreamsConfig.EXACTLY_ONCE_V2;
            default -> {
                die("--guarantee must be at-least-once or exactly-once, not " + guarantee);
                yield null;
            }
        };
        if (threads < 1) die("--threads must be at least 1");
        if (!app.equals("heater") && !app.equals("windows")) die("--app must be heater or windows, not " + app);
        if (app.equals("windows") && deadLetter != null) die("--dead-letter is for --app heater");
        if (windowMs < 1 || graceMs < 0) die("--window-ms must be at least 1 and --grace-ms at least 0");

        // A new state directory per run, deleted on exit: each run starts
        // with empty stores and restores them from their changelogs.
        Path stateDir = stateParent == null
                ? Files.createTempDirectory("heater-kafka-streams-")
                : Files.createTempDirectory(Files.createDirectories(Path.of(stateParent)), "heater-kafka-streams-");

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, group);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, processingGuarantee);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        // Streams' own default for its consumer already; stated so that a
        // reader need not know it: a new group reads its input from the start.
        props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
        // The handler of processing exceptions applies to global stores too
        // (there are none here); Kafka Streams warns until this is set and
        // will make it the default.
        props.put("processing.exception.handler.global.enabled", "true");
        for (String kv : extra) {
            int eq = kv.indexOf('=');
            if (eq <= 0) die("--config wants KEY=VALUE, not " + kv);
            props.put(kv.substring(0, eq), kv.substring(eq + 1));
        }

        List<String> sinks = new ArrayList<>(List.of(output));
        if (deadLetter != null) sinks.add(deadLetter);
        requireTopics(brokers, sinks);

        Topology topology = app.equals("windows")
                ? WindowStats.topology(input, output, Duration.ofMillis(windowMs), Duration.ofMillis(graceMs))
                : topology(Arrays.asList(input.split(",")), output, deadLetter);
        KafkaStreams streams = new KafkaStreams(topology, props);

        String appId = group;
        String appName = app;
        CountDownLatch stopped = new CountDownLatch(1);
        AtomicInteger exitCode = new AtomicInteger(0);
        AtomicBoolean announced = new AtomicBoolean(false);
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.RUNNING && announced.compareAndSet(false, true)) {
                System.err.println("heater-kafka-streams: RUNNING (" + appName + ", " + processingGuarantee + ", "
                        + props.get(StreamsConfig.NUM_STREAM_THREADS_CONFIG) + " threads, group " + appId + ")");
            }
            if (now == KafkaStreams.State.ERROR) {
                exitCode.set(1);
                stopped.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("heater-kafka-streams: stream thread failed: " + e);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });

        Thread hook = new Thread(() -> {
            // Finish the records in hand, commit, and leave the group so
            // that the next run with this group need not wait for a session
            // timeout.
            streams.close(CloseOptions.timeout(Duration.ofSeconds(60))
                    .withGroupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP));
            deleteTree(stateDir);
            System.err.println("heater-kafka-streams: closed");
            stopped.countDown();
        }, "shutdown");
        Runtime.getRuntime().addShutdownHook(hook);

        streams.start();
        stopped.await();
        if (exitCode.get() != 0) {
            System.err.println("heater-kafka-streams: stopped in state ERROR");
            System.exit(1);
        }
    }

    static Topology topology(List<String> inputs, String output, String deadLetter) {
        boolean dlq = deadLetter != null;
        Topology t = new Topology();
        t.addSource("sensor", new ByteArrayDeserializer(), new ByteArrayDeserializer(),
                inputs.toArray(new String[0]));
        t.addProcessor("controller", () -> new HeaterProcessor(dlq), "sensor");
        t.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(HeaterProcessor.STORE),
                Serdes.String(), HeaterState.serde()), "controller");
        t.addSink(HeaterProcessor.COMMANDS, output,
                new ByteArraySerializer(), new ByteArraySerializer(), "controller");
        if (dlq) {
            t.addSink(HeaterProcessor.DEAD_LETTERS, deadLetter,
                    new ByteArraySerializer(), new ByteArraySerializer(), "controller");
        }
        return t;
    }

    /**
     * Kafka Streams checks its source topics but not the topics it writes
     * to: a missing one would block its producers for a minute per send.
     */
    private static void requireTopics(String brokers, List<String> topics) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        try (Admin admin = Admin.create(p)) {
            Set<String> existing = admin.listTopics().names().get(60, TimeUnit.SECONDS);
            for (String t : topics) {
                if (!existing.contains(t)) die("topic " + t + " does not exist");
            }
        }
    }

    private static void deleteTree(Path root) {
        try (Stream<Path> paths = Files.walk(root)) {
            paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException e) {
            System.err.println("heater-kafka-streams: could not delete " + root + ": " + e);
        }
    }

    private static void die(String message) {
        System.err.println("heater-kafka-streams: " + message);
        System.err.println(USAGE);
        System.exit(2);
    }
}
