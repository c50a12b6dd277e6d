// One stock automerge-repo server for bench/peers.py: a Repo with the WebSocket server
// adapter on a loopback port the OS picks, the NodeFS storage adapter when given a
// directory (in memory otherwise), and a WebSocket client adapter per server to dial.
// The hub of a star dials no one; a leaf dials the hub.
//
// Usage: node repo_server.mjs [--storage DIR] [--dial ws://HOST:PORT]...
// Prints "listening on ws://127.0.0.1:PORT" once it accepts connections and holds a link
// to every server it dials; exits when its standard input closes.
import { parseArgs } from "node:util";
import { Repo } from "@automerge/automerge-repo";
import {
  WebSocketClientAdapter,
  WebSocketServerAdapter,
} from "@automerge/automerge-repo-network-websocket";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";
import { WebSocketServer } from "ws";

const { values } = parseArgs({
  options: {
    storage: { type: "string" },
    dial: { type: "string", multiple: true, default: [] },
  },
});

// The adapter pings every client each interval and drops one that has not answered the
// previous ping (5 s by default). On a shared, loaded machine a server working off a
// backlog reads the answer too late and drops a healthy connection, so the interval is
// longer here; it costs nothing while connections are healthy.
const KEEPALIVE_MS = 60_000;

const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
await new Promise((resolve, reject) => {
  server.once("listening", resolve);
  server.once("error", reject);
});

const repo = new Repo({
  network: [
    new WebSocketServerAdapter(server, KEEPALIVE_MS),
    ...values.dial.map((url) => new WebSocketClientAdapter(url)),
  ],
  storage: values.storage ? new NodeFSStorageAdapter(values.storage) : undefined,
});

// The client adapters connect in the background: wait until every dialled server is a peer.
while (repo.peers.length < values.dial.length) {
  await new Promise((resolve) => setTimeout(resolve, 10));
}

console.log(`listening on ws://127.0.0.1:${server.address().port}`);
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
