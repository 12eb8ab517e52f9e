"""Qdrant stores: one store (`store.py`) over a thin adapter per engine.

- `client_engine.py`: qdrant-client, for a server (`qdrant://host:port/collection`) and its
  brute-force local mode (`qdrant+local:PATH/collection`, `qdrant+memory:collection`);
- `edge_engine.py`: qdrant-edge-py, Qdrant's engine in process (`qdrant+edge:PATH`), and
  `edge_floats.py`, the floats that engine keeps exactly;
- `engine.py`: what the store asks of an engine;
- `dialect.py`: records as points and filters as Qdrant filters, for both libraries.

Nothing is imported here, so that each scheme loads only its own library.
"""
