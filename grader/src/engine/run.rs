//! Running checks: the per-check context a check is written against, and the loop that grades
//! a selection of checks and turns their outcomes into a report.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::audit::{self, CheckObjects, IpcObject};
use super::compile::{self, Programs, Variant};
use super::files::{self, Created, FileWatch};
use super::inspect;
use super::ledger::Ledger;
use super::model::{CLEANUP_CHECK, Check, CheckResult, Fail, Lab, LabResult, Report, Status};
use super::order::{self, Durations};
use super::process::{self, Limits, Proc};

/// Extra time a check's own code gets past its timeout before the grader gives up on it.
const WATCHDOG_GRACE: Duration = Duration::from_secs(15);

/// Taken for writing by exclusive checks, for reading by the others.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// What a check is written against: its seed and random inputs, its private directory and IPC
/// names, and the programs it starts.
pub struct Run {
    /// The seed of this check's random inputs.
    pub seed: u64,
    rng: ChaCha8Rng,
    program: PathBuf,
    dir: tempfile::TempDir,
    tag: String,
    deadline: Instant,
    lab: &'static Lab,
    limits: Limits,
    roots: Arc<Mutex<Vec<i32>>>,
    procs: Vec<ProcLog>,
    notes: Vec<String>,
    ledger: Arc<Ledger>,
    objects: Arc<CheckObjects>,
    /// The paths of the check's directory handed out by [`Run::path`]: the only files the
    /// programs may create there.
    given: std::cell::RefCell<Vec<PathBuf>>,
}

struct ProcLog {
    command: String,
    stdout: Arc<Mutex<process::Captured>>,
    stderr: Arc<Mutex<process::Captured>>,
    transcript: Arc<Mutex<Vec<String>>>,
}

