// A sidecar that serves on the listening socket the supervisor hands it (socket.inherit = true):
// fd 3, announced by LISTEN_FDS / LISTEN_PID (systemd's sd_listen_fds protocol). Started on its
// own it binds 127.0.0.1:$PORT instead.
//
//   [[sidecar]]
//   name = "node-web"
//   command = ["node", "examples/node/server.js"]
//   port = 4820
//   [sidecar.ready]
//   probe = "http"
//   path = "/health"
//   [sidecar.socket]
//   inherit = true
"use strict";

const http = require("node:http");

const LISTEN_FDS_START = 3;

// sd_listen_fds(): the fds are ours only when LISTEN_PID names this very process.
function inheritedFd() {
  if (process.env.LISTEN_PID !== String(process.pid)) return null;
  if (!(Number(process.env.LISTEN_FDS) >= 1)) return null;
  for (const name of ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"]) delete process.env[name];
  return LISTEN_FDS_START;
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/health") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ status: "ok", pid: process.pid }) + "\n");
    return;
  }
  res.writeHead(404, { "content-type": "text/plain" });
  res.end("not found\n");
});

const fd = inheritedFd();
if (fd !== null) {
  server.listen({ fd }, () => console.log(`serving on inherited fd ${fd}`));
} else {
  const port = Number(process.env.PORT || 8080);
  server.listen(port, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${port}`));
}

// Closing our copy of the socket leaves the supervisor's open: clients keep queueing.
process.on("SIGTERM", () => server.close(() => process.exit(0)));
