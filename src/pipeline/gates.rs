//! Quality gates: conditions on a finished run's summary that CI can fail on (exit 5).
//!
//! A gate is either a bound on one method's mean (`{metric: psnr, method: noise_da, test: x,
//! min: 30}`) or an ordering of two methods' means (`{compare: noise_da > source_only}`). They
//! are checked after every report is written, so a failing run still leaves its full report.

use serde::{Deserialize, Serialize};

use crate::reports::{Column, Table};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    #[default]
    Psnr,
    Ssim,
}

impl Metric {
    fn column(self) -> &'static str {
        match self {
            Metric::Psnr => "psnr_mean",
            Metric::Ssim => "ssim_mean",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Metric::Psnr => "psnr",
            Metric::Ssim => "ssim",
        }
    }
}

/// One gate of `gates:` in a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    #[serde(default)]
    pub metric: Metric,
    /// The method (or input / variant) whose mean is bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Test set; default: the pipeline's first (the target domain's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// `a > b` or `a >= b`: method a's mean against method b's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<String>,
}

/// A parsed `compare` clause.
#[derive(Debug, PartialEq)]
pub struct Comparison {
    pub left: String,
    pub strict: bool,
    pub right: String,
}

pub(crate) fn parse_compare(s: &str) -> Result<Comparison, String> {
    let (op, strict) = if s.contains(">=") { (">=", false) } else { (">", true) };
    let parts: Vec<&str> = s.split(op).map(str::trim).collect();
    match parts.as_slice() {
        [l, r] if !l.is_empty() && !r.is_empty() && !r.contains('>') => {
            Ok(Comparison { left: l.to_string(), strict, right: r.to_string() })
        }
        _ => Err(format!("expected \"METHOD > METHOD\" or \"METHOD >= METHOD\", got \"{s}\"")),
    }
}

impl Gate {
    /// Shape check at load time; `methods` are the run's recipes plus `input`, `tests` its
    /// test set names. The message names the offending key (relative to the gate).
    pub(crate) fn validate(&self, methods: &[&str], tests: &[&str]) -> Result<(), (String, String)> {
        let known = |key: &str, m: &str| {
            if methods.contains(&m) {
                Ok(())
            } else {
                Err((key.to_string(), format!("\"{m}\" is not one of this run's methods ({})", methods.join(", "))))
            }
        };
        if let Some(t) = &self.test
            && !tests.contains(&t.as_str())
        {
            return Err(("test".into(), format!("no test set \"{t}\" (have {})", tests.join(", "))));
        }
        match (&self.compare, &self.method) {
            (Some(c), None) => {
                if self.min.is_some() || self.max.is_some() {
                    return Err(("compare".into(), "a comparison takes no min/max".into()));
                }
                let c = parse_compare(c).map_err(|m| ("compare".to_string(), m))?;
                known("compare", &c.left)?;
                known("compare", &c.right)
            }
            (None, Some(m)) => {
                known("method", m)?;
                if self.min.is_none() && self.max.is_none() {
                    return Err(("min".into(), "a method gate needs min and/or max".into()));
                }
                Ok(())
            }
            (Some(_), Some(_)) => Err(("compare".into(), "give either compare or method, not both".into())),
            (None, None) => Err(("method".into(), "give a method with min/max, or compare: A > B".into())),
        }
    }
}

/// The outcome of one gate.
#[derive(Clone, Debug, Serialize)]
pub struct GateResult {
    pub gate: String,
    pub passed: bool,
    pub detail: String,
}

/// Mean of `metric` for (`test`, `method`) in a run summary.
fn mean(summary: &Table, test: &str, method: &str, metric: Metric) -> Option<f64> {
    let (Some(Column::Str(t)), Some(Column::Str(m)), Some(Column::F64(v))) =
        (summary.get("test_set"), summary.get("method"), summary.get(metric.column()))
    else {
        return None;
    };
    (0..summary.rows()).find(|&i| t[i].as_deref() == Some(test) && m[i].as_deref() == Some(method)).and_then(|i| v[i])
}

