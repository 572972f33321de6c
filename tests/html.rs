//! The HTML reports, opened in a real browser (headless Chromium) where one is installed
//! (`.ci/run` installs the distribution's `chromium`); without one the browser checks are
//! skipped with a printed reason and only the file checks run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::text;

const FLAGS: [&str; 5] = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"];

/// `cmd`'s output, or `None` when it cannot start or runs past `secs` (killed).
fn output_within(mut cmd: Command, secs: u64) -> Option<std::process::Output> {
    use std::io::Read;
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().ok()?;
    // Drained while it runs: a page's DOM is larger than a pipe's buffer.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take()?));
    let err = drain(Box::new(child.stderr.take()?));
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().ok()? {
            break s;
        }
        if t0.elapsed().as_secs() > secs {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Some(std::process::Output { status, stdout: out.join().ok()?, stderr: err.join().ok()? })
}

/// A headless Chromium that renders a page here: `RP_CHROMIUM`, else the usual names on PATH.
/// Why not, when none does (printed by the caller as the reason to skip).
fn chromium() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os("RP_CHROMIUM") {
        Some(p) => vec![PathBuf::from(p)],
        None => ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"].map(PathBuf::from).to_vec(),
    };
    let mut why = Vec::new();
    for c in candidates {
        let mut cmd = Command::new(&c);
        cmd.args(FLAGS).args(["--dump-dom", "data:text/html,<p>rendered</p>"]);
        match output_within(cmd, 60) {
            Some(o) if text(&o.stdout).contains("<p>rendered</p>") => return Ok(c),
            Some(o) => {
                why.push(format!("{} does not render: {}", c.display(), text(&o.stderr).lines().last().unwrap_or("")))
            }
            None => why.push(format!("{}: not found or timed out", c.display())),
        }
    }
    Err(why.join("; "))
}

/// The DOM after load (scripts run) and the browser's log.
fn dump_dom(browser: &Path, page: &Path, profile: &Path) -> (String, String) {
    let mut cmd = Command::new(browser);
    cmd.args(FLAGS)
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("file://{}", page.display()));
    let out = output_within(cmd, 120).expect("chromium renders the page within 2 minutes");
    assert!(out.status.success(), "chromium failed: {}", text(&out.stderr));
    (text(&out.stdout), text(&out.stderr))
}

fn screenshot(browser: &Path, page: &Path, profile: &Path, png: &Path) {
    let mut cmd = Command::new(browser);
    cmd.args(FLAGS)
        .arg("--hide-scrollbars")
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--window-size=1300,2400", "--virtual-time-budget=5000"])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()));
    let out = output_within(cmd, 120).expect("chromium takes the screenshot within 2 minutes");
    assert!(out.status.success(), "chromium failed: {}", text(&out.stderr));
}

fn run_dir(reports: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(reports.join("denoise")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    v.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
    v.sort();
    v.remove(0)
}

/// The `<td>` texts of each row of the table with `id`.
fn table_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = dom.find(&format!(r#"id="{id}""#)).unwrap_or_else(|| panic!("no table {id}"));
    let body = &dom[start..];
    let body = &body[body.find("<tbody>").unwrap()..body.find("</tbody>").unwrap()];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let inner = &cell[cell.find('>').unwrap() + 1..];
                    inner[..inner.find("</td>").unwrap()].to_string()
                })
                .collect()
        })
        .collect()
}

