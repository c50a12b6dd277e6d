"""The application services of a server, one job each, over storage and the sync hub:
the live documents, their persistence, administrators' sessions and publishes, cluster
administration, logins, and status. No sockets; up-calls are listeners handed in."""
