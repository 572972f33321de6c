//! Position-preserving YAML layer: every value remembers `file:line:col` so
//! config errors point at the offending key.
//!
//! Pipeline files are parsed with `saphyr-parser`'s event API into a small
//! document tree ([`Node`]) in which every value and every mapping key carries
//! its [`Origin`]: either a position in a file, or the command-line
//! `--set a.b=v` override that produced it. Typed configuration structs are
//! then read from that tree with `from_node`, a `serde` deserializer that
//! reports errors at the innermost offending node or key, with a dotted key
//! path (`train.optimizer.lr`, `tests[1].protocol`) and, for typos, a
//! did-you-mean suggestion:
//!
//! ```text
//! pipeline.yaml:7:5: train.lerning_rate: unknown key "lerning_rate"; did you mean "learning_rate"?
//! --set train.lr=abc: train.lr: expected f64, found string "abc"
//! ```
//!
//! # YAML subset and scalar resolution
//!
//! * One document per file. An empty file (or one holding only comments) is `null`.
//! * Plain (unquoted) scalars are resolved with the YAML 1.2 *core schema*:
//!   `null`/`Null`/`NULL`/`~`/empty → [`Value::Null`]; `true`/`false` (also
//!   `True`, `TRUE`, ...) → [`Value::Bool`]; `[-+]?[0-9]+`, `0x..`, `0o..` →
//!   [`Value::Int`]; `1.5`, `1e-4`, `.5`, `.inf`, `-.inf`, `.nan` →
//!   [`Value::Float`]; anything else is a string. YAML 1.1 spellings (`yes`,
//!   `on`, `1_000`, `0755` as octal) are *not* special: they are strings (or, for
//!   `0755`, the decimal integer 755). A plain integer that does not fit in an
//!   `i64` is an error (quote it to keep it as a string).
//! * Quoted and block (`|`, `>`) scalars are always strings.
//! * Mapping keys must be scalars; they are kept as their source text (`1: x`
//!   has the key `"1"`). Duplicate keys in one mapping are an error reported at
//!   the second occurrence.
//! * Anchors and aliases are supported: `*name` is replaced by a copy of the
//!   anchored node, which keeps the positions of the anchor's text. Aliases may
//!   not be used as mapping keys, and total alias expansion is capped (guards
//!   against "billion laughs" inputs). The YAML 1.1 merge key `<<` is **not**
//!   supported: it is an ordinary key (and so an unknown key for strict structs).
//! * Tags (`!!str`, `!custom`) are rejected with an error at the tag.
//!
//! # Deserialization rules (`from_node`)
//!
//! * Structs come from maps. An empty value (`train:` with nothing after it)
//!   counts as an empty map for structs and maps, so a section whose fields
//!   all have defaults may be left empty; sequences do not get this leniency.
//! * Integers are accepted where floats are expected; nothing else is coerced
//!   (in particular `name: 123` is not a string: quote it).
//! * `Option<T>`: `null` → `None`; a missing field is `None` as usual with serde.
//! * Enums: a unit variant is a plain string (`mode: fast`); other variants are
//!   a single-key map (`method: {noise_da: {sigma: 0.1}}` or the block form).
//!   A struct or newtype variant may also be written as a plain string, which
//!   reads its content from an empty value (handy when all fields default).
//! * Internally tagged / untagged enums and `#[serde(flatten)]` work, but serde
//!   buffers their content, so errors inside them are reported at the enclosing
//!   list item or map value (the tagged map itself) rather than the innermost node.

use crate::util::did_you_mean;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, Error as _, Expected, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};

mod build;
mod deserialize;
mod node;

