//! `run-pipeline describe PIPELINE`: the resolved stages, the configured networks' sizes, and
//! every restorer architecture this build knows (the registry in `networks::archs`).

use crate::networks::{self, archs};
use crate::pipeline::{self, plan};

/// Print what `describe` shows for a resolved pipeline.
pub fn describe(r: &pipeline::Resolved) {
    println!("{} (profile {}; profiles: {})", r.path.display(), r.profile, r.profiles.join(", "));
    println!("stages:\n{}", plan::describe(&r.spec));
    let n = &r.spec.networks;
    let p = r.spec.train.patch;
    let (g, d) = networks::param_counts(&n.restorer, &n.diffusion);
    println!("networks (at the {p}² training patch):");
    println!(
        "  restorer   {}: {:.3} M parameters, {:.3} GMACs",
        n.restorer.describe(),
        g as f64 / 1e6,
        n.restorer.macs(p, p) as f64 / 1e9
    );
    println!(
        "  diffusion  base {} × {:?}, {} res blocks, {} heads: {:.3} M parameters, {:.3} GMACs",
        n.diffusion.base,
        n.diffusion.mults,
        n.diffusion.res_blocks,
        n.diffusion.attn_heads,
        d as f64 / 1e6,
        n.diffusion.macs(p, p) as f64 / 1e9
    );
    print!("{}", architectures());
}

/// The registry's published configurations with their sizes (`networks.restorer: {arch: …}`,
/// `restore --arch NAME`).
pub fn architectures() -> String {
    let device = burn::tensor::Device::flex();
    let mut out = String::from("restorer architectures (networks.restorer: {arch: ...}; restore --arch):\n");
    for f in archs::FAMILIES {
        out.push_str(&format!("  {:<13} {} — {}\n", f.name, f.syntax, f.about));
        for (name, cfg) in (f.presets)() {
            use burn::module::Module;
            let params = cfg.init_lazy(&device).num_params();
            out.push_str(&format!(
                "    {name:<28} {:>11} parameters, {:>7.2} GMACs at 256²  ({})\n",
                group_thousands(params),
                cfg.macs(256, 256) as f64 / 1e9,
                cfg.describe()
            ));
        }
    }
    out
}

/// 29159715 → "29,159,715" (the papers print counts this way).
fn group_thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    /// Every published configuration is listed with its authors' parameter count.
    #[test]
    fn architectures_list_the_papers_counts() {
        let t = super::architectures();
        for want in
            ["nafnet-sidd-width32", "29,159,715", "115,982,915", "restormer-motion-deblurring", "26,126,644", "unet-s"]
        {
            assert!(t.contains(want), "{want} not in:\n{t}");
        }
        assert_eq!(super::group_thousands(999), "999");
        assert_eq!(super::group_thousands(1000), "1,000");
    }
}
