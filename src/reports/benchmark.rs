//! The benchmark table across runs: task × method × test set, in the layout of the paper's
//! Tables 1–3 (one column per task, PSNR / SSIM per method), with the paper's numbers beside
//! ours, labelled as measured on its real data.

use crate::task::Task;

use super::{Column, INPUT, Table, markdown_table};

/// The paper's Tables 1–3 (METHOD.md): source-only ("Vanilla") and Noise-DA on the real test
/// sets. Facts from the paper, for reference only: our runs are on other data and budgets.
pub const PAPER: [(Task, &str, &str, f64, f64); 6] = [
    (Task::Denoise, "source_only", "SIDD validation", 26.58, 0.6132),
    (Task::Denoise, "noise_da", "SIDD validation", 34.71, 0.9202),
    (Task::Derain, "source_only", "SPA-Data test", 33.04, 0.9540),
    (Task::Derain, "noise_da", "SPA-Data test", 34.39, 0.9571),
    (Task::Deblur, "source_only", "RealBlur-J test", 26.27, 0.8012),
    (Task::Deblur, "noise_da", "RealBlur-J test", 26.46, 0.8048),
];

/// One finished run's summary (the run's `summary` table) and what it was.
pub struct RunSummary {
    pub run_id: String,
    pub pipeline: String,
    pub task: Task,
    /// Test sets drawn from the pipeline's target dataset: the columns of the paper's layout
    /// (others, e.g. the synthetic source's own test set, stay in the long table).
    pub target_tests: Vec<String>,
    pub summary: Table,
}

fn task_name(t: Task) -> &'static str {
    match t {
        Task::Denoise => "denoise",
        Task::Derain => "derain",
        Task::Deblur => "deblur",
    }
}

/// Long table: one row per (run, test set, method) with our means, then the paper's rows
/// (`source` = "paper: <its test set>").
pub(crate) fn benchmark_table(runs: &[RunSummary]) -> Table {
    let (mut task, mut pipeline, mut run, mut test, mut protocol, mut method) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut psnr, mut ssim, mut seeds, mut source, mut role) = (vec![], vec![], vec![], vec![], vec![]);
    for r in runs {
        let s = &r.summary;
        let text = |name: &str, i: usize| match s.get(name) {
            Some(Column::Str(v)) => v[i].clone(),
            _ => None,
        };
        let num = |name: &str, i: usize| match s.get(name) {
            Some(Column::F64(v)) => v[i],
            _ => None,
        };
        for i in 0..s.rows() {
            task.push(Some(task_name(r.task).to_string()));
            pipeline.push(Some(r.pipeline.clone()));
            run.push(Some(r.run_id.clone()));
            test.push(text("test_set", i));
            protocol.push(text("protocol", i));
            method.push(text("method", i));
            psnr.push(num("psnr_mean", i));
            ssim.push(num("ssim_mean", i));
            seeds.push(match s.get("seeds") {
                Some(Column::U64(v)) => v[i],
                _ => None,
            });
            source.push(Some("ours".to_string()));
            let on_target = text("test_set", i).is_some_and(|t| r.target_tests.contains(&t));
            role.push(Some(if on_target { "target" } else { "other" }.to_string()));
        }
    }
    for (t, m, set, p, q) in PAPER {
        task.push(Some(task_name(t).to_string()));
        pipeline.push(None);
        run.push(None);
        test.push(Some(set.to_string()));
        protocol.push(None);
        method.push(Some(m.to_string()));
        psnr.push(Some(p));
        ssim.push(Some(q));
        seeds.push(None);
        source.push(Some("paper".to_string()));
        role.push(Some("target".to_string()));
    }
    let mut t = Table::default();
    t.push("task", Column::Str(task))
        .push("pipeline", Column::Str(pipeline))
        .push("run_id", Column::Str(run))
        .push("test_set", Column::Str(test))
        .push("protocol", Column::Str(protocol))
        .push("method", Column::Str(method))
        .push("psnr_mean", Column::F64(psnr))
        .push("ssim_mean", Column::F64(ssim))
        .push("seeds", Column::U64(seeds))
        .push("role", Column::Str(role))
        .push("source", Column::Str(source));
    t
}

