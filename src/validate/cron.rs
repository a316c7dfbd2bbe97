//! Cron schedules as the Kubernetes CronJob controller accepts them: five fields, or one of
//! the `@` macros. Time-zone prefixes are refused (CronJob has `timeZone` for that).

const MACROS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// `?` (no specific value) is allowed in the day fields.
    question: bool,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        question: false,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        question: false,
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        question: true,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        question: false,
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &DAYS,
        question: true,
    },
];

/// Checks a schedule; the error says which field is wrong and why.
pub fn check(schedule: &str) -> Result<(), String> {
    let s = schedule.trim();
    if s.len() > 256 {
        return Err("must be at most 256 characters".into());
    }
    if s.starts_with("TZ=") || s.starts_with("CRON_TZ=") {
        return Err("time zones in the schedule are not supported; schedules run in the controller-manager's time zone".into());
    }
    if s.starts_with('@') {
        return if MACROS.contains(&s) {
            Ok(())
        } else {
            Err(format!("unknown macro; use one of {}", MACROS.join(", ")))
        };
    }
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!(
            "must have 5 fields (minute hour day-of-month month day-of-week), found {}",
            parts.len()
        ));
    }
    for (part, field) in parts.iter().zip(FIELDS.iter()) {
        check_field(part, field).map_err(|e| format!("{} field {part:?}: {e}", field.name))?;
    }
    Ok(())
}

fn check_field(part: &str, f: &Field) -> Result<(), String> {
    if f.question && part == "?" {
        return Ok(());
    }
    for item in part.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step {
            let n: u32 = step
                .parse()
                .map_err(|_| format!("step {step:?} is not a number"))?;
            if n == 0 || n > f.max {
                return Err(format!("step must be between 1 and {}", f.max));
            }
        }
        if range == "*" {
            continue;
        }
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (value(a, f)?, value(b, f)?),
            None => {
                let v = value(range, f)?;
                (v, v)
            }
        };
        if lo > hi {
            return Err(format!("range start {lo} is after its end {hi}"));
        }
    }
    Ok(())
}

fn value(s: &str, f: &Field) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = f.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + f.min);
    }
    let v: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v < f.min || v > f.max {
        return Err(format!("{v} is outside {}-{}", f.min, f.max));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_what_cronjobs_accept() {
        for ok in [
            "0 1 * * 0",
            "*/15 * * * *",
            "0 1 * * 1-6",
            "30 2 1,15 * ?",
            "0 0 * JAN-MAR mon",
            "@daily",
            "5 4 * * 7",
            "0 0-23/2 * * *",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_with_the_reason() {
        assert!(check("0 1 * *").unwrap_err().contains("found 4"));
        assert!(
            check("60 * * * *")
                .unwrap_err()
                .contains("minute field \"60\": 60 is outside 0-59")
        );
        assert!(check("* 5-2 * * *").unwrap_err().contains("after its end"));
        assert!(check("*/0 * * * *").unwrap_err().contains("step"));
        assert!(check("@sometimes").unwrap_err().contains("unknown macro"));
        assert!(
            check("TZ=UTC 0 1 * * *")
                .unwrap_err()
                .contains("time zones")
        );
        assert!(check("? * * * *").is_err());
        assert!(check("0 0 0 * *").unwrap_err().contains("day of month"));
    }
}
