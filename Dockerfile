# The operator image: multi-stage, pinned base, non-root, runtime dependencies only.
# Build: docker build -t llm-operator:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/llm-operator \
 && /opt/llm-operator/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/llm-operator/bin/pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/llm-operator /opt/llm-operator
ENV PATH=/opt/llm-operator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A numeric user so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
ENTRYPOINT ["llm-operator", "run"]
CMD ["--liveness", "http://0.0.0.0:8080/healthz"]
