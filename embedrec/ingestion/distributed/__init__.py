"""`embedrec ingest --engine ray[:ADDRESS]`: the embedding stage on a Ray cluster.

`engine.py` holds the stage the pipeline hands its changed rows to (windows, the cache, the
Ray Data dataset, results back in order); `actors.py` what runs on the cluster's workers.
"""
