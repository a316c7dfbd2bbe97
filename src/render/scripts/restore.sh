#!/bin/sh
# The restore Jobs: CLUSTER-restore, the first instance of a cluster created from a backup
# (mode bootstrap), and CLUSTER-restore-HASH, a running cluster restored in place while its
# instances are stopped (mode in-place).
#   sh /etc/pgbackrest/restore.sh MODE PGDATA BINDIR MAJOR [pgbackrest restore options...]
# Restores the backup into the data directory, recovers it to the target with
# archiving off (nothing reaches the source's repository), waits for PostgreSQL to
# promote, gives the superuser and the replication role this cluster's passwords, drops
# the recovery settings, and stops PostgreSQL cleanly. Patroni then finds a shut-down
# primary, takes the leader key and starts it; replicas are created from it.
set -eu
mode=$1 pgdata=$2 bindir=$3 major=$4
shift 4
conf=/etc/pgbackrest
marker="$(dirname "$pgdata")/.pgpilot-restore"

say() { echo "restore: $*"; }
fail() { echo "restore: $2" >&2; exit "$1"; }

delta=
if [ "$mode" = in-place ]; then
    # The instances are stopped (their pods are gone): a postmaster.pid left by one that
    # was killed is stale. pgBackRest rewrites only the files that differ.
    rm -f "$pgdata/postmaster.pid"
    [ -e "$pgdata/PG_VERSION" ] && delta=--delta
else
    if [ -e "$pgdata/PG_VERSION" ] && [ ! -e "$marker" ]; then
        fail 2 "$pgdata already holds a database that this Job did not restore: refusing to touch it"
    fi
    if [ -e "$marker" ]; then
        say "an earlier attempt of this Job left a partial restore: starting again"
        rm -rf "$pgdata"
    fi
    touch "$marker"
fi
mkdir -p "$pgdata"
chmod 0700 "$pgdata"

say "pgbackrest restore $delta $*"
pgbackrest --stanza=db --pg1-path="$pgdata" $delta "$@" restore

version=$(cat "$pgdata/PG_VERSION")
[ "$version" = "$major" ] ||
    fail 3 "the backup is of PostgreSQL $version, this cluster runs $major: set spec.postgresVersion to $version"

# Patroni seeds the DCS from this cache when it takes over a data directory: this
# cluster's dynamic configuration, not the source's.
cp "$conf/patroni.dynamic.json" "$pgdata/patroni.dynamic.json"
printf 'local all all trust\n' >/tmp/pg_hba.conf

# Only this Job can connect (a socket in its own /tmp); no WAL is archived anywhere, and
# no commit waits for the source's synchronous standbys.
"$bindir/postgres" -D "$pgdata" -c listen_addresses= -c unix_socket_directories=/tmp \
    -c hba_file=/tmp/pg_hba.conf -c archive_mode=off -c ssl=off -c logging_collector=off \
    -c synchronous_standby_names= -c log_statement=none -c log_min_duration_statement=-1 &
pid=$!
running() { [ -e "/proc/$pid" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$pid/stat" 2>/dev/null; }
sql() { "$bindir/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h /tmp -U postgres -d postgres "$@"; }

say "recovering to the target (PostgreSQL's log follows)"
until [ "$(sql -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do
    running || fail 4 "PostgreSQL stopped before recovery ended: the target is not in the archive, or the log above says why"
    sleep 1
done
sql -f "$conf/restore.sql"
say "recovered and promoted: $(sql -c "select 'timeline ' || timeline_id || ', WAL at ' || pg_current_wal_lsn() from pg_control_checkpoint()")"
"$bindir/pg_ctl" -D "$pgdata" stop -m fast -w -t 600 >/dev/null
wait "$pid" || true
rm -f "$marker"
say "done: the first instance starts under Patroni"
