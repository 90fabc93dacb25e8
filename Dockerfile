# The worker image AWS Batch runs: `jadd worker ...` over one chunk of scenes.
# Build: docker build -t <account>.dkr.ecr.<region>.amazonaws.com/jadd-worker:<version> .
# GPU workers (auto-labelling with ONNX Runtime's CUDAExecutionProvider) need its CUDA build, with
# CUDA 12 and cuDNN 9 from pip (the host needs only the NVIDIA driver):
#   docker build --build-arg ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]" -t .../jadd-worker:<version>-gpu .
FROM python:3.11-slim
ARG ONNXRUNTIME=""

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
WORKDIR /opt/jadd

# Dependencies first, from the lock file, so code changes rebuild only the last layer.
COPY requirements-runtime.lock ./
RUN pip install --no-cache-dir -r requirements-runtime.lock && \
    if [ -n "$ONNXRUNTIME" ]; then \
      version="$(sed -n 's/^onnxruntime==//p' requirements-runtime.lock)" && \
      pip uninstall -y onnxruntime && pip install --no-cache-dir "$ONNXRUNTIME==$version"; \
    fi

COPY pyproject.toml README.md ./
COPY jadd_dagster ./jadd_dagster
COPY resources ./resources
COPY assets ./assets
RUN pip install --no-cache-dir --no-deps . && useradd --create-home jadd
USER jadd

# Batch passes the command (jadd worker --store ... --manifest-list ...) in containerOverrides.
ENTRYPOINT []
CMD ["jadd", "--help"]
