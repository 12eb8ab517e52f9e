# The embedrec HTTP service (`embedrec serve`), CPU only. Not built in CI (no Docker engine
# there); build and run with:
#   docker build -t embedrec-api .
#   docker run -p 8000:8000 -v "$PWD/data:/app/data" -e EMBEDREC_API_KEY=... embedrec-api
# The stores and model that configs/serve.toml names are mounted at /app/data (`make demo`
# writes them to ./data/demo); the MovieLens ratings are fetched into the cache on first use.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EMBEDREC_CACHE=/app/cache

WORKDIR /app

# torch first, the CPU build (the default PyPI wheel pulls CUDA): a layer of its own
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY pyproject.toml constraints.txt README.md ./
COPY embedrec ./embedrec
RUN pip install -c constraints.txt '.[serve,image]' \
    && useradd --create-home --uid 10001 embedrec \
    && mkdir -p /app/cache /app/data \
    && chown -R embedrec /app/cache /app/data

COPY configs/serve.toml ./configs/serve.toml

USER embedrec
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["embedrec", "serve", "configs/serve.toml", "--host", "0.0.0.0", "--port", "8000"]
