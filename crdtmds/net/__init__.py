"""The network side of a server: sync links around the gossip hub, the admission of
peers, the mesh of dialers with their relays, and the catch-up of a joining server. It
moves bytes between sockets and the sans-I/O hub; it never imports the command layer."""
