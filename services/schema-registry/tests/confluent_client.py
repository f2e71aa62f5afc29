"""Confluent's Python client (confluent-kafka) against our registry: every call of the API
we serve, then an Avro record with decimals both ways (AvroSerializer's bytes read by our
codec, our codec's bytes read by AvroDeserializer).

Usage: confluent_client.py <registry url> <catalog subject> <catalog schema file> <hex of a
record our codec wrote>. Prints one JSON object; any failed check raises (exit 1).
"""

import datetime
import decimal
import json
import sys
import uuid

from confluent_kafka.schema_registry import (ConfigCompatibilityLevel, Schema,
                                             SchemaRegistryClient)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.schema_registry_client import ServerConfig
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from confluent_kafka.schema_registry import topic_record_subject_name_strategy


def record(fields):
    return json.dumps({"type": "record", "name": "Probe", "namespace": "conformance",
                       "fields": fields})


A = {"name": "a", "type": "string"}
B_DEFAULT = {"name": "b", "type": "int", "default": 0}
B = {"name": "b", "type": "int"}


def main():
    url, catalog_subject, schema_file, ours_hex = sys.argv[1:5]
    client = SchemaRegistryClient({"url": url})
    checks = []

    def check(name, condition, detail=""):
        if not condition:
            raise AssertionError(f"{name}: {detail}")
        checks.append(name)

    subject = "conformance-" + uuid.uuid4().hex[:12]
    v1 = Schema(record([A]), "AVRO")
    schema_id = client.register_schema(subject, v1)
    check("register", isinstance(schema_id, int) and schema_id > 0, schema_id)
    # A second client (this one caches, and its cached answer of register_schema is
    # garbled in 2.12): the registry answers the same id for the same schema.
    again = SchemaRegistryClient({"url": url}).register_schema(subject, v1)
    check("register again", again == schema_id, again)

    found = client.lookup_schema(subject, v1)
    check("lookup", found.schema_id == schema_id and found.version == 1, found)
    check("get_schema", json.loads(client.get_schema(schema_id).schema_str)["name"] == "Probe")
    check("get_subjects", subject in client.get_subjects())
    check("get_versions", client.get_versions(subject) == [1])
    check("get_version", client.get_version(subject, 1).schema_id == schema_id)
    check("get_latest_version", client.get_latest_version(subject).version == 1)

    compatible = Schema(record([A, B_DEFAULT]), "AVRO")
    incompatible = Schema(record([A, B]), "AVRO")
    check("test_compatibility", client.test_compatibility(subject, compatible) is True)
    check("test_compatibility of a version",
          client.test_compatibility(subject, incompatible, version=1) is False)
    check("test_compatibility verbose",
          client.test_compatibility(subject, incompatible, verbose=True) is False)
    check("test_compatibility_all_versions",
          client.test_compatibility_all_versions(subject, compatible) is True)
    check("test_compatibility_all_versions, incompatible",
          client.test_compatibility_all_versions(subject, incompatible) is False)
    try:
        client.register_schema(subject, incompatible)
        check("an incompatible schema is refused", False, "registered")
    except SchemaRegistryError as error:
        check("an incompatible schema is refused",
              error.http_status_code == 409 and error.error_code == 409, error)

    level = ConfigCompatibilityLevel.BACKWARD_TRANSITIVE
    client.set_config(subject_name=subject, config=ServerConfig(compatibility=level))
    check("set_config with compatibilityLevel",
          client.set_config(subject_name=subject,
                            config=ServerConfig(compatibility_level=level)) is not None)
    got = client.get_config(subject)
    check("get_config of a subject", got.compatibility_level == level, got)
    check("get_config", client.get_config().compatibility_level is not None)

    check("register a second version", client.register_schema(subject, compatible) != schema_id)
    check("delete_version", client.delete_version(subject, 2) == 2)
    check("versions after delete_version", client.get_versions(subject) == [1])
    check("delete_subject", client.delete_subject(subject) == [1])
    try:
        client.get_versions(subject)
        check("a deleted subject is not found", False, "found")
    except SchemaRegistryError as error:
        check("a deleted subject is not found",
              error.http_status_code == 404 and error.error_code == 40401, error)

    # A catalog record with decimals, both ways.
    with open(schema_file, encoding="utf-8") as f:
        catalog_schema = f.read()
    topic = catalog_subject.split("-", 1)[0]
    context = SerializationContext(topic, MessageField.VALUE)
    serializer = AvroSerializer(client, catalog_schema, conf={
        "auto.register.schemas": True,
        "subject.name.strategy": topic_record_subject_name_strategy,
    })
    policy = {
        "meta": {
            "event_id": "0193a1b2-0000-7000-8000-00000000abcd",
            "event_type": "treasury.PatronagePolicySet",
            "schema_version": 2,
            "tenant_id": "coop-py",
            "occurred_at": datetime.datetime(2026, 1, 5, 8, 0, 0, 123456,
                                             tzinfo=datetime.timezone.utc),
            "producer": "rest:python",
            "actor": "steward:ana",
            "correlation_id": "corr-py",
            "causation_id": None,
        },
        "weights": [{"kind": "LABOR", "weight": decimal.Decimal("1.0000")},
                    {"kind": "EXPERTISE", "weight": decimal.Decimal("1.5000")}],
        "cash_ratio": decimal.Decimal("0.2500"),
        "installments": 3,
        "installment_interval": "QUARTERLY",
        "first_payment_offset_days": 30,
        "effective_from": datetime.date(2027, 1, 1),
        "time_zone": "Europe/Madrid",
    }
    produced = serializer(policy, context)
    check("serialize", produced[0] == 0 and len(produced) > 5)
    check("the serializer used the catalog subject",
          client.get_latest_version(catalog_subject).schema_id
          == int.from_bytes(produced[1:5], "big"))

    deserializer = AvroDeserializer(client)
    ours = deserializer(bytes.fromhex(ours_hex), context)

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, decimal.Decimal):
            return str(value)
        if isinstance(value, (datetime.datetime, datetime.date)):
            return value.isoformat()
        return value

    print(json.dumps({"checks": checks, "produced": produced.hex(), "ours": plain(ours)}))


if __name__ == "__main__":
    main()
