//! Users and databases: identifiers the role Job can use unquoted, the names the operator
//! keeps for itself, and references that resolve.

use std::collections::BTreeSet;

use crate::api::PostgresClusterSpec;
use crate::names;

use super::field::{Errors, Path};

const MAX_USERS: usize = 100;
const MAX_DATABASES: usize = 100;

/// Role names PostgreSQL reserves, beyond the `pg_` prefix.
const RESERVED_ROLES: [&str; 6] = [
    "public",
    "none",
    "current_user",
    "session_user",
    "current_role",
    "user",
];
const RESERVED_DATABASES: [&str; 3] = ["postgres", "template0", "template1"];

/// Role options the role Job may apply, with the option each contradicts.
const OPTIONS: [(&str, &str); 14] = [
    ("LOGIN", "NOLOGIN"),
    ("NOLOGIN", "LOGIN"),
    ("CREATEDB", "NOCREATEDB"),
    ("NOCREATEDB", "CREATEDB"),
    ("CREATEROLE", "NOCREATEROLE"),
    ("NOCREATEROLE", "CREATEROLE"),
    ("INHERIT", "NOINHERIT"),
    ("NOINHERIT", "INHERIT"),
    ("REPLICATION", "NOREPLICATION"),
    ("NOREPLICATION", "REPLICATION"),
    ("BYPASSRLS", "NOBYPASSRLS"),
    ("NOBYPASSRLS", "BYPASSRLS"),
    ("SUPERUSER", "NOSUPERUSER"),
    ("NOSUPERUSER", "SUPERUSER"),
];

/// An identifier the operator can use unquoted: lower-case, at most 63 bytes (NAMEDATALEN).
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

const IDENTIFIER_RULE: &str = "must be lower-case letters, digits and '_', starting with a letter or '_', at most 63 characters";

pub fn users_and_databases(s: &PostgresClusterSpec, e: &mut Errors) {
    let root = Path::new("spec");
    let databases = s.databases.as_deref().unwrap_or_default();
    let users = s.users.as_deref().unwrap_or_default();
    let db_names: BTreeSet<&str> = databases.iter().map(|d| d.name.as_str()).collect();
    let user_names: BTreeSet<&str> = users.iter().map(|u| u.name.as_str()).collect();

    if users.len() > MAX_USERS {
        e.too_many(&root.child("users"), users.len(), MAX_USERS);
    }
    let mut seen = BTreeSet::new();
    for (i, u) in users.iter().enumerate() {
        let up = root.child("users").index(i);
        let np = up.child("name");
        if !seen.insert(u.name.as_str()) {
            e.duplicate(&np, &u.name);
        } else if !is_identifier(&u.name) {
            e.invalid_str(&np, &u.name, IDENTIFIER_RULE);
        } else if u.name == names::SUPERUSER
            || u.name.starts_with("pg_")
            || u.name.starts_with(names::RESERVED_ROLE_PREFIX)
            || RESERVED_ROLES.contains(&u.name.as_str())
        {
            e.invalid_str(
                &np,
                &u.name,
                "is reserved: postgres, pg_* and pgpilot_* belong to PostgreSQL and the operator",
            );
        } else if u.name.ends_with('_') {
            e.invalid_str(
                &np,
                &u.name,
                "must not end with '_': its Secret name would end with '-'",
            );
        }
        options(
            &up.child("options"),
            u.options.as_deref().unwrap_or_default(),
            e,
        );
        let mut granted = BTreeSet::new();
        for (j, db) in u.databases.iter().flatten().enumerate() {
            let dp = up.child("databases").index(j);
            if !granted.insert(db.as_str()) {
                e.duplicate(&dp, db);
            } else if !db_names.contains(db.as_str()) {
                e.not_found(&dp, db);
            }
        }
    }

    if databases.len() > MAX_DATABASES {
        e.too_many(&root.child("databases"), databases.len(), MAX_DATABASES);
    }
    let mut seen = BTreeSet::new();
    for (i, d) in databases.iter().enumerate() {
        let dp = root.child("databases").index(i);
        if !seen.insert(d.name.as_str()) {
            e.duplicate(&dp.child("name"), &d.name);
        } else if !is_identifier(&d.name) {
            e.invalid_str(&dp.child("name"), &d.name, IDENTIFIER_RULE);
        } else if RESERVED_DATABASES.contains(&d.name.as_str()) {
            e.invalid_str(
                &dp.child("name"),
                &d.name,
                "already exists in every cluster",
            );
        }
        if let Some(owner) = &d.owner
            && owner != names::SUPERUSER
            && !user_names.contains(owner.as_str())
        {
            e.not_found(&dp.child("owner"), owner);
        }
    }
}

/// A role option as the roles Job writes it: a known keyword, or `CONNECTION LIMIT n`
/// with `n` rebuilt from the parsed number; `None` for anything else. Validation and the
/// Job share it, so what reaches SQL is only ever taken from this list, never the string
/// as written.
pub fn normalized_option(raw: &str) -> Option<String> {
    let o = words_upper(raw);
    if let Some(n) = o.strip_prefix("CONNECTION LIMIT ") {
        let n = n.parse::<i32>().ok().filter(|n| *n >= -1)?;
        return Some(format!("CONNECTION LIMIT {n}"));
    }
    OPTIONS
        .iter()
        .find(|(k, _)| *k == o)
        .map(|(k, _)| (*k).to_owned())
}

fn words_upper(raw: &str) -> String {
    raw.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase()
}

/// Role options: the known keywords once each, no contradictions, `CONNECTION LIMIT n`;
/// no `PASSWORD` (the operator manages it) and nothing else (no SQL reaches the Job).
fn options(p: &Path, opts: &[String], e: &mut Errors) {
    let mut seen = BTreeSet::new();
    for (i, raw) in opts.iter().enumerate() {
        let op = p.index(i);
        let o = words_upper(raw);
        if o.starts_with("PASSWORD") || o.starts_with("ENCRYPTED") {
            e.forbidden(
                &op,
                "passwords are generated by the operator and kept in the user's Secret",
            );
            continue;
        }
        if o.starts_with("CONNECTION LIMIT ") {
            if normalized_option(raw).is_none() {
                e.invalid_str(
                    &op,
                    raw,
                    "CONNECTION LIMIT needs a whole number, -1 for no limit",
                );
            }
            if !seen.insert("CONNECTION LIMIT".to_owned()) {
                e.duplicate(&op, raw);
            }
            continue;
        }
        let Some((_, opposite)) = OPTIONS.iter().find(|(k, _)| *k == o) else {
            let supported: Vec<&str> = OPTIONS
                .iter()
                .map(|(k, _)| *k)
                .chain(["CONNECTION LIMIT n"])
                .collect();
            e.not_supported(&op, raw, &supported);
            continue;
        };
        if seen.contains(*opposite) {
            e.invalid_str(&op, raw, format!("contradicts {opposite}"));
        } else if !seen.insert(o.clone()) {
            e.duplicate(&op, raw);
        }
        if o == "SUPERUSER" {
            e.warn(&op, "a superuser bypasses every permission check; prefer a role with only the rights it needs");
        }
    }
    if !opts.is_empty()
        && !seen.contains("LOGIN")
        && !seen.contains("SUPERUSER")
        && !seen.contains("NOLOGIN")
    {
        e.warn(
            p,
            "no LOGIN option: the role cannot connect (add LOGIN, or NOLOGIN to say it is a group)",
        );
    }
}
