#!/usr/bin/env bash
# End-to-end on a real cluster: kind + add-ons + podcrew, a question, and scaling under load.
# Runs wherever Docker, kind, kubectl and helm exist and the public registries are reachable
# (kindest/node, the add-on charts and images); says plainly what is missing otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=podcrew
NS=podcrew
TAG=${IMAGE_TAG:-e2e}
PREFIX=ghcr.io/podcrew
API=http://127.0.0.1:8000

missing=()
for tool in docker kind kubectl helm curl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool is not installed")
done
if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  missing+=("no Docker daemon answers (start one: scripts/ensure-docker.sh)")
fi
if ! curl -fsS --max-time 5 -o /dev/null https://registry-1.docker.io/v2/ 2>/dev/null \
   && ! curl -sS --max-time 5 -o /dev/null -w '%{http_code}' https://registry-1.docker.io/v2/ 2>/dev/null | grep -q 401; then
  missing+=("the Docker Hub registry is unreachable (kind needs kindest/node, the add-ons need their images)")
fi
if ((${#missing[@]})); then
  echo "make e2e cannot run here:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  echo "What it proves without a cluster is proven by 'make test' (chart, containers, Prometheus)." >&2
  exit 2
fi

step() { printf '\n== %s\n' "$*"; }

step "cluster"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --config k8s/kind/cluster.yaml

step "add-ons: kube-prometheus-stack, KEDA"
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
helm repo add kedacore https://kedacore.github.io/charts >/dev/null
helm repo update >/dev/null
helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
  -n monitoring --create-namespace -f k8s/addons/kube-prometheus-stack-values.yaml --wait --timeout 10m
helm upgrade --install keda kedacore/keda -n keda --create-namespace \
  -f k8s/addons/keda-values.yaml --wait --timeout 5m

step "images"
scripts/build-images.sh --prefix "$PREFIX" --tag "$TAG"
for image in orchestrator research-agent writer-agent operator; do
  kind load docker-image --name "$CLUSTER" "$PREFIX/$image:$TAG"
done

step "podcrew"
helm upgrade --install podcrew charts/podcrew -n "$NS" --create-namespace \
  -f k8s/examples/values-kind.yaml --set orchestrator.image.tag="$TAG" \
  --set researchAgent.image.tag="$TAG" --set writerAgent.image.tag="$TAG" \
  --set operator.image.tag="$TAG" --wait --timeout 10m
helm test podcrew -n "$NS" --logs

step "a question"
for _ in $(seq 60); do curl -fsS "$API/readyz" >/dev/null 2>&1 && break; sleep 2; done
run=$(curl -fsS -XPOST "$API/v1/runs?wait=120" -H 'content-type: application/json' \
  -d '{"question": "How do Python generators work?"}')
echo "$run" | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["status"]=="succeeded", r; print("run", r["id"], "succeeded;", len(r["result"]["sources"]), "sources")'

step "scaling reacts to load"
before=$(kubectl -n "$NS" get deploy -l app.kubernetes.io/component=worker -o jsonpath='{.items[0].status.replicas}')
for i in $(seq 200); do
  curl -fsS -XPOST "$API/v1/runs" -H 'content-type: application/json' \
    -d "{\"question\": \"What is Python feature number $i?\"}" >/dev/null &
done
wait
scaled=""
for _ in $(seq 60); do
  now=$(kubectl -n "$NS" get deploy -l app.kubernetes.io/component=worker -o jsonpath='{.items[0].status.replicas}')
  if [ "${now:-0}" -gt "${before:-0}" ]; then scaled=$now; break; fi
  sleep 5
done
if [ -z "$scaled" ]; then
  echo "the worker did not scale out under load (replicas stayed ${before:-0})" >&2
  kubectl -n "$NS" describe scaledobject >&2 || true
  exit 1
fi
echo "worker replicas ${before:-0} -> $scaled under load"
echo
echo "e2e passed"
