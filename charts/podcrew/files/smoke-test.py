"""`helm test`: submit a run to the api and wait until it has succeeded.

Standard library only, so it runs in the orchestrator image as it is. Reads PODCREW_API_URL,
PODCREW_TEST_QUESTION, PODCREW_TEST_TIMEOUT_S and, if set, PODCREW_API_KEY (Bearer token).
Exit 0 only when the run succeeded.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

FINAL = ("succeeded", "failed", "cancelled")


def call(method, url, headers, body=None, timeout=30.0):
    data = None if body is None else json.dumps(body).encode()
    # main() only builds http(s) URLs from PODCREW_API_URL.
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.load(response)


def main():
    base = os.environ["PODCREW_API_URL"].rstrip("/")
    if not base.startswith(("http://", "https://")):
        print(f"PODCREW_API_URL must be an http(s) URL, not {base!r}", file=sys.stderr)
        return 2
    question = os.environ.get("PODCREW_TEST_QUESTION", "What is a Python generator?")
    timeout_s = float(os.environ.get("PODCREW_TEST_TIMEOUT_S", "240"))
    headers = {"content-type": "application/json", "accept": "application/json"}
    if os.environ.get("PODCREW_API_KEY"):
        headers["authorization"] = "Bearer " + os.environ["PODCREW_API_KEY"]
    deadline = time.monotonic() + timeout_s

    # The api may still be rolling out right after install: retry the submission briefly.
    while True:
        try:
            run = call("POST", base + "/v1/runs?wait=30", headers, {"question": question}, 45)
            break
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > deadline:
                print(f"could not submit a run to {base}: {exc}", file=sys.stderr)
                return 1
            time.sleep(2)
    print(f"submitted {run['id']}: {run['status']}", flush=True)

    while run["status"] not in FINAL and time.monotonic() < deadline:
        time.sleep(1)
        run = call("GET", f"{base}/v1/runs/{run['id']}", headers)
    print(json.dumps({"id": run["id"], "status": run["status"], "error": run.get("error")}))
    return 0 if run["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
