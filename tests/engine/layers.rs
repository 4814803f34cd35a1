//! The library's layers point one way (ARCHITECTURE.md): a module may use its own layer and those
//! below it, never one above. This reads every `crate::…` path in `src/` (outside comments; test
//! modules included: a test that needs a higher layer lives in that layer) and fails on an upward one.

use std::collections::BTreeSet;
use std::path::Path;

/// Every top-level module of the library, lowest layer first; modules in one row are peers and may
/// use each other. Keep in step with ARCHITECTURE.md.
const LAYERS: &[&[&str]] = &[
    &["formats"],
    &["kernels"],
    &["model"],
    &["stats"],
    &["calib"],
    &["quant"],
    &["jobs"],
    &["nn"],
    &["activations"],
    &["plan", "intmm"],
    &["gui"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

/// The code of a file without comments.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        let code = match t.find("//") {
            Some(i) if !t[..i].contains('"') => &t[..i],
            _ => t,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The top-level modules that `code` names as `crate::a…` or `crate::{a…, b…}`.
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = code[i + "crate::".len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // top-level items of the group: split on commas outside nested braces
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 0 => {
                        start = false;
                        found.insert(ident(&group[j..]));
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_uses_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs");
        // the binary (main.rs and its command-line tool) sits on top and reaches the library as
        // `quantscope::…`; lib.rs only lists the modules
        if matches!(module, "main" | "cli" | "lib") {
            continue;
        }
        let Some(own) = layer_of(module) else {
            panic!("src/{module} has no layer: add it to LAYERS here and to ARCHITECTURE.md");
        };
        let text = std::fs::read_to_string(f).unwrap();
        for used in crate_modules(&code_of(&text)) {
            let Some(theirs) = layer_of(&used) else {
                continue; // an item of lib.rs itself
            };
            if theirs > own {
                upward.push(format!("src/{} ({module}) uses {used}", rel.display()));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "lower layers use higher ones:\n  {}",
        upward.join("\n  ")
    );
}

#[test]
fn the_scanner_reads_groups_and_tests_and_skips_comments() {
    let code = code_of(
        "use crate::{a::X, b::{C, D}, c};\n// crate::d\nfn f() { crate::e::g() } // crate::h\n\
         #[cfg(test)]\nmod tests {\n    use crate::f;\n}\nuse crate::g;\n",
    );
    let got: Vec<String> = crate_modules(&code).into_iter().collect();
    assert_eq!(got, ["a", "b", "c", "e", "f", "g"]);
}
