# syntax=docker/dockerfile:1
#
# An igata SQS worker with the example digits model baked in:
#
#   docker build -t igata-worker .
#   docker run --rm -e INPUT_CTXMANAGER_SQS_QUEUE_URL=... \
#       -e OUTPUT_CTXMGR_REQUESTS_TABLENAME=requests -e OUTPUT_CTXMGR_RESULTS_TABLENAME=results \
#       -e AWS_REGION=ap-northeast-1 igata-worker
#
# For your own model, replace the examples/ COPY and the training step with your predictor
# package and weights, and the --predictor argument of CMD. See docs/deploy.md.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: wheels of igata-core, the plugins and every dependency ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY igata_core/ igata_core/
COPY igata/ igata/
COPY plugins/ plugins/
# scikit-learn and joblib are the example model's own dependencies, not igata's.
RUN pip wheel --wheel-dir /wheels \
        ".[metrics]" ./plugins/igata-s3 ./plugins/igata-sqs ./plugins/igata-dynamodb \
        scikit-learn joblib

# --- runtime: no compilers, no build files, a non-root user -----------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are mounted, not copied, so they add no layer to the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels \
        "igata-core[metrics]" igata-s3 igata-sqs igata-dynamodb scikit-learn joblib

WORKDIR /app
# The predictor (examples.digits:DigitsPredictor) and its weights, trained at build time so
# a starting worker loads them instead of training. mkstemp makes the file 0600: open it up
# for the worker user, who only reads it.
COPY examples/ examples/
ENV PYTHONPATH=/app \
    DIGITS_MODEL_PATH=/app/model/digits.joblib
RUN python -c "from examples.digits import save_model, train_model; \
save_model(train_model(), '/app/model/digits.joblib')" \
    && chmod -R a+rX /app/model \
    && python -c "from examples.digits import ensure_model; ensure_model('/app/model/digits.joblib')"

RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent igata
USER 10001:10001

# Logs as JSON lines on stderr; AWS settings (region, queue, tables) come from the
# deployment, credentials from the task role / IRSA, never from the image.
ENV IGATA_LOG_FORMAT=json \
    HOME=/tmp

# /metrics (Prometheus), /healthz (liveness), /readyz (readiness).
EXPOSE 9108

# igata runs as PID 1 (exec form, no shell): it installs its own SIGTERM handler, stops
# reading, finishes and flushes what is in flight, acks, and exits 0. A second SIGTERM
# exits at once; whatever was not acked reappears on the queue.
STOPSIGNAL SIGTERM
ENTRYPOINT ["igata", "run"]
CMD ["--source", "sqs", "--sink", "dynamodb", "--predictor", "examples.digits:DigitsPredictor", "--metrics-port", "9108"]
