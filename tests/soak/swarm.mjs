// The soak run's browser tabs: stock socket.io-client@4 sockets in one Node process, opened,
// dropped and closed when the driver says so, each recording what it lived through.
//
// Usage: node swarm.mjs LOG_PATH
//
// Commands, one JSON object per line on stdin:
//   {"op": "open", "tab": K, "url", "token", "project": P | null, "transports": [...]}
//       a new tab: connects with auth {token}; on every connect that is not a recovery it sends
//       join-project {projectId: P} (when P is set) and waits for the ack, as an application
//       does when `socket.recovered` is false.
//   {"op": "drop", "tab": K}   the connection goes as if the network dropped it
//       (socket.io.engine.close()): the client reconnects by itself, with {pid, offset}.
//   {"op": "close", "tab": K}  the tab is closed for good (socket.disconnect()).
// When stdin closes, every tab is closed and, a second later, the log is flushed and the
// process exits.
//
// The log (LOG_PATH) holds one JSON array per line, its second item the time in milliseconds
// of CLOCK_MONOTONIC (what Python's time.monotonic() reads, times 1000):
//   ["open", t, K]  ["connect", t, K, socketId, recovered]  ["ready", t, K, ok]
//   ["ev", t, K, imageId]  ["other", t, K, eventName]  ["disconnect", t, K, reason]
//   ["connect_error", t, K, message]  ["drop", t, K]  ["close", t, K]
// "ready" follows a connect that is not a recovery once the project is joined (at once when the
// tab has no project); ok is false when the join was refused or timed out.
//
// Stdout carries {"ev": "started"} and then every second {"ev": "stats", "t", "tabs",
// "connected", "events", "connectErrors"}.
import { io } from "socket.io-client";
import { createWriteStream } from "node:fs";
import { createInterface } from "node:readline";

const JOIN_TIMEOUT = 10000;
const CLOSE_GRACE = 1000;

const log = createWriteStream(process.argv[2], { highWaterMark: 1 << 20 });
const tabs = new Map();
let events = 0;
let connectErrors = 0;

const now = () => Number(process.hrtime.bigint()) / 1e6;
const record = (...fields) => log.write(JSON.stringify([fields[0], now(), ...fields.slice(1)]) + "\n");

function open({ tab, url, token, project, transports }) {
  const socket = io(url, {
    forceNew: true,
    transports,
    auth: { token },
  });
  tabs.set(tab, socket);
  record("open", tab);
  socket.on("connect", async () => {
    record("connect", tab, socket.id, socket.recovered);
    if (socket.recovered) return; // rooms and missed events come back with the session
    let ok = true;
    if (project !== null) {
      try {
        const ack = await socket.timeout(JOIN_TIMEOUT).emitWithAck("join-project", { projectId: project });
        ok = Boolean(ack && ack.ok);
      } catch {
        ok = false;
      }
    }
    if (socket.connected) record("ready", tab, ok);
  });
  socket.on("segmentation-update", (update) => {
    events += 1;
    record("ev", tab, update.imageId);
  });
  socket.onAny((name) => {
    if (name !== "segmentation-update") record("other", tab, name);
  });
  socket.on("connect_error", (err) => {
    connectErrors += 1;
    record("connect_error", tab, String(err.message));
  });
  socket.on("disconnect", (reason) => record("disconnect", tab, reason));
}

function drop(tab) {
  const socket = tabs.get(tab);
  if (socket === undefined || !socket.connected) return;
  record("drop", tab);
  socket.io.engine.close();
}

function close(tab) {
  const socket = tabs.get(tab);
  if (socket === undefined) return;
  tabs.delete(tab);
  record("close", tab);
  socket.disconnect();
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const command = JSON.parse(line);
  if (command.op === "open") open(command);
  else if (command.op === "drop") drop(command.tab);
  else if (command.op === "close") close(command.tab);
});
lines.on("close", () => {
  for (const tab of [...tabs.keys()]) close(tab);
  clearInterval(ticker);
  // A moment for the goodbyes to go out: over long-polling they are HTTP requests.
  setTimeout(() => log.end(() => process.exit(0)), CLOSE_GRACE);
});

const ticker = setInterval(() => {
  let connected = 0;
  for (const socket of tabs.values()) if (socket.connected) connected += 1;
  const stats = { ev: "stats", t: now(), tabs: tabs.size, connected, events, connectErrors };
  process.stdout.write(JSON.stringify(stats) + "\n");
}, 1000);
process.stdout.write(JSON.stringify({ ev: "started", version: process.version }) + "\n");