impl Run {
    /// Random generator of this check, seeded from [`Run::seed`].
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// `len` random bytes.
    pub fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        self.rng.fill(&mut bytes[..]);
        bytes
    }

    /// A path in this check's private directory (removed after the check). The programs may
    /// create files at the paths handed out here, and nowhere else.
    pub fn path(&self, name: &str) -> PathBuf {
        self.path_of_bytes(name.as_ref())
    }

    /// A path as [`Run::path`] whose file name is any bytes a file name may hold, not
    /// necessarily UTF-8.
    pub fn path_of_bytes(&self, name: &OsStr) -> PathBuf {
        let path = self.dir.path().join(name);
        self.given.borrow_mut().push(path.clone());
        path
    }

    /// A file the check itself made outside its directory (a segment planted at a name the
    /// programs will meet): a program that opens it did not create it, so the file audit leaves
    /// it out.
    pub fn made_by_grader(&self, path: &Path) {
        self.given.borrow_mut().push(path.to_path_buf());
    }

    /// A POSIX IPC name (`/ipclabs-...-what`) that no other check uses; whatever carries it is
    /// audited and removed after the check.
    pub fn ipc_name(&mut self, what: &str) -> String {
        let name = format!("/{}-{what}", self.tag);
        self.hand_out(name)
    }

    /// A POSIX IPC name as [`Run::ipc_name`] whose bytes after the slash are all whitespace
    /// (spaces and tabs spelling the tag and `what`), for names that are valid although blank.
    pub fn blank_ipc_name(&mut self, what: &str) -> String {
        let name = format!(
            "/{}",
            super::ledger::in_blanks(&format!("{}-{what}", self.tag))
        );
        self.hand_out(name)
    }

    /// Writes `name` down and audits whatever carries it.
    fn hand_out(&mut self, name: String) -> String {
        self.ledger.record(&name);
        self.objects
            .names
            .lock()
            .expect("names lock")
            .push(name.clone());
        name
    }

    /// Declares a SysV IPC key the check's programs will use (from `ftok()` of a path in
    /// [`Run::path`], say): objects with this key are audited and removed after the check.
    /// `false` when another check running on the machine holds the key: take another.
    #[must_use]
    pub fn ipc_key(&mut self, key: i32) -> bool {
        if !self.objects.claim_key(key) {
            return false;
        }
        self.ledger.record(&format!("key {key:#x}"));
        true
    }

    /// The check's IPC objects seen so far (whenever a program sent a message, and now), each
    /// with its permission bits when first seen.
    pub fn objects_seen(&self) -> Vec<(IpcObject, Option<u32>)> {
        self.objects.seen()
    }

    /// Fails unless every IPC object of the check seen so far was created for its owner only
    /// (mode 600), as every lab's handout requires: others must not read or change it.
    pub fn expect_owner_only(&self) -> Result<(), Fail> {
        let wrong: Vec<(String, u32)> = self
            .objects_seen()
            .into_iter()
            .filter(|(object, _)| !matches!(object, IpcObject::SocketFile { .. }))
            .filter_map(|(object, mode)| {
                let mode = mode? & 0o777;
                (mode != 0o600).then(|| (format!("{object} has mode {mode:o}"), mode))
            })
            .collect();
        if wrong.is_empty() {
            return Ok(());
        }
        let bits = wrong.iter().fold(0, |all, (_, mode)| all | mode);
        // What the wrong bits do, so that the message names the mistake made.
        let mut meaning = Vec::new();
        if bits & 0o077 != 0 {
            meaning.push("bits for group or others let other users read or change it");
        }
        if bits & 0o100 != 0 {
            meaning.push(
                "the owner's execute bit (S_IXUSR, as in S_IRWXU = 0700) is not asked for: an IPC \
                 object is never executed",
            );
        }
        if bits & 0o600 != 0o600 {
            meaning.push("without read and write for its owner, its owner is locked out");
        }
        let objects: Vec<String> = wrong.into_iter().map(|(object, _)| object).collect();
        Err(Fail::failed(format!(
            "{}: create every IPC object with mode 0600 (S_IRUSR | S_IWUSR), read and write for \
             its owner only, no other bit; {}",
            objects.join("; "),
            meaning.join("; ")
        )))
    }

    /// The user (uid, gid) the lab's programs run as, when not the grader's own: what the
    /// check itself creates for them to use must belong to that user.
    pub fn program_user(&self) -> Option<(u32, u32)> {
        self.limits.user
    }

    /// When the check's time is up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// A line for the check's log.
    pub fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    /// Starts the lab's program with `args` in the check's directory.
    pub fn spawn<S: AsRef<OsStr>>(&mut self, args: &[S]) -> Result<Proc, Fail> {
        self.spawn_limited(args, self.limits)
    }

    /// Starts the lab's program like [`Run::spawn`], with room for `threads` more tasks under
    /// `RLIMIT_NPROC` ([`Limits::processes`]): a server with a thread per client, for hundreds
    /// of clients.
    pub fn spawn_with_threads<S: AsRef<OsStr>>(
        &mut self,
        args: &[S],
        threads: u64,
    ) -> Result<Proc, Fail> {
        let limits = Limits {
            processes: self.limits.processes + threads,
            ..self.limits
        };
        self.spawn_limited(args, limits)
    }

    /// Starts the lab's program like [`Run::spawn`], holding `fds` besides stdio and the control
    /// channel, each open on `/dev/null` ([`Limits::held_descriptors`]).
    pub fn spawn_holding<S: AsRef<OsStr>>(
        &mut self,
        args: &[S],
        fds: &'static [i32],
    ) -> Result<Proc, Fail> {
        let limits = Limits {
            held_descriptors: fds,
            ..self.limits
        };
        self.spawn_limited(args, limits)
    }

    /// As [`Run::spawn_holding`], each of `fds` a new unnamed file in the directory `dir`
    /// ([`Limits::held_descriptors_in`]).
    pub fn spawn_holding_in<S: AsRef<OsStr>>(
        &mut self,
        args: &[S],
        fds: &'static [i32],
        dir: &'static std::ffi::CStr,
    ) -> Result<Proc, Fail> {
        let limits = Limits {
            held_descriptors: fds,
            held_descriptors_in: Some(dir),
            ..self.limits
        };
        self.spawn_limited(args, limits)
    }

    /// Starts the lab's program like [`Run::spawn`], with the signals of `mask` blocked
    /// ([`Limits::blocked_signals`]) and, with `pipe_at`, holding a pipe of its own there
    /// ([`Limits::held_pipe_at`]).
    pub fn spawn_with_state<S: AsRef<OsStr>>(
        &mut self,
        args: &[S],
        mask: u64,
        pipe_at: Option<i32>,
    ) -> Result<Proc, Fail> {
        let limits = Limits {
            blocked_signals: mask,
            held_pipe_at: pipe_at,
            ..self.limits
        };
        self.spawn_limited(args, limits)
    }

    /// As [`Run::spawn_stopped`], without the control channel's variable in the program's
    /// environment ([`Limits::ungraded`]): run as by hand, it answers by its exit status and
    /// output alone.
    pub fn spawn_stopped_ungraded<S: AsRef<OsStr>>(&mut self, args: &[S]) -> Result<Proc, Fail> {
        let limits = Limits {
            ungraded: true,
            ..self.limits
        };
        self.spawn_stopped_limited(args, limits)
    }

    /// Starts the lab's program like [`Run::spawn`], with its soft `RLIMIT_MSGQUEUE` lowered to
    /// `bytes`: the default limit is out of reach of the queues a user may create, so a check
    /// of how a program counts against it has to lower it.
    pub fn spawn_with_message_queue_bytes<S: AsRef<OsStr>>(
        &mut self,
        args: &[S],
        bytes: u64,
    ) -> Result<Proc, Fail> {
        let limits = Limits {
            message_queue_bytes: Some(bytes),
            ..self.limits
        };
        self.spawn_limited(args, limits)
    }

    /// Starts the lab's program like [`Run::spawn`], in an IPC namespace of its own whose
    /// `/proc/sys/fs/mqueue/msg_max` and `msgsize_max` are the values given: message queue
    /// limits other than the machine's, which only a namespace can give without changing them
    /// for everyone. `None` unless the grader may (root, allowed to make the namespace and write
    /// its limits: [`process::message_queue_sysctls_allowed`]). The grader reaches the
    /// program's queues only from inside the namespace (`setns` on `/proc/PID/ns/ipc`); they go
    /// with it.
    pub fn spawn_with_message_queue_sysctls<S: AsRef<OsStr>>(
        &mut self,
        args: &[S],
        msg_max: u64,
        msgsize_max: u64,
    ) -> Result<Option<Proc>, Fail> {
        self.spawn_in_message_queue_namespace(args, (msg_max, msgsize_max), None)
    }

    /// Starts the lab's program like [`Run::spawn`], in the IPC namespace of process `pid` (one
    /// started with [`Run::spawn_with_message_queue_sysctls`]): beside it, it sees its queues
    /// and its limits. Root only, as that namespace.
    pub fn spawn_in_ipc_namespace_of<S: AsRef<OsStr>>(
        &mut self,
        args: &[S],
        pid: i32,
    ) -> Result<Proc, Fail> {
        let limits = Limits {
            ipc_namespace_of: Some(pid),
            ..self.limits
        };
        self.spawn_limited(args, limits)
    }

    /// As [`Run::spawn_with_message_queue_sysctls`], and that namespace's `msg_default` is
    /// `msg_default` (the kernel's default is 10, often the machine's `msg_max` too).
    pub fn spawn_with_message_queue_sysctls_and_default<S: AsRef<OsStr>>(
        &mut self,
        args: &[S],
        (msg_max, msgsize_max): (u64, u64),
        msg_default: u64,
    ) -> Result<Option<Proc>, Fail> {
        self.spawn_in_message_queue_namespace(args, (msg_max, msgsize_max), Some(msg_default))
    }

    /// As [`Run::spawn_with_message_queue_sysctls`], stopped before its first instruction (as
    /// [`Run::spawn_stopped`]): a tracer sees or changes what the program learns of its limits.
    pub fn spawn_stopped_with_message_queue_sysctls<S: AsRef<OsStr>>(
        &mut self,
        args: &[S],
        (msg_max, msgsize_max): (u64, u64),
    ) -> Result<Option<Proc>, Fail> {
        match self.message_queue_namespace((msg_max, msgsize_max), None) {
            Some(limits) => self.spawn_stopped_limited(args, limits).map(Some),
            None => Ok(None),
        }
    }

    /// The limits of a program in an IPC namespace of its own with these message queue limits:
    /// `None` unless the grader is root and the limits can be set.
    fn message_queue_namespace(
        &self,
        (msg_max, msgsize_max): (u64, u64),
        msg_default: Option<u64>,
    ) -> Option<Limits> {
        let allowed = nix::unistd::geteuid().is_root()
            && process::message_queue_sysctls_allowed(msg_max, msgsize_max);
        allowed.then_some(Limits {
            message_queue_sysctls: Some((msg_max, msgsize_max)),
            message_queue_msg_default: msg_default,
            ..self.limits
        })
    }

    fn spawn_in_message_queue_namespace<S: AsRef<OsStr>>(
        &mut self,
        args: &[S],
        (msg_max, msgsize_max): (u64, u64),
        msg_default: Option<u64>,
    ) -> Result<Option<Proc>, Fail> {
        match self.message_queue_namespace((msg_max, msgsize_max), msg_default) {
            Some(limits) => self.spawn_limited(args, limits).map(Some),
            None => Ok(None),
        }
    }

    /// Starts the lab's program like [`Run::spawn`], without the capability that lets root pass
    /// every System V IPC permission check (`CAP_IPC_OWNER`): the modes of the segments (queues,
    /// semaphores) it uses apply to it. `None` unless the programs run as root, the only user
    /// that has it.
    pub fn spawn_without_ipc_owner<S: AsRef<OsStr>>(
        &mut self,
        args: &[S],
    ) -> Result<Option<Proc>, Fail> {
        if self.limits.user.is_some() || !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        let limits = Limits {
            without_ipc_owner: true,
            ..self.limits
        };
        self.spawn_limited(args, limits).map(Some)
    }

    /// Starts the lab's program like [`Run::spawn`], stopped before its first instruction: the
    /// check attaches what it needs (a [`crate::engine::tracer::Tracer`]), then lets it go with
    /// [`crate::engine::force::resume`].
    pub fn spawn_stopped<S: AsRef<OsStr>>(&mut self, args: &[S]) -> Result<Proc, Fail> {
        self.spawn_stopped_limited(args, self.limits)
    }

    /// As [`Run::spawn_stopped`], with its soft `RLIMIT_MSGQUEUE` lowered to `bytes` (as
    /// [`Run::spawn_with_message_queue_bytes`]): a tracer sees whether a config over that limit
    /// reaches `mq_open()`.
    pub fn spawn_stopped_with_message_queue_bytes<S: AsRef<OsStr>>(
        &mut self,
        args: &[S],
        bytes: u64,
    ) -> Result<Proc, Fail> {
        let limits = Limits {
            message_queue_bytes: Some(bytes),
            ..self.limits
        };
        self.spawn_stopped_limited(args, limits)
    }

    fn spawn_stopped_limited<S: AsRef<OsStr>>(
        &mut self,
        args: &[S],
        limits: Limits,
    ) -> Result<Proc, Fail> {
        let limits = Limits {
            stopped_at_start: true,
            ..limits
        };
        let proc = self.spawn_limited(args, limits)?;
        // Stopped: a group-stop the tracer can seize from.
        let until = Instant::now() + Duration::from_secs(2);
        while inspect::view(proc.pid.as_raw()).is_some_and(|v| v.state != 'T') {
            if Instant::now() > until {
                return Err(Fail::Grader(
                    "the program did not stop before exec as asked".into(),
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(proc)
    }

    fn spawn_limited<S: AsRef<OsStr>>(&mut self, args: &[S], limits: Limits) -> Result<Proc, Fail> {
        if let Some(signal) = interrupted() {
            return Err(Fail::Grader(format!(
                "grading was interrupted ({})",
                process::signal_name(signal)
            )));
        }
        let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        let mut proc = process::spawn(
            &self.program,
            &args,
            self.dir.path(),
            limits,
            self.deadline,
            self.lab,
        )?;
        let objects = self.objects.clone();
        proc.on_message(move || objects.look());
        self.roots
            .lock()
            .expect("roots lock")
            .push(proc.pid.as_raw());
        self.ledger.record_group(proc.pid.as_raw());
        super::looks::forget(proc.pid.as_raw());
        self.procs.push(ProcLog {
            command: proc.command.clone(),
            stdout: proc.stdout.clone(),
            stderr: proc.stderr.clone(),
            transcript: proc.transcript.clone(),
        });
        Ok(proc)
    }
}

/// Which checks of a lab to run.
pub struct Plan {
    pub lab: &'static Lab,
    pub checks: Vec<&'static Check>,
    /// Whether the lab's `cleanup` check is reported.
    pub cleanup: bool,
}

/// How to grade.
pub struct Options {
    pub variant: Variant,
    /// The run's seed; each check's seed derives from it and the check's name.
    pub seed: u64,
    /// How many checks run at once (exclusive checks always run alone).
    pub jobs: usize,
    /// Where each check's full log is written.
    pub log_dir: PathBuf,
    /// The user the graded programs run as, when the grader runs as root.
    pub run_as: Option<RunAs>,
}

/// An unprivileged user to run graded programs as: root skips permission and queue limits and
/// is not held by `RLIMIT_NPROC`, so untrusted code should not run as root.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// The user called `name`, from the password database.
    pub fn lookup(name: &str) -> Result<RunAs, String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(user)) if user.uid.is_root() => Err(format!("{name} is root")),
            Ok(Some(user)) => Ok(RunAs {
                name: name.to_string(),
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }),
            Ok(None) => Err(format!("there is no user {name}")),
            Err(e) => Err(format!("looking up user {name}: {e}")),
        }
    }

    /// Why this user cannot reach `path` (a directory on the way it may not enter), if it
    /// cannot: then the programs it should run die before they start.
    pub fn cannot_reach(&self, path: &Path) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let mut dirs: Vec<&Path> = path.ancestors().collect();
        dirs.reverse();
        for dir in dirs {
            let meta = std::fs::metadata(dir).ok()?;
            if !meta.is_dir() {
                continue;
            }
            let bit = if meta.uid() == self.uid {
                0o100
            } else if meta.gid() == self.gid {
                0o010
            } else {
                0o001
            };
            if meta.mode() & bit == 0 {
                return Some(format!(
                    "the user {} cannot enter {} (mode {:o}, owner uid {}), on the way to {}: \
                     give it search permission (chmod o+x {}), or set TMPDIR to a directory \
                     every user can enter, such as /tmp",
                    self.name,
                    dir.display(),
                    meta.mode() & 0o7777,
                    meta.uid(),
                    path.display(),
                    dir.display()
                ));
            }
        }
        None
    }
}

