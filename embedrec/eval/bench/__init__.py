"""The store comparison: `embedrec bench` (recall, latency, memory and build time per store)."""
