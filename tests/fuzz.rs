//! Mutation fuzzing of every parser that reads user input: pipelines (YAML and `--set`), the
//! dataset registry (TOML), dataset list files and MAT-files. Each valid input is mutated
//! (bytes flipped, inserted, deleted, duplicated, truncated) and parsed; a parser may refuse
//! the input, with a message, but must never panic.
//!
//! Deterministic (a fixed seed per target). `RP_FUZZ_ITERS` sets the mutations per target:
//! 300 by default (seconds, in CI); e.g. `RP_FUZZ_ITERS=100000 cargo test --release --test
//! fuzz` runs a long session on demand.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One to four mutations of `input`.
    fn mutate(&mut self, input: &[u8], dictionary: &[&[u8]]) -> Vec<u8> {
        let mut v = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(v.len() + 1);
            match self.below(7) {
                0 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] ^= 1 << self.below(8);
                }
                1 => v.insert(at, self.next() as u8),
                2 if at < v.len() => {
                    let n = 1 + self.below(16).min(v.len() - at - 1);
                    v.drain(at..at + n);
                }
                3 => v.truncate(at),
                4 if !v.is_empty() => {
                    let from = self.below(v.len());
                    let n = 1 + self.below(64).min(v.len() - from - 1);
                    let chunk = v[from..from + n].to_vec();
                    v.splice(at..at, chunk);
                }
                5 if !dictionary.is_empty() => {
                    let word = dictionary[self.below(dictionary.len())];
                    v.splice(at..at, word.iter().copied());
                }
                _ => {
                    if !v.is_empty() {
                        let i = self.below(v.len());
                        let alphabet = b"\n:-[]{}\"'#&*!|>%@`,${} \t0-19.eE";
                        v[i] = alphabet[self.below(alphabet.len())];
                    }
                }
            }
        }
        v
    }
}

fn iterations() -> usize {
    std::env::var("RP_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rp-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run `f` on `iterations()` mutations of each of `seeds`; report the first input that panics
/// (written next to the temp folder for replay).
fn fuzz(name: &str, seeds: &[Vec<u8>], dictionary: &[&[u8]], mut f: impl FnMut(&[u8])) {
    // The panic hook is process-wide: one fuzz target at a time swaps it.
    static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let mut m = Mutator(0x5eed ^ name.len() as u64 * 0x9E37_79B9);
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failure = None;
    'outer: for seed in seeds {
        for i in 0..iterations() {
            let input = m.mutate(seed, dictionary);
            if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
                failure = Some((i, input));
                break 'outer;
            }
        }
    }
    std::panic::set_hook(quiet);
    if let Some((i, input)) = failure {
        let keep = std::env::temp_dir().join(format!("rp-fuzz-{name}-crash.bin"));
        std::fs::write(&keep, &input).unwrap();
        // Re-run outside catch_unwind for the panic message.
        eprintln!("{name}: mutation {i} panics; input kept in {}", keep.display());
        f(&input);
        panic!("{name}: mutation {i} panicked only under catch_unwind");
    }
}

#[test]
fn pipelines_never_panic() {
    let dir = tmpdir("yaml");
    let root = common::repo_root();
    let seeds: Vec<Vec<u8>> = ["denoise", "ablation"]
        .iter()
        .map(|p| std::fs::read(root.join(format!("pipelines/{p}.yaml"))).unwrap())
        .collect();
    let dict: &[&[u8]] =
        &[b"profiles:", b"variants:", b"${", b"- ", b": ", b"&a ", b"*a", b"!!int ", b"<<: ", b"\"\\u00", b"1e999"];
    let file = dir.join("p.yaml");
    fuzz("pipeline", &seeds, dict, |bytes| {
        std::fs::write(&file, bytes).unwrap();
        if let Err(e) = run_pipeline::pipeline::load(&file, None, &[]) {
            assert!(!e.to_string().is_empty());
        }
    });
    // `--set` values.
    let shipped = root.join("pipelines/denoise.yaml");
    let sets: Vec<Vec<u8>> =
        ["train.steps=10", "tests[0].name=x", "networks.diffusion.mults=[1, 2]", "train.noise_da.t_range=[1, 5]"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
    fuzz("set", &sets, &[b"[", b"]", b".", b"=", b"{", b"}"], |bytes| {
        let set = String::from_utf8_lossy(bytes).into_owned();
        let _ = run_pipeline::pipeline::load(&shipped, Some("smoke"), &[set]);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_registry_never_panics() {
    let text = std::fs::read(common::repo_root().join("datasets.toml")).unwrap();
    let dict: &[&[u8]] = &[b"[datasets.", b"kind = ", b"root = \"${", b"like = ", b"preset = ", b"follow_links = "];
    fuzz("registry", &[text], dict, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        if let Ok(reg) = run_pipeline::datasets::Registry::parse(&text, Path::new("datasets.toml")) {
            for name in reg.datasets.keys() {
                let _ = reg.root(name);
            }
        }
    });
}

#[test]
fn list_files_never_panic() {
    let dir = tmpdir("lists");
    std::fs::create_dir_all(dir.join("real_world/001")).unwrap();
    std::fs::write(dir.join("real_world/001/a.png"), b"not read here").unwrap();
    let list = "real_world/001/a.png real_world/001/b.png\n/real_world/001/a.png ./real_world/001/a.png\n";
    let file = dir.join("list.txt");
    fuzz("lists", &[list.as_bytes().to_vec()], &[b"../", b"/", b" ", b"\r\n", b"\0"], |bytes| {
        std::fs::write(&file, bytes).unwrap();
        for gt_first in [false, true] {
            let scan = run_pipeline::datasets::layouts::pair_list(&dir, &file, gt_first);
            for it in &scan.items {
                assert!(it.degraded.starts_with(&dir), "{} escapes the root", it.degraded.display());
            }
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mat_files_never_panic() {
    let root = common::repo_root().join("tests/fixtures/mat");
    let seeds: Vec<Vec<u8>> = ["sidd_like_blocks.mat", "mixed_uncompressed.mat"]
        .iter()
        .map(|f| std::fs::read(root.join(f)).unwrap())
        .collect();
    fuzz("mat", &seeds, &[&[0xff; 8], &[0; 8], &15u32.to_le_bytes(), &14u32.to_le_bytes()], |bytes| {
        use run_pipeline::datasets::matv5;
        if let Ok(arrays) = matv5::read_mat_bytes(bytes, "fuzz.mat") {
            for a in &arrays {
                let _ = run_pipeline::datasets::sidd::blocks(a);
                // One block at a time (how a test set reads them), in range and out of it.
                for ix in [(0, 0), (1, 2), (usize::MAX, 0)] {
                    let _ = run_pipeline::datasets::sidd::block(a, ix);
                }
            }
        }
        let _ = matv5::read_variable_bytes(bytes, "fuzz.mat", "sidd_like_blocks");
    });
}

#[test]
fn weight_files_never_panic() {
    let root = common::repo_root().join("tests/fixtures/interop");
    let dir = tmpdir("weights");
    let seeds: Vec<Vec<u8>> =
        ["release_unet.pth", "io.safetensors"].iter().map(|f| std::fs::read(root.join(f)).unwrap()).collect();
    let file = dir.join("w.bin");
    fuzz("weights", &seeds, &[b"PK\x03\x04", b"PK\x01\x02", b"\x80\x02", b"q\x00", b"\xff\xff\xff\xff"], |bytes| {
        std::fs::write(&file, bytes).unwrap();
        let _ = run_pipeline::networks::interop::read_state_dict(&file);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
