"""Real crdtmds server processes on loopback, for the demo, tests and benchmarks."""
