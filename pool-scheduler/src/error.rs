//! The crate's error type and the validation problems of a pools file.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while loading a pools configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pools file is not valid JSON (the message names line and column).
    #[error("pools file is not valid JSON: {message}")]
    Json {
        /// serde_json's message, with line and column.
        message: String,
    },
    /// The pools file (or the defaults) has problems; every problem found is listed.
    #[error("pools configuration has {} problem(s): {}{}", problems.len(), join_problems(problems), join_warnings(warnings))]
    Invalid {
        /// Every problem, in file order; each renders as one line naming pool, key and value.
        problems: Vec<Problem>,
        /// The warnings found on the way (an unknown key is often the cause of a problem).
        warnings: Vec<Warning>,
    },
    /// The pools file could not be read.
    #[error("cannot read pools file {}: {source}", path.display())]
    Io {
        /// The file that was read.
        path: PathBuf,
        /// The underlying IO error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Configuration errors are never fixed by retrying: this is always `false`.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// The validation problems, if this is [`Error::Invalid`] (empty otherwise).
    #[must_use]
    pub fn problems(&self) -> &[Problem] {
        match self {
            Error::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn join_warnings(warnings: &[Warning]) -> String {
    if warnings.is_empty() {
        return String::new();
    }
    let list = warnings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    format!(" (warnings: {list})")
}

/// Where a problem or warning was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The top level of the file (or the environment defaults).
    TopLevel,
    /// A pool, by name when it has a usable one, else by its index in the `pools` list.
    Pool {
        /// The pool's name, when known.
        name: Option<String>,
        /// The pool's index in the `pools` list.
        index: usize,
    },
}

impl Location {
    /// Sort key: the top level first, then pools in file order.
    fn order(&self) -> usize {
        match self {
            Location::TopLevel => 0,
            Location::Pool { index, .. } => index + 1,
        }
    }
}

/// Sorts problems into file order (stable: per-location order is kept).
pub(crate) fn sort_problems(problems: &mut [Problem]) {
    problems.sort_by_key(|p| p.location.order());
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::TopLevel => f.write_str("pools file"),
            Location::Pool {
                name: Some(name), ..
            } => write!(f, "pool {name:?}"),
            Location::Pool { name: None, index } => write!(f, "pools[{index}]"),
        }
    }
}

