// The hub's status page: one socket.io-client connection to the namespace /status, which
// pushes `history` (the last minute of events per second) on connect and `stats` every second.
// Everything from the server is written with textContent, never as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SESSION_KEY = "hub-status-session";
  const HISTORY = 60;

  function problem(text) {
    const box = $("problem");
    box.textContent = text;
    box.style.display = text ? "block" : "none";
  }

  if (typeof io === "undefined") {
    problem(
      "The socket.io-client bundle is not installed on the hub (run `npm install` in its " +
        "checkout): this page cannot connect."
    );
    return;
  }

  // -- the connection --------------------------------------------------------------------

  const path = document.querySelector('meta[name="hub-path"]').content;
  let credentials = null;
  const socket = io("/status", {
    path,
    auth: (send) => {
      const session = window.sessionStorage.getItem(SESSION_KEY);
      send(credentials || (session ? { sessionId: session } : {}));
    },
  });

  // The transport this page runs on: the client opens over polling, then upgrades.
  const transports = [];
  function noteTransport(name) {
    if (transports[transports.length - 1] !== name) transports.push(name);
    const shown = $("transport");
    shown.textContent = name;
    shown.dataset.transport = name;
    $("transport-history").textContent = transports.join(" → ");
  }
  socket.io.on("open", () => {
    const engine = socket.io.engine;
    noteTransport(engine.transport.name);
    engine.on("upgrade", (transport) => noteTransport(transport.name));
  });

  function connected(on, text) {
    $("dot").classList.toggle("on", on);
    $("connection").textContent = text;
  }
  socket.on("connect", () => {
    connected(true, "live");
    problem("");
    $("login").style.display = "none";
    $("dashboard").style.display = "";
  });
  socket.on("disconnect", (reason) => connected(false, "disconnected (" + reason + ")"));
  socket.on("session", (id) => {
    window.sessionStorage.setItem(SESSION_KEY, id);
    credentials = null;
  });
  socket.on("connect_error", (err) => {
    const code = err.data && err.data.code;
    if (["CREDENTIALS_REQUIRED", "INVALID_CREDENTIALS", "SESSION_EXPIRED"].includes(code)) {
      window.sessionStorage.removeItem(SESSION_KEY);
      connected(false, "login required");
      $("dashboard").style.display = "none";
      $("login").style.display = "block";
      $("login-error").textContent = code === "INVALID_CREDENTIALS" ? "Invalid credentials" : "";
      return;
    }
    connected(false, "cannot connect: " + err.message);
  });
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    credentials = { username: $("username").value, password: $("password").value };
    socket.connect();
  });

  // -- drawing ---------------------------------------------------------------------------

  let history = [];

  function fill(table, rows, empty) {
    const body = table.tBodies[0];
    body.replaceChildren();
    if (!rows.length) {
      const row = body.insertRow();
      const cell = row.insertCell();
      cell.colSpan = table.tHead.rows[0].cells.length;
      cell.className = "empty";
      cell.textContent = empty;
      return;
    }
    for (const cells of rows) {
      const row = body.insertRow();
      for (const [text, className] of cells) {
        const cell = row.insertCell();
        if (className) cell.className = className;
        if (text instanceof Node) cell.appendChild(text);
        else cell.textContent = text;
      }
    }
  }

  function clock(iso) {
    const when = new Date(iso);
    return isNaN(when) ? String(iso) : when.toLocaleTimeString();
  }

  function duration(seconds) {
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + (d || h || m ? m + "m " : "") + s + "s";
  }

  function badge(text) {
    const span = document.createElement("span");
    span.className = "code";
    span.textContent = text;
    return span;
  }

  function render(stats) {
    $("node").textContent = stats.node;
    $("env").textContent = stats.env;
    $("uptime").textContent = duration(stats.uptime);
    for (const key of ["clients", "websocket", "polling", "users", "sockets"]) {
      $(key).textContent = stats[key];
    }
    $("rate-in").textContent = stats.rate.in;
    $("rate-out").textContent = stats.rate.out;
    fill(
      $("namespaces"),
      stats.namespaces.map((ns) => [[ns.name, "mono"], [ns.sockets, "n"]]),
      "no namespace"
    );
    $("rooms-count").textContent = stats.rooms.count;
    fill(
      $("rooms"),
      stats.rooms.top.map((room) => [[room.name, "mono"], [room.sockets, "n"]]),
      "no room yet"
    );
    fill(
      $("events"),
      stats.broadcasts.map((b) => [
        [clock(b.time)],
        [b.event, "mono"],
        [
          (b.to.length ? b.to.join(", ") : "everyone") +
            (b.except.length ? " except " + b.except.join(", ") : "") +
            (b.namespace !== "/" ? " on " + b.namespace : ""),
          "mono",
        ],
        [b.delivered, "n"],
        [b.data === undefined ? "" : b.data, "mono data"],
      ]),
      "nothing broadcast yet"
    );
    fill(
      $("refusals"),
      stats.refusals.map((r) => [
        [clock(r.time)],
        [badge(r.code || "—")],
        [r.message],
        [r.namespace, "mono"],
        [r.address, "mono"],
      ]),
      "no refusal"
    );
  }

  function draw() {
    const canvas = $("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600;
    const height = canvas.clientHeight || 170;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.clearRect(0, 0, width, height);
    const left = 34, right = 6, top = 8, bottom = 18;
    const plotW = width - left - right, plotH = height - top - bottom;
    const peak = Math.max(1, ...history.map((p) => Math.max(p.in, p.out)));
    const scale = niceCeiling(peak);
    const style = getComputedStyle(document.documentElement);
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = style.getPropertyValue("--muted");
    g.strokeStyle = style.getPropertyValue("--line");
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      g.beginPath();
      g.moveTo(left, y + 0.5);
      g.lineTo(width - right, y + 0.5);
      g.stroke();
      g.fillText(String(Math.round((scale * i) / 4)), 2, y + 4);
    }
    g.fillText("-60 s", left, height - 4);
    g.fillText("now", width - right - 22, height - 4);
    const x = (i) => left + plotW * ((HISTORY - history.length + i) / (HISTORY - 1));
    const y = (v) => top + plotH - (plotH * v) / scale;
    for (const [key, color] of [["in", "--in"], ["out", "--out"]]) {
      g.strokeStyle = style.getPropertyValue(color);
      g.lineWidth = 2;
      g.beginPath();
      history.forEach((point, i) => {
        if (i === 0) g.moveTo(x(i), y(point[key]));
        else g.lineTo(x(i), y(point[key]));
      });
      g.stroke();
    }
  }

  function niceCeiling(value) {
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 4, 5, 10]) {
      if (value <= step * power) return Math.max(4, step * power);
    }
    return 10 * power;
  }

  socket.on("history", (points) => {
    history = points.slice(-HISTORY);
    draw();
  });
  socket.on("stats", (stats) => {
    render(stats);
    const last = history[history.length - 1];
    if (!last || last.time !== stats.rate.time) history.push(stats.rate);
    history = history.slice(-HISTORY);
    draw();
  });
  window.addEventListener("resize", draw);
})();