/// The programs, copied where the user they run as can reach them (a checkout may sit in a
/// directory only its owner can enter), in a directory removed when the run is over.
struct Staged {
    dir: tempfile::TempDir,
    programs: Programs,
}

fn stage_programs(programs: &Programs, user: &RunAs) -> Result<Staged, Fail> {
    use std::os::unix::fs::PermissionsExt;
    let grader = |e: std::io::Error| Fail::Grader(format!("staging the programs: {e}"));
    let dir = tempfile::Builder::new()
        .prefix("ipc-labs-programs-")
        .tempdir()
        .map_err(grader)?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).map_err(grader)?;
    if let Some(why) = user.cannot_reach(dir.path()) {
        return Err(Fail::Grader(why));
    }
    let mut staged = Programs::new();
    for (slug, program) in programs {
        let copy = match program {
            Ok(path) => {
                let copy = dir.path().join(slug);
                std::fs::copy(path, &copy).map_err(grader)?;
                std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
                    .map_err(grader)?;
                Ok(copy)
            }
            Err(error) => Err(error.clone()),
        };
        staged.insert(slug, copy);
    }
    Ok(Staged {
        dir,
        programs: staged,
    })
}

/// What the grader is doing, for a progress display.
pub enum Progress<'a> {
    Building,
    /// A line of cargo's progress (`Compiling nix v0.32.0`).
    Compiling(&'a str),
    Started {
        lab: &'a str,
        check: &'a str,
    },
    Finished {
        lab: &'a str,
        result: &'a CheckResult,
    },
}

