"""Producing Habitat Streams events straight to Kafka with Confluent's Python client.

A producer writing to the context topics without the REST proxy must do three things the
proxy does for it:

1. Put every record of a tenant on the tenant's partition: murmur2 of the tenant id (not
   of the record key) modulo the topic's partitions, as `habitat partition TENANT` prints.
   A client's default partitioner hashes the record key and silently breaks the joins.
2. Key the record as `topics.yaml` says (`{tenant_id}/member/{member_id}` here).
3. Encode the value in Avro with the schema registered under the subject
   `<topic>-<record full name>` (TopicRecordNameStrategy), never registering its own.

    HABITAT_BOOTSTRAP_SERVERS=127.0.0.1:19092 \
    HABITAT_SCHEMA_REGISTRY_URL=http://127.0.0.1:18081 \
        python examples/python/produce_direct.py coop-a

Needs confluent-kafka[avro] (pip install "confluent-kafka[avro]").
"""

import datetime
import os
import sys
import uuid

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

TOPIC = "habitat.people"
RECORD = "habitat.people.MemberRegistered"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's `Utils.murmur2`), as a signed 32-bit integer."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length % 4
    rest = data[length - tail :]
    if tail == 3:
        h ^= rest[2] << 16
    if tail >= 2:
        h ^= rest[1] << 8
    if tail >= 1:
        h ^= rest[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def tenant_partition(tenant: str, partitions: int) -> int:
    """The tenant's partition: Kafka's `toPositive(murmur2(bytes)) % partitions`."""
    return (murmur2(tenant.encode("utf-8")) & 0x7FFFFFFF) % partitions


def member_registered(tenant: str, member_id: str, name: str) -> dict:
    event_id = str(uuid.uuid4())
    return {
        "meta": {
            "event_id": event_id,
            "event_type": "people.MemberRegistered",
            "schema_version": 1,
            "tenant_id": tenant,
            "occurred_at": datetime.datetime.now(datetime.timezone.utc),
            "producer": "kafka:members-service",
            "actor": "steward:ana",
            "correlation_id": event_id,
            "causation_id": None,
        },
        "member_id": member_id,
        "display_name": name,
        "joined_on": datetime.date(2026, 3, 1),
        "status": "ACTIVE",
        "email": None,
    }


def main() -> int:
    tenant = sys.argv[1] if len(sys.argv) > 1 else "coop-a"
    bootstrap = os.environ.get("HABITAT_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    registry = SchemaRegistryClient(
        {"url": os.environ.get("HABITAT_SCHEMA_REGISTRY_URL", "http://127.0.0.1:18081")}
    )
    subject = f"{TOPIC}-{RECORD}"
    registered = registry.get_latest_version(subject)
    serializer = AvroSerializer(
        registry,
        registered.schema.schema_str,
        conf={
            "auto.register.schemas": False,
            "use.latest.version": True,
            "subject.name.strategy": lambda ctx, record_name: subject,
        },
    )
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    partitions = len(producer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions)
    partition = tenant_partition(tenant, partitions)

    failures = []

    def delivered(error, message):
        if error is not None:
            failures.append(error)

    for member_id, name in [("m-200", "Dalia Haddad"), ("m-201", "Emeka Obi")]:
        value = member_registered(tenant, member_id, name)
        producer.produce(
            TOPIC,
            key=f"{tenant}/member/{member_id}".encode(),
            value=serializer(value, SerializationContext(TOPIC, MessageField.VALUE)),
            partition=partition,
            on_delivery=delivered,
        )
    producer.flush(30)
    if failures:
        print(f"not delivered: {failures}", file=sys.stderr)
        return 1
    print(f"produced 2 members of {tenant} to {TOPIC} partition {partition} of {partitions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
