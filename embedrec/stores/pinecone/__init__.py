"""Pinecone serverless through the `pinecone` SDK 10 (REST over httpx).

URI: `pinecone://INDEX?namespace=NS`, options:

- `create=1&cloud=aws&region=us-east-1`: create a missing index through the control plane
  (serverless; dimension and metric from `open_store`); without it a missing index is a
  `StoreNotFound`;
- `retries=5&backoff=0.5`: how often and how patiently a request that met 429, 5xx, a
  dropped connection or a timeout is tried again (exponential backoff from `backoff`
  seconds, capped at 8 s, or longer when Pinecone's Retry-After asks) before
  `StoreUnavailable`. The SDK's own data-plane retries are switched off so that this one
  schedule is the only one;
- `flush_timeout=60`: seconds `flush()` waits for the index to show every write;
- `timeout=30`: seconds for one HTTP request.

`PINECONE_API_KEY` comes from the environment only. `PINECONE_HOST` sends the data plane to
that host instead of the one the control plane reports (then dimension and metric come from
`describe_index_stats`); `PINECONE_CONTROLLER_HOST` points the control plane elsewhere.

Pinecone's limits are honoured on the client: upserts are cut by their serialized size
(<= 2,000,000 bytes, <= 1,000 vectors), fetches and deletes go in chunks of <= 1,000 ids,
metadata is <= 40 KB a record, top_k <= 10,000 (values and metadata are asked for only up
to 1,000 and fetched by id beyond). Vector values travel in float32's shortest decimal form,
exact and about half the size of the float64 form the SDK would write.

Ids are sent as they are when Pinecone takes them (1-512 ASCII characters, no NUL); any
other id is sent percent-encoded behind `~u:`, and mapped back on the way out.

Scores: cosine and dot are Pinecone's own (the inner product; cosine vectors are normalised
before they are sent). For l2 the score is computed here from the returned values, as the
negated squared distance, so that it does not depend on how Pinecone scales "euclidean".

Consistency: Pinecone is eventually consistent. The store counts what the namespace should
hold after its own writes (it checks which ids already exist before writing), and `flush()`
waits until `describe_index_stats` reports that count. `search`, `fetch` and `count` flush
first when there are writes not yet seen, so "ingest, then search" is complete. This assumes
one writer per namespace; another writer makes `flush()` time out with `StoreUnavailable`.

Filtered counts and deletes page through `fetch_by_metadata` (exact, but it transfers the
matching records), because serverless indexes count only whole namespaces.
"""

from embedrec.stores.pinecone.store import PineconeStore
from embedrec.stores.pinecone.wire import (
    MAX_UPSERT_BYTES,
    translate_filter,
    upsert_batches,
    user_id,
    wire_id,
)

__all__ = [
    "MAX_UPSERT_BYTES",
    "PineconeStore",
    "translate_filter",
    "upsert_batches",
    "user_id",
    "wire_id",
]
