"""`embedrec ingest --engine ray[:ADDRESS]`: the embedding stage on a Ray cluster.

`stage.py` is the stage the pipeline hands its changed rows to (windows, the cache, the
vectors handed back in catalog order); `engine.py` joins the cluster and embeds a list of
inputs on it with Ray Data; `actors.py` is what runs on the cluster's workers.
"""
