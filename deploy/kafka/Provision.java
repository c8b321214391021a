// Applies a provisioning plan to the Kafka cluster with the Admin API, idempotently:
// topics (with their configs), SCRAM users and ACL bindings. The plan is rendered from the
// topic catalog in contracts/ by deploy/provision.py; this program holds no policy of its own.
//
// Usage: java -cp '<kafka lib>/*' Provision.java <admin.properties> <plan.txt>
// Plan lines (space separated, '#' comments):
//   topic <name> <partitions> <key=value>[,<key=value>...]
//   user <name> <password>
//   acl <principal> <TOPIC|GROUP|CLUSTER> <LITERAL|PREFIXED> <resource> <OPERATION>
import java.io.FileReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.*;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.acl.*;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.resource.*;

public class Provision {
  public static void main(String[] args) throws Exception {
    Properties props = new Properties();
    try (FileReader r = new FileReader(args[0], StandardCharsets.UTF_8)) { props.load(r); }
    List<NewTopic> topics = new ArrayList<>();
    List<UserScramCredentialAlteration> users = new ArrayList<>();
    List<AclBinding> acls = new ArrayList<>();
    for (String raw : Files.readAllLines(Path.of(args[1]), StandardCharsets.UTF_8)) {
      String line = raw.strip();
      if (line.isEmpty() || line.startsWith("#")) continue;
      String[] f = line.split(" ");
      switch (f[0]) {
        case "topic" -> {
          Map<String, String> conf = new HashMap<>();
          for (String kv : f[3].split(",")) { String[] p = kv.split("=", 2); conf.put(p[0], p[1]); }
          topics.add(new NewTopic(f[1], Integer.parseInt(f[2]), (short) 1).configs(conf));
        }
        case "user" -> users.add(new UserScramCredentialUpsertion(
            f[1], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), f[2]));
        case "acl" -> acls.add(new AclBinding(
            new ResourcePattern(ResourceType.valueOf(f[2]), f[4], PatternType.valueOf(f[3])),
            new AccessControlEntry(f[1], "*", AclOperation.valueOf(f[5]), AclPermissionType.ALLOW)));
        default -> throw new IllegalArgumentException("unknown plan line: " + f[0]);
      }
    }
    try (Admin admin = Admin.create(props)) {
      Set<String> existing = admin.listTopics().names().get();
      List<NewTopic> fresh = topics.stream().filter(t -> !existing.contains(t.name())).toList();
      try {
        admin.createTopics(fresh).all().get();
      } catch (ExecutionException e) {
        if (!(e.getCause() instanceof TopicExistsException)) throw e;
      }
      // Existing topics get their configs re-applied, so a changed catalog takes effect.
      Map<ConfigResource, Collection<AlterConfigOp>> alter = new HashMap<>();
      for (NewTopic t : topics) {
        if (!existing.contains(t.name())) continue;
        List<AlterConfigOp> ops = new ArrayList<>();
        t.configs().forEach((k, v) -> ops.add(new AlterConfigOp(new ConfigEntry(k, v), AlterConfigOp.OpType.SET)));
        alter.put(new ConfigResource(ConfigResource.Type.TOPIC, t.name()), ops);
      }
      if (!alter.isEmpty()) admin.incrementalAlterConfigs(alter).all().get();
      if (!users.isEmpty()) admin.alterUserScramCredentials(users).all().get();
      if (!acls.isEmpty()) admin.createAcls(acls).all().get();
      System.out.printf("kafka: %d topics (%d new), %d users, %d acl bindings%n",
          topics.size(), fresh.size(), users.size(), acls.size());
    }
  }
}
