// Node socket.io 4.8 under test. Behaviour: see common.py (same options, same burst, same clock).
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { Server } from "socket.io";

const { values } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    "ping-interval": { type: "string", default: "25" }, // seconds
    "ping-timeout": { type: "string", default: "20" },
  },
});
const ROOM = "bench";
const PAYLOAD_OVERHEAD = 36;
const nowMs = () => Math.round(Number(process.hrtime.bigint()) / 1e3) / 1e3; // CLOCK_MONOTONIC

const httpServer = createServer();
const io = new Server(httpServer, {
  pingInterval: Math.round(Number(values["ping-interval"]) * 1000),
  pingTimeout: Math.round(Number(values["ping-timeout"]) * 1000),
  perMessageDeflate: false,
  httpCompression: false,
});

io.on("connection", (socket) => {
  socket.join(ROOM);
  socket.on("burst", async ({ count, size = 60, first = 0 }, ack) => {
    const pad = "x".repeat(Math.max(0, size - PAYLOAD_OVERHEAD));
    for (let seq = first; seq < first + count; seq++) {
      io.to(ROOM).emit("tick", { seq, t: nowMs(), pad });
      await new Promise(setImmediate); // one broadcast per turn of the event loop
    }
    if (typeof ack === "function") ack("done");
  });
});

httpServer.listen({ host: values.host, port: Number(values.port), backlog: 1024 });
process.stdin.on("end", () => process.exit(0)); // the suite is gone
process.stdin.resume();
