"""The `crdtmds` command line."""