/// The seed of one check: the run's seed mixed with the check's full name (FNV-1a), so that
/// `--seed` reproduces a check's inputs whether it runs alone or with others.
pub fn check_seed(seed: u64, lab: &str, check: &str) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for byte in lab.bytes().chain([b'/']).chain(check.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Builds the programs and runs every planned check.
pub fn grade(
    workspace: &Path,
    plans: &[Plan],
    options: &Options,
    progress: &(dyn Fn(Progress) + Sync),
) -> Report {
    progress(Progress::Building);
    let slugs: Vec<&'static str> = plans.iter().map(|p| p.lab.slug).collect();
    let builder = options.run_as.as_ref();
    let programs = compile::build_reporting(workspace, options.variant, &slugs, builder, &|line| {
        progress(Progress::Compiling(line))
    });
    let mut report = grade_built(plans, options, &programs, progress);
    report.workspace = Some(workspace.to_path_buf());
    report
}

/// The signal that interrupted grading (SIGINT, SIGTERM), or 0.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// The programs of every check running now, so that an interruption can end them all.
static RUNNING: Mutex<Vec<Arc<Mutex<Vec<i32>>>>> = Mutex::new(Vec::new());

/// A running check's programs, in [`RUNNING`] until it is dropped.
struct Running(Arc<Mutex<Vec<i32>>>);

impl Running {
    fn register(roots: &Arc<Mutex<Vec<i32>>>) -> Running {
        RUNNING.lock().expect("running lock").push(roots.clone());
        Running(roots.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .expect("running lock")
            .retain(|roots| !Arc::ptr_eq(roots, &self.0));
    }
}

/// Stops grading: no check starts any more, and the processes of the running ones are killed,
/// so that their checks end at once and clean up after themselves (objects removed, directories
/// deleted). What was graded before is reported.
pub fn interrupt(signal: i32) {
    INTERRUPTED.store(signal, Ordering::SeqCst);
    let running: Vec<Vec<i32>> = RUNNING
        .lock()
        .expect("running lock")
        .iter()
        .map(|roots| roots.lock().expect("roots lock").clone())
        .collect();
    for roots in running {
        process::kill_tree(&roots);
    }
}

/// The signal that interrupted grading, if one did.
pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Runs every planned check with programs already built. Each check's result, and each lab's
/// `cleanup` result once the lab's last check is done, goes to `progress` as it comes.
pub fn grade_built(
    plans: &[Plan],
    options: &Options,
    programs: &Programs,
    progress: &(dyn Fn(Progress) + Sync),
) -> Report {
    process::keep_memory_small();
    let setup = process::become_subreaper()
        .and_then(|()| Ledger::open().map(Arc::new).map_err(Fail::Grader));
    let staged = match (&setup, &options.run_as) {
        (Ok(_), Some(user)) => Some(stage_programs(programs, user)),
        _ => None,
    };
    let (setup, programs) = match staged.as_ref() {
        Some(Err(fail)) => (Err(fail.clone()), programs),
        Some(Ok(staged)) => (setup, &staged.programs),
        None => (setup, programs),
    };

    // Each check with its place in the report.
    let mut jobs: Vec<(usize, (usize, &Plan, &'static Check))> = plans
        .iter()
        .enumerate()
        .flat_map(|(p, plan)| plan.checks.iter().map(move |check| (p, plan, *check)))
        .enumerate()
        .collect();
    let durations = Durations::read(&options.log_dir);
    jobs.sort_by_key(|(_, (_, plan, check))| durations.sort_key(plan.lab.slug, check));
    let queue = Mutex::new(jobs.iter());
    // Per plan: its checks' results by job index, and how many are still to come.
    type Graded = (usize, CheckResult, Vec<IpcObject>);
    let labs: Mutex<Vec<(Vec<Graded>, usize)>> = Mutex::new(
        plans
            .iter()
            .map(|plan| (Vec::new(), plan.checks.len()))
            .collect(),
    );
    let cleanups: Mutex<Vec<Option<CheckResult>>> = Mutex::new(vec![None; plans.len()]);
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    if interrupted().is_some() {
                        return;
                    }
                    let next = queue.lock().expect("queue lock").next();
                    let Some(&(index, (p, plan, check))) = next else {
                        return;
                    };
                    progress(Progress::Started {
                        lab: plan.lab.slug,
                        check: check.name,
                    });
                    let (result, leaked) = match &setup {
                        Err(fail) => (refused(check, options.seed, fail.clone()), Vec::new()),
                        Ok(ledger) => run_check(plan.lab, check, programs, options, ledger),
                    };
                    // A check cut short by an interruption says nothing about the code.
                    if interrupted().is_some() {
                        return;
                    }
                    progress(Progress::Finished {
                        lab: plan.lab.slug,
                        result: &result,
                    });
                    let mut labs = labs.lock().expect("labs lock");
                    let (graded, left) = &mut labs[p];
                    graded.push((index, result, leaked));
                    *left -= 1;
                    if *left == 0 && plan.cleanup {
                        graded.sort_by_key(|(index, _, _)| *index);
                        let mine: Vec<&Graded> = graded.iter().collect();
                        let cleanup = cleanup_result(plan.lab, &mine, options.seed);
                        progress(Progress::Finished {
                            lab: plan.lab.slug,
                            result: &cleanup,
                        });
                        cleanups.lock().expect("cleanups lock")[p] = Some(cleanup);
                    }
                }
            });
        }
    });
    let cleanups = cleanups.into_inner().expect("cleanups lock");
    let labs = labs.into_inner().expect("labs lock");
    durations.record(labs.iter().zip(plans).flat_map(|((graded, _), plan)| {
        graded
            .iter()
            .map(|(_, result, _)| (order::key(plan.lab.slug, &result.name), result.duration_ms))
    }));
    let mut results = Vec::new();
    for ((mut graded, _), (plan, cleanup)) in labs.into_iter().zip(plans.iter().zip(cleanups)) {
        if graded.is_empty() && cleanup.is_none() && interrupted().is_some() {
            continue;
        }
        graded.sort_by_key(|(index, _, _)| *index);
        let mut checks: Vec<CheckResult> = graded.into_iter().map(|(_, r, _)| r).collect();
        checks.extend(cleanup);
        results.push(LabResult {
            name: plan.lab.slug.to_string(),
            score: checks.iter().map(|c| c.score).sum(),
            max_score: checks.iter().map(|c| c.max_score).sum(),
            checks,
        });
    }
    process::kill_stray_children();
    if let Ok(ledger) = &setup {
        ledger.close();
    }
    if let Some(Ok(staged)) = staged {
        drop(staged.dir);
    }
    let mut report = Report::from_labs(results, options.seed);
    report.interrupted = interrupted().map(process::signal_name);
    report
}

