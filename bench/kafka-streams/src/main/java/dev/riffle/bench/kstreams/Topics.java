package dev.riffle.bench.kstreams;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.errors.TopicExistsException;

/**
 * Creates topics, for scripts that have no Kafka command-line tools at hand:
 * {@code java -cp heater-kafka-streams.jar dev.riffle.bench.kstreams.Topics BROKERS PARTITIONS TOPIC...}.
 * Topics that exist already are left as they are.
 */
public final class Topics {
    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: Topics BROKERS PARTITIONS TOPIC...");
            System.exit(2);
        }
        int partitions = Integer.parseInt(args[1]);
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        try (Admin admin = Admin.create(props)) {
            List<NewTopic> topics = new ArrayList<>();
            for (int i = 2; i < args.length; i++) {
                topics.add(new NewTopic(args[i], Optional.of(partitions), Optional.empty()));
            }
            for (Map.Entry<String, ?> e : admin.createTopics(topics).values().entrySet()) {
                try {
                    ((org.apache.kafka.common.KafkaFuture<?>) e.getValue()).get();
                } catch (ExecutionException x) {
                    if (!(x.getCause() instanceof TopicExistsException)) throw x;
                }
            }
        }
    }
}
