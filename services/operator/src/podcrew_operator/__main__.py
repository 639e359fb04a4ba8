"""`podcrew-operator`: run the AgentRun operator (kopf) against the current cluster."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import kopf
from pydantic import ValidationError
from pydantic_settings import SettingsError

from podcrew_core.runtime.logging import configure_logging

from .handlers import Memo, configure, registry
from .settings import OperatorSettings


class _ObjectPrefix(logging.Filter):
    """Prefix kopf's per-object log lines with `[namespace/name]`, as kopf's own formatter
    does: podcrew's JSON logging drops the `k8s_ref` extra kopf puts on them."""

    def filter(self, record: logging.LogRecord) -> bool:
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict) and not getattr(record, "_podcrew_prefixed", False):
            where = "/".join(str(ref[k]) for k in ("namespace", "name") if ref.get(k))
            record.msg = f"[{where}] {record.msg}"
            record._podcrew_prefixed = True
        return True


def setup_logging(level: str) -> None:
    configure_logging("operator", level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_ObjectPrefix())
    # kopf's liveness server logs every probe at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="podcrew-operator",
        description="Run podcrew's AgentRun operator. Settings: PODCREW_OPERATOR_* "
        "(docs/operator.md); flags win over them.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch AgentRuns in this namespace (repeatable; globs as kopf takes them)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch AgentRuns in every namespace"
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = OperatorSettings()
    except (ValidationError, SettingsError) as exc:
        sys.exit(f"podcrew-operator: invalid settings:\n{exc}")
    cluster_wide = bool(args.all_namespaces) or (settings.cluster_wide and not args.namespace)
    namespaces = list(args.namespace) or list(settings.namespaces)
    if not cluster_wide and not namespaces:
        sys.exit(
            "podcrew-operator: say where to watch: --namespace NS (or PODCREW_OPERATOR_NAMESPACES) "
            "or --all-namespaces (PODCREW_OPERATOR_CLUSTER_WIDE=true)"
        )
    setup_logging(settings.log_level)
    kopf_settings = kopf.OperatorSettings()
    configure(kopf_settings, settings)
    # Standalone: one replica (the chart's Deployment is Recreate with replicas 1), so kopf's
    # peering, and the cluster-wide rights it needs, buy nothing.
    kopf.run(
        registry=registry,
        settings=kopf_settings,
        memo=Memo(settings=settings),
        standalone=True,
        clusterwide=cluster_wide,
        namespaces=[] if cluster_wide else namespaces,
        liveness_endpoint=args.liveness or settings.liveness_endpoint,
    )


if __name__ == "__main__":
    main()
