"""`python -m bench.baseline --port P --simulator URL`: serve the baseline with uvicorn."""

from __future__ import annotations

from bench.baseline.app import create_app, serve

if __name__ == "__main__":
    serve(create_app, __doc__)
