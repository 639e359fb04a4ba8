"""What a podcrew service runs on: the base app (/healthz, /readyz, /metrics, problem+json),
the internal HTTP client, admission, Redis and the spend ledger, logging, metrics, tracing.

Built on the contracts; knows nothing of models (that is the LLM layer, above it)."""