/// One validation problem: where, which key, and what is wrong (with the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The pool (or top level) the problem belongs to.
    pub location: Location,
    /// The key in question (e.g. `labels`).
    pub key: String,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}`: {}", self.location, self.key, self.kind)
    }
}

/// The kinds of validation problems (the crate README lists them all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The top level is neither an object nor a list of pools.
    #[error("expected an object with a `pools` list, found {found}")]
    NotAConfig {
        /// A short rendering of what was found.
        found: String,
    },
    /// The `pools` list is empty or absent.
    #[error("no pools defined")]
    NoPools,
    /// A pool entry is not a JSON object.
    #[error("expected an object, found {found}")]
    NotAnObject {
        /// A short rendering of what was found.
        found: String,
    },
    /// A required key is absent (and no default applies).
    #[error("required key is missing{hint}")]
    Missing {
        /// Where a default could come from (may be empty).
        hint: String,
    },
    /// The value has the wrong JSON type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What was expected.
        expected: &'static str,
        /// A short rendering of what was found.
        found: String,
    },
    /// The value is not a non-negative integer (numbers and numeric strings are accepted).
    #[error("expected a non-negative integer, found {found}")]
    NotAnInteger {
        /// A short rendering of what was found.
        found: String,
    },
    /// An integer outside its allowed range.
    #[error("{value} is outside {min}..={max}")]
    OutOfRange {
        /// The value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A string or list that must not be empty is empty.
    #[error("must not be empty{hint}")]
    Empty {
        /// Where a default could come from (may be empty).
        hint: String,
    },
    /// A pool name that cannot be used (whitespace, control characters, too long).
    #[error("invalid pool name {value:?}: {reason}")]
    InvalidName {
        /// The name.
        value: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// Two pools have the same name (compared as their `ghr-pool-…` tag: case-insensitively).
    #[error("duplicate pool name {value:?} (same as pool {other:?})")]
    DuplicateName {
        /// This pool's name.
        value: String,
        /// The earlier pool with the same name.
        other: String,
    },
    /// `vmid_start > vmid_end`.
    #[error("vmid_start {start} is greater than vmid_end {end}")]
    ReversedRange {
        /// `vmid_start`.
        start: u32,
        /// `vmid_end`.
        end: u32,
    },
    /// Two pools' VMID ranges overlap.
    #[error("VMID range {start}..={end} overlaps pool {other:?} ({other_start}..={other_end})")]
    OverlappingRange {
        /// This pool's start.
        start: u32,
        /// This pool's end.
        end: u32,
        /// The other pool.
        other: String,
        /// The other pool's start.
        other_start: u32,
        /// The other pool's end.
        other_end: u32,
    },
    /// `min_idle` above a cap that applies to the pool.
    #[error("min_idle {min_idle} is above {cap_key} {cap}")]
    MinIdleAboveCap {
        /// The pool's `min_idle`.
        min_idle: u32,
        /// The cap: `max_runners`, `max_total_runners` or `the VMID range size`.
        cap_key: &'static str,
        /// The cap's value.
        cap: u64,
    },
    /// The `min_idle` of all pools add up to more than `max_total_runners`.
    #[error("the pools' min_idle add up to {sum}, above max_total_runners {cap}")]
    MinIdleSumAboveTotal {
        /// Sum of `min_idle`.
        sum: u64,
        /// `max_total_runners`.
        cap: u32,
    },
    /// The same template name is used by two pools with different `os`.
    #[error("template {template:?} has os {os} here but os {other_os} in pool {other:?}")]
    TemplateOsConflict {
        /// The template name.
        template: String,
        /// This pool's os.
        os: &'static str,
        /// The other pool.
        other: String,
        /// The other pool's os.
        other_os: &'static str,
    },
    /// A duration that does not parse or is zero.
    #[error(
        "invalid duration {value}: {reason} (use seconds or e.g. \"90s\", \"10m\", \"12h\", \"1h30m\")"
    )]
    BadDuration {
        /// A short rendering of the value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// `boot_timeout` is not shorter than `max_lifetime`.
    #[error("boot_timeout ({boot_secs}s) must be shorter than max_lifetime ({lifetime_secs}s)")]
    BootTimeoutNotBelowLifetime {
        /// `boot_timeout` in seconds.
        boot_secs: u64,
        /// `max_lifetime` in seconds.
        lifetime_secs: u64,
    },
    /// A value outside a fixed set (`injection`, `os`, booleans).
    #[error("invalid value {value}: expected one of {allowed}")]
    BadChoice {
        /// A short rendering of the value.
        value: String,
        /// The allowed values.
        allowed: &'static str,
    },
    /// A `runner_name_prefix` that cannot start a DNS label.
    #[error("invalid runner_name_prefix {value:?}: {reason}")]
    InvalidPrefix {
        /// The prefix as written.
        value: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A `runner_name_prefix` that equals, starts or is started by another pool's prefix.
    #[error(
        "runner_name_prefix {value:?} and pool {other:?}'s {other_value:?} are prefixes of one another: VM ownership would be ambiguous"
    )]
    PrefixConflict {
        /// This pool's prefix (normalised: ends with `-`).
        value: String,
        /// The other pool.
        other: String,
        /// The other pool's prefix.
        other_value: String,
    },
}

/// A non-fatal remark about the configuration (e.g. an unknown key, probably a typo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The pool (or top level) it belongs to.
    pub location: Location,
    /// The key in question.
    pub key: String,
    /// What was noticed.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}`: {}", self.location, self.key, self.message)
    }
}
