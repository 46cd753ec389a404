// Node socket.io 4.8 under test. Behaviour: see common.py (same options, same burst, same clock).
// With --jwt-secret, the application mode of common.py: a middleware verifies the CONNECT
// payload's token with npm jsonwebtoken, and the HTTP server answers POST /internal/emit.
// With --redis URL, one node of a cluster: @socket.io/redis-adapter 8 on node-redis 4 clients (a
// publisher and its duplicate as subscriber), as the adapter's README sets it up.
import { timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { Server } from "socket.io";

const { values } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    "ping-interval": { type: "string", default: "25" }, // seconds
    "ping-timeout": { type: "string", default: "20" },
    "jwt-secret": { type: "string" },
    "emit-token": { type: "string" },
    users: { type: "string" }, // hub's store only
    database: { type: "string" },
    redis: { type: "string" },
  },
});
const ROOM = "bench";
const PAYLOAD_OVERHEAD = 36;
const MAX_BODY = 1_000_000; // as hub's internal API
const nowMs = () => Math.round(Number(process.hrtime.bigint()) / 1e3) / 1e3; // CLOCK_MONOTONIC
const secret = values["jwt-secret"];

const httpServer = createServer(values["emit-token"] ? emitApi(values["emit-token"]) : undefined);
const io = new Server(httpServer, {
  pingInterval: Math.round(Number(values["ping-interval"]) * 1000),
  pingTimeout: Math.round(Number(values["ping-timeout"]) * 1000),
  perMessageDeflate: false,
  httpCompression: false,
});

if (values.redis) {
  const [{ createClient }, { createAdapter }] = await Promise.all([
    import("redis"),
    import("@socket.io/redis-adapter"),
  ]);
  const pub = createClient({ url: values.redis });
  const sub = pub.duplicate();
  for (const client of [pub, sub]) client.on("error", (error) => console.error(`redis: ${error}`));
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}

if (secret) {
  const { default: jwt } = await import("jsonwebtoken");
  io.use((socket, next) => {
    const token = socket.handshake.auth?.token;
    if (typeof token !== "string" || !token) return next(refused("TOKEN_MISSING"));
    try {
      socket.data.userId = String(jwt.verify(token, secret, { algorithms: ["HS256"] }).sub);
    } catch (error) {
      return next(refused(error.name === "TokenExpiredError" ? "TOKEN_EXPIRED" : "TOKEN_INVALID"));
    }
    next();
  });
}

function refused(code) {
  const error = new Error(code);
  error.data = { code };
  return error;
}

io.on("connection", (socket) => {
  socket.join(secret ? `user:${socket.data.userId}` : ROOM);
  socket.on("burst", async ({ count, size = 60, first = 0, interval = 0 }, ack) => {
    const pad = "x".repeat(Math.max(0, size - PAYLOAD_OVERHEAD));
    const started = nowMs();
    for (let seq = first; seq < first + count; seq++) {
      io.to(ROOM).emit("tick", { seq, t: nowMs(), pad });
      if (interval > 0) {
        // paced: wait for the next slot of a fixed rate
        const slot = started + (seq - first + 1) * interval;
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, slot - nowMs())));
      } else {
        await new Promise(setImmediate); // one broadcast per turn of the event loop
      }
    }
    if (typeof ack === "function") ack("done");
  });
});

// POST /internal/emit as a socket.io user would add it to the HTTP server (socket.io hands it
// every request outside /socket.io/).
function emitApi(token) {
  const expected = Buffer.from(`Bearer ${token}`);
  const reply = (res, status, body) => {
    const data = JSON.stringify(body);
    res.writeHead(status, {
      "Content-Type": "application/json",
      "Content-Length": Buffer.byteLength(data),
    });
    res.end(data);
  };
  const members = (rooms) => {
    const all = io.of("/").adapter.rooms;
    if (rooms.length === 1) return all.get(rooms[0]) ?? new Set();
    return new Set(rooms.flatMap((room) => [...(all.get(room) ?? [])]));
  };
  const check = (item) => {
    const { event, to, except: skip = [] } = item ?? {};
    if (typeof event !== "string" || !Array.isArray(to) || !to.length || !Array.isArray(skip)) {
      throw new Error("an emit is {event, data, to: [rooms], except: [rooms]}");
    }
    return item;
  };
  const emit = ({ event, data, to, except: skip = [] }) => {
    if (!skip.length) {
      io.to(to).emit(event, data);
      return members(to).size;
    }
    io.to(to).except(skip).emit(event, data);
    const left = members(skip);
    return [...members(to)].filter((id) => !left.has(id)).length;
  };
  return (req, res) => {
    if (req.method !== "POST" || req.url !== "/internal/emit") {
      return reply(res, 404, { error: { code: "NOT_FOUND" } });
    }
    const given = Buffer.from(req.headers.authorization ?? "");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      return reply(res, 401, { error: { code: "UNAUTHORIZED" } });
    }
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size <= MAX_BODY) chunks.push(chunk);
    });
    req.on("end", () => {
      if (size > MAX_BODY) return reply(res, 413, { error: { code: "TOO_LARGE" } });
      let items;
      let many;
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString());
        many = Array.isArray(body);
        // Validated whole first, as hub does: a batch is sent whole or not at all.
        items = (many ? body : [body]).map(check);
      } catch (error) {
        return reply(res, 400, { error: { code: "BAD_REQUEST", message: error.message } });
      }
      const results = items.map(emit);
      const delivered = results.reduce((a, b) => a + b, 0);
      reply(res, 200, many ? { delivered, results: results.map((n) => ({ delivered: n })) } : { delivered });
    });
  };
}

httpServer.listen({ host: values.host, port: Number(values.port), backlog: 1024 });
process.stdin.on("end", () => process.exit(0)); // the suite is gone
process.stdin.resume();
