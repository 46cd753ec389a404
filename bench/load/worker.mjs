// One load-generator process: many Socket.IO clients spoken by hand, as cheaply as Node allows,
// so that the load costs less CPU per message than the servers it measures. A WebSocket client
// here is a TCP socket read straight into a shared buffer (`onread`, no stream events) whose
// frames are parsed in place; long-polling clients use node:http. Each client answers pings,
// connects to "/", and reads from each `tick` only its seq (and, once per broadcast, its emit
// time). Per broadcast the process keeps when the last of its clients got it. It counts the
// pings answered, and the clients lost once connected (closed, failed, told to go, or, as a real
// client would judge, silent: no ping for the server's pingInterval + pingTimeout).
//
// With `jwt: {secret, users, first}` in `connect`, each client sends a token of its own in its
// CONNECT payload (`40{"token":…}`, socket.io-client's `auth` option): HS256 with that secret,
// minted just before the client connects, for the subject `user-<(first + i) % users>` of the
// process's i-th client, valid for an hour (bench/servers/common.py, the application mode).
//
// The suite (bench/load.py) writes one JSON command per line to stdin and reads one JSON event
// per line from stdout ({ev: "ready"} first):
//   {op: "connect", url, clients, concurrency, transport, jwt?} -> {ev: "connected", start, end, connected, failed, error}
//   {op: "expect", first, count}                          -> {ev: "expecting"}
//   {op: "burst", first, count, size, interval?} (control) -> {ev: "sent", t0}, later {ev: "acked", t}
//   {op: "report"} (or by itself once every tick arrived) -> {ev: "done", deliveries, last, latencies}
//   {op: "status"}                                        -> {ev: "status", connected, alive, disconnects, pings, error}
// Times are CLOCK_MONOTONIC milliseconds, the servers' clock (bench/servers/common.py).
import { createHmac } from "node:crypto";
import http from "node:http";
import net from "node:net";
import { createInterface } from "node:readline";

const now = () => Number(process.hrtime.bigint()) / 1e6;
const out = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);
const PATH = "/socket.io/?EIO=4&transport=";

// -- counting ticks ---------------------------------------------------------------------------
let first = 0;
let count = 0;
let expected = 0;
let deliveries = 0;
let last = 0;
let received = new Float64Array(0); // per seq: when the last of our clients got it
let emitted = new Float64Array(0); // per seq: the server's emit time
let reported = true;

const SEQ = Buffer.from('"seq":');
const T = Buffer.from('"t":');

// buf[start:end] is `42["tick",{"seq":N,"t":T,"pad":"…"}]` (compact JSON from every server).
function onTick(buf, start, end) {
  let at = buf.indexOf(SEQ, start) + SEQ.length;
  let seq = 0;
  for (let c = buf[at]; c >= 48 && c <= 57; c = buf[++at]) seq = seq * 10 + c - 48;
  seq -= first;
  if (!(seq >= 0 && seq < count)) return;
  const t = now();
  if (Number.isNaN(received[seq])) {
    const from = buf.indexOf(T, at) + T.length;
    emitted[seq] = parseFloat(buf.latin1Slice(from, Math.min(from + 24, end)));
  }
  received[seq] = t;
  last = t;
  if (++deliveries === expected) report();
}

function report() {
  reported = true;
  const latencies = Array.from(received, (t, seq) =>
    Number.isNaN(t) ? null : Math.round((t - emitted[seq]) * 1000) / 1000,
  );
  out({ ev: "done", deliveries, last, latencies });
}

// -- clients ----------------------------------------------------------------------------------
const clients = [];
let ackId = 0;
let pings = 0; // answered, over all clients
let disconnects = 0; // clients lost after they connected
let lostError = null; // why the first of them was lost

// An HS256 JWT (RFC 7519) for `sub`, as an identity provider would issue it.
const JWT_HEAD = Buffer.from('{"alg":"HS256","typ":"JWT"}').toString("base64url");

function mintToken(secret, sub) {
  const iat = Math.floor(Date.now() / 1000);
  const claims = Buffer.from(JSON.stringify({ sub, iat, exp: iat + 3600 })).toString("base64url");
  const signature = createHmac("sha256", secret).update(`${JWT_HEAD}.${claims}`).digest("base64url");
  return `${JWT_HEAD}.${claims}.${signature}`;
}