/// The lab's `cleanup` check: passes when the lab's checks ran and none left an IPC object.
fn cleanup_result(
    lab: &Lab,
    results: &[&(usize, CheckResult, Vec<IpcObject>)],
    seed: u64,
) -> CheckResult {
    let leaked: Vec<String> = results
        .iter()
        .flat_map(|(_, result, leaked)| {
            leaked.iter().map(move |o| format!("{o} ({})", result.name))
        })
        .collect();
    let ran = results
        .iter()
        .any(|(_, r, _)| matches!(r.status, Status::Passed | Status::Failed));
    let (status, message) = if !leaked.is_empty() {
        (
            Status::Failed,
            format!(
                "left behind (the grader removed them): {}; remove what you create when you are done, also on the error paths",
                leaked.join(", ")
            ),
        )
    } else if !ran {
        (
            Status::NotImplemented,
            "no check of the lab ran to its end, so there is nothing to judge yet".into(),
        )
    } else {
        (Status::Passed, "nothing was left behind".into())
    };
    CheckResult {
        name: CLEANUP_CHECK.into(),
        status,
        score: if status == Status::Passed {
            lab.cleanup_points
        } else {
            0
        },
        max_score: lab.cleanup_points,
        message,
        duration_ms: 0,
        hint: None,
        seed: check_seed(seed, lab.slug, CLEANUP_CHECK),
        log: None,
    }
}

