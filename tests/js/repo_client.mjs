// A stock automerge-repo client: opens one document from a crdtmds server and waits until
// an object with the given name appears in it. Prints one JSON line per state it sees.
// Usage: node repo_client.mjs <ws-url> <automerge-url> <object-name> <timeout-ms>
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";

const [wsUrl, docUrl, wanted, timeoutMs] = process.argv.slice(2);
const repo = new Repo({ network: [new WebSocketClientAdapter(wsUrl)] });

// crdtmds stores names as scalar strings, which Automerge 3 hands to JavaScript as
// ImmutableString objects: String() gives the plain value.
function names(doc) {
  return Object.values(doc?.objects ?? {}).map((o) => String(o.name));
}

function report(doc) {
  console.log(JSON.stringify({ domain: String(doc?.name), objects: names(doc).sort() }));
  return names(doc).includes(wanted);
}

// Exit without waiting for repo.shutdown(): the WebSocket adapter may wait on a server
// that has nothing more to say, and the test only needs what was printed.
const timer = setTimeout(() => {
  console.log(JSON.stringify({ error: "timeout" }));
  process.exit(1);
}, Number(timeoutMs));

try {
  const handle = await repo.find(docUrl);
  const done = () => {
    clearTimeout(timer);
    process.exit(0);
  };
  if (report(handle.doc())) done();
  handle.on("change", ({ doc }) => {
    if (report(doc)) done();
  });
} catch (err) {
  console.log(JSON.stringify({ error: String(err) }));
  process.exit(2);
}
