"""Test doubles that the test suite and the benchmarks share (a Pinecone loopback server).

They live in the package, not in tests/, because `eval`'s bench starts a loopback for its
Pinecone rows when no API key is set. Room 1 in docs/architecture.md: beside `eval`, above
the stores they imitate.
"""
