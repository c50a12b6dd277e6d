"""The command layer: administrators' commands named and shaped like the Check Point
Management API, transport-free. `AdminAPI.execute(caller, request)` takes a request as a
dict (`{"command", "params", "sid"?}`) and returns the reply's `result` or raises a
`CrdtmdsError` for its `error`; every door (the WebSocket `/api`, and any other) only
translates its own framing to that call."""
