// Node's own socket.io cluster tools, driven by hub's cluster tests.
//
// Usage: node redis_node.mjs '<options as JSON>'
//
// Options: redisUrl, role: "emitter" | "server", and for a server: port (0: any free one),
//   rooms (joined by every socket at connection).
// The emitter is @socket.io/redis-emitter@5 on a `redis` (node-redis 4) client; the server is
// socket.io@4.8 with @socket.io/redis-adapter@8 (createAdapter, pub/sub clients from node-redis,
// as the adapter's README shows).
//
// It prints one JSON object per line ("ev" names what happened) and reads commands from stdin,
// one JSON object per line; it exits when stdin closes. Bytes travel as
// {"$bytes": "<hex>", "$type": "Buffer"} both ways (the same convention as node_client.mjs).
//
// Commands (every one answered by a line with its "tag"):
//   {op: "emit", tag, to: [rooms], except: [rooms], event, args, volatile}  -- io.to().except().emit()
//   {op: "emitWithAck", tag, to, event, args, timeout} -- io.to().timeout().emitWithAck(): the
//      clients' answers, from every node               (server only)
//   {op: "socketsJoin" | "socketsLeave", tag, to, except, rooms}
//   {op: "disconnectSockets", tag, to, except, close}
//   {op: "serverSideEmit", tag, event, args}
//   {op: "serverSideEmitWithAck", tag, event, args}                   (server only)
//   {op: "fetchSockets", tag, to, except}                              (server only)
//   {op: "serverCount", tag}                                           (server only)
// A server also prints {ev: "serverSideEmit", event, args} for each server-side event it gets and
// answers one that asks for an acknowledgement with {from: "node", args}.
import { createServer } from "node:http";
import { createInterface } from "node:readline";
import { createClient } from "redis";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { Emitter } from "@socket.io/redis-emitter";

const options = JSON.parse(process.argv[2]);

function print(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

function enc(value) {
  if (Buffer.isBuffer(value)) return { $bytes: value.toString("hex"), $type: "Buffer" };
  if (value instanceof ArrayBuffer) {
    return { $bytes: Buffer.from(value).toString("hex"), $type: "ArrayBuffer" };
  }
  if (ArrayBuffer.isView(value)) {
    const bytes = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    return { $bytes: bytes.toString("hex"), $type: value.constructor.name };
  }
  if (value instanceof Error) return { $error: value.message };
  if (typeof value === "function") return { $function: true };
  if (value === undefined) return { $undefined: true };
  if (value instanceof Set) return [...value].map(enc);
  if (Array.isArray(value)) return value.map(enc);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, enc(v)]));
  }
  return value;
}

function dec(value) {
  if (Array.isArray(value)) return value.map(dec);
  if (value !== null && typeof value === "object") {
    if (typeof value.$bytes === "string") return Buffer.from(value.$bytes, "hex");
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, dec(v)]));
  }
  return value;
}

const pubClient = createClient({ url: options.redisUrl });
pubClient.on("error", (err) => print({ ev: "redis_error", message: String(err && err.message) }));
await pubClient.connect();

let io = null;
let target = null;
if (options.role === "server") {
  const subClient = pubClient.duplicate();
  subClient.on("error", (err) => print({ ev: "redis_error", message: String(err && err.message) }));
  await subClient.connect();
  const httpServer = createServer();
  io = new Server(httpServer, { adapter: createAdapter(pubClient, subClient) });
  io.on("connection", (socket) => {
    socket.join(options.rooms || []);
    print({ ev: "connection", id: socket.id });
    socket.on("disconnect", (reason) => print({ ev: "disconnect", id: socket.id, reason }));
  });
  io.on("hello", (...args) => {
    const last = args.length > 0 ? args[args.length - 1] : undefined;
    const ack = typeof last === "function" ? args.pop() : null;
    print({ ev: "serverSideEmit", event: "hello", args: enc(args), ack: ack !== null });
    if (ack !== null) ack({ from: "node", args });
  });
  await new Promise((resolve) => httpServer.listen(options.port || 0, "127.0.0.1", resolve));
  target = io;
  print({ ev: "listening", port: httpServer.address().port });
} else {
  target = new Emitter(pubClient);
  print({ ev: "ready" });
}

function operator(command) {
  let op = target.to(command.to || []);
  if (command.except && command.except.length) op = op.except(command.except);
  if (command.volatile) op = op.volatile;
  return op;
}

async function run(command) {
  const { tag } = command;
  const args = dec(command.args || []);
  switch (command.op) {
    case "emit":
      operator(command).emit(command.event, ...args);
      print({ ev: "done", tag });
      break;
    case "emitWithAck": {
      const answers = await operator(command)
        .timeout(command.timeout || 2000)
        .emitWithAck(command.event, ...args);
      print({ ev: "done", tag, answers: enc(answers) });
      break;
    }
    case "socketsJoin":
      operator(command).socketsJoin(command.rooms);
      print({ ev: "done", tag });
      break;
    case "socketsLeave":
      operator(command).socketsLeave(command.rooms);
      print({ ev: "done", tag });
      break;
    case "disconnectSockets":
      operator(command).disconnectSockets(Boolean(command.close));
      print({ ev: "done", tag });
      break;
    case "serverSideEmit":
      target.serverSideEmit(command.event, ...args);
      print({ ev: "done", tag });
      break;
    case "serverSideEmitWithAck": {
      // Bounded by the adapter's requestsTimeout (5 s).
      const answers = await io.serverSideEmitWithAck(command.event, ...args);
      print({ ev: "done", tag, answers: enc(answers) });
      break;
    }
    case "fetchSockets": {
      const sockets = await operator(command).fetchSockets();
      const found = sockets.map((s) => ({
        id: s.id,
        rooms: [...s.rooms].sort(),
        data: enc(s.data),
        address: s.handshake.address,
      }));
      print({ ev: "done", tag, sockets: found });
      break;
    }
    case "serverCount":
      print({ ev: "done", tag, count: await io.of("/").adapter.serverCount() });
      break;
    default:
      print({ ev: "bad_command", command });
  }
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  run(command).catch((err) => print({ ev: "error", tag: command.tag, message: err.message }));
});
lines.on("close", async () => {
  if (io !== null) io.close();
  await pubClient.quit().catch(() => {});
  process.exit(0);
});