fn refused(check: &Check, seed: u64, fail: Fail) -> CheckResult {
    CheckResult {
        name: check.name.into(),
        status: fail.status(),
        score: 0,
        max_score: check.points,
        message: fail.message(),
        duration_ms: 0,
        hint: None,
        seed,
        log: None,
    }
}

/// A file that the graders of one batch lock around each check (see [`lock_across_processes`]).
pub const EXCLUSIVE_LOCK_ENV: &str = "IPC_LABS_EXCLUSIVE_LOCK";

/// When [`EXCLUSIVE_LOCK_ENV`] names a file (`cargo grade batch` sets it for its child graders),
/// a lock on it: shared for an ordinary check, exclusive for one that measures time, so that
/// such a check runs alone across every grader of the batch, not only within its own.
fn lock_across_processes(exclusive: bool) -> Option<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    let path = std::env::var_os(EXCLUSIVE_LOCK_ENV)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .ok()?;
    let how = if exclusive {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockShared
    };
    Flock::lock(file, how).ok()
}

/// Runs one check: its processes, then the audit of what it left.
fn run_check(
    lab: &'static Lab,
    check: &'static Check,
    programs: &Programs,
    options: &Options,
    ledger: &Arc<Ledger>,
) -> (CheckResult, Vec<IpcObject>) {
    let seed = check_seed(options.seed, lab.slug, check.name);
    let program = match programs.get(lab.slug) {
        Some(Ok(path)) => path.clone(),
        Some(Err(error)) => {
            let fail = Fail::Crashed(error.clone());
            return (refused(check, seed, fail), Vec::new());
        }
        None => {
            return (
                refused(check, seed, Fail::Grader("not built".into())),
                Vec::new(),
            );
        }
    };
    let _shared;
    let _alone;
    if check.exclusive {
        _alone = EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner());
    } else {
        _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    }
    let _across_processes = lock_across_processes(check.exclusive);
    let dir = match tempfile::Builder::new().prefix("ipc-labs-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            return (
                refused(check, seed, Fail::Grader(format!("temp dir: {e}"))),
                Vec::new(),
            );
        }
    };
    if let Some(user) = &options.run_as {
        let owner = (Some(user.uid.into()), Some(user.gid.into()));
        if let Err(e) = nix::unistd::chown(dir.path(), owner.0, owner.1) {
            let fail = Fail::Grader(format!(
                "cannot give the check's directory to {}: {e}",
                user.name
            ));
            return (refused(check, seed, fail), Vec::new());
        }
    }
    let roots = Arc::new(Mutex::new(Vec::new()));
    let _running = Running::register(&roots);
    let user = options.run_as.as_ref().map(|u| u.uid);
    let objects = Arc::new(CheckObjects::new(roots.clone(), user));
    CheckObjects::register(&objects);
    let watched = Arc::downgrade(&objects);
    let file_watch = FileWatch::start(dir.path(), roots.clone(), user, move |path| {
        watched
            .upgrade()
            .is_some_and(|objects| objects.anothers_shm_file(path))
    });
    let started = Instant::now();
    let tag = ledger.new_tag();
    let mut run = Run {
        seed,
        rng: ChaCha8Rng::seed_from_u64(seed),
        program,
        dir,
        tag: tag.clone(),
        deadline: started + check.timeout,
        lab,
        limits: Limits::for_user(options.run_as.as_ref().map(|u| (u.uid, u.gid))),
        roots,
        procs: Vec::new(),
        notes: Vec::new(),
        ledger: ledger.clone(),
        objects,
        given: Default::default(),
    };

    // The check runs on a thread of its own, so that a check whose own code hangs costs that
    // check only.
    let roots = run.roots.clone();
    let (sender, receiver) = channel();
    let runner = check.run;
    let handle = std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner(&mut run)))
            .unwrap_or_else(|_| Err(Fail::Grader("the check's code panicked".into())));
        let _ = sender.send(());
        (outcome, run)
    });
    let finished = watch_for_fork_bombs(&roots, &receiver, check.timeout + WATCHDOG_GRACE);
    let (mut outcome, mut run) = if let Some(bomb) = finished {
        let (outcome, run) = handle.join().expect("the check thread caught its panic");
        match bomb {
            Some(count) => (
                Err(Fail::Crashed(format!(
                    "the check's processes grew to {count} (more than {MAX_PROCESSES}): a fork \
                     that never stops; the grader killed them all"
                ))),
                run,
            ),
            None => (outcome, run),
        }
    } else {
        process::kill_tree(&roots.lock().expect("roots lock"));
        // The check's thread still holds its run: what it made is found by its tag.
        let removed = ledger.remove_tagged(&tag);
        let mut why = "the check did not return; its processes were killed".to_string();
        if !removed.is_empty() {
            why.push_str(&format!(
                ", and what they made removed: {}",
                removed.join(", ")
            ));
        }
        return (refused(check, seed, Fail::Grader(why)), Vec::new());
    };
    let duration = started.elapsed();

    let roots = run.roots.lock().expect("roots lock").clone();
    let leftovers = students_leftovers(&roots);
    let killed = process::kill_tree(&roots);
    let killed_programs: Vec<i32> = killed.into_iter().filter(|p| roots.contains(p)).collect();
    if !killed_programs.is_empty() {
        run.notes.push(format!(
            "programs still running at the end, killed: {killed_programs:?}"
        ));
    }
    let mut looked: BTreeMap<String, usize> = BTreeMap::new();
    for calls in roots.iter().filter_map(|&root| super::looks::take(root)) {
        for call in calls.lines() {
            *looked.entry(call.to_string()).or_default() += 1;
        }
    }
    let looked: Vec<String> = looked
        .into_iter()
        .map(|(call, times)| match times {
            1 => call,
            _ => format!("{call} ({times} times)"),
        })
        .collect();
    if outcome.is_ok() && !looked.is_empty() {
        outcome = Err(Fail::failed(format!(
            "while the grader traced it, the program looked whether it is traced: {}; that file's \
             TracerPid (or that call's failure) tells it, and a program that looks may do one \
             thing graded and another not; nothing in this lab needs it: do what the handout \
             asks whoever watches",
            looked.join(", ")
        )));
    }
    if outcome.is_ok() && !leftovers.is_empty() {
        outcome = Err(Fail::failed(format!(
            "processes were still running after the program exited (the grader killed them): \
             {}; wait for every child you start",
            leftovers.join(", ")
        )));
    }
    let created = files_not_given(file_watch.finish(), &run);
    let removed = files::remove_outside(&created, run.dir.path());
    if !removed.is_empty() {
        let list: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
        run.notes.push(format!(
            "removed what the programs left: {}",
            list.join(", ")
        ));
    }
    if !created.is_empty() {
        let list: Vec<String> = created.iter().map(ToString::to_string).collect();
        if outcome.is_ok() {
            outcome = Err(Fail::failed(format!(
                "the program created files the grader did not give it: {}; in this lab the data \
                 travels through the IPC objects the handout names, never through files of your \
                 own (write only the files whose paths the program is given)",
                list.join(", ")
            )));
        } else {
            run.notes.push(format!(
                "files created outside the given paths: {}",
                list.join(", ")
            ));
        }
    }
    let mut leaked = run.objects.current();
    leaked.extend(audit::socket_files(run.dir.path()));
    // Without the mqueue file system mounted the snapshots list no message queue: the names
    // handed out are probed instead, and a queue found is a leak like any other.
    let names = run.objects.names.lock().expect("names lock").clone();
    for name in &names {
        let queue = IpcObject::MessageQueue {
            name: name.trim_start_matches('/').to_string(),
        };
        if !leaked.contains(&queue) && audit::message_queue_exists(name) {
            leaked.push(queue);
        }
    }
    for object in &leaked {
        let _ = object.remove();
    }
    if outcome.is_ok() && !leaked.is_empty() && lab.cleanup_points == 0 {
        let list: Vec<String> = leaked.iter().map(ToString::to_string).collect();
        outcome = Err(Fail::failed(format!("left behind: {}", list.join(", "))));
    }
    // A check that did not pass already cost its points; what it left (removed above, and
    // listed in its log) is not charged to the lab's cleanup check as well.
    let charged = if outcome.is_ok() {
        leaked.clone()
    } else {
        Vec::new()
    };

    let (status, message) = match &outcome {
        Ok(message) => (Status::Passed, message.clone()),
        Err(fail) => (fail.status(), fail.message()),
    };
    let (log, message) = match write_log(
        &options.log_dir,
        options.seed,
        lab,
        check,
        &run,
        status,
        &message,
        &leaked,
    ) {
        Ok(path) => (Some(path), message),
        Err(error) => (
            None,
            format!("{message}\n(the grader could not write this check's log: {error})"),
        ),
    };
    let result = CheckResult {
        name: check.name.into(),
        status,
        score: if status == Status::Passed {
            check.points
        } else {
            0
        },
        max_score: check.points,
        message,
        duration_ms: duration.as_millis() as u64,
        hint: match &outcome {
            Err(fail) if fail.deserves_hint() => check.hint,
            _ => None,
        },
        seed,
        log,
    };
    (result, charged)
}