pub use build::{load, parse};
pub(crate) use deserialize::from_node;
pub use node::*;

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::deserialize::from_node_at;
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    fn p(src: &str) -> Node {
        parse(src, Path::new("cfg.yaml")).unwrap()
    }

    fn perr(src: &str) -> ConfigError {
        parse(src, Path::new("cfg.yaml")).unwrap_err()
    }

    fn de<T: DeserializeOwned>(src: &str) -> Result<T, ConfigError> {
        from_node(&p(src))
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Optimizer {
        lr: f64,
        #[serde(default)]
        momentum: Option<f64>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Train {
        learning_rate: f64,
        epochs: u32,
        #[serde(default)]
        optimizer: Option<Optimizer>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        name: String,
        train: Train,
    }

    #[test]
    fn syntax_error_position() {
        let e = perr("a: 1\n  b: 2\n");
        assert_eq!(e.location, "cfg.yaml:2:4");
        assert_eq!(e.to_string(), "cfg.yaml:2:4: YAML syntax error: mapping values are not allowed in this context");
        let e = perr("a: 1\nb: \"unterminated\n");
        assert!(e.location.starts_with("cfg.yaml:"), "{e}");
        assert!(e.message.starts_with("YAML syntax error"), "{e}");
    }

    #[test]
    fn typo_key_at_exact_position_with_suggestion() {
        let src = "name: run\ntrain:\n  epochs: 3\n  lerning_rate: 0.1\n";
        let e = de::<Config>(src).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cfg.yaml:4:3: train.lerning_rate: unknown key \"lerning_rate\"; did you mean \"learning_rate\"?"
        );
        // Nothing close: list the expected keys.
        let e = de::<Config>("name: run\ntrain:\n  zzz: 1\n").unwrap_err();
        assert_eq!(e.location, "cfg.yaml:3:3");
        assert_eq!(e.message, "unknown key \"zzz\"; expected one of \"learning_rate\", \"epochs\", \"optimizer\"");
    }

    #[test]
    fn wrong_type_at_value_position() {
        let e = de::<Config>("name: run\ntrain:\n  learning_rate: abc\n  epochs: 3\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:3:18: train.learning_rate: expected f64, found string \"abc\"");
        let e = de::<Config>("name: run\ntrain:\n  learning_rate: 1\n  epochs: -2\n").unwrap_err();
        assert_eq!(e.location, "cfg.yaml:4:11");
        assert_eq!(e.key_path, "train.epochs");
        assert_eq!(e.message, "invalid value: expected u32, found integer -2");
        // Quoted numbers stay strings.
        let e = de::<Config>("name: run\ntrain: {learning_rate: '1', epochs: 1}\n").unwrap_err();
        assert_eq!(e.location, "cfg.yaml:2:24");
        assert_eq!(e.message, "expected f64, found string \"1\"");
        // A struct given a scalar.
        let e = de::<Config>("name: run\ntrain: 5\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:8: train: expected struct Train, found integer 5");
    }

    #[test]
    fn missing_key_at_enclosing_map() {
        let e = de::<Config>("name: run\ntrain:\n  epochs: 3\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:3:3: train: missing key \"learning_rate\"");
        let e = de::<Config>("train: {learning_rate: 1, epochs: 1}\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:1:1: missing key \"name\"");
        // An empty section is an empty map.
        let e = de::<Config>("name: x\ntrain:\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:6: train: missing key \"learning_rate\"");
    }

    #[test]
    fn nested_key_path() {
        let src = "name: run\ntrain:\n  learning_rate: 1\n  epochs: 2\n  optimizer:\n    lr: fast\n";
        let e = de::<Config>(src).unwrap_err();
        assert_eq!(e.key_path, "train.optimizer.lr");
        assert_eq!(e.location, "cfg.yaml:6:9");
        let src = "name: run\ntrain:\n  learning_rate: 1\n  epochs: 2\n  optimizer: {lr: 1, momentun: 0.9}\n";
        let e = de::<Config>(src).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cfg.yaml:5:22: train.optimizer.momentun: unknown key \"momentun\"; did you mean \"momentum\"?"
        );
        let ok =
            de::<Config>("name: run\ntrain:\n  learning_rate: 1e-4\n  epochs: 2\n  optimizer: {lr: 3, momentum: ~}\n")
                .unwrap();
        assert_eq!(ok.train.learning_rate, 1e-4);
        assert_eq!(ok.train.optimizer, Some(Optimizer { lr: 3.0, momentum: None }));
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct TestCase {
        name: String,
        protocol: Protocol,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Protocol {
        Full,
        Quick,
        Sampled { fraction: f64 },
        Repeat(u32),
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Suite {
        tests: Vec<TestCase>,
    }

    #[test]
    fn sequence_of_structs_error_path() {
        let src = "tests:\n  - name: a\n    protocol: full\n  - name: b\n    protocol: 7\n";
        let e = de::<Suite>(src).unwrap_err();
        assert_eq!(e.key_path, "tests[1].protocol");
        assert_eq!(e.location, "cfg.yaml:5:15");
        assert_eq!(e.message, "expected enum Protocol, found integer 7");
        let e = de::<Suite>("tests:\n  - name: a\n    protocol: full\n  - protocol: quick\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:4:5: tests[1]: missing key \"name\"");
    }

    #[test]
    fn enums_unit_and_struct_variants() {
        let src = "tests:\n  - {name: a, protocol: quick}\n  - name: b\n    protocol:\n      sampled:\n        fraction: 0.5\n  - {name: c, protocol: {repeat: 3}}\n";
        let s = de::<Suite>(src).unwrap();
        assert_eq!(s.tests[0].protocol, Protocol::Quick);
        assert_eq!(s.tests[1].protocol, Protocol::Sampled { fraction: 0.5 });
        assert_eq!(s.tests[2].protocol, Protocol::Repeat(3));

        // Unknown variant, plain string form: value position.
        let e = de::<Suite>("tests:\n  - {name: a, protocol: quik}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cfg.yaml:2:25: tests[0].protocol: unknown variant \"quik\"; did you mean \"quick\"?"
        );
        // Unknown variant, map form: the key's position.
        let e = de::<Suite>("tests:\n  - name: a\n    protocol:\n      sampeld: {fraction: 1}\n").unwrap_err();
        assert_eq!(e.location, "cfg.yaml:4:7");
        assert_eq!(e.key_path, "tests[0].protocol.sampeld");
        assert_eq!(e.message, "unknown variant \"sampeld\"; did you mean \"sampled\"?");
        // Error inside a struct variant.
        let e = de::<Suite>("tests:\n  - name: a\n    protocol:\n      sampled: {fraction: x}\n").unwrap_err();
        assert_eq!(e.key_path, "tests[0].protocol.sampled.fraction");
        assert_eq!(e.location, "cfg.yaml:4:27");
        // A struct variant named bare reads an empty map.
        let e = de::<Suite>("tests:\n  - {name: a, protocol: sampled}\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:25: tests[0].protocol: missing key \"fraction\"");
        // Unit variant with a value.
        let e = de::<Suite>("tests:\n  - {name: a, protocol: {full: 1}}\n").unwrap_err();
        assert_eq!(e.location, "cfg.yaml:2:32");
        assert_eq!(e.message, "variant \"full\" takes no value, found integer 1");
        // Two keys.
        let e = de::<Suite>("tests:\n  - {name: a, protocol: {full: , quick: }}\n").unwrap_err();
        assert_eq!(e.location, "cfg.yaml:2:25");
        assert!(e.message.contains("exactly one key"), "{e}");
    }

    #[test]
    fn merge_profile_overlay() {
        let mut base =
            p("train:\n  lr: 0.1\n  epochs: 10\n  opt: {name: adam, betas: [0.9, 0.99]}\nmethods: [a, b, c]\n");
        let overlay = parse(
            "train:\n  lr: 0.01\n  opt: {betas: [0.5]}\n  extra: true\nmethods: [z]\n",
            Path::new("profile.yaml"),
        )
        .unwrap();
        base.merge(overlay);
        let lr = base.lookup("train.lr").unwrap();
        assert_eq!(lr.value, Value::Float(0.01));
        assert_eq!(lr.location(), "profile.yaml:2:7");
        assert_eq!(base.lookup("train.epochs").unwrap().value, Value::Int(10));
        assert_eq!(base.lookup("train.opt.name").unwrap().value, Value::Str("adam".into()));
        // Lists replace.
        let betas = base.lookup("train.opt.betas").unwrap();
        assert_eq!(betas.value, Value::Seq(vec![Node::new(Value::Float(0.5), betas_origin(betas))]));
        let Value::Seq(methods) = &base.get("methods").unwrap().value else { panic!() };
        assert_eq!(methods.len(), 1);
        assert_eq!(base.lookup("train.extra").unwrap().value, Value::Bool(true));
        // New keys are appended after existing ones.
        let Value::Map(train) = &base.get("train").unwrap().value else { panic!() };
        let names: Vec<_> = train.iter().map(|(k, _)| k.name.as_str()).collect();
        assert_eq!(names, ["lr", "epochs", "opt", "extra"]);

        let removed = base.remove_key("methods").unwrap();
        assert_eq!(removed.location(), "profile.yaml:5:10");
        assert!(base.get("methods").is_none());
        assert!(base.remove_key("methods").is_none());
    }

    fn betas_origin(betas: &Node) -> Origin {
        let Value::Seq(items) = &betas.value else { panic!() };
        items[0].origin.clone()
    }

    #[test]
    fn set_path_creates_and_replaces() {
        let mut cfg = p("name: run\ntrain:\n  learning_rate: 0.1\n  epochs: 3\n");
        cfg.set_path("train.learning_rate=1e-4").unwrap();
        cfg.set_path("train.optimizer.lr=3").unwrap();
        cfg.set_path("name=\"123\"").unwrap();
        let c: Config = from_node(&cfg).unwrap();
        assert_eq!(c.train.learning_rate, 1e-4);
        assert_eq!(c.train.optimizer.unwrap().lr, 3.0);
        assert_eq!(c.name, "123");
        assert_eq!(
            cfg.lookup("train.optimizer").unwrap().origin,
            Origin::Override { arg: "train.optimizer.lr=3".into() }
        );

        // Flow values and types.
        let mut n = p("a: 1\n");
        n.set_path("b=[1, 2.5, x]").unwrap();
        n.set_path("c = true").unwrap();
        n.set_path("d=").unwrap();
        n.set_path("e={k: v}").unwrap();
        assert_eq!(from_node::<(i64, f64, String)>(n.get("b").unwrap()).unwrap(), (1, 2.5, "x".into()));
        assert_eq!(n.get("c").unwrap().value, Value::Bool(true));
        assert!(n.get("d").unwrap().is_null());
        assert_eq!(n.lookup("e.k").unwrap().value, Value::Str("v".into()));

        // Wrong type from an override is reported at the override.
        let mut cfg = p("name: run\ntrain:\n  learning_rate: 0.1\n  epochs: 3\n");
        cfg.set_path("train.learning_rate=abc").unwrap();
        let e = from_node::<Config>(&cfg).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--set train.learning_rate=abc: train.learning_rate: expected f64, found string \"abc\""
        );
        // A typo'd override path becomes an unknown key.
        cfg.set_path("train.learning_rate=0.5").unwrap();
        cfg.set_path("train.epoch=4").unwrap();
        let e = from_node::<Config>(&cfg).unwrap_err();
        assert_eq!(e.to_string(), "--set train.epoch=4: train.epoch: unknown key \"epoch\"; did you mean \"epochs\"?");
    }

    #[test]
    fn set_path_errors_and_indexing() {
        let mut cfg = p("train:\n  lr: 0.1\nmethods:\n  - {sigma: 1}\n  - {sigma: 2}\n");
        let before = cfg.clone();
        let e = cfg.set_path("train.lr").unwrap_err();
        assert_eq!(e.to_string(), "--set train.lr: expected an assignment `key.path=value`");
        let e = cfg.set_path("=3").unwrap_err();
        assert_eq!(e.location, "--set =3");
        assert_eq!(e.message, "empty key path before `=`");
        assert!(cfg.set_path("train..lr=3").is_err());
        let e = cfg.set_path("train.lr.x=1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--set train.lr.x=1: train.lr: cannot set key \"x\": `train.lr` is a float (from cfg.yaml:2:7), not a map"
        );
        let e = cfg.set_path("train.new.lr[0]=1").unwrap_err();
        assert_eq!(e.key_path, "train.new.lr");
        let e = cfg.set_path("methods[5].sigma=1").unwrap_err();
        assert_eq!(e.message, "index [5] is out of range: the sequence has 2 items");
        let e = cfg.set_path("train.lr=[1, 2").unwrap_err();
        assert_eq!(e.location, "--set train.lr=[1, 2");
        assert!(e.message.starts_with("invalid value: YAML syntax error"), "{e}");
        assert_eq!(cfg, before, "failed set_path must not modify the tree");

        cfg.set_path("methods[1].sigma=0.5").unwrap();
        assert_eq!(cfg.lookup("methods[1].sigma").unwrap().value, Value::Float(0.5));
        assert_eq!(cfg.lookup("methods[0].sigma").unwrap().value, Value::Int(1));
    }

    #[test]
    fn duplicate_key_error() {
        let e = perr("train:\n  lr: 1\n  epochs: 2\n  lr: 3\n");
        assert_eq!(e.to_string(), "cfg.yaml:4:3: train.lr: duplicate key \"lr\" (first defined at cfg.yaml:2:3)");
        let e = perr("{a: 1, a: 2}");
        assert_eq!(e.location, "cfg.yaml:1:8");
    }

    #[test]
    fn scalar_resolution_core_schema() {
        let n = p(concat!(
            "a: ~\nb:\nc: null\nd: true\ne: False\nf: 42\ng: -7\nh: 1e-4\ni: .inf\nj: -.inf\n",
            "k: .nan\nl: 1.5\nm: '3'\nn: \"true\"\no: yes\np: 0x1F\nq: 0o17\nr: 1_000\ns: .5\nt: +3\n",
            "u: 1.\nv: 1e\nw: |\n  block\n",
        ));
        let v = |k: &str| n.get(k).unwrap().value.clone();
        assert_eq!(v("a"), Value::Null);
        assert_eq!(v("b"), Value::Null);
        assert_eq!(v("c"), Value::Null);
        assert_eq!(v("d"), Value::Bool(true));
        assert_eq!(v("e"), Value::Bool(false));
        assert_eq!(v("f"), Value::Int(42));
        assert_eq!(v("g"), Value::Int(-7));
        assert_eq!(v("h"), Value::Float(1e-4));
        assert_eq!(v("i"), Value::Float(f64::INFINITY));
        assert_eq!(v("j"), Value::Float(f64::NEG_INFINITY));
        assert!(matches!(v("k"), Value::Float(x) if x.is_nan()));
        assert_eq!(v("l"), Value::Float(1.5));
        assert_eq!(v("m"), Value::Str("3".into()));
        assert_eq!(v("n"), Value::Str("true".into()));
        assert_eq!(v("o"), Value::Str("yes".into()));
        assert_eq!(v("p"), Value::Int(31));
        assert_eq!(v("q"), Value::Int(15));
        assert_eq!(v("r"), Value::Str("1_000".into()));
        assert_eq!(v("s"), Value::Float(0.5));
        assert_eq!(v("t"), Value::Int(3));
        assert_eq!(v("u"), Value::Float(1.0));
        assert_eq!(v("v"), Value::Str("1e".into()));
        assert_eq!(v("w"), Value::Str("block\n".into()));

        let e = perr("big: 99999999999999999999\n");
        assert_eq!(e.location, "cfg.yaml:1:6");
        assert_eq!(e.key_path, "big");
        // Empty documents are null.
        assert!(p("").is_null());
        assert!(p("# nothing\n").is_null());
    }

    #[test]
    fn documents_tags_and_aliases() {
        let e = perr("a: 1\n---\nb: 2\n");
        assert_eq!(e.location, "cfg.yaml:2:1");
        let e = perr("a: !!str 5\n");
        assert_eq!(
            e.to_string(),
            "cfg.yaml:1:4: a: YAML tags are not supported (found `!!str`); quote the value to get a string"
        );
        assert!(perr("a: !custom {x: 1}\n").message.contains("`!custom`"));

        let n = p("base: &b {lr: 1, epochs: 2}\nrun: *b\n");
        let run = n.get("run").unwrap();
        assert_eq!(run.lookup("epochs").unwrap().value, Value::Int(2));
        let e = perr("a: *nope\n");
        assert_eq!(e.location, "cfg.yaml:1:4");
        let e = perr("&x [1, *x]\n");
        assert!(e.message.contains("recursive"), "{e}");
        // Billion laughs is cut off.
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            src.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(perr(&src).message.contains("aliases expand"));
        // Nesting depth is enforced through aliases too.
        let mut src = String::from("a0: &a0 [x]\n");
        for i in 1..300 {
            src.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
        }
        assert!(perr(&src).message.contains("nesting deeper"), "{}", perr(&src));
        let deep = format!("{}{}", "[".repeat(150), "]".repeat(150));
        assert!(perr(&deep).message.contains("nesting deeper"), "{}", perr(&deep));
        assert!(perr("[a, b]: 1\n").message.contains("mapping keys must be scalars"));
    }

    #[test]
    fn misc_deserialization() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Meters(f64);
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct M {
            dist: Meters,
            opt: Option<u8>,
            #[serde(default)]
            none: Option<u8>,
            pair: (u8, String),
            table: BTreeMap<u32, bool>,
            names: Vec<String>,
            unit: (),
        }
        let m: M =
            de("dist: 3\nopt: 7\nnone: null\npair: [1, x]\ntable: {1: true, 20: false}\nnames: [a, 'b']\nunit: ~\n")
                .unwrap();
        assert_eq!(m.dist, Meters(3.0));
        assert_eq!(m.opt, Some(7));
        assert_eq!(m.none, None);
        assert_eq!(m.pair, (1, "x".into()));
        assert_eq!(m.table, BTreeMap::from([(1, true), (20, false)]));
        assert_eq!(m.names, ["a", "b"]);

        let e = de::<M>("dist: 3\nopt: 7\npair: [1, x, 3]\ntable: {}\nnames: []\nunit:\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:3:7: pair: too many elements: expected 2, found 3");
        let e = de::<M>("dist: 3\nopt: 7\npair: [1, x]\ntable: {x: true}\nnames: []\nunit:\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:4:9: table.x: expected u32, found string \"x\"");
        let e = de::<M>("dist: 3\nopt: 300\npair: [1, x]\ntable: {}\nnames: []\nunit:\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:6: opt: invalid value: expected u8, found integer 300");
        let e = de::<M>("dist: 3\nopt: 3\npair: [1, x]\ntable: {}\nnames: oops\nunit:\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:5:8: names: expected a sequence, found string \"oops\"");

        // Flatten goes through serde's buffered content.
        #[derive(Debug, Deserialize, PartialEq)]
        struct Flat {
            name: String,
            #[serde(flatten)]
            rest: BTreeMap<String, i64>,
        }
        let f: Flat = de("name: x\na: 1\nb: 2\n").unwrap();
        assert_eq!(f.rest, BTreeMap::from([("a".into(), 1), ("b".into(), 2)]));

        // Subtree with a path prefix.
        let n = p("train:\n  learning_rate: x\n  epochs: 1\n");
        let e = from_node_at::<Train>(n.get("train").unwrap(), "train").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:18: train.learning_rate: expected f64, found string \"x\"");

        // Node::error for post-validation.
        let lr = n.lookup("train.learning_rate").unwrap();
        assert_eq!(
            lr.error("train.learning_rate", "must be > 0").to_string(),
            "cfg.yaml:2:18: train.learning_rate: must be > 0"
        );
        assert_eq!(ConfigError::new("x.yaml", "", "boom").to_string(), "x.yaml: boom");
    }

    #[test]
    fn buffered_enums_report_at_the_element() {
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
        enum Step {
            Denoise { sigma: f64 },
            Copy,
        }
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(untagged)]
        enum Either {
            N(f64),
            S(String),
        }
        let n = p("steps:\n  - kind: denoise\n    sigma: 1\n  - kind: copy\n");
        let v: Vec<Step> = from_node_at(n.get("steps").unwrap(), "steps").unwrap();
        assert_eq!(v, [Step::Denoise { sigma: 1.0 }, Step::Copy]);
        // serde buffers tagged content: the error lands on the list item.
        let n = p("steps:\n  - kind: denoise\n    sigma: x\n");
        let e = from_node_at::<Vec<Step>>(n.get("steps").unwrap(), "steps").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:5: steps[0]: expected f64, found string \"x\"");
        // The tag itself is still read from its node.
        let n = p("steps:\n  - kind: cpy\n");
        let e = from_node_at::<Vec<Step>>(n.get("steps").unwrap(), "steps").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:11: steps[0].kind: unknown variant \"cpy\"; did you mean \"copy\"?");
        let e = from_node::<Vec<Either>>(&p("[1, a, [x]]")).unwrap_err();
        assert_eq!(e.location, "cfg.yaml:1:8");
        assert_eq!(e.key_path, "[2]");
    }
}
