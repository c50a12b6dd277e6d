"""The automerge-repo protocol without I/O: the message codec and document ids
(`protocol`) and the hub of per-peer, per-document sync states (`gossip`)."""
