# The worker image AWS Batch runs: `jadd worker ...` over one chunk of scenes.
# Build: docker build -t <account>.dkr.ecr.<region>.amazonaws.com/jadd-worker:<version> .
# GPU workers (auto-labelling with ONNX Runtime's CUDAExecutionProvider) need its CUDA build, with
# CUDA and cuDNN from pip (requirements-gpu.lock: onnxruntime-gpu 1.31.1 brings CUDA 13 and cuDNN 9;
# the host needs only an NVIDIA driver that supports CUDA 13):
#   docker build --build-arg ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]" -t .../jadd-worker:<version>-gpu .
#
# Supply chain: the base image is pinned by digest (the tag is only a label; Docker uses the
# digest), and every Python package, the build backend included, is installed from a lock with its
# sha256 (--require-hashes, --no-deps: nothing is resolved or fetched unchecked at build time).
# The digest is python:3.11-slim's multi-platform index as of 2026-08-25; to move it,
# `docker buildx imagetools inspect python:3.11-slim` prints the current one. Each lock is made by
# the command in its header (uv pip compile ... --generate-hashes).
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
ARG ONNXRUNTIME=""

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
WORKDIR /opt/jadd

# Dependencies first, from the lock files, so code changes rebuild only the last layer.
COPY requirements-runtime.lock requirements-gpu.lock requirements-build.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements-build.lock && \
    pip install --no-cache-dir --require-hashes --no-deps -r requirements-runtime.lock && \
    if [ -n "$ONNXRUNTIME" ]; then \
      if [ "$ONNXRUNTIME" != "onnxruntime-gpu[cuda,cudnn]" ]; then \
        echo "ONNXRUNTIME=$ONNXRUNTIME: only onnxruntime-gpu[cuda,cudnn] is locked (requirements-gpu.lock)" >&2; exit 1; \
      fi && \
      pip uninstall -y onnxruntime && \
      pip install --no-cache-dir --require-hashes --no-deps -r requirements-gpu.lock; \
    fi

COPY pyproject.toml README.md ./
COPY jadd_dagster ./jadd_dagster
COPY resources ./resources
COPY assets ./assets
# The build backend comes from requirements-build.lock, not fetched unchecked by an isolated build.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && useradd --create-home jadd
USER jadd

# Batch passes the command (jadd worker --store ... --manifest-list ...) in containerOverrides.
ENTRYPOINT []
CMD ["jadd", "--help"]
