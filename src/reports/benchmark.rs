//! The benchmark table across runs: task × method × test set, in the layout of the paper's
//! Tables 1–3 (one column per task, PSNR / SSIM per method), with the paper's numbers beside
//! ours, labelled as measured on its real data.

use crate::task::Task;

use super::{Column, INPUT, Table, markdown_table};

/// The paper's Tables 1–3 (METHOD.md): source-only ("Vanilla"), its best other domain
/// adaptation baseline (CyCADA or DSN, whichever was better per task) and Noise-DA on the real
/// test sets. Facts from the paper, for reference only: our runs are on other data and budgets.
pub const PAPER: [(Task, &str, &str, f64, f64); 9] = [
    (Task::Denoise, "source_only", "SIDD validation", 26.58, 0.6132),
    (Task::Denoise, BEST_OTHER_DA, "SIDD validation", 30.81, 0.8067),
    (Task::Denoise, "noise_da", "SIDD validation", 34.71, 0.9202),
    (Task::Derain, "source_only", "SPA-Data test", 33.04, 0.9540),
    (Task::Derain, BEST_OTHER_DA, "SPA-Data test", 33.56, 0.9552),
    (Task::Derain, "noise_da", "SPA-Data test", 34.39, 0.9571),
    (Task::Deblur, "source_only", "RealBlur-J test", 26.27, 0.8012),
    (Task::Deblur, BEST_OTHER_DA, "RealBlur-J test", 26.36, 0.7936),
    (Task::Deblur, "noise_da", "RealBlur-J test", 26.46, 0.8048),
];

/// The paper's row for its strongest feature/pixel-space baseline (CyCADA or DSN).
pub const BEST_OTHER_DA: &str = "best_other_da";

/// The paper's row order (Tables 1–3: the source-only baseline, the other adaptation methods,
/// self-supervised training on the target, Noise-DA), then the upper bound; recipes of other
/// algorithms after these, in their order of appearance.
const ORDER: [&str; 6] = ["source_only", "dann", "pixel_da", "neighbor2neighbor", "noise_da", "target_supervised"];

/// The paper's row, if any, for a recipe of `algorithm`: its own for source-only and Noise-DA;
/// for DANN and PixelDA the best other DA baseline the paper reports (CyCADA or DSN), marked.
fn paper_key(algorithm: &str) -> Option<(&'static str, &'static str)> {
    match algorithm {
        "source_only" => Some(("source_only", "")),
        "noise_da" => Some(("noise_da", "")),
        "dann" | "pixel_da" => Some((BEST_OTHER_DA, " †")),
        _ => None,
    }
}

/// One finished run's summary (the run's `summary` table) and what it was.
pub struct RunSummary {
    pub run_id: String,
    pub pipeline: String,
    pub task: Task,
    /// Test sets drawn from the pipeline's target dataset: the columns of the paper's layout
    /// (others, e.g. the synthetic source's own test set, stay in the long table).
    pub target_tests: Vec<String>,
    pub summary: Table,
    /// Each recipe's algorithm and the paper's number the pipeline gives for it, if any.
    pub recipes: Vec<RecipeInfo>,
}

