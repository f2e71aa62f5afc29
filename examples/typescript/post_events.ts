// Posting Habitat Streams events through the REST proxy with fetch (Node 18+, Deno, Bun or
// a browser): one event, then a batch with an Idempotency-Key, retrying 429 and 503 after
// the Retry-After the proxy names. The same key and body on every attempt: a retry after a
// lost answer gets the first result and writes nothing twice.
//
//   HABITAT_PROXY_URL=http://127.0.0.1:18080 HABITAT_API_KEY=hsk_... \
//     node --experimental-strip-types examples/typescript/post_events.ts coop-a

type Submission = {
  event_type: string;
  tenant_id: string;
  actor?: string;
  correlation_id?: string;
  payload: Record<string, unknown>;
};

type Accepted = { event_id: string; topic: string; partition: number; offset: number; key: string };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function post(url: string, apiKey: string, body: unknown, idempotencyKey: string): Promise<Response> {
  for (let attempt = 1; ; attempt++) {
    let answer: Response;
    try {
      answer = await fetch(url, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Authorization: `Bearer ${apiKey}`,
          "Idempotency-Key": idempotencyKey,
        },
        body: JSON.stringify(body),
      });
    } catch (error) {
      if (attempt >= 8) throw error;
      await sleep(Math.min(2 ** attempt, 30) * 1000);
      continue;
    }
    const retriable = answer.status === 429 || answer.status === 503;
    if (retriable && attempt < 8) {
      await sleep(Math.min(Number(answer.headers.get("Retry-After") ?? "1"), 30) * 1000);
      continue;
    }
    return answer;
  }
}

async function main(): Promise<void> {
  const proxy = (process.env.HABITAT_PROXY_URL ?? "http://127.0.0.1:18080").replace(/\/$/, "");
  const apiKey = process.env.HABITAT_API_KEY;
  if (!apiKey) throw new Error("set HABITAT_API_KEY");
  const tenant = process.argv[2] ?? "coop-a";
  const member = (id: string, name: string): Submission => ({
    event_type: "people.MemberRegistered",
    tenant_id: tenant,
    actor: "members-service",
    payload: { member_id: id, display_name: name, joined_on: "2026-01-15", status: "ACTIVE" },
  });

  const one = await post(`${proxy}/v1/events`, apiKey, member("m-200", "Dana Ito"), crypto.randomUUID());
  if (one.status !== 202) throw new Error(`refused: ${one.status} ${await one.text()}`);
  console.log("posted", ((await one.json()) as Accepted).event_id);

  const batch = { events: [member("m-201", "Émile Roy"), member("m-202", "Farah Nasser")] };
  const answer = await post(`${proxy}/v1/events:batch`, apiKey, batch, crypto.randomUUID());
  if (answer.status !== 202) throw new Error(`refused: ${answer.status} ${await answer.text()}`);
  console.log("posted batch", ((await answer.json()) as Accepted[]).map((a) => a.event_id));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
