//! Cron schedules (`17 3 * * *`, `@daily`) and their exact translation
//! into systemd `OnCalendar=` expressions.
//!
//! Every field is expanded to the set of values it allows, so lists, ranges,
//! steps and names all translate the same way and nothing is approximated.
//! Days follow Vixie cron (Debian's cron): when both day-of-month and
//! day-of-week are restricted and neither field starts with `*`, a day
//! matching either runs the job — which takes two `OnCalendar=` lines, one
//! per day field; otherwise a day must match both.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// A parsed cron schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The schedule as cron reads it, fields separated by single spaces.
    pub cron: String,
    minutes: Field,
    hours: Field,
    days: Field,
    months: Field,
    weekdays: Field,
}

/// The values one field allows, and whether it was written starting with `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    values: BTreeSet<u8>,
    star: bool,
    /// All values of the field's range: no restriction at all.
    full: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const SYSTEMD_DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

impl Schedule {
    /// Parses five cron fields or an `@` shortcut.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            "@reboot" => return Err("`@reboot` is not a time; a timer cannot express it".into()),
            s if s.starts_with('@') => {
                return Err(format!(
                    "unknown shortcut `{s}`; use @yearly, @monthly, @weekly, @daily or @hourly"
                ));
            }
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "a cron schedule has 5 fields (minute hour day-of-month month day-of-week), this has {}",
                fields.len()
            ));
        };
        let cron = if text.starts_with('@') {
            text.to_owned()
        } else {
            fields.join(" ")
        };
        Ok(Schedule {
            cron,
            minutes: Field::parse(minute, "minute", 0, 59, &[])?,
            hours: Field::parse(hour, "hour", 0, 23, &[])?,
            days: Field::parse(day, "day-of-month", 1, 31, &[])?,
            months: Field::parse(month, "month", 1, 12, &MONTHS)?,
            weekdays: Field::parse(weekday, "day-of-week", 0, 7, &DAYS)?.weekdays(),
        })
    }

    /// The `OnCalendar=` expressions that fire exactly when cron would.
    pub fn calendar(&self) -> Vec<String> {
        let time = format!("{}:{}:00", self.hours.systemd(2), self.minutes.systemd(2));
        let month = self.months.systemd(2);
        let date = |days: &Field| format!("*-{month}-{}", days.systemd(2));
        let weekdays = || {
            let names: Vec<&str> = self
                .weekdays
                .values
                .iter()
                .map(|&d| SYSTEMD_DAYS[usize::from(d)])
                .collect();
            names.join(",")
        };
        if !self.days.star && !self.weekdays.star {
            vec![
                format!("{} {time}", date(&self.days)),
                format!("{} {} {time}", weekdays(), date(&Field::any(1, 31))),
            ]
        } else if self.weekdays.full {
            vec![format!("{} {time}", date(&self.days))]
        } else {
            vec![format!("{} {} {time}", weekdays(), date(&self.days))]
        }
    }
}

impl Field {
    fn any(lo: u8, hi: u8) -> Field {
        Field {
            values: (lo..=hi).collect(),
            star: true,
            full: true,
        }
    }

    /// `*`, `5`, `1-5`, `*/15`, `1-30/2`, `mon-fri`, lists of these.
    fn parse(text: &str, name: &str, lo: u8, hi: u8, names: &[&str]) -> Result<Field, String> {
        let number = |s: &str| -> Result<u8, String> {
            if let Some(i) = names.iter().position(|n| s.eq_ignore_ascii_case(n)) {
                return Ok(u8::try_from(i).unwrap_or(0) + u8::from(names.len() == 12));
            }
            // Digits only, as cron reads them: Rust would also take `+5`.
            let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            match s.parse::<u8>() {
                Ok(v) if digits && (lo..=hi).contains(&v) => Ok(v),
                _ => Err(format!(
                    "`{s}` is not valid in the {name} field ({lo}-{hi}{})",
                    if names.is_empty() { "" } else { " or a name" }
                )),
            }
        };
        let mut values = BTreeSet::new();
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => match step.parse::<u8>() {
                    Ok(s) if s > 0 && step.bytes().all(|b| b.is_ascii_digit()) => (range, s),
                    _ => return Err(format!("`{step}` is not a step in the {name} field")),
                },
                None => (part, 1),
            };
            let (start, end) = match range {
                "*" => (lo, hi),
                r => match r.split_once('-') {
                    Some((a, b)) => (number(a)?, number(b)?),
                    None if part.contains('/') => (number(r)?, hi),
                    None => (number(r)?, number(r)?),
                },
            };
            if start > end {
                return Err(format!(
                    "the range `{range}` in the {name} field runs backwards"
                ));
            }
            values.extend((start..=end).step_by(usize::from(step)));
        }
        let full = values.len() == usize::from(hi - lo) + 1;
        Ok(Field {
            values,
            star: text.starts_with('*'),
            full,
        })
    }

    /// Day-of-week 7 is Sunday, like 0.
    fn weekdays(mut self) -> Field {
        if self.values.remove(&7) {
            self.values.insert(0);
        }
        self.full = self.values.len() == 7;
        self
    }

    /// `*`, or the values as a comma list with runs written `a..b`.
    fn systemd(&self, width: usize) -> String {
        if self.full {
            return "*".into();
        }
        let values: Vec<u8> = self.values.iter().copied().collect();
        let mut out = String::new();
        let mut i = 0;
        while i < values.len() {
            let mut j = i;
            while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
                j += 1;
            }
            if !out.is_empty() {
                out.push(',');
            }
            if j >= i + 2 {
                let _ = write!(out, "{:0width$}..{:0width$}", values[i], values[j]);
                i = j + 1;
            } else {
                let _ = write!(out, "{:0width$}", values[i]);
                i += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(s: &str) -> Vec<String> {
        Schedule::parse(s).unwrap().calendar()
    }

    #[test]
    fn translations() {
        assert_eq!(cal("17 3 * * *"), ["*-*-* 03:17:00"]);
        assert_eq!(cal("*/15 * * * *"), ["*-*-* *:00,15,30,45:00"]);
        assert_eq!(
            cal("0 9-17 * * mon-fri"),
            ["Mon,Tue,Wed,Thu,Fri *-*-* 09..17:00:00"]
        );
        assert_eq!(
            cal("0 0 1,15 * 1"),
            ["*-*-01,15 00:00:00", "Mon *-*-* 00:00:00"]
        );
        assert_eq!(
            cal("0 0 */2 * 1"),
            ["Mon *-*-01,03,05,07,09,11,13,15,17,19,21,23,25,27,29,31 00:00:00"]
        );
        assert_eq!(cal("@weekly"), ["Sun *-*-* 00:00:00"]);
        assert_eq!(cal("30 4 * jan,jul 7"), ["Sun *-01,07-* 04:30:00"]);
    }

    #[test]
    fn errors() {
        assert!(
            Schedule::parse("60 * * * *")
                .unwrap_err()
                .contains("`60` is not valid in the minute field")
        );
        assert!(Schedule::parse("* * *").unwrap_err().contains("5 fields"));
        assert!(Schedule::parse("@reboot").is_err());
        assert!(
            Schedule::parse("5-1 * * * *")
                .unwrap_err()
                .contains("backwards")
        );
        assert!(Schedule::parse("*/0 * * * *").is_err());
        assert!(Schedule::parse("+5 3 * * *").is_err());
        assert!(Schedule::parse("*/+5 * * * *").is_err());
        assert!(Schedule::parse("05 3 * * *").is_ok());
    }
}
