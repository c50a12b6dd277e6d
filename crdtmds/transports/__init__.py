"""The front doors of a server. Each only translates its bytes to calls: the WebSocket
listener routes `/sync` links to the network side and `/api` connections to the JSON door
over the command layer. A door has `start() -> url` and `stop()`."""