class Client {
  constructor(settle, token) {
    this.settle = settle; // called once: with nothing when connected, with an error otherwise
    this.connectPacket = token ? `40${JSON.stringify({ token })}` : "40";
    this.failed = false; // refused, or broken before it connected
    this.open = false; // connected, and not lost since
    this.lastPing = 0;
    this.silence = Infinity; // the server's pingInterval + pingTimeout, ms
  }
  // Connected (no error), or failed: before connecting that settles, after it counts a loss.
  settled(error) {
    const settle = this.settle;
    this.settle = null;
    if (settle) {
      this.open = !error;
      this.failed = Boolean(error);
      this.lastPing = now();
      if (error) this.socket?.destroy(); // refused or broken: nothing more to do with it
      settle(error);
    } else if (error && this.open) {
      this.open = false;
      disconnects++;
      lostError ??= String(error.message ?? error);
    }
  }
  // One Engine.IO packet, buf[start:end].
  packet(buf, start, end) {
    switch (buf[start]) {
      case 52: // "4" message
        switch (buf[start + 1]) {
          case 50: return onTick(buf, start, end); // "42" event
          case 48: return this.settled(); // "40" connected
          case 51: return out({ ev: "acked", t: now() }); // "43" ack
          case 52: return this.settled(new Error(`connect error ${buf.latin1Slice(start, end)}`));
          case 49: return this.settled(new Error("disconnected by the server")); // "41"
        }
        return;
      case 50: { // "2" ping -> pong, unless the server was silent for longer than it allows
        const t = now();
        if (this.quiet(t)) return;
        pings++;
        this.lastPing = t;
        return this.send("3");
      }
      case 48: { // "0" open -> connect to "/"
        const { pingInterval, pingTimeout } = JSON.parse(buf.latin1Slice(start + 1, end));
        this.silence = pingInterval + pingTimeout;
        return this.send(this.connectPacket);
      }
      case 49: return this.settled(new Error("closed by the server")); // "1" close
    }
  }
  // As a Socket.IO client closes on "ping timeout": lost when the server has not pinged for
  // its pingInterval + pingTimeout (checked at each ping, and at each status query).
  quiet(t) {
    if (!this.open || t - this.lastPing <= this.silence) return false;
    this.settled(new Error(`no ping from the server for ${Math.round(t - this.lastPing)} ms`));
    this.socket?.destroy();
    return true;
  }
  burst(request) {
    out({ ev: "sent", t0: now() });
    this.send(`42${ackId++}${JSON.stringify(["burst", request])}`);
  }
}

// Frames are parsed inside the read callback, so one read buffer serves every socket; what
// is left of a partial frame is copied to the client.
const READ_BUFFER = Buffer.allocUnsafe(1 << 16);
const HEAD_END = Buffer.from("\r\n\r\n");

