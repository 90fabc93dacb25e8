# The worker image AWS Batch runs: `jadd worker ...` over one chunk of scenes (CPU stages).
# Build: docker build -t <account>.dkr.ecr.<region>.amazonaws.com/jadd-worker:<version> .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
WORKDIR /opt/jadd

# Dependencies first, from the lock file, so code changes rebuild only the last layer.
COPY requirements-runtime.lock ./
RUN pip install --no-cache-dir -r requirements-runtime.lock

COPY pyproject.toml README.md ./
COPY jadd_dagster ./jadd_dagster
COPY resources ./resources
COPY assets ./assets
RUN pip install --no-cache-dir --no-deps . && useradd --create-home jadd
USER jadd

# Batch passes the command (jadd worker --store ... --manifest-list ...) in containerOverrides.
ENTRYPOINT []
CMD ["jadd", "--help"]
