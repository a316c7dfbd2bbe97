//! When a change of a PostgreSQL parameter takes effect: its `context` in `pg_settings`, per
//! major version. The data is `contexts.tsv`, read from real servers by
//! `hack/pg-settings.sh`; `tests/pg_settings.rs` checks the column of major 15 against the
//! PostgreSQL the tests run.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

/// PostgreSQL's `GucContext`: who may set a parameter, and when a new value applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Context {
    /// Fixed when PostgreSQL was built or the cluster initialised; never set.
    Internal,
    /// Read at server start only: a change needs a restart.
    Postmaster,
    /// Re-read from the configuration on reload.
    Sighup,
    /// Fixed for a session from its start; a superuser may choose it when connecting.
    SuperuserBackend,
    /// Fixed for a session from its start.
    Backend,
    /// Any time, by a superuser.
    Superuser,
    /// Any time, by anyone.
    User,
}

impl Context {
    const ALL: [Context; 7] = [
        Context::Internal,
        Context::Postmaster,
        Context::Sighup,
        Context::SuperuserBackend,
        Context::Backend,
        Context::Superuser,
        Context::User,
    ];

    /// The spelling in `pg_settings.context`.
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Internal => "internal",
            Context::Postmaster => "postmaster",
            Context::Sighup => "sighup",
            Context::SuperuserBackend => "superuser-backend",
            Context::Backend => "backend",
            Context::Superuser => "superuser",
            Context::User => "user",
        }
    }
}

impl FromStr for Context {
    type Err = String;

    fn from_str(s: &str) -> Result<Context, String> {
        Context::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a pg_settings context"))
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings a hot standby must hold at least at its primary's value (PostgreSQL refuses
/// to replay WAL from a primary with a higher one): raised, replicas restart first; lowered,
/// the primary first.
pub const HOT_STANDBY_MINIMUMS: [&str; 5] = [
    "max_connections",
    "max_prepared_transactions",
    "max_locks_per_transaction",
    "max_wal_senders",
    "max_worker_processes",
];

/// The context of parameter `name` (any case) in PostgreSQL `major`; `None` when that
/// major has no such parameter (extension parameters included) or is not in the table.
pub fn context(major: i32, name: &str) -> Option<Context> {
    let table = &*TABLE;
    let column = table.majors.iter().position(|m| *m == major)?;
    let row = match table.rows.get(name) {
        Some(row) => row,
        None if name.bytes().any(|b| b.is_ascii_uppercase()) => {
            table.rows.get(name.to_ascii_lowercase().as_str())?
        }
        None => return None,
    };
    row[column]
}

/// Every parameter of PostgreSQL `major` with its context; empty for a major not in the table.
pub fn parameters(major: i32) -> BTreeMap<&'static str, Context> {
    let table = &*TABLE;
    let Some(column) = table.majors.iter().position(|m| *m == major) else {
        return BTreeMap::new();
    };
    table
        .rows
        .iter()
        .filter_map(|(name, row)| Some((*name, row[column]?)))
        .collect()
}

/// The major versions the table has a column for.
pub fn majors() -> &'static [i32] {
    &TABLE.majors
}

struct Table {
    majors: Vec<i32>,
    /// Per lower-case name, the context in each major of `majors`, in order.
    rows: BTreeMap<&'static str, Vec<Option<Context>>>,
}

// The table is compiled in; the unit tests parse it, so a malformed edit fails them rather
// than a webhook request.
static TABLE: LazyLock<Table> = LazyLock::new(|| {
    parse(include_str!("contexts.tsv"))
        .unwrap_or_else(|e| panic!("src/validate/pg_settings/contexts.tsv: {e}"))
});

