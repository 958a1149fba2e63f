"""Device mesh, logical-axis sharding rules, multi-host start-up."""