/// The paper's layout: one column per (task, target test set), one row per method,
/// "PSNR / SSIM" cells; the paper's rows last, each task's column holding its number on its
/// own test set.
pub fn benchmark_markdown(table: &Table) -> String {
    let str_at = |name: &str, i: usize| match table.get(name) {
        Some(Column::Str(v)) => v[i].clone().unwrap_or_default(),
        _ => String::new(),
    };
    let f_at = |name: &str, i: usize| match table.get(name) {
        Some(Column::F64(v)) => v[i],
        _ => None,
    };
    let cell = |i: usize| match (f_at("psnr_mean", i), f_at("ssim_mean", i)) {
        (Some(p), Some(s)) => format!("{p:.2} / {s:.4}"),
        (Some(p), None) => format!("{p:.2} / -"),
        _ => "-".into(),
    };
    let ours: Vec<usize> =
        (0..table.rows()).filter(|&i| str_at("source", i) == "ours" && str_at("role", i) == "target").collect();
    // Columns: (task, target test set) in order of first appearance.
    let mut columns: Vec<(String, String)> = Vec::new();
    for &i in &ours {
        let key = (str_at("task", i), str_at("test_set", i));
        if !columns.contains(&key) {
            columns.push(key);
        }
    }
    let mut methods: Vec<String> = vec![INPUT.to_string()];
    for &i in &ours {
        let m = str_at("method", i);
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    let mut rows = Vec::new();
    for m in &methods {
        let mut row = vec![m.clone()];
        for (task, test) in &columns {
            let hit = ours
                .iter()
                .copied()
                .find(|&i| str_at("method", i) == *m && str_at("task", i) == *task && str_at("test_set", i) == *test);
            row.push(hit.map_or("-".into(), cell));
        }
        rows.push(row);
    }
    for (label, m) in [("paper: Vanilla (source-only)", "source_only"), ("paper: Noise-DA", "noise_da")] {
        let mut row = vec![label.to_string()];
        for (task, _) in &columns {
            let hit = (0..table.rows())
                .find(|&i| str_at("source", i) == "paper" && str_at("method", i) == m && str_at("task", i) == *task);
            row.push(hit.map_or("-".into(), |i| format!("{} ({})", cell(i), str_at("test_set", i))));
        }
        rows.push(row);
    }
    let mut header = vec!["method".to_string()];
    header.extend(columns.iter().map(|(task, test)| format!("{task}: {test}")));
    let mut md = String::from("PSNR (dB) / SSIM, means over images and seeds; the paper's rows are its numbers on ");
    md.push_str("its real test sets (SIDD, SPA-Data, RealBlur-J), not comparable to ours in value.\n\n");
    md.push_str(&markdown_table(&header, &rows));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(rows: &[(&str, &str, f64, f64)]) -> Table {
        let mut t = Table::default();
        t.push("test_set", Column::Str(rows.iter().map(|r| Some(r.0.to_string())).collect()))
            .push("protocol", Column::Str(rows.iter().map(|_| Some("rgb".to_string())).collect()))
            .push("method", Column::Str(rows.iter().map(|r| Some(r.1.to_string())).collect()))
            .push("psnr_mean", Column::F64(rows.iter().map(|r| Some(r.2)).collect()))
            .push("ssim_mean", Column::F64(rows.iter().map(|r| Some(r.3)).collect()))
            .push("seeds", Column::U64(rows.iter().map(|_| Some(3)).collect()));
        t
    }

    #[test]
    fn one_column_per_task_with_the_papers_rows() {
        let runs = vec![
            RunSummary {
                run_id: "a".into(),
                pipeline: "denoise".into(),
                task: Task::Denoise,
                target_tests: vec!["cam".into()],
                summary: summary(&[
                    ("awgn", "input", 19.0, 0.5),
                    ("cam", "input", 22.4, 0.6),
                    ("cam", "source_only", 20.5, 0.7),
                    ("cam", "noise_da", 20.1, 0.69),
                ]),
            },
            RunSummary {
                run_id: "b".into(),
                pipeline: "derain".into(),
                task: Task::Derain,
                target_tests: vec!["rain".into()],
                summary: summary(&[("rain", "input", 27.0, 0.8), ("rain", "noise_da", 30.25, 0.91)]),
            },
        ];
        let t = benchmark_table(&runs);
        assert_eq!(t.rows(), 6 + PAPER.len());
        let md = benchmark_markdown(&t);
        let lines: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert!(lines[0].contains("denoise: cam") && lines[0].contains("derain: rain"), "{md}");
        assert!(!lines[0].contains("awgn"), "only target test sets are columns: {md}");
        let cells = |name: &str| -> Vec<String> {
            let line = lines.iter().find(|l| l.starts_with(&format!("| {name} "))).expect(name);
            line.split('|').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
        };
        assert_eq!(cells("input"), ["input", "22.40 / 0.6000", "27.00 / 0.8000"]);
        // No source-only row in the derain run: a dash, not a number from another task.
        assert_eq!(cells("source_only"), ["source_only", "20.50 / 0.7000", "-"]);
        assert_eq!(cells("noise_da"), ["noise_da", "20.10 / 0.6900", "30.25 / 0.9100"]);
        let row = |name: &str| lines.iter().find(|l| l.starts_with(&format!("| {name} "))).unwrap().to_string();
        assert!(row("paper: Noise-DA").contains("34.71 / 0.9202 (SIDD validation)"), "{md}");
        assert!(row("paper: Noise-DA").contains("34.39 / 0.9571 (SPA-Data test)"), "{md}");
    }
}
