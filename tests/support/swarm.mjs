// Many socket.io-client@4 sockets in one Node process, for tests that need a crowd.
//
// Usage: node swarm.mjs '<options as JSON>'
//
// Options: url, count, auth (the CONNECT payload of every socket), transports, join (an event
// and its argument each socket sends with an ack once connected, e.g. ["join-project",
// {"projectId": "demo"}]), and io() options (reconnection...).
//
// It prints one JSON object per line: {"ev": "ready", "i", "id", "engine", "transport", "ack"}
// once socket i is connected and its join acknowledged (engine: the Engine.IO session id),
// {"ev": "event", "i", "name", "args", "engine"} for each server event, and connect_error /
// disconnect / reconnect_attempt with "i". Exits when stdin closes.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const { url, count, join = null, ...ioOptions } = JSON.parse(process.argv[2]);

function print(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

function describe(description) {
  if (description === undefined || description === null) return null;
  if (typeof description === "number" || typeof description === "string") return description;
  if (description.message) return String(description.message);
  return String(description);
}

const sockets = [];
for (let i = 0; i < count; i += 1) {
  const socket = io(url, { forceNew: true, ...ioOptions });
  const engineId = () => (socket.io.engine ? socket.io.engine.id : null);
  const transport = () =>
    socket.io.engine && socket.io.engine.transport ? socket.io.engine.transport.name : null;
  socket.on("connect", async () => {
    let ack = null;
    if (join !== null) {
      try {
        ack = await socket.timeout(10000).emitWithAck(join[0], join[1]);
      } catch (err) {
        ack = { error: err.message };
      }
    }
    print({ ev: "ready", i, id: socket.id, engine: engineId(), transport: transport(), ack });
  });
  socket.onAny((name, ...args) => print({ ev: "event", i, name, args, engine: engineId() }));
  socket.on("connect_error", (err) =>
    print({ ev: "connect_error", i, message: err.message, description: describe(err.description) }),
  );
  socket.on("disconnect", (reason, details) =>
    print({ ev: "disconnect", i, reason, description: describe(details && details.description) }),
  );
  socket.io.on("reconnect_attempt", (attempt) => print({ ev: "reconnect_attempt", i, attempt }));
  sockets.push(socket);
}

const lines = createInterface({ input: process.stdin });
lines.on("line", () => {});
lines.on("close", () => {
  for (const socket of sockets) socket.disconnect();
  process.exit(0);
});
print({ ev: "started", version: process.version });
