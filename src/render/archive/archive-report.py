"""Writes the outcome of one archive-push to this pod's annotation pgpilot.io/archive.

Called by archive-push.sh with the WAL file name and pgBackRest's exit code. A success is
reported once (until the next failure); every failure is reported, with the number of
failures since the last success. The API server is reached with the pod's service-account
token (the Patroni role may patch pods of its namespace). Errors go to standard error,
which PostgreSQL logs; they never change the archive's outcome.
"""

import json
import os
import ssl
import sys
import time
import urllib.request

ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
REPORTED = "/tmp/pgpilot-archive-reported"
FAILING = "/tmp/pgpilot-archive-failing"
ANNOTATION = "pgpilot.io/archive"


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def report(wal, code):
    if code == 0:
        return {"ok": True, "wal": wal, "time": now()}
    try:
        state = json.loads(read(FAILING))
        failures, since = int(state["failures"]), str(state["since"])
    except (OSError, ValueError, KeyError, TypeError):
        failures, since = 0, now()
    failures += 1
    with open(FAILING, "w", encoding="utf-8") as f:
        json.dump({"failures": failures, "since": since}, f)
    return {
        "ok": False,
        "wal": wal,
        "time": now(),
        "exitCode": code,
        "failures": failures,
        "since": since,
    }


def send(value):
    host = os.environ["PGPILOT_API_HOST"]
    if ":" in host:
        host = "[" + host + "]"
    url = "https://{}:{}/api/v1/namespaces/{}/pods/{}".format(
        host,
        os.environ["PGPILOT_API_PORT"],
        read(ACCOUNT + "/namespace"),
        os.environ["PGPILOT_POD_NAME"],
    )
    text = json.dumps(value, separators=(",", ":"))
    body = json.dumps({"metadata": {"annotations": {ANNOTATION: text}}}).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="PATCH",
        headers={
            "Authorization": "Bearer " + read(ACCOUNT + "/token"),
            "Content-Type": "application/merge-patch+json",
        },
    )
    context = ssl.create_default_context(cafile=ACCOUNT + "/ca.crt")
    with urllib.request.urlopen(request, context=context, timeout=5):
        pass


def main():
    wal, code = sys.argv[1], int(sys.argv[2])
    if code != 0:
        try:
            os.remove(REPORTED)
        except FileNotFoundError:
            pass
    value = report(wal, code)
    try:
        send(value)
    except Exception as e:  # the report is best effort; the archive's outcome stands
        print("pgpilot: reporting the archive outcome failed: {}".format(e), file=sys.stderr)
        return
    if code == 0:
        open(REPORTED, "w", encoding="utf-8").close()
        try:
            os.remove(FAILING)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    main()
