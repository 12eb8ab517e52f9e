"""Events and the state they build, below the client: the event models and their rejections
(`models`), users' live histories in process (`histories`) or in Redis (`redis_histories`),
which the client reads once per request, and the live events' metrics (`stats`). Applying
events to that state and to the stores (`retrieval/live/`) sits above the client."""
