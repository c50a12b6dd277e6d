"""The pure core: the policy schema, Automerge documents as plain data, the cluster and
domain documents, administrators' drafts and credentials. No asyncio, no sockets, no SQL;
imports nothing of crdtmds but `crdtmds.errors`."""
