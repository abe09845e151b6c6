# syntax=docker/dockerfile:1
# One image for all four services; the command picks the service:
#   docker build -t eventbooking .
#   docker run eventbooking python -m booking_svc
# docker-compose.yml and deploy/k8s/ set the command (and the environment) per service.

FROM python:3.11-slim AS builder

# pip compiles the bytecode at install time, so that the read-only image never needs to.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first, from pyproject alone, so that a code change reuses this layer.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --requirement /tmp/requirements.txt

COPY eventbooking ./eventbooking
COPY account_svc ./account_svc
COPY event_svc ./event_svc
COPY booking_svc ./booking_svc
COPY notification_svc ./notification_svc
# A wheel, not the source tree: the image gets exactly what the package ships
# (migrations and their alembic env included), and no tests or tools.
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl \
    && /opt/venv/bin/python -c "import account_svc.migrations, booking_svc.migrations, event_svc.migrations"


FROM python:3.11-slim

# The same path as in the builder: the venv's python links to /usr/local/bin/python3.11.
COPY --from=builder /opt/venv /opt/venv

RUN groupadd --system --gid 10001 eventbooking \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin eventbooking

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
USER 10001:10001

# gRPC ports of account, event, booking and notification; then their Prometheus ports.
EXPOSE 50051 50052 50053 50054 9551 9552 9553 9554

CMD ["python", "-m", "account_svc"]
