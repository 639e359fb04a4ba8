"""`python -m bench.baseline --port P --simulator URL`: serve the baseline with uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

from bench.baseline.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--simulator", required=True, help="base URL of the simulated API")
    args = parser.parse_args()
    # What `uvicorn app:app` does (uvloop and httptools when installed), minus access logs.
    uvicorn.run(create_app(args.simulator), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
