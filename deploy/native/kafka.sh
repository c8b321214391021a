#!/usr/bin/env bash
# Apache Kafka (KRaft, single node) from Maven Central jars, SASL/SCRAM + ACLs, on 127.0.0.1.
# Usage: kafka.sh install|start|stop|status
source "$(dirname "$0")/lib.sh"

LIB="$CACHE/kafka-$KAFKA_VERSION/lib"
DATA="$STATE/kafka/data"
CONF="$STATE/kafka/server.properties"
PIDFILE="$STATE/run/kafka.pid"
LOGFILE="$STATE/logs/kafka.log"
JAVA_OPTS=(-Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$REPO_ROOT/deploy/kafka/log4j2.properties")

install() {
  if [[ -f "$LIB/.complete" ]]; then return 0; fi
  command -v java >/dev/null || die "Java 17+ is needed for Kafka"
  command -v mvn >/dev/null || die "Maven is needed to fetch the Kafka jars"
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central (first time only)"
  rm -rf "$LIB"; mkdir -p "$LIB"
  mvn -B -q -f "$REPO_ROOT/deploy/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIB"
  unzip -l "$LIB/kafka_2.13-$KAFKA_VERSION.jar" | grep -q 'kafka/Kafka.class' || die "kafka jar incomplete"
  ls "$LIB"/log4j-slf4j-impl-*.jar "$LIB"/log4j-core-*.jar >/dev/null || die "log4j binding missing"
  touch "$LIB/.complete"
  log "Kafka jars in $LIB"
}

write_config() {
  # shellcheck disable=SC1091
  source "$STATE/secrets.env"
  mkdir -p "$(dirname "$CONF")"
  ( umask 077; : >"$CONF" )   # holds the admin password: owner-only
  cat >"$CONF" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=SASL_PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$KAFKA_ADMIN_PASSWORD";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:ANONYMOUS
log.dirs=$DATA
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=1000
log.retention.check.interval.ms=10000
PROPS
}

java_run() { java "${JAVA_OPTS[@]}" -cp "$LIB/*" "$@"; }

format() {
  [[ -f "$DATA/meta.properties" ]] && return 0
  # shellcheck disable=SC1091
  source "$STATE/secrets.env"
  log "formatting KRaft storage"
  mkdir -p "$DATA"
  local cluster_id
  cluster_id="$(java_run kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
  java_run kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]" >>"$LOGFILE" 2>&1
}

ready() { grep -q 'Kafka Server started' "$LOGFILE" 2>/dev/null && port_open "$KAFKA_PORT"; }

start() {
  install
  if pid_alive "$PIDFILE"; then log "Kafka already running"; return 0; fi
  mkdir -p "$STATE/run" "$STATE/logs"
  write_config
  format
  log "starting Kafka on 127.0.0.1:$KAFKA_PORT (SASL_PLAINTEXT, SCRAM-SHA-512)"
  : >"$LOGFILE.start"
  setsid java "${JAVA_OPTS[@]}" -cp "$LIB/*" kafka.Kafka "$CONF" >>"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local mark; mark="$(wc -l <"$LOGFILE")"
  local deadline=$((SECONDS + 120))
  until tail -n +"$((mark + 1))" "$LOGFILE" | grep -q 'Kafka Server started' && port_open "$KAFKA_PORT"; do
    pid_alive "$PIDFILE" || die "Kafka exited during start; see $LOGFILE"
    ((SECONDS < deadline)) || die "Kafka not ready in 120 s; see $LOGFILE"
    sleep 0.2
  done
  rm -f "$LOGFILE.start"
  log "Kafka ready"
}

stop() { stop_pid "$PIDFILE" Kafka; }
status() { if pid_alive "$PIDFILE"; then echo "kafka: running (pid $(cat "$PIDFILE")), SASL_PLAINTEXT 127.0.0.1:$KAFKA_PORT"; else echo "kafka: stopped"; fi; }

"${1:-status}"