/// Reads the table: `#` comment lines, a header `name<TAB>MAJOR...`, then one line per
/// parameter with a context or `-` per major.
fn parse(text: &'static str) -> Result<Table, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let (_, header) = lines.next().ok_or("no header line")?;
    let mut columns = header.split('\t');
    if columns.next() != Some("name") {
        return Err(format!(
            "the header {header:?} does not start with \"name\""
        ));
    }
    let majors = columns
        .map(|m| m.parse().map_err(|e| format!("header: major {m:?}: {e}")))
        .collect::<Result<Vec<i32>, String>>()?;
    let mut rows = BTreeMap::new();
    for (i, line) in lines {
        let (name, contexts) =
            row(line, majors.len()).map_err(|e| format!("line {}: {e}", i + 1))?;
        if rows.insert(name, contexts).is_some() {
            return Err(format!("line {}: {name:?} appears twice", i + 1));
        }
    }
    Ok(Table { majors, rows })
}

fn row(line: &'static str, majors: usize) -> Result<(&'static str, Vec<Option<Context>>), String> {
    let mut fields = line.split('\t');
    let name = fields.next().unwrap_or_default();
    if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("{name:?} is not a lower-case parameter name"));
    }
    let contexts = fields
        .map(|f| {
            if f == "-" {
                Ok(None)
            } else {
                f.parse().map(Some)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if contexts.len() != majors {
        return Err(format!(
            "{name}: {} contexts for {majors} major versions",
            contexts.len()
        ));
    }
    Ok((name, contexts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::SUPPORTED_VERSIONS;

    #[test]
    fn the_table_covers_every_supported_version() {
        assert_eq!(majors(), SUPPORTED_VERSIONS.collect::<Vec<_>>());
        for major in SUPPORTED_VERSIONS {
            // Every server has a few hundred parameters; a short column is a broken table.
            assert!(parameters(major).len() > 300, "major {major}");
        }
    }

    #[test]
    fn contexts_per_major() {
        assert_eq!(context(15, "max_connections"), Some(Context::Postmaster));
        assert_eq!(context(17, "work_mem"), Some(Context::User));
        assert_eq!(
            context(16, "archive_cleanup_command"),
            Some(Context::Sighup)
        );
        assert_eq!(context(14, "block_size"), Some(Context::Internal));
        // PostgreSQL 18 made the autovacuum worker count reloadable.
        assert_eq!(
            context(17, "autovacuum_max_workers"),
            Some(Context::Postmaster)
        );
        assert_eq!(context(18, "autovacuum_max_workers"), Some(Context::Sighup));
        // Added in 17.
        assert_eq!(context(16, "allow_alter_system"), None);
        assert_eq!(context(17, "allow_alter_system"), Some(Context::Sighup));
    }

    #[test]
    fn lookups_ignore_case_and_know_nothing_else() {
        assert_eq!(context(16, "Shared_Buffers"), Some(Context::Postmaster));
        assert_eq!(context(16, "pg_stat_statements.max"), None);
        assert_eq!(context(16, "no_such_parameter"), None);
        assert_eq!(context(13, "shared_buffers"), None);
        assert!(parameters(13).is_empty());
    }

    #[test]
    fn malformed_tables_are_refused() {
        let cases = [
            ("", "no header"),
            ("parameter\t14\n", "does not start with"),
            ("name\tfourteen\n", "major \"fourteen\""),
            (
                "name\t14\t15\nwork_mem\tuser\n",
                "line 2: work_mem: 1 contexts for 2",
            ),
            ("name\t14\nWork_Mem\tuser\n", "not a lower-case"),
            (
                "name\t14\nwork_mem\tsometimes\n",
                "\"sometimes\" is not a pg_settings context",
            ),
            (
                "# note\nname\t14\nwork_mem\tuser\nwork_mem\t-\n",
                "line 4: \"work_mem\" appears twice",
            ),
        ];
        for (text, gist) in cases {
            let err = parse(text).err().unwrap_or_default();
            assert!(err.contains(gist), "{text:?}: {err:?} lacks {gist:?}");
        }
    }
}