/// Check every gate against a run's summary; `first_test` is the default test set.
pub fn check(gates: &[Gate], summary: &Table, first_test: &str) -> Vec<GateResult> {
    gates
        .iter()
        .map(|g| {
            let test = g.test.as_deref().unwrap_or(first_test);
            let metric = g.metric;
            if let Some(c) = g.compare.as_deref().map(parse_compare) {
                let c = c.expect("validated at load");
                let op = if c.strict { ">" } else { ">=" };
                let gate = format!("{} {op} {} ({} on {test})", c.left, c.right, metric.name());
                return match (mean(summary, test, &c.left, metric), mean(summary, test, &c.right, metric)) {
                    (Some(a), Some(b)) => GateResult {
                        gate,
                        passed: if c.strict { a > b } else { a >= b },
                        detail: format!("{a:.4} vs {b:.4} (Δ {:+.4})", a - b),
                    },
                    _ => GateResult { gate, passed: false, detail: "no score for one of the methods".into() },
                };
            }
            let method = g.method.as_deref().expect("validated at load");
            let bounds = match (g.min, g.max) {
                (Some(lo), Some(hi)) => format!("in [{lo}, {hi}]"),
                (Some(lo), None) => format!(">= {lo}"),
                (None, Some(hi)) => format!("<= {hi}"),
                (None, None) => unreachable!("validated at load"),
            };
            let gate = format!("{method} {} {bounds} on {test}", metric.name());
            match mean(summary, test, method, metric) {
                Some(v) => GateResult {
                    gate,
                    passed: g.min.is_none_or(|lo| v >= lo) && g.max.is_none_or(|hi| v <= hi),
                    detail: format!("{v:.4}"),
                },
                None => GateResult { gate, passed: false, detail: "no score".into() },
            }
        })
        .collect()
}

/// The gates as a Markdown section of summary.md.
pub(crate) fn markdown(results: &[GateResult]) -> String {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| vec![r.gate.clone(), r.detail.clone(), if r.passed { "pass" } else { "FAIL" }.to_string()])
        .collect();
    let header = ["gate", "value", "result"].map(String::from);
    format!("\nQuality gates:\n\n{}", crate::reports::markdown_table(&header, &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Table {
        let mut t = Table::default();
        let s = |v: &[&str]| Column::Str(v.iter().map(|x| Some(x.to_string())).collect());
        t.push("test_set", s(&["cam", "cam", "cam", "awgn"]))
            .push("method", s(&["input", "source_only", "noise_da", "noise_da"]))
            .push("psnr_mean", Column::F64(vec![Some(22.4), Some(20.5), Some(20.1), Some(25.0)]))
            .push("ssim_mean", Column::F64(vec![Some(0.7), Some(0.74), Some(0.75), Some(0.8)]));
        t
    }

    fn gate(yaml_like: &str) -> Gate {
        serde_json::from_str(yaml_like).unwrap()
    }

    #[test]
    fn bounds_and_comparisons_on_the_summary() {
        let gates = [
            gate(r#"{"method": "noise_da", "min": 20.0}"#),
            gate(r#"{"method": "noise_da", "min": 21.0}"#),
            gate(r#"{"method": "noise_da", "test": "awgn", "min": 24, "max": 26}"#),
            gate(r#"{"compare": "noise_da > source_only"}"#),
            gate(r#"{"compare": "noise_da >= source_only", "metric": "ssim"}"#),
            gate(r#"{"compare": "source_only > noise_da", "test": "awgn"}"#),
        ];
        let r = check(&gates, &summary(), "cam");
        let passed: Vec<bool> = r.iter().map(|r| r.passed).collect();
        assert_eq!(passed, [true, false, true, false, true, false]);
        assert_eq!(r[3].gate, "noise_da > source_only (psnr on cam)");
        assert_eq!(r[3].detail, "20.1000 vs 20.5000 (Δ -0.4000)");
        assert_eq!(r[5].detail, "no score for one of the methods");
        assert!(markdown(&r).contains("| FAIL"));
    }

    #[test]
    fn malformed_gates_name_their_key() {
        let methods = ["input", "source_only", "noise_da"];
        let tests = ["cam"];
        let err = |g: &str| gate(g).validate(&methods, &tests).unwrap_err();
        assert_eq!(err(r#"{"compare": "noise_da >> x"}"#).0, "compare");
        assert!(err(r#"{"compare": "noise_da > nosie_da"}"#).1.contains("\"nosie_da\" is not one of"));
        assert_eq!(err(r#"{"method": "noise_da"}"#).0, "min");
        assert_eq!(err(r#"{"method": "noise_da", "min": 1, "test": "x"}"#).0, "test");
        assert_eq!(err(r#"{"min": 1}"#).0, "method");
        assert!(gate(r#"{"compare": "noise_da >= source_only"}"#).validate(&methods, &tests).is_ok());
        assert_eq!(parse_compare("a >= b").unwrap(), Comparison { left: "a".into(), strict: false, right: "b".into() });
    }
}
