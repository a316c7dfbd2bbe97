"""pgpilot's reports from inside a database pod, written as annotations on the pod itself
with the pod's service-account token (the Patroni Role may patch pods of its namespace).
Errors go to standard error; a report never changes the outcome of what it reports on.

    report.py archive WAL EXIT_CODE
        Called by archive-push.sh (PostgreSQL's archive_command) after pgBackRest's push.
        Annotation pgpilot.io/archive: a success once (until the next failure); every
        failure, with the number of failures since the last success.

    report.py inventory ACTION ROLE SCOPE
        A Patroni callback (on_reload, on_role_change). On the primary only: pgBackRest's
        backup inventory (`pgbackrest info --output=json`, trimmed) as annotation
        pgpilot.io/backups. The operator asks for it with Patroni's POST /reload after a
        backup and now and then.
"""

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request

ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
REPORTED = "/tmp/pgpilot-archive-reported"
FAILING = "/tmp/pgpilot-archive-failing"
ARCHIVE = "pgpilot.io/archive"
INVENTORY = "pgpilot.io/backups"
STANZA = "db"
# Newest backups per repository in the annotation (the operator keeps fewer in status).
KEEP = 30
# Longest error text carried into an annotation.
ERROR_MAX = 300


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def env(*names):
    """The first of these variables that is set: Patroni's callbacks see the container's
    own (PATRONI_NAME, KUBERNETES_SERVICE_HOST), PostgreSQL's children only pgpilot's."""
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    raise KeyError(names[0])


def annotate(key, value):
    host = env("PGPILOT_API_HOST", "KUBERNETES_SERVICE_HOST")
    if ":" in host:
        host = "[" + host + "]"
    url = "https://{}:{}/api/v1/namespaces/{}/pods/{}".format(
        host,
        env("PGPILOT_API_PORT", "KUBERNETES_SERVICE_PORT"),
        read(ACCOUNT + "/namespace"),
        env("PGPILOT_POD_NAME", "PATRONI_NAME"),
    )
    text = json.dumps(value, separators=(",", ":"))
    body = json.dumps({"metadata": {"annotations": {key: text}}}).encode()
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
    with urllib.request.urlopen(request, context=context, timeout=10):
        pass


def archive_outcome(wal, code):
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


def archive(wal, code):
    if code != 0:
        try:
            os.remove(REPORTED)
        except FileNotFoundError:
            pass
    annotate(ARCHIVE, archive_outcome(wal, code))
    if code == 0:
        open(REPORTED, "w", encoding="utf-8").close()
        try:
            os.remove(FAILING)
        except FileNotFoundError:
            pass


def trimmed(info):
    """The stanza's repositories from `pgbackrest info --output=json`: per repository its
    status, the WAL range of the current database, and its newest backups."""
    stanza = next((s for s in info if s.get("name") == STANZA), None)
    if stanza is None:
        return {"error": "no stanza {} in the repositories".format(STANZA)}
    current = max((d.get("id", 0) for d in stanza.get("db", [])), default=0)
    repos = {}
    for r in stanza.get("repo", []):
        status = r.get("status", {})
        repos[r.get("key")] = {
            "name": "repo{}".format(r.get("key")),
            "status": str(status.get("message", ""))[:ERROR_MAX],
            "backups": [],
        }
    for a in stanza.get("archive", []):
        db = a.get("database", {})
        repo = repos.get(db.get("repo-key"))
        if repo is not None and db.get("id") == current:
            repo["walMin"], repo["walMax"] = a.get("min"), a.get("max")
    for b in stanza.get("backup", []):
        repo = repos.get(b.get("database", {}).get("repo-key"))
        if repo is None:
            continue
        info_ = b.get("info", {})
        stored = info_.get("repository", {})
        stamp = b.get("timestamp", {})
        wal = b.get("archive", {})
        repo["backups"].append(
            {
                "label": b.get("label"),
                "type": b.get("type"),
                "start": stamp.get("start"),
                "stop": stamp.get("stop"),
                "size": info_.get("size"),
                "repoSize": stored.get("size"),
                "repoDelta": stored.get("delta"),
                "walStart": wal.get("start"),
                "walStop": wal.get("stop"),
                "error": bool(b.get("error", False)),
            }
        )
    for repo in repos.values():
        repo["backups"] = sorted(repo["backups"], key=lambda b: b["stop"] or 0)[-KEEP:]
    return {"repos": [repos[k] for k in sorted(repos, key=lambda k: k or 0)]}


def inventory(role):
    if role not in ("primary", "master", "promoted"):
        return
    run = subprocess.run(
        ["pgbackrest", "--stanza=" + STANZA, "--output=json", "info"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if run.returncode != 0:
        lines = (run.stderr or run.stdout).strip().splitlines() or ["no output"]
        value = {"error": "pgbackrest info exited {}: {}".format(run.returncode, lines[-1][:ERROR_MAX])}
    else:
        try:
            value = trimmed(json.loads(run.stdout))
        except (ValueError, AttributeError, TypeError) as e:
            value = {"error": "pgbackrest info printed what could not be read: {}".format(e)}
    value["time"] = now()
    annotate(INVENTORY, value)


def main():
    try:
        if sys.argv[1] == "archive":
            archive(sys.argv[2], int(sys.argv[3]))
        elif sys.argv[1] == "inventory":
            # Patroni appends the callback's action, the member's role and the scope.
            inventory(sys.argv[-2])
        else:
            raise ValueError("unknown report " + sys.argv[1])
    except Exception as e:  # best effort: the reported operation's outcome stands
        print("pgpilot: report {} failed: {}".format(sys.argv[1:2], e), file=sys.stderr)


if __name__ == "__main__":
    main()
