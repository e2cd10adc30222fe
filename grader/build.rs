//! Finds the lab check modules in `src/labs/` (every `.rs` file but `mod.rs`, and every folder
//! with a `mod.rs`) and lists them
//! for `labs::all()`, so that adding a lab adds a file and touches no list.

use std::fmt::Write;
use std::path::Path;

fn main() {
    // Read when the script runs, not when it is compiled: a checkout moved with its `target/`
    // reuses the compiled script, which must still list the files where they are now.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest_dir).join("src").join("labs");
    // Relative, so that cargo watches the files of the checkout it builds.
    println!("cargo::rerun-if-changed=src/labs");
    // A lab's checks are one file, `slug.rs`, or, once they outgrow it, a folder `slug/` with
    // its table of checks in `slug/mod.rs`.
    let mut modules: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .expect("src/labs exists")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let path = e.path();
            if path.is_dir() && path.join("mod.rs").is_file() {
                Some((name, path.join("mod.rs")))
            } else {
                let module = name.strip_suffix(".rs")?.to_string();
                (module != "mod").then_some((module, path))
            }
        })
        .collect();
    modules.sort();
    let mut code = String::new();
    for (module, path) in &modules {
        writeln!(
            code,
            "#[path = {:?}]\npub mod {module};",
            path.display().to_string()
        )
        .unwrap();
    }
    let list: Vec<String> = modules.iter().map(|(m, _)| format!("&{m}::LAB")).collect();
    writeln!(
        code,
        "/// Every lab module's `LAB`, in file-name order.\nstatic MODULES: &[&crate::engine::Lab] = &[{}];",
        list.join(", ")
    )
    .unwrap();
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("labs.rs");
    std::fs::write(out, code).expect("writing labs.rs");
}
