// A socket.io-client@4 driver for hub's interop tests.
//
// Usage: node node_client.mjs '<options as JSON>'
//
// It connects with the stock client and prints one JSON object per line for each thing it
// observes ("ev" names what it was). It reads commands from stdin, one JSON object per line,
// and exits when stdin closes. Bytes travel as {"$bytes": "<hex>", "$type": "<JS class>"} in
// both directions, so the test can check them byte for byte.
//
// Options: url (with the namespace), transports, auth, query, extraHeaders, reconnection
//   settings (passed to io()),
//   reply: {event: "echo" | "ignore"} -- how to answer a server event that asks for an ack
//   (default: echo the arguments back),
//   askAuth: true -- `auth` is a callback: each time the client needs it (every connection
//   attempt, reconnections included) it prints {"ev": "auth_request", "n"} and waits for
//   {"op": "auth", "token"} on stdin, then sends {token}.
// Commands: {"op": "auth", "token"} -- answers the oldest pending auth_request;
//   {"op": "emit", "event", "args", "ack": bool, "tag"} -- emit; with ack, the ack
//   arrives as {"ev": "ack", "tag", "args"};
//   {"op": "emitWithAck", "event", "args", "tag", "timeout"} -- the promise API;
//   {"op": "state"} -- prints the socket's state; {"op": "close"} -- disconnects;
//   {"op": "drop"} -- closes the Engine.IO connection as a network failure would (the client
//   reconnects by itself).
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const options = JSON.parse(process.argv[2]);

function print(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

function hex(bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

// Observed values to JSON, keeping the JS type of binary data.
function enc(value) {
  if (Buffer.isBuffer(value)) return { $bytes: hex(value), $type: "Buffer" };
  if (value instanceof ArrayBuffer) {
    return { $bytes: Buffer.from(value).toString("hex"), $type: "ArrayBuffer" };
  }
  if (ArrayBuffer.isView(value)) return { $bytes: hex(value), $type: value.constructor.name };
  if (value instanceof Error) return { $error: value.message };
  if (typeof value === "function") return { $function: true };
  if (value === undefined) return { $undefined: true };
  if (Array.isArray(value)) return value.map(enc);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, enc(v)]));
  }
  return value;
}

// Command arguments from JSON: {"$bytes", "$type": "Uint8Array"} -> Uint8Array, else Buffer.
function dec(value) {
  if (Array.isArray(value)) return value.map(dec);
  if (value !== null && typeof value === "object") {
    if (typeof value.$bytes === "string") {
      const buffer = Buffer.from(value.$bytes, "hex");
      return value.$type === "Uint8Array" ? new Uint8Array(buffer) : buffer;
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, dec(v)]));
  }
  return value;
}

const { url, reply = {}, askAuth = false, ...ioOptions } = options;
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

// The Engine.IO connection opened (a new one after each reconnection). The upgrade may finish
// before the Socket.IO CONNECT is answered, so it is watched from here.
socket.io.on("open", () => {
  const engine = socket.io.engine;
  print({ ev: "open", transport: engineTransport() });
  engine.once("upgrade", (transport) => {
    print({ ev: "upgrade", transport: transport.name, current: engineTransport() });
  });
});
socket.on("connect", () => {
  print({
    ev: "connect",
    id: socket.id,
    transport: engineTransport(),
    recovered: socket.recovered,
  });
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
socket.io.on("error", (err) => print({ ev: "manager_error", message: String(err && err.message) }));
socket.io.on("reconnect_attempt", (attempt) => print({ ev: "reconnect_attempt", attempt }));
socket.io.on("reconnect", (attempt) => print({ ev: "reconnect", attempt }));

socket.onAny((event, ...args) => {
  const last = args.length > 0 ? args[args.length - 1] : undefined;
  const ack = typeof last === "function" ? args.pop() : null;
  print({ ev: "event", name: event, args: enc(args), ack: ack !== null, at: Date.now() });
  if (ack !== null && reply[event] !== "ignore") ack(...args);
});

function run(command) {
  const args = dec(command.args || []);
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
    case "emitWithAck": {
      const target = command.timeout ? socket.timeout(command.timeout) : socket;
      target.emitWithAck(command.event, ...args).then(
        (result) => print({ ev: "ack", tag: command.tag, args: [enc(result)] }),
        (err) => print({ ev: "ack_error", tag: command.tag, message: err.message }),
      );
      break;
    }
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
    case "drop":
      // The connection goes as if the network dropped it: the client reconnects by itself.
      socket.io.engine.close();
      print({ ev: "dropped" });
      break;
    case "close":
      // The process stays (until stdin closes) so that the DISCONNECT and the Engine.IO close
      // really go out: over polling they are HTTP requests still on their way.
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
