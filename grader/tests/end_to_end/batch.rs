//! `cargo grade batch` end to end, on two labs: a class of submissions built from the solutions
//! and the skeletons (a full one, a skeleton, a half-done mix, one that does not compile, an
//! empty one, a malformed archive and, as root, a hostile one graded alongside the full one);
//! the CSV files agree with grading the same sources alone, the hostile submission removes
//! nothing outside its own namespaces, and the page renders in a headless Chromium with charts
//! whose numbers are those of `checks.csv`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

const LABS: [&str; 2] = ["pipe-echo", "posix-shm"];
const LAB_DIRS: [&str; 2] = ["01-pipe-echo", "05-posix-shm"];
const SEED: &str = "7";

fn workspace() -> PathBuf {
    ipc_grader::workspace_root().expect("the tests run in a workspace")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The grader, with nothing of the test's environment that would point it elsewhere.
fn grader() -> Command {
    let mut command = Command::cargo_bin("cargo-grade").expect("the grader is built");
    command
        .env_remove("IPC_LABS_WORKSPACE")
        .env_remove("IPC_LABS_PREBUILT")
        .env("NO_COLOR", "1");
    command
}

/// The files of a lab's `src/` in `variant` (`labs` or `solutions`).
fn sources(variant: &str, lab_dir: &str) -> Vec<(String, Vec<u8>)> {
    let src = workspace().join(variant).join(lab_dir).join("src");
    walkdir::WalkDir::new(&src)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let relative = e.path().strip_prefix(&src).unwrap().display().to_string();
            (
                format!("labs/{lab_dir}/src/{relative}"),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// A program that removes every IPC object it can see, for a while, then fails.
const HOSTILE_MAIN: &str = r#"
//! Removes every IPC object it can find, again and again, then fails.
fn main() {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        for entry in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        for (kind, file) in ["shm", "msg", "sem"].iter().enumerate() {
            let text = std::fs::read_to_string(format!("/proc/sysvipc/{file}")).unwrap_or_default();
            for line in text.lines().skip(1) {
                let Some(id) = line.split_whitespace().nth(1).and_then(|w| w.parse().ok()) else {
                    continue;
                };
                // SAFETY: IPC_RMID takes no buffer.
                unsafe {
                    match kind {
                        0 => nix::libc::shmctl(id, nix::libc::IPC_RMID, std::ptr::null_mut()),
                        1 => nix::libc::msgctl(id, nix::libc::IPC_RMID, std::ptr::null_mut()),
                        _ => nix::libc::semctl(id, 0, nix::libc::IPC_RMID),
                    };
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::process::exit(1);
}
"#;

fn write_dir(root: &Path, files: &[(String, Vec<u8>)]) {
    for (path, data) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
}

fn write_zip(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    for (name, data) in files {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
}

fn write_tar_gz(path: &Path, files: &[(String, Vec<u8>)]) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, data.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

/// The submissions, in SUBMISSIONS.
fn make_submissions(dir: &Path, hostile: bool) {
    let solution: Vec<_> = LAB_DIRS
        .iter()
        .flat_map(|l| sources("solutions", l))
        .collect();
    let skeleton: Vec<_> = LAB_DIRS.iter().flat_map(|l| sources("labs", l)).collect();
    // A GitHub download nests the repository in a directory.
    let nested: Vec<_> = solution
        .iter()
        .map(|(p, d)| (format!("ipc-labs-main/{p}"), d.clone()))
        .collect();
    write_dir(&dir.join("a-solution"), &nested);
    write_zip(&dir.join("skeleton.zip"), &skeleton);
    let half: Vec<_> = sources("solutions", LAB_DIRS[0])
        .into_iter()
        .chain(sources("labs", LAB_DIRS[1]))
        .collect();
    write_tar_gz(&dir.join("half.tar.gz"), &half);
    let mut broken = solution.clone();
    for (path, data) in &mut broken {
        if path.ends_with("05-posix-shm/src/lib.rs") {
            data.extend_from_slice(b"\nfn unfinished( {\n");
        }
    }
    write_dir(&dir.join("broken"), &broken);
    std::fs::create_dir_all(dir.join("empty/notes")).unwrap();
    std::fs::write(dir.join("empty/notes/README.md"), "nothing here").unwrap();
    write_zip(
        &dir.join("malformed.zip"),
        &[(
            "labs/01-pipe-echo/src/../../../../escape.rs".to_string(),
            b"fn main() {}".to_vec(),
        )],
    );
    if hostile {
        let mut files = skeleton.clone();
        for (path, data) in &mut files {
            if path.ends_with("src/main.rs") {
                *data = HOSTILE_MAIN.as_bytes().to_vec();
            }
        }
        write_dir(&dir.join("a-hostile"), &files);
    }
}

/// A grading's (lab, check) to (status, score).
type Rows = BTreeMap<(String, String), (String, u64)>;

/// The rows of `lab` alone.
fn of_lab(rows: &Rows, lab: &str) -> Rows {
    rows.iter()
        .filter(|((of, _), _)| of == lab)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// IPC objects made outside the batch, owned by the user the batch's programs run as (so that
/// only the batch's isolation keeps them from a hostile program), removed when dropped.
struct Bystanders {
    shm_id: i32,
    file: PathBuf,
}

impl Bystanders {
    fn create() -> Bystanders {
        let owner = if is_root() {
            nix::unistd::User::from_name("nobody").unwrap().unwrap().uid
        } else {
            nix::unistd::getuid()
        };
        // SAFETY: plain system calls on a new private segment.
        let shm_id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
        assert!(shm_id >= 0, "shmget: {}", std::io::Error::last_os_error());
        let mut stat: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: stat is a valid shmid_ds.
        unsafe {
            assert_eq!(libc::shmctl(shm_id, libc::IPC_STAT, &mut stat), 0);
            stat.shm_perm.uid = owner.as_raw();
            assert_eq!(libc::shmctl(shm_id, libc::IPC_SET, &mut stat), 0);
        }
        let file = PathBuf::from(format!(
            "/dev/shm/ipc-labs-batch-test-{}",
            std::process::id()
        ));
        std::fs::write(&file, b"still here").unwrap();
        std::os::unix::fs::chown(&file, Some(owner.as_raw()), None).unwrap();
        Bystanders { shm_id, file }
    }

    fn alive(&self) -> (bool, bool) {
        let mut stat: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: stat is a valid shmid_ds.
        let segment = unsafe { libc::shmctl(self.shm_id, libc::IPC_STAT, &mut stat) } == 0;
        (segment, self.file.exists())
    }
}

impl Drop for Bystanders {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { libc::shmctl(self.shm_id, libc::IPC_RMID, std::ptr::null_mut()) };
        let _ = std::fs::remove_file(&self.file);
    }
}

fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            headers
                .iter()
                .zip(record.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Grades the labs `labs` of `submission` alone, as `cargo grade` would in a workspace of its
/// own.
fn grade_alone(workspace: &Path, submission: &Path, labs: &[&str]) -> Rows {
    let import = grader()
        .env("IPC_LABS_WORKSPACE", workspace)
        .args(["import"])
        .arg(submission)
        .arg("--into")
        .arg(workspace)
        .output()
        .unwrap();
    assert!(import.status.success(), "{import:?}");
    let output = grader()
        .env("IPC_LABS_WORKSPACE", workspace)
        .args(["--format", "json", "--seed", SEED])
        .args(labs)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    let mut checks = BTreeMap::new();
    for lab in report["labs"].as_array().unwrap() {
        for check in lab["checks"].as_array().unwrap() {
            checks.insert(
                (
                    lab["name"].as_str().unwrap().to_string(),
                    check["name"].as_str().unwrap().to_string(),
                ),
                (
                    check["status"].as_str().unwrap().to_string(),
                    check["score"].as_u64().unwrap(),
                ),
            );
        }
    }
    checks
}

/// The texts of an SVG's `<text>` elements, in order.
fn svg_texts(svg: &str) -> Vec<String> {
    let mut texts = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find("<text") {
        rest = &rest[start..];
        let Some(open_end) = rest.find('>') else {
            break;
        };
        let Some(close) = rest.find("</text>") else {
            break;
        };
        texts.push(rest[open_end + 1..close].trim().to_string());
        rest = &rest[close + 7..];
    }
    texts
}

/// Renders the page headless; `None` when Chromium is not installed.
fn render(page: &Path, scratch: &Path) -> Option<(PathBuf, String)> {
    if Command::new("chromium").arg("--version").output().is_err() {
        return None;
    }
    let png = scratch.join("report.png");
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,1600",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("profile").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .env("HOME", scratch)
        .env("TMPDIR", scratch)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    Some((png, String::from_utf8_lossy(&output.stderr).into_owned()))
}

/// Builds the labs' programs in this workspace (as `cargo grade` does, and the checks test
/// after this one): the batch's pristine workspaces start from a copy of that build.
fn build_labs_here() {
    let built = ipc_grader::engine::compile::build(
        &workspace(),
        ipc_grader::engine::Variant::Labs,
        &["pipe-echo", "posix-shm"],
    );
    for (lab, program) in built {
        program.unwrap_or_else(|e| panic!("{lab}: {e}"));
    }
}

#[test]
fn a_class_is_graded_isolated_and_reported() {
    build_labs_here();
    let scratch = tempfile::tempdir().unwrap();
    let subs = scratch.path().join("submissions");
    std::fs::create_dir_all(&subs).unwrap();
    let root = is_root();
    if !root {
        eprintln!(
            "not root: the batch cannot isolate submissions, so the hostile one is left out (it \
             would remove this user's IPC objects) and isolation is not tested"
        );
    }
    make_submissions(&subs, root);
    let bystanders = Bystanders::create();
    let out = scratch.path().join("out");
    let output = grader()
        .arg("batch")
        .arg(&subs)
        .arg("--out")
        .arg(&out)
        .args(["--labs", &LABS.join(","), "--jobs", "2", "--seed", SEED])
        .args(["--time-limit", "5m"])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    // Not a terminal: a plain line per submission.
    let count = if root { 7 } else { 6 };
    assert_eq!(said.matches("] ").count(), count, "{said}");
    assert_eq!(said.contains("not root"), !root, "{said}");

    let grades = read_csv(&out.join("grades.csv"));
    let checks = read_csv(&out.join("checks.csv"));
    // A failed comparison of totals names the checks that lost points.
    let lost: Vec<String> = checks
        .iter()
        .filter(|c| c["score"] != c["max_score"] && c["max_score"] != "0")
        .filter(|c| ["a-solution", "half", "broken"].contains(&c["submission"].as_str()))
        .map(|c| {
            format!(
                "{}: {}/{}: {}",
                c["submission"], c["lab"], c["check"], c["diagnosis"]
            )
        })
        .collect();
    let by_id: BTreeMap<&str, &BTreeMap<String, String>> =
        grades.iter().map(|r| (r["id"].as_str(), r)).collect();
    assert_eq!(by_id.len(), count, "{grades:?}");
    let field = |id: &str, column: &str| by_id[id][column].clone();
    assert_eq!(field("a-solution", "status"), "graded");
    assert_eq!(
        field("a-solution", "total"),
        field("a-solution", "max_total"),
        "{lost:#?}"
    );
    assert_ne!(field("a-solution", "total"), "0");
    assert_eq!(field("skeleton", "total"), "0");
    assert_eq!(
        field("half", "pipe-echo"),
        field("a-solution", "pipe-echo"),
        "{lost:#?}"
    );
    assert_eq!(field("half", "posix-shm"), "0");
    assert_eq!(field("broken", "status"), "does-not-compile");
    assert!(
        field("broken", "reason").contains("posix-shm"),
        "{grades:?}"
    );
    assert_eq!(
        field("broken", "pipe-echo"),
        field("a-solution", "pipe-echo"),
        "{lost:#?}"
    );
    assert_eq!(field("empty", "status"), "refused");
    assert!(field("empty", "reason").contains("no lab"), "{grades:?}");
    assert_eq!(field("malformed", "status"), "refused");
    assert!(field("malformed", "reason").contains(".."), "{grades:?}");

    if root {
        // The hostile program ran beside the full one, which lost nothing, and left the
        // machine's objects (owned by the user it ran as) alone.
        assert_ne!(field("a-hostile", "total"), field("a-hostile", "max_total"));
        assert_eq!(
            bystanders.alive(),
            (true, true),
            "the hostile submission reached out"
        );
    }
    drop(bystanders);

    // checks.csv against grading alone, in a pristine workspace of the test's: each lab's sources
    // graded once (half holds a-solution's pipe-echo and the skeleton's posix-shm, broken
    // a-solution's pipe-echo).
    let lone = scratch.path().join("alone");
    ipc_grader::deliver::batch::pristine_copy(&workspace(), &lone).unwrap();
    let solution = grade_alone(&lone, &subs.join("a-solution"), &LABS);
    let skeleton = grade_alone(&lone, &subs.join("skeleton.zip"), &LABS);
    let broken: Rows = of_lab(&solution, LABS[0])
        .into_iter()
        .chain(grade_alone(&lone, &subs.join("broken"), &LABS[1..]))
        .collect();
    let half: Rows = of_lab(&solution, LABS[0])
        .into_iter()
        .chain(of_lab(&skeleton, LABS[1]))
        .collect();
    for (id, expected) in [
        ("a-solution", solution),
        ("skeleton", skeleton),
        ("half", half),
        ("broken", broken),
    ] {
        let batch: Rows = checks
            .iter()
            .filter(|c| c["submission"] == id)
            .map(|c| {
                (
                    (c["lab"].clone(), c["check"].clone()),
                    (c["status"].clone(), c["score"].parse().unwrap()),
                )
            })
            .collect();
        assert_eq!(batch, expected, "{id}: batch against alone");
        let total: u64 = expected.values().map(|(_, score)| score).sum();
        assert_eq!(field(id, "total"), total.to_string(), "{id}");
    }

    // The page: the pass-rate chart says what checks.csv says.
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(!page.contains("<script"));
    let chart_start = page.find("id=\"pass-rates\"").expect("a pass-rate chart");
    let chart = &page[chart_start..page[chart_start..].find("</svg>").unwrap() + chart_start];
    let texts = svg_texts(chart);
    let mut charted = 0;
    for (index, text) in texts.iter().enumerate() {
        let Some((lab, check)) = text.split_once('/') else {
            continue;
        };
        let rows: Vec<_> = checks
            .iter()
            .filter(|c| c["lab"] == lab && c["check"] == check)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let passed = rows.iter().filter(|c| c["status"] == "passed").count();
        let expected = format!(
            "{passed}/{} passed ({}%)",
            rows.len(),
            (passed as f64 * 100.0 / rows.len() as f64).round()
        );
        assert_eq!(texts[index + 1], expected, "{text}");
        charted += 1;
    }
    let distinct: std::collections::BTreeSet<_> =
        checks.iter().map(|c| (&c["lab"], &c["check"])).collect();
    assert_eq!(
        charted,
        distinct.len(),
        "every check has its bar: {texts:?}"
    );
    for row in &grades {
        if row["status"] != "refused" {
            let link = format!("submissions/{}/report.json", row["id"]);
            assert!(page.contains(&link), "{link}");
            assert!(out.join(&link).is_file(), "{link}");
        }
    }

    match render(&out.join("report.html"), scratch.path()) {
        None => eprintln!(
            "skipped the rendering: chromium is not installed (Debian's chromium package; \
             .ci/run installs it)"
        ),
        Some((png, log)) => {
            let size = std::fs::metadata(&png).unwrap().len();
            assert!(size > 20_000, "a near-empty screenshot: {size} bytes");
            assert!(!log.contains("CONSOLE"), "console messages: {log}");
        }
    }
}

#[test]
fn an_out_directory_in_use_is_refused_without_resume() {
    let scratch = tempfile::tempdir().unwrap();
    let subs = scratch.path().join("submissions");
    std::fs::create_dir_all(subs.join("empty")).unwrap();
    let out = scratch.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("grades.csv"), "id\n").unwrap();
    let output = grader()
        .arg("batch")
        .arg(&subs)
        .arg("--out")
        .arg(&out)
        .args(["--labs", "pipe-echo"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--resume"));
    let output = grader()
        .arg("batch")
        .arg(scratch.path().join("nope"))
        .arg("--out")
        .arg(scratch.path().join("out2"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(!scratch.path().join("out2").exists());
}

#[test]
fn a_submission_over_its_time_limit_is_stopped_and_resume_skips_it() {
    build_labs_here();
    let scratch = tempfile::tempdir().unwrap();
    let subs = scratch.path().join("submissions");
    write_dir(&subs.join("slow"), &sources("solutions", LAB_DIRS[0]));
    let out = scratch.path().join("out");
    let batch = |resume: bool| {
        let mut command = grader();
        command
            .arg("batch")
            .arg(&subs)
            .arg("--out")
            .arg(&out)
            .args(["--labs", "pipe-echo", "--time-limit", "2s", "--seed", SEED]);
        if resume {
            command.arg("--resume");
        }
        command.output().unwrap()
    };
    let output = batch(false);
    assert!(output.status.success(), "{output:?}");
    let grades = read_csv(&out.join("grades.csv"));
    assert_eq!(grades.len(), 1);
    assert_eq!(grades[0]["status"], "time-limit", "{grades:?}");
    assert!(
        grades[0]["reason"].contains("time limit (2s)"),
        "{grades:?}"
    );
    let first = std::fs::read_to_string(out.join("grades.csv")).unwrap();
    // Stopped within its limit and the grace its grader gets to stop, not after the whole lab.
    let wall: f64 = grades[0]["wall_seconds"].parse().unwrap();
    assert!(wall < 2.0 + 20.0 + 5.0, "{wall}");

    let again = batch(true);
    assert!(again.status.success(), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stdout).contains("already graded"));
    assert_eq!(
        std::fs::read_to_string(out.join("grades.csv")).unwrap(),
        first
    );
}