/// How many processes a check's tree may have before the grader calls it a fork bomb and kills
/// it: far more than any lab needs, far fewer than would starve the machine.
pub const MAX_PROCESSES: usize = 128;

/// Waits for the check's thread to finish (until `limit`) while watching for a fork bomb.
/// `None`: the check did not finish in time. `Some(Some(count))`: its tree grew to `count`
/// processes and was killed (the check then finishes quickly: its programs are gone).
fn watch_for_fork_bombs(
    roots: &Arc<Mutex<Vec<i32>>>,
    finished: &std::sync::mpsc::Receiver<()>,
    limit: Duration,
) -> Option<Option<usize>> {
    // The machine's task count (in /proc/loadavg) is cheap to read; the tree is counted only
    // when that count jumps.
    let tasks = || -> usize {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok())
            .unwrap_or(0)
    };
    let baseline = tasks();
    let until = Instant::now() + limit;
    let mut bomb = None;
    loop {
        let now = Instant::now();
        if now >= until {
            return None;
        }
        match finished.recv_timeout((until - now).min(Duration::from_millis(20))) {
            Ok(()) => return Some(bomb),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Some(bomb),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if bomb.is_none() && tasks() > baseline + MAX_PROCESSES {
            let roots = roots.lock().expect("roots lock").clone();
            let count = inspect::tree(&roots, &roots).len();
            if count > MAX_PROCESSES {
                process::kill_tree(&roots);
                bomb = Some(count);
            }
        }
    }
}