class WsClient extends Client {
  constructor(url, settle, token) {
    super(settle, token);
    const { hostname, port } = new URL(url);
    this.rest = null;
    this.upgraded = false;
    this.socket = net.connect({
      host: hostname,
      port: Number(port),
      noDelay: true,
      onread: { buffer: READ_BUFFER, callback: (n, buf) => this.read(buf.subarray(0, n)) },
    });
    this.socket.on("connect", () =>
      this.socket.write(
        `GET ${PATH}websocket HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\n` +
          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
          "Sec-WebSocket-Version: 13\r\n\r\n",
      ),
    );
    this.socket.on("error", (error) => this.settled(error));
    this.socket.on("close", () => this.settled(new Error("connection closed")));
  }
  read(data) {
    if (this.rest) {
      data = Buffer.concat([this.rest, data]);
      this.rest = null;
    }
    let at = 0;
    if (!this.upgraded) {
      const end = data.indexOf(HEAD_END);
      if (end < 0) return void (this.rest = Buffer.from(data));
      if (data.latin1Slice(9, 12) !== "101") {
        this.settled(new Error(data.latin1Slice(0, end)));
        return void this.socket.destroy();
      }
      this.upgraded = true;
      at = end + 4;
    }
    // RFC 6455 5.2: FIN/opcode byte, then mask bit + 7-bit length (126: 16-bit length follows,
    // 127: 64-bit). Server frames are not masked.
    for (;;) {
      if (data.length - at < 2) break;
      let length = data[at + 1] & 0x7f;
      let start = at + 2;
      if (length === 126) {
        if (data.length - at < 4) break;
        length = data.readUInt16BE(at + 2);
        start += 2;
      } else if (length === 127) {
        if (data.length - at < 10) break;
        length = Number(data.readBigUInt64BE(at + 2));
        start += 8;
      }
      if (start + length > data.length) break;
      const opcode = data[at] & 0x0f;
      if (opcode === 1) this.packet(data, start, start + length);
      else if (opcode === 8) return void this.socket.destroy();
      at = start + length;
    }
    if (at < data.length) this.rest = Buffer.from(data.subarray(at));
  }
  // A masked text frame; the mask key is zero, so the payload goes as it is.
  send(text) {
    const payload = Buffer.from(text);
    const n = payload.length;
    const head = n < 126 ? [0x81, 0x80 | n] : [0x81, 0x80 | 126, n >> 8, n & 0xff];
    this.socket.write(Buffer.concat([Buffer.from([...head, 0, 0, 0, 0]), payload]));
  }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

function request(url, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { agent, method: body === undefined ? "GET" : "POST" }, (res) => {
      const chunks = [];
      res.on("data", (chunk) => chunks.push(chunk));
      res.on("end", () => {
        const answer = Buffer.concat(chunks);
        if (res.statusCode === 200) resolve(answer);
        else reject(new Error(`${res.statusCode} ${answer.latin1Slice()}`));
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

class PollingClient extends Client {
  constructor(url, settle, token) {
    super(settle, token);
    this.url = `${url}${PATH}polling`;
    this.run().catch((error) => this.settled(error));
  }
  async run() {
    const open = (await request(this.url)).latin1Slice(); // `0{"sid":…}`
    this.url += `&sid=${JSON.parse(open.split("\x1e")[0].slice(1)).sid}`;
    this.send(this.connectPacket);
    while (!this.failed) {
      // A payload: packets separated by the record separator 0x1e.
      const payload = await request(this.url);
      for (let at = 0; at < payload.length; ) {
        let end = payload.indexOf(0x1e, at);
        if (end < 0) end = payload.length;
        this.packet(payload, at, end);
        at = end + 1;
      }
    }
  }
  send(text) {
    request(this.url, text).catch((error) => this.settled(error));
  }
}

function connect({ url, clients: wanted, concurrency, transport, jwt }) {
  const Kind = transport === "polling" ? PollingClient : WsClient;
  const start = now();
  let started = 0;
  let finished = 0;
  let failed = 0;
  let error = null;
  if (!wanted) return out({ ev: "connected", start, end: start, connected: clients.length, failed, error });
  const launch = () => {
    for (; started < wanted && started - finished < concurrency; started++) {
      const token = jwt && mintToken(jwt.secret, `user-${(jwt.first + started) % jwt.users}`);
      const client = new Kind(url, (reason) => {
        if (reason) {
          failed++;
          error ??= String(reason.message ?? reason);
        } else clients.push(client);
        if (++finished === wanted) {
          out({ ev: "connected", start, end: now(), connected: clients.length, failed, error });
        } else launch();
      }, token);
    }
  };
  launch();
}

// -- commands ---------------------------------------------------------------------------------
const commands = {
  connect,
  expect(command) {
    ({ first, count } = command);
    expected = count * clients.length;
    deliveries = 0;
    received = new Float64Array(count).fill(NaN);
    emitted = new Float64Array(count);
    reported = false;
    out({ ev: "expecting" });
  },
  burst({ first, count, size, interval }) {
    clients[0].burst(interval ? { first, count, size, interval } : { first, count, size });
  },
  report() {
    if (!reported) report();
  },
  status() {
    const t = now();
    let alive = 0;
    for (const client of clients) {
      client.quiet(t);
      if (client.open) alive++;
    }
    out({ ev: "status", connected: clients.length, alive, disconnects, pings, error: lostError });
  },
};

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const command = JSON.parse(line);
  commands[command.op](command);
});
lines.on("close", () => process.exit(0)); // the suite is gone
out({ ev: "ready" });
