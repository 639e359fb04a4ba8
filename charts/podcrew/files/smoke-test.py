"""`helm test`: submit a run to the api and wait until it has succeeded.

Standard library only, so it runs in the orchestrator image as it is. Reads PODCREW_API_URL,
PODCREW_TEST_QUESTION, PODCREW_TEST_TIMEOUT_S and, if set, the Bearer token from the file
PODCREW_API_KEY_FILE names (a mounted Secret) or from PODCREW_API_KEY. If PODCREW_TEST_HEARTBEAT
names a file, it is touched before every call, so the pod's probes can tell a stuck test.
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


def api_key():
    path = os.environ.get("PODCREW_API_KEY_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    return os.environ.get("PODCREW_API_KEY", "")


def beat():
    path = os.environ.get("PODCREW_TEST_HEARTBEAT")
    if path:
        with open(path, "a", encoding="utf-8"):
            os.utime(path)


def main():
    base = os.environ["PODCREW_API_URL"].rstrip("/")
    if not base.startswith(("http://", "https://")):
        print(f"PODCREW_API_URL must be an http(s) URL, not {base!r}", file=sys.stderr)
        return 2
    question = os.environ.get("PODCREW_TEST_QUESTION", "What is a Python generator?")
    timeout_s = float(os.environ.get("PODCREW_TEST_TIMEOUT_S", "240"))
    headers = {"content-type": "application/json", "accept": "application/json"}
    key = api_key()
    if key:
        headers["authorization"] = "Bearer " + key
    deadline = time.monotonic() + timeout_s

    # The api may still be rolling out right after install: retry the submission briefly.
    while True:
        beat()
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
        beat()
        run = call("GET", f"{base}/v1/runs/{run['id']}", headers)
    print(json.dumps({"id": run["id"], "status": run["status"], "error": run.get("error")}))
    return 0 if run["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