/// A recipe of a run as the paper's layout needs it.
pub struct RecipeInfo {
    pub name: String,
    /// `source_only`, `dann`, …: a variant named `dann_l01` is a `dann` row.
    pub algorithm: String,
    /// The recipe's own `paper:` note (PSNR, SSIM, where from), e.g. an ablation row.
    pub paper: Option<(f64, Option<f64>, String)>,
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
    let (mut task, mut pipeline, mut run, mut test, mut protocol, mut method, mut algorithm) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut psnr, mut ssim, mut seeds, mut source, mut role) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut paper_psnr, mut paper_ssim, mut paper_source) = (vec![], vec![], vec![]);
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
            let m = text("method", i).unwrap_or_default();
            let recipe = r.recipes.iter().find(|x| x.name == m);
            algorithm.push(Some(recipe.map_or(m.clone(), |x| x.algorithm.clone())));
            let note = recipe.and_then(|x| x.paper.clone());
            paper_psnr.push(note.as_ref().map(|n| n.0));
            paper_ssim.push(note.as_ref().and_then(|n| n.1));
            paper_source.push(note.map(|n| n.2));
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
        algorithm.push(Some(m.to_string()));
        paper_psnr.push(None);
        paper_ssim.push(None);
        paper_source.push(None);
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
        .push("algorithm", Column::Str(algorithm))
        .push("psnr_mean", Column::F64(psnr))
        .push("ssim_mean", Column::F64(ssim))
        .push("seeds", Column::U64(seeds))
        .push("role", Column::Str(role))
        .push("source", Column::Str(source))
        .push("paper_psnr", Column::F64(paper_psnr))
        .push("paper_ssim", Column::F64(paper_ssim))
        .push("paper_source", Column::Str(paper_source));
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
    // Rows: the input, then recipes in the paper's order of algorithms.
    let mut methods: Vec<(String, String)> = vec![(INPUT.to_string(), INPUT.to_string())];
    for &i in &ours {
        let m = (str_at("method", i), str_at("algorithm", i));
        if !methods.iter().any(|x| x.0 == m.0) {
            methods.push(m);
        }
    }
    let rank =
        |alg: &str| if alg == INPUT { 0 } else { ORDER.iter().position(|a| *a == alg).unwrap_or(ORDER.len()) + 1 };
    methods.sort_by_key(|(_, alg)| rank(alg));
    // Each task's columns, then the paper's number on its own test set for the row's algorithm.
    let mut tasks: Vec<String> = Vec::new();
    for (task, _) in &columns {
        if !tasks.contains(task) {
            tasks.push(task.clone());
        }
    }
    let paper_at = |task: &str, key: &str| {
        (0..table.rows())
            .find(|&i| str_at("source", i) == "paper" && str_at("method", i) == key && str_at("task", i) == task)
    };
    let mut header = vec!["method".to_string()];
    let mut marked = false;
    let mut rows: Vec<Vec<String>> = methods.iter().map(|(m, _)| vec![m.clone()]).collect();
    for task in &tasks {
        for (t, test) in columns.iter().filter(|c| c.0 == *task) {
            header.push(format!("{t}: {test}"));
            for (row, (m, _)) in rows.iter_mut().zip(&methods) {
                let hit = ours
                    .iter()
                    .copied()
                    .find(|&i| str_at("method", i) == *m && str_at("task", i) == *t && str_at("test_set", i) == *test);
                row.push(hit.map_or("-".into(), cell));
            }
        }
        let set = PAPER.iter().find(|p| task_name(p.0) == task).map_or("", |p| p.2);
        header.push(format!("paper: {set}"));
        for (row, (m, alg)) in rows.iter_mut().zip(&methods) {
            // The recipe's own `paper:` note first (an ablation row), else the paper's row for
            // its algorithm — for the plain recipe only, not for a variant of it.
            let own = ours
                .iter()
                .copied()
                .find(|&i| str_at("method", i) == *m && str_at("task", i) == *task && f_at("paper_psnr", i).is_some());
            let value = match own {
                Some(i) => Some(match f_at("paper_ssim", i) {
                    Some(s) => format!(
                        "{:.2} / {s:.4} ({})",
                        f_at("paper_psnr", i).unwrap_or(f64::NAN),
                        str_at("paper_source", i)
                    ),
                    None => format!("{:.2} ({})", f_at("paper_psnr", i).unwrap_or(f64::NAN), str_at("paper_source", i)),
                }),
                None if m == alg => paper_key(alg).and_then(|(key, mark)| {
                    let i = paper_at(task, key)?;
                    marked |= !mark.is_empty();
                    Some(format!("{}{mark}", cell(i)))
                }),
                None => None,
            };
            row.push(value.unwrap_or_else(|| "-".into()));
        }
    }
    let mut md =
        String::from("PSNR (dB) / SSIM, means over images and seeds, in the layout of the paper's Tables 1–3. ");
    md.push_str("The `paper:` columns are its numbers on its real test sets (SIDD, SPA-Data, RealBlur-J) for the ");
    md.push_str("same algorithm, not comparable to ours in value.\n\n");
    md.push_str(&markdown_table(&header, &rows));
    if marked {
        md.push_str(
            "\n† The paper gives no row for this algorithm on this task; shown is its best other domain-adaptation ",
        );
        md.push_str("baseline (CyCADA or DSN).\n");
    }
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

    fn recipes(list: &[(&str, &str)]) -> Vec<RecipeInfo> {
        list.iter().map(|(n, a)| RecipeInfo { name: n.to_string(), algorithm: a.to_string(), paper: None }).collect()
    }

    /// One column per (task, target test set) with the paper's column beside each task, rows in
    /// the paper's order, the paper's number only for the algorithm it measured (its best other
    /// DA baseline marked for DANN/PixelDA), a recipe's own `paper:` note first.
    #[test]
    fn one_column_per_task_with_the_papers_rows() {
        let mut r = recipes(&[
            ("noise_da", "noise_da"),
            ("source_only", "source_only"),
            ("dann", "dann"),
            ("noise_da_dwarm", "noise_da"),
            ("no_swap", "noise_da"),
        ]);
        r[4].paper = Some((32.91, None, "Table 4".into()));
        let runs = vec![
            RunSummary {
                run_id: "a".into(),
                pipeline: "denoise".into(),
                task: Task::Denoise,
                target_tests: vec!["cam".into()],
                summary: summary(&[
                    ("awgn", "input", 19.0, 0.5),
                    ("cam", "input", 22.4, 0.6),
                    ("cam", "noise_da", 20.1, 0.69),
                    ("cam", "source_only", 20.5, 0.7),
                    ("cam", "dann", 20.0, 0.68),
                    ("cam", "noise_da_dwarm", 20.2, 0.69),
                    ("cam", "no_swap", 20.3, 0.69),
                ]),
                recipes: r,
            },
            RunSummary {
                run_id: "b".into(),
                pipeline: "derain".into(),
                task: Task::Derain,
                target_tests: vec!["rain".into()],
                summary: summary(&[("rain", "input", 27.0, 0.8), ("rain", "noise_da", 30.25, 0.91)]),
                recipes: recipes(&[("noise_da", "noise_da")]),
            },
        ];
        let t = benchmark_table(&runs);
        assert_eq!(t.rows(), 9 + PAPER.len());
        let md = benchmark_markdown(&t);
        let lines: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        let header: Vec<&str> = lines[0].split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(
            header,
            ["method", "denoise: cam", "paper: SIDD validation", "derain: rain", "paper: SPA-Data test"],
            "{md}"
        );
        let cells = |name: &str| -> Vec<String> {
            let line = lines.iter().find(|l| l.starts_with(&format!("| {name} "))).expect(name);
            line.split('|').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
        };
        let order: Vec<String> = lines[2..].iter().map(|l| l.split('|').nth(1).unwrap().trim().to_string()).collect();
        assert_eq!(order, ["input", "source_only", "dann", "noise_da", "noise_da_dwarm", "no_swap"], "{md}");
        assert_eq!(cells("input"), ["input", "22.40 / 0.6000", "-", "27.00 / 0.8000", "-"]);
        // No source-only row in the derain run: a dash, not a number from another task.
        assert_eq!(cells("source_only"), ["source_only", "20.50 / 0.7000", "26.58 / 0.6132", "-", "33.04 / 0.9540"]);
        assert_eq!(
            cells("noise_da"),
            ["noise_da", "20.10 / 0.6900", "34.71 / 0.9202", "30.25 / 0.9100", "34.39 / 0.9571"]
        );
        assert_eq!(cells("dann")[2], "30.81 / 0.8067 †");
        assert!(md.contains("† The paper gives no row"), "{md}");
        assert_eq!(cells("noise_da_dwarm")[2], "-", "a variant is not the paper's method");
        assert_eq!(cells("no_swap")[2], "32.91 (Table 4)", "the recipe's own note");
    }
}
