//! The targets of the issue-13 scenarios: a measured value, its bound, and
//! whether it was met (✔/✘), printed as one table at the end of a run.

use std::fmt::Write as _;

/// The bound a value must respect.
#[derive(Clone, Copy, Debug)]
pub enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

/// One target.
#[derive(Clone, Debug)]
pub struct Goal {
    /// What was measured (a ratio, a time, a count).
    pub what: String,
    pub value: f64,
    pub bound: Bound,
    /// Printed after the value and the bound (`×`, ` µs`, ` s`).
    pub unit: &'static str,
    /// Range over rounds, or why it was missed.
    pub note: String,
}

impl Goal {
    pub fn at_most(what: impl Into<String>, value: f64, limit: f64, unit: &'static str) -> Goal {
        Goal {
            what: what.into(),
            value,
            bound: Bound::AtMost(limit),
            unit,
            note: String::new(),
        }
    }

    pub fn at_least(what: impl Into<String>, value: f64, limit: f64, unit: &'static str) -> Goal {
        Goal {
            what: what.into(),
            value,
            bound: Bound::AtLeast(limit),
            unit,
            note: String::new(),
        }
    }

    /// A yes/no target: `ok` is the value (1 or 0), which must be 1.
    pub fn holds(what: impl Into<String>, ok: bool) -> Goal {
        Goal::at_least(what, if ok { 1.0 } else { 0.0 }, 1.0, "")
    }

    pub fn note(mut self, note: impl Into<String>) -> Goal {
        self.note = note.into();
        self
    }

    /// A value that could not be measured (NaN) never meets its target.
    pub fn met(&self) -> bool {
        match self.bound {
            Bound::AtMost(limit) => self.value <= limit,
            Bound::AtLeast(limit) => self.value >= limit,
        }
    }

    fn cells(&self) -> (String, String) {
        let digits = if self.unit == " µs" { 0 } else { 2 };
        let value = if self.unit.is_empty() && matches!(self.bound, Bound::AtLeast(l) if l == 1.0) {
            if self.value >= 1.0 { "yes" } else { "no" }.to_owned()
        } else {
            format!("{:.digits$}{}", self.value, self.unit)
        };
        let bound = match self.bound {
            Bound::AtMost(limit) => format!("≤ {limit:.digits$}{}", self.unit),
            Bound::AtLeast(limit) if self.unit.is_empty() && limit == 1.0 => "yes".to_owned(),
            Bound::AtLeast(limit) => format!("≥ {limit:.digits$}{}", self.unit),
        };
        (value, bound)
    }
}

/// The markdown table of `goals`, under `title`.
pub fn table(title: &str, goals: &[Goal]) -> String {
    let mut text = format!(
        "## {title}\n\n| target | measured | bound | met | notes |\n|---|---|---|---|---|\n"
    );
    for goal in goals {
        let (value, bound) = goal.cells();
        let _ = writeln!(
            text,
            "| {} | **{value}** | {bound} | {} | {} |",
            goal.what,
            if goal.met() { "✔" } else { "✘" },
            goal.note
        );
    }
    let met = goals.iter().filter(|g| g.met()).count();
    let _ = writeln!(text, "\nTargets met: {met} of {}.", goals.len());
    text
}

/// The `q` quantile of `values` (nearest rank); NaN when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(values: &[f64]) -> f64 {
    quantile(values, 0.5)
}

/// `min–max` of `values`, for a note.
pub fn range(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("rounds {min:.2}–{max:.2}")
}
