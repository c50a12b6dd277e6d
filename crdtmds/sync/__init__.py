"""The automerge-repo protocol without I/O: the message codec and document ids
(`protocol`), the peers' standing (`peers`), and the hub of per-peer, per-document sync
states (`gossip`, with `connection`, `relay_hold` and `ephemeral`)."""
