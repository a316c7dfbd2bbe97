#!/bin/sh
# PostgreSQL's archive_command: "sh /etc/pgbackrest/archive-push.sh %p %f".
# pgBackRest pushes the WAL segment to every repository; its exit code is PostgreSQL's
# answer, whatever the report below does. A failure, and the first success after a
# failure or after the container started, is written to this pod's annotation
# pgpilot.io/archive, from which the operator sets the ContinuousArchiving condition.
# While archiving works nothing else runs: no report, no API request.
pgbackrest --stanza=db archive-push "$1"
rc=$?
if [ "$rc" -ne 0 ] || [ ! -e /tmp/pgpilot-archive-reported ]; then
    python3 /etc/pgbackrest/report.py archive "$2" "$rc" || true
fi
exit "$rc"
