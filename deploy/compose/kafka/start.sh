#!/bin/sh
# One KRaft node (broker and controller). KAFKA_ADVERTISED: host:port clients are told to use.
set -eu
ADVERTISED="${KAFKA_ADVERTISED:-kafka:9092}"
PROPS=/tmp/server.properties
cat >"$PROPS" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://$ADVERTISED
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=/var/lib/kafka/data
auto.create.topics.enable=false
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
CP="/opt/kafka/libs/*"
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  java -cp "$CP" -Dlog4j.configuration=file:/opt/kafka/log4j.properties kafka.tools.StorageTool \
    format --config "$PROPS" --cluster-id "${KAFKA_CLUSTER_ID:-SGVyYWxkQ29tcG9zZTAx}" --ignore-formatted
fi
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true \
  -Dkafka.logs.dir=/tmp -Dlog4j.configuration=file:/opt/kafka/log4j.properties \
  -cp "$CP" kafka.Kafka "$PROPS"
