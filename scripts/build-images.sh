#!/usr/bin/env bash
# Build podcrew's service images from the workspace root, all from the one Dockerfile with the
# service as its SERVICE build argument: podcrew/orchestrator (api, worker and the podcrew CLI),
# podcrew/research-agent, podcrew/writer-agent, podcrew/operator. `make images` runs it.
#
# Usage: scripts/build-images.sh [--base-image IMAGE] [--tag TAG] [--prefix PREFIX] [SERVICE...]
#   --base-image IMAGE  BASE_IMAGE build argument (default python:3.12-slim; for a machine
#                       that reaches no registry: podcrew/base:bookworm from
#                       scripts/build-base-image.sh)
#   --tag TAG           image tag (default dev)
#   --prefix PREFIX     repository prefix (default podcrew, giving podcrew/<service>:TAG)
#   SERVICE...          a subset of: orchestrator research-agent writer-agent operator
# Env: DOCKER_BUILD_ARGS  extra arguments for every `docker build` (e.g. --no-cache)
#
# Builds use the host network (`--network host`): the daemon may run without a bridge, and
# the only network a build needs is PyPI (uv itself and the locked wheels).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=python:3.12-slim
TAG=dev
PREFIX=podcrew
SERVICES=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --base-image) BASE_IMAGE=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    --prefix) PREFIX=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "build-images: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) SERVICES+=("$1"); shift ;;
  esac
done
[ ${#SERVICES[@]} -gt 0 ] || SERVICES=(orchestrator research-agent writer-agent operator)

for service in "${SERVICES[@]}"; do
  grep -q "^FROM runtime AS $service\$" Dockerfile ||
    { echo "build-images: the Dockerfile has no stage for $service" >&2; exit 2; }
done

built=()
for service in "${SERVICES[@]}"; do
  image="$PREFIX/$service:$TAG"
  echo "build-images: $image (BASE_IMAGE=$BASE_IMAGE)" >&2
  start=$SECONDS
  # shellcheck disable=SC2086 # DOCKER_BUILD_ARGS is a list of words on purpose
  docker build --network host \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "SERVICE=$service" \
    --label "org.opencontainers.image.version=$TAG" \
    ${DOCKER_BUILD_ARGS:-} \
    -t "$image" .
  echo "build-images: $image built in $((SECONDS - start))s" >&2
  built+=("$image")
done

echo >&2
for image in "${built[@]}"; do
  docker image inspect --format "{{.Size}}" "$image" |
    awk -v image="$image" '{ printf "%-40s %6.0f MB\n", image, $1 / 1e6 }'
done
