# syntax=docker/dockerfile:1
# Tasks Server image: docker build -t tasks-server . && docker run -p 9420:9420 -v tasks:/data tasks-server
# Written on a machine without Docker or internet: linted by hadolint (tests/test_packaging.py),
# never built there.

FROM python:3.11-slim AS builder
# A compiler and libcurl's headers, for a dependency without a wheel for the build's platform
# (pycurl then links the system libcurl); pycurl's manylinux wheels need neither.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libcurl4-openssl-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# The server's wheel and every dependency's, so the runtime stage needs no compiler
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# libcurl4: the library a pycurl built from source above links to (pycurl's own wheels
# carry theirs); Debian's security updates move its version, so it is not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcurl4 \
    && rm -rf /var/lib/apt/lists/*
# The same layout as the systemd unit: a venv in /opt/tasks-server, installed from the wheels only
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/tasks-server \
    && /opt/tasks-server/bin/pip install --no-cache-dir --no-index --find-links=/wheels /wheels/tasks_server-*.whl
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin tasks-server \
    && mkdir /data \
    && chown tasks-server:tasks-server /data

# PATH_SQLITE: the database, its cipher.key (unless CIPHER_KEY is set) and LOCAL backups
# go to /data; HOST: reachable from outside the container.
ENV PATH=/opt/tasks-server/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PATH_SQLITE=/data/tasks.db \
    HOST=0.0.0.0 \
    PORT=9420
VOLUME /data
WORKDIR /data
# numeric, so that Kubernetes' runAsNonRoot can check it
USER 10001:10001
EXPOSE 9420

# /health answers 200 while the process runs; slim has no curl, so Python asks
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '9420'), timeout=2)"]
# SIGTERM: requests in flight get SHUTDOWN_GRACE_MS (10 s) to finish; `docker stop` waits only
# 10 s by default, so give it more: docker stop -t 30, or compose's stop_grace_period.
STOPSIGNAL SIGTERM
CMD ["tasks-server", "serve"]
