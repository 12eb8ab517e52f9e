"""Live events applied: users' interactions and catalogue changes reaching the
recommendations within a second (docs/realtime.md). Modules: `catalogue` (items into the
stores), `applier`, `consumer` (the Redis Stream consumer group), `service` (`Live`). What an
event is, users' live histories and the metrics live below the client, in `retrieval/events/`.
"""