/// The smoke run's `report.html` in a browser: the summary table holds `summary.csv`'s
/// numbers, the loss chart one series per recipe × seed, every image loads, no script error;
/// a screenshot is kept (`RP_ARTIFACTS`, default the temp folder).
#[test]
fn the_run_report_renders_the_runs_numbers() {
    let reports = common::tmpdir("html", "run");
    let out = common::smoke(&reports, &["--set", "seeds.train=[0, 1]"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = run_dir(&reports);
    let page = run.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: the only URLs are the SVG namespace.
    let urls = html.matches("http://").count() + html.matches("https://").count();
    assert_eq!(urls, html.matches("http://www.w3.org/2000/svg").count(), "no network references");
    assert!(std::fs::read_to_string(run.join("figures/curves.svg")).unwrap().contains("<svg"));
    assert!(!run.join("figures/curves.png").exists(), "the pixel-font PNG curves are gone");

    // summary.csv, as a tool would read it.
    let csv = std::fs::read_to_string(run.join("summary.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let expected: Vec<(String, String, String, String)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let p: f64 = f[col("psnr_mean")].parse().unwrap();
            let s: f64 = f[col("ssim_mean")].parse().unwrap();
            (f[col("test_set")].to_string(), f[col("method")].to_string(), format!("{p:.2}"), format!("{s:.4}"))
        })
        .collect();
    assert!(expected.len() >= 6, "{csv}");

    let browser = match chromium() {
        Ok(b) => b,
        Err(why) => {
            eprintln!(
                "SKIPPED the browser checks: no headless Chromium renders here ({why}); install `chromium` or set RP_CHROMIUM"
            );
            return;
        }
    };
    let profile = reports.join("chromium-profile");
    let (dom, log) = dump_dom(&browser, &page, &profile);
    let rows = table_rows(&dom, "summary");
    let shown: Vec<(String, String, String, String)> =
        rows.iter().map(|r| (r[0].clone(), r[2].clone(), r[3].clone(), r[5].clone())).collect();
    assert_eq!(shown, expected, "the rendered summary table holds summary.csv's numbers");
    // Curves: the loss chart has a series per recipe × seed (2 recipes × 2 seeds).
    let loss = &dom[dom.find(r#"data-chart="loss""#).unwrap()..];
    let loss = &loss[..loss.find("</svg>").unwrap()];
    assert_eq!(loss.matches(r#"<g class="series""#).count(), 4, "{loss}");
    // Images: every one decoded (the page's script counts them after load).
    let images = dom.split(r#"data-images=""#).nth(1).map(|s| s[..s.find('"').unwrap()].to_string());
    let images = images.expect("the page's script ran");
    let (ok, all) = images.split_once('/').unwrap();
    assert!(ok == all && all.parse::<usize>().unwrap() >= 12, "images loaded: {images}");
    assert!(!dom.contains("data-errors=\""), "script errors: {dom}");
    assert!(!log.contains("Uncaught") && !log.contains(":ERROR:CONSOLE"), "console errors:\n{log}");
    let artefacts = std::env::var_os("RP_ARTIFACTS").map_or(std::env::temp_dir().join("rp-artifacts"), PathBuf::from);
    std::fs::create_dir_all(&artefacts).unwrap();
    let png = artefacts.join("report.png");
    screenshot(&browser, &page, &profile, &png);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "screenshot {}", png.display());
    eprintln!("screenshot: {}", png.display());
    std::fs::remove_dir_all(&reports).unwrap();
}

/// A run directory named like markup, re-reported: its name shows as text in `report.html`
/// and `benchmark.html`, never as an element.
#[test]
fn a_hostile_name_is_rendered_as_text() {
    let reports = common::tmpdir("html", "hostile");
    let out = common::smoke(&reports, &["--set", "diagnostics={}"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = run_dir(&reports);
    let hostile = run.parent().unwrap().join("<img src=x onerror=alert(1)><script>alert(2)<\\script>");
    std::fs::rename(&run, &hostile).unwrap();
    let out = common::run(&["report", hostile.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for page in [hostile.join("report.html"), reports.join("benchmark/benchmark.html")] {
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;"), "{}", page.display());
        assert!(!html.contains("<img src=x") && !html.contains("<script>alert"), "{}", page.display());
        if let Ok(browser) = chromium() {
            let (dom, _) = dump_dom(&browser, &page, &reports.join("chromium-profile"));
            assert!(!dom.contains(r#"<img src="x""#) && !dom.contains("<script>alert"), "{dom}");
            assert!(!dom.contains("data-errors=\""));
        }
    }
    std::fs::remove_dir_all(&reports).unwrap();
}
