//! Skeletons are generated from the solutions, so the two never drift apart.
//!
//! In a solution's sources, a region between `// SOLUTION` and `// END SOLUTION` lines is the
//! part a student writes. In the skeleton, a region opened by `// SOLUTION todo: <what to do>`
//! becomes `todo!("<what to do>")` at the same indentation; `// SOLUTION todo(a, b): ...` also
//! keeps the arguments `a` and `b` used (`let _ = (&a, &b);`), so the skeleton compiles without
//! warnings; a region opened by a bare
//! `// SOLUTION` (imports and helpers only the solution needs) disappears. Everything else is
//! copied as it is, so the public API and its doc comments are the same in both, and so is
//! `Cargo.toml`: a solution's package has its lab's name, so its `src/` drops in.

use std::path::{Path, PathBuf};

/// A problem with the markers in a solution file.
#[derive(Debug, thiserror::Error)]
pub enum SkeletonError {
    #[error("{file}:{line}: `// SOLUTION` inside another solution region")]
    Nested { file: String, line: usize },
    #[error("{file}:{line}: `// END SOLUTION` without a `// SOLUTION` before it")]
    Unopened { file: String, line: usize },
    #[error("{file}:{line}: expected `// SOLUTION todo: ...` or `// SOLUTION todo(a, b): ...`")]
    Marker { file: String, line: usize },
    #[error("{file}:{line}: solution region is never closed")]
    Unclosed { file: String, line: usize },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

const OPEN: &str = "// SOLUTION";
const TODO: &str = "// SOLUTION todo";
const CLOSE: &str = "// END SOLUTION";
/// rustfmt's default line width.
const MAX_WIDTH: usize = 100;

/// The skeleton version of one solution source file.
pub fn skeleton_source(file: &str, solution: &str) -> Result<String, SkeletonError> {
    let mut out = String::with_capacity(solution.len());
    let mut open_at: Option<usize> = None;
    let mut after_removed = false;
    for (index, line) in solution.lines().enumerate() {
        let trimmed = line.trim_start();
        let number = index + 1;
        if trimmed == CLOSE {
            // A region that left nothing must not leave two blank lines (rustfmt would merge
            // them) or a blank line at the end of the file.
            after_removed = out.is_empty() || out.ends_with("\n\n");
            if open_at.take().is_none() {
                return Err(SkeletonError::Unopened {
                    file: file.into(),
                    line: number,
                });
            }
        } else if trimmed == OPEN || trimmed.starts_with(TODO) {
            if open_at.is_some() {
                return Err(SkeletonError::Nested {
                    file: file.into(),
                    line: number,
                });
            }
            open_at = Some(number);
            if let Some(rest) = trimmed.strip_prefix(TODO) {
                let indent = &line[..line.len() - trimmed.len()];
                let (arguments, what) = split_todo(rest).ok_or_else(|| SkeletonError::Marker {
                    file: file.into(),
                    line: number,
                })?;
                if !arguments.is_empty() {
                    let borrowed: Vec<String> = arguments.iter().map(|a| format!("&{a}")).collect();
                    let comma = if borrowed.len() == 1 { "," } else { "" };
                    let kept = borrowed.join(", ");
                    out.push_str(&format!("{indent}let _ = ({kept}{comma});\n"));
                }
                // A string literal that todo! reads as a format string.
                let what = what
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('{', "{{")
                    .replace('}', "}}");
                let call = format!("{indent}todo!(\"{what}\")\n");
                // Laid out as rustfmt lays it out, so that the skeleton is formatted too.
                if call.trim_end().chars().count() <= MAX_WIDTH {
                    out.push_str(&call);
                } else {
                    out.push_str(&format!(
                        "{indent}todo!(\n{indent}    \"{what}\"\n{indent})\n"
                    ));
                }
            }
        } else if open_at.is_none() {
            if !(after_removed && line.trim().is_empty()) {
                out.push_str(line);
                out.push('\n');
            }
            after_removed = false;
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    match open_at {
        Some(line) => Err(SkeletonError::Unclosed {
            file: file.into(),
            line,
        }),
        None => Ok(out),
    }
}

/// Splits what follows `// SOLUTION todo` into the arguments to keep used and the message:
/// `: msg` or `(a, b): msg`.
fn split_todo(rest: &str) -> Option<(Vec<&str>, &str)> {
    if let Some(message) = rest.strip_prefix(':') {
        return Some((Vec::new(), message.trim()));
    }
    let (inside, message) = rest.strip_prefix('(')?.split_once("):")?;
    let arguments = inside.split(',').map(str::trim).filter(|a| !a.is_empty());
    Some((arguments.collect(), message.trim()))
}

/// Every file of the skeletons that `solutions/` determines, as (path under the workspace,
/// contents): each solution's `Cargo.toml` and every file under its `src/`.
pub fn expected_skeletons(workspace: &Path) -> Result<Vec<(PathBuf, String)>, SkeletonError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| SkeletonError::Io { path, source }
    };
    let solutions = workspace.join("solutions");
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&solutions)
        .map_err(io(&solutions))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().expect("a directory entry has a name");
        let lab = PathBuf::from("labs").join(name);
        let manifest_path = dir.join("Cargo.toml");
        let manifest = std::fs::read_to_string(&manifest_path).map_err(io(&manifest_path))?;
        files.push((lab.join("Cargo.toml"), manifest));
        let mut stack = vec![dir.join("src")];
        while let Some(current) = stack.pop() {
            for entry in std::fs::read_dir(&current).map_err(io(&current))? {
                let path = entry.map_err(io(&current))?.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let source = std::fs::read_to_string(&path).map_err(io(&path))?;
                let relative = path.strip_prefix(&dir).expect("walked from dir");
                let label = path.display().to_string();
                files.push((lab.join(relative), skeleton_source(&label, &source)?));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The skeleton files that are missing or differ from what `solutions/` determines.
pub fn stale_skeletons(workspace: &Path) -> Result<Vec<PathBuf>, SkeletonError> {
    Ok(expected_skeletons(workspace)?
        .into_iter()
        .filter(|(path, contents)| {
            std::fs::read_to_string(workspace.join(path)).ok().as_ref() != Some(contents)
        })
        .map(|(path, _)| path)
        .collect())
}

/// Writes every skeleton file that `solutions/` determines; returns those that changed.
pub fn write_skeletons(workspace: &Path) -> Result<Vec<PathBuf>, SkeletonError> {
    let stale = stale_skeletons(workspace)?;
    for (path, contents) in expected_skeletons(workspace)? {
        if !stale.contains(&path) {
            continue;
        }
        let full = workspace.join(&path);
        let parent = full.parent().expect("a skeleton file is inside labs/");
        std::fs::create_dir_all(parent).map_err(|source| SkeletonError::Io {
            path: parent.display().to_string(),
            source,
        })?;
        std::fs::write(&full, contents).map_err(|source| SkeletonError::Io {
            path: full.display().to_string(),
            source,
        })?;
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn todo_region_becomes_todo_and_bare_region_disappears() {
        let solution = "use a;\n// SOLUTION\nuse b;\n// END SOLUTION\nfn f() {\n    // SOLUTION todo: say \"hi\"\n    body();\n    // END SOLUTION\n}\n";
        let skeleton = skeleton_source("f.rs", solution).unwrap();
        assert_eq!(
            skeleton,
            "use a;\nfn f() {\n    todo!(\"say \\\"hi\\\"\")\n}\n"
        );
    }

    #[test]
    fn todo_with_arguments_keeps_them_used() {
        let solution = "fn f(a: u8, b: u8) {\n    // SOLUTION todo(a, b): add\n    a + b;\n    // END SOLUTION\n}\n";
        let skeleton = skeleton_source("f.rs", solution).unwrap();
        assert_eq!(
            skeleton,
            "fn f(a: u8, b: u8) {\n    let _ = (&a, &b);\n    todo!(\"add\")\n}\n"
        );
        assert!(skeleton_source("f.rs", "// SOLUTION todo a\n// END SOLUTION\n").is_err());
    }

    #[test]
    fn removed_region_leaves_no_double_or_trailing_blank_line() {
        let solution =
            "a\n\n// SOLUTION\nb\n// END SOLUTION\n\nc\n\n// SOLUTION\nd\n// END SOLUTION\n";
        assert_eq!(skeleton_source("f.rs", solution).unwrap(), "a\n\nc\n");
    }

    #[test]
    fn braces_in_a_todo_are_not_format_arguments() {
        let solution = "// SOLUTION todo: fill {a, b}\n// END SOLUTION\n";
        let skeleton = skeleton_source("f.rs", solution).unwrap();
        assert_eq!(skeleton, "todo!(\"fill {{a, b}}\")\n");
    }

    #[test]
    fn long_todo_is_wrapped_as_rustfmt_does() {
        let message = "x".repeat(100);
        let solution =
            format!("fn f() {{\n    // SOLUTION todo: {message}\n    // END SOLUTION\n}}\n");
        let skeleton = skeleton_source("f.rs", &solution).unwrap();
        assert_eq!(
            skeleton,
            format!("fn f() {{\n    todo!(\n        \"{message}\"\n    )\n}}\n")
        );
    }

    #[test]
    fn unbalanced_markers_are_errors_with_line_numbers() {
        let unclosed = skeleton_source("f.rs", "a\n// SOLUTION\nb\n").unwrap_err();
        assert!(matches!(unclosed, SkeletonError::Unclosed { line: 2, .. }));
        let unopened = skeleton_source("f.rs", "// END SOLUTION\n").unwrap_err();
        assert!(matches!(unopened, SkeletonError::Unopened { line: 1, .. }));
        let nested = skeleton_source("f.rs", "// SOLUTION\n// SOLUTION\n").unwrap_err();
        assert!(matches!(nested, SkeletonError::Nested { line: 2, .. }));
    }
}