/// How long the programs a check started get to exit on their own once the check is over (one
/// may still be on its way out after reporting its last message).
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// The processes the student's code left running: once the programs the check started have
/// exited (or [`EXIT_GRACE`] is over), every other live process of their trees.
fn students_leftovers(roots: &[i32]) -> Vec<String> {
    let alive =
        |pid: i32| inspect::view(pid).is_some_and(|v| v.state != 'Z') && !inspect::is_anothers(pid);
    let until = Instant::now() + EXIT_GRACE;
    while Instant::now() < until && roots.iter().any(|&root| alive(root)) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let forks = inspect::grader_forks();
    let left: Vec<i32> = inspect::tree(roots, roots)
        .into_iter()
        .filter(|row| !roots.contains(&row.pid) && row.state != 'Z' && !forks(row.pid))
        .map(|row| row.pid)
        .collect();
    let mut named: Vec<String> = left
        .iter()
        .take(5)
        .filter_map(|&pid| inspect::view(pid))
        .map(|view| format!("pid {} ({})", view.pid, view.comm))
        .collect();
    if left.len() > named.len() {
        named.push(format!("and {} more", left.len() - named.len()));
    }
    named
}

/// The files the check's programs created that the check did not give them: anything new in
/// the check's directory but the given paths (and the directories leading to them), and what
/// they made in the shared places, but glibc's own temporary files and the check's IPC names.
fn files_not_given(created: Vec<Created>, run: &Run) -> Vec<Created> {
    let given = run.given.borrow();
    let names = run.objects.names.lock().expect("names lock").clone();
    created
        .into_iter()
        .filter(|file| {
            let handed_out = given
                .iter()
                .any(|g| file.path == *g || g.starts_with(&file.path) || file.path.starts_with(g));
            let ipc_name = file.path.parent() == Some(Path::new("/dev/shm"))
                && file
                    .path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| {
                        let n = n.strip_prefix("sem.").unwrap_or(n);
                        names
                            .iter()
                            .any(|given| n.starts_with(given.trim_start_matches('/')))
                    });
            let own_dir = file.path == run.dir.path();
            !handed_out && !ipc_name && !own_dir && !files::glibc_temporary(&file.path)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn write_log(
    dir: &Path,
    run_seed: u64,
    lab: &Lab,
    check: &Check,
    run: &Run,
    status: Status,
    message: &str,
    leaked: &[IpcObject],
) -> Result<PathBuf, String> {
    let path = dir.join(lab.slug).join(format!("{}.log", check.name));
    let folder = dir.join(lab.slug);
    std::fs::create_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    let mut text = format!(
        "check {}/{}: {}\nreproduce: cargo grade {}/{} --seed {run_seed} (the check's own seed: {})\n\n{}\n",
        lab.slug,
        check.name,
        status.as_str(),
        lab.slug,
        check.name,
        run.seed,
        message
    );
    for note in &run.notes {
        text.push_str(&format!("note: {note}\n"));
    }
    for object in leaked {
        text.push_str(&format!("left behind: {object}\n"));
    }
    for proc in &run.procs {
        text.push_str(&format!("\n$ {}\n", proc.command));
        for line in proc.transcript.lock().expect("transcript lock").iter() {
            text.push_str(&format!("  {line}\n"));
        }
        let stdout = proc.stdout.lock().expect("capture lock").text();
        let stderr = proc.stderr.lock().expect("capture lock").text();
        text.push_str(&format!("--- stdout\n{stdout}\n--- stderr\n{stderr}\n"));
    }
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_seed_is_stable_and_differs_per_check() {
        let a = check_seed(42, "pipe-echo", "echo-0-bytes");
        assert_eq!(a, check_seed(42, "pipe-echo", "echo-0-bytes"));
        assert_ne!(a, check_seed(43, "pipe-echo", "echo-0-bytes"));
        assert_ne!(a, check_seed(42, "pipe-echo", "echo-1-byte"));
    }
}
