// The emit poster of `emit-api`: a backend service pushing events through a server's
// `POST /internal/emit` (bench/servers/common.py, the application mode), as fast as the server
// answers. `concurrency` keep-alive connections each send their next request as soon as the
// answer to their last one has come. A request carries one emit as a JSON object (batch 1) or
// `batch` emits as a JSON array; each emit is `tick` `{seq, t, pad}` to one room, `t` the time
// its request was made (CLOCK_MONOTONIC ms), so the clients' latency runs from the POST.
//
// The suite (bench/load.py) writes one JSON command per line to stdin and reads one JSON event
// per line from stdout ({ev: "ready"} first):
//   {op: "post", url, token, room, first, count, batch, concurrency, size}
//     -> {ev: "posted", t0, end, posts, accepted, delivered, failed, error}
import http from "node:http";
import { createInterface } from "node:readline";

const now = () => Number(process.hrtime.bigint()) / 1e6;
const out = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);
const PAYLOAD_OVERHEAD = 36; // as bench/servers/common.py

function send(agent, url, token, body) {
  return new Promise((resolve) => {
    const req = http.request(
      url,
      {
        agent,
        method: "POST",
        headers: {
          Authorization: `Bearer ${token}`,
          "Content-Type": "application/json",
          "Content-Length": Buffer.byteLength(body),
        },
      },
      (res) => {
        const chunks = [];
        res.on("data", (chunk) => chunks.push(chunk));
        res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
      },
    );
    req.on("error", (error) => resolve({ status: 0, body: Buffer.from(String(error.message)) }));
    req.end(body);
  });
}

async function post({ url, token, room, first, count, batch, concurrency, size }) {
  // A fresh agent per burst: no connection left idle past a server's keep-alive timeout.
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const endpoint = `${url}/internal/emit`;
  const pad = "x".repeat(Math.max(0, size - PAYLOAD_OVERHEAD));
  const to = [room];
  const stop = first + count;
  let next = first;
  let posts = 0;
  let accepted = 0;
  let delivered = 0;
  let failed = 0;
  let error = null;
  const lane = async () => {
    while (next < stop) {
      const from = next;
      const n = Math.min(batch, stop - from);
      next += n;
      const t = Math.round(now() * 1000) / 1000;
      const items = [];
      for (let seq = from; seq < from + n; seq++) items.push({ event: "tick", data: { seq, t, pad }, to });
      posts++;
      const answer = await send(agent, endpoint, token, JSON.stringify(batch === 1 ? items[0] : items));
      if (answer.status === 200) {
        accepted += n;
        delivered += JSON.parse(answer.body.toString()).delivered;
      } else {
        failed++;
        error ??= `${answer.status} ${answer.body.toString().slice(0, 300)}`;
      }
    }
  };
  const t0 = now();
  await Promise.all(Array.from({ length: concurrency }, lane));
  const end = now();
  agent.destroy();
  out({ ev: "posted", t0, end, posts, accepted, delivered, failed, error });
}

const commands = { post };

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const command = JSON.parse(line);
  commands[command.op](command);
});
lines.on("close", () => process.exit(0)); // the suite is gone
out({ ev: "ready" });
