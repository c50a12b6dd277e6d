"""The commands, by group: sessions and logins, objects, access rules, revisions, and
the cluster. Each module's `COMMANDS` maps command names to `Command`s."""
