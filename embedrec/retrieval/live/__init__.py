"""Live events: users' interactions and catalogue changes reaching the recommendations
within a second (docs/realtime.md). Modules: `events` (what an event is), `histories` and
`redis_histories` (users' live histories), `catalogue` (items into the stores), `applier`,
`consumer` (the Redis Stream consumer group), `stats` (metrics), `service` (`Live`).
"""
