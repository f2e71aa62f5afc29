"""Posting Habitat Streams events through the REST proxy, as a producer team would.

Posts one event, then a batch (all or nothing, one Kafka transaction), each with an
Idempotency-Key so that a retry after a lost answer writes nothing twice. A 503 (the broker
or the key store is unreachable) or a 429 is retried after the Retry-After the proxy names.

    HABITAT_PROXY_URL=http://127.0.0.1:18080 HABITAT_API_KEY=hsk_... \
        python examples/python/post_events.py coop-a

Needs `requests` (pip install requests).
"""

import os
import sys
import time
import uuid

import requests

RETRIABLE = {429, 503}


def post(session, url, body, idempotency_key, attempts=8):
    """POSTs `body` with `idempotency_key`, retrying what the proxy says to retry.

    The same key and body are sent on every attempt: if an earlier attempt was written and
    only its answer was lost, the proxy answers with the first result and writes nothing.
    """
    for attempt in range(1, attempts + 1):
        try:
            answer = session.post(
                url,
                json=body,
                headers={"Idempotency-Key": idempotency_key},
                timeout=35,
            )
        except requests.ConnectionError:
            if attempt == attempts:
                raise
            time.sleep(min(2 ** attempt, 30))
            continue
        if answer.status_code in RETRIABLE and attempt < attempts:
            wait = float(answer.headers.get("Retry-After", "1"))
            time.sleep(min(wait, 30))
            continue
        if answer.status_code == 409 and answer.json().get("error_code") == "idempotency_key_in_progress":
            time.sleep(float(answer.headers.get("Retry-After", "1")))
            continue
        return answer
    raise RuntimeError(f"no answer after {attempts} attempts")


def main():
    proxy = os.environ.get("HABITAT_PROXY_URL", "http://127.0.0.1:18080").rstrip("/")
    key = os.environ["HABITAT_API_KEY"]
    tenant = sys.argv[1] if len(sys.argv) > 1 else "coop-a"

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"

    one = {
        "event_type": "people.MemberRegistered",
        "tenant_id": tenant,
        "actor": "members-service",
        "payload": {
            "member_id": "m-100",
            "display_name": "Amara Okafor",
            "joined_on": "2026-01-15",
            "status": "ACTIVE",
        },
    }
    answer = post(session, f"{proxy}/v1/events", one, str(uuid.uuid4()))
    if answer.status_code != 202:
        sys.exit(f"refused: {answer.status_code} {answer.text}")
    print("posted", answer.json()["event_id"])

    batch = {
        "events": [
            {
                "event_type": "people.MemberRegistered",
                "tenant_id": tenant,
                "actor": "members-service",
                "payload": {
                    "member_id": f"m-{100 + i}",
                    "display_name": name,
                    "joined_on": "2026-02-01",
                    "status": "ACTIVE",
                },
            }
            for i, name in [(1, "Bruno Díaz"), (2, "Chiara Rossi")]
        ]
    }
    key_of_batch = str(uuid.uuid4())
    answer = post(session, f"{proxy}/v1/events:batch", batch, key_of_batch)
    if answer.status_code != 202:
        sys.exit(f"refused: {answer.status_code} {answer.text}")
    print("posted batch", [accepted["event_id"] for accepted in answer.json()])

    # The same key and body again (a retry after a lost answer): the first answer, nothing
    # written twice.
    again = post(session, f"{proxy}/v1/events:batch", batch, key_of_batch)
    assert again.json() == answer.json(), (again.status_code, again.text)
    print("retry answered", again.status_code, "with the first result")


if __name__ == "__main__":
    main()
