// A socket.io-client@4 driver for the hub application's end-to-end tests (test_hub_clients.py).
//
// Usage: node hub_client.mjs '<options as JSON>'
//
// Like node_client.mjs, it prints one JSON object per line for each thing the stock client
// observes ("ev" names it) and reads commands from stdin, one JSON object per line; it exits
// when stdin closes. What it adds: the `auth` option can be a callback that asks the test.
//
// Options: url; askAuth: true -- `auth` is a callback: each time the client needs it (every
//   connection attempt, reconnections included) it prints {"ev": "auth_request", "n"} and
//   waits for {"op": "auth", "token"} on stdin, then sends {token}; every other option
//   (transports, auth, query, extraHeaders, reconnection...) is passed to io().
// Commands: {"op": "auth", "token"} -- answers the oldest pending auth_request;
//   {"op": "emit", "event", "args", "ack": bool, "tag"} -- with ack, the ack arrives as
//   {"ev": "ack", "tag", "args"}; {"op": "state", "tag"}; {"op": "close"}.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const options = JSON.parse(process.argv[2]);

function print(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

// Observed values to JSON (nothing binary travels in these tests).
function enc(value) {
  if (typeof value === "function") return { $function: true };
  if (value === undefined) return { $undefined: true };
  if (value instanceof Error) return { $error: value.message };
  if (Array.isArray(value)) return value.map(enc);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, enc(v)]));
  }
  return value;
}

const { url, askAuth = false, ...ioOptions } = options;
const pendingAuth = [];
let authRequests = 0;
if (askAuth) {
  ioOptions.auth = (callback) => {
    authRequests += 1;
    pendingAuth.push(callback);
    print({ ev: "auth_request", n: authRequests });
  };
}
const socket = io(url, { forceNew: true, ...ioOptions });

function engineTransport() {
  const engine = socket.io.engine;
  return engine && engine.transport ? engine.transport.name : null;
}

socket.io.on("open", () => print({ ev: "open", transport: engineTransport() }));
socket.io.on("error", (err) => print({ ev: "manager_error", message: String(err && err.message) }));
socket.io.on("reconnect_attempt", (attempt) => print({ ev: "reconnect_attempt", attempt }));
socket.io.on("reconnect", (attempt) => print({ ev: "reconnect", attempt }));
socket.on("connect", () => {
  print({ ev: "connect", id: socket.id, transport: engineTransport() });
});
// A transport error's description: the HTTP status (polling) or the ws library's error.
function describe(description) {
  if (description === undefined || description === null) return null;
  if (typeof description === "number" || typeof description === "string") return description;
  if (description.message) return String(description.message);
  if (description.error && description.error.message) return String(description.error.message);
  return String(description);
}

socket.on("connect_error", (err) => {
  print({
    ev: "connect_error",
    message: err.message,
    data: enc(err.data),
    description: describe(err.description),
    active: socket.active,
  });
});
socket.on("disconnect", (reason, details) => {
  print({
    ev: "disconnect",
    reason,
    active: socket.active,
    description: details && details.description ? String(details.description) : null,
  });
});
socket.onAny((event, ...args) => {
  const last = args.length > 0 ? args[args.length - 1] : undefined;
  const ack = typeof last === "function" ? args.pop() : null;
  print({ ev: "event", name: event, args: enc(args), ack: ack !== null, at: Date.now() });
  if (ack !== null) ack();
});

function run(command) {
  const args = command.args || [];
  switch (command.op) {
    case "auth": {
      const callback = pendingAuth.shift();
      if (callback === undefined) print({ ev: "bad_command", command });
      else callback({ token: command.token });
      break;
    }
    case "emit":
      if (command.ack) {
        socket.emit(command.event, ...args, (...ackArgs) => {
          print({ ev: "ack", tag: command.tag, args: enc(ackArgs) });
        });
      } else {
        socket.emit(command.event, ...args);
      }
      break;
    case "state":
      print({
        ev: "state",
        tag: command.tag,
        connected: socket.connected,
        active: socket.active,
        id: socket.id ?? null,
        transport: engineTransport(),
      });
      break;
    case "close":
      socket.disconnect();
      print({ ev: "closed" });
      break;
    default:
      print({ ev: "bad_command", command });
  }
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (line.trim()) run(JSON.parse(line));
});
lines.on("close", () => {
  socket.disconnect();
  process.exit(0);
});
print({ ev: "started", version: process.version });
