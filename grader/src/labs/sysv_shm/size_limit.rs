//! The check of the size limit: a size above shmmax, read whole from `/proc/sys/kernel/shmmax`
//! each time and compared before shmget(), is too-large, and nothing else is.

use rand::RngExt;

use crate::engine::{Fail, Run};

use super::private_ipc::PrivateIpc;
use super::protocol::{
    Name, as_expected, expect, failed_after_creating, fresh_name, ftok, spawn_publisher,
    start_create_step, start_publisher, with_context,
};
use super::segments::{Planted, rmid, segment};
use crate::engine::tracer::{Action, Call, Tracer};

pub fn size_limit(run: &mut Run) -> Result<String, Fail> {
    // A limit of its own: not a page multiple, between 3 and 16 pages. shmall (the total, in
    // pages) is set to a number of its own too, smaller than shmmax when read as bytes and
    // unlike the other limits' defaults (shmmni is 4096), so that a limit taken from it shows.
    // At least 2 past a page boundary, so that shmmax - 1 is not a page multiple either.
    let shmmax = run.rng().random_range(3..16u64) * 4096 + run.rng().random_range(2..4096u64);
    let shmall = run.rng().random_range(5000..12000u64);
    let payload = run.random_bytes(64);
    let Some(namespace) = PrivateIpc::enter(&[("shmmax", shmmax), ("shmall", shmall)])? else {
        run.note(
            "the grader may not make an IPC namespace here (it needs root): the limit was tried \
             as the machine has it",
        );
        return machine_limit(run, &payload);
    };
    let path = run.path("anchor-private");
    std::fs::write(&path, b"ftok anchor\n")?;
    // Id 1, the smallest valid one, at the limit itself.
    let name = Name {
        key: ftok(&path, 1)?,
        path,
        id: 1,
        replaced: None,
    };
    let at_limit = format!(
        "with shmmax set to {shmmax} (in a private IPC namespace) and a size of exactly {shmmax}"
    );
    let mut proc = start_publisher(run, (&name.path, 1, shmmax), 1, &payload)?;
    let message = proc.recv_any().map_err(with_context(&at_limit))?;
    if let Some(fail) = failed_after_creating(&message, proc.pid.as_raw()) {
        return Err(with_context(&at_limit)(fail));
    }
    match (message.kind.as_str(), message.get("kind")) {
        ("ready", _) => {
            let found = segment(name.key);
            if found.is_none_or(|s| s.size != shmmax) {
                return Err(Fail::failed(format!(
                    "{at_limit}, the publisher said `ready` but no {shmmax}-byte segment has \
                     key ftok(path, 1)"
                )));
            }
            proc.send("go", &[])?;
            expect(&mut proc, "publisher", "done")?;
            proc.send("exit", &[])?;
            proc.wait()?;
            // Its key must be free again for the next size.
            found.into_iter().for_each(|s| rmid(s.id));
        }
        ("failed", Some("too-large")) => {
            let error = message.get("error").unwrap_or("");
            let limit = error
                .split("limit of ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok());
            let why = match limit {
                Some(l) if l == shmall => format!(
                    "it compared the size with {l}, which is /proc/sys/kernel/shmall (the total \
                     of all segments, in pages), not shmmax; read /proc/sys/kernel/shmmax"
                ),
                Some(l) if l != shmmax => format!(
                    "it compared the size with {l}, not with the current shmmax; read \
                     /proc/sys/kernel/shmmax each time"
                ),
                // Its limit is shmmax, or it does not say: smaller sizes tell how it compares.
                _ => below_the_limit(run, &name, (shmmax, false), &payload)?,
            };
            return Err(Fail::failed(format!(
                "{at_limit}, the publisher said kind=too-large ({error}): {why}"
            )));
        }
        (said, kind) => {
            return Err(Fail::failed(format!(
                "{at_limit}, the publisher said `{said}` (kind={}: {}), the lab wants a segment \
                 of that size",
                kind.unwrap_or("none"),
                message.get("error").unwrap_or("")
            )));
        }
    }
    let over = shmmax + 1;
    let mut proc = start_publisher(run, (&name.path, 1, over), 2, &payload)?;
    let message = proc.recv_any()?;
    let past = format!("with shmmax set to {shmmax} (in a private IPC namespace), size {over}");
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("too-large")) => {}
        ("failed", Some("shmget")) => {
            return Err(Fail::failed(format!(
                "{past} got kind=shmget (the kernel refused it: {}), not too-large: the \
                 publisher let the size through to shmget(), comparing it with no limit or with \
                 one above the current shmmax (a constant, another file); read \
                 /proc/sys/kernel/shmmax in max_segment_size() each time, and refuse a size \
                 above it",
                message.get("error").unwrap_or("?")
            )));
        }
        (said, kind) => {
            return Err(Fail::failed(format!(
                "{past}, the publisher said `{said}` (kind={}), the lab wants `failed` with \
                 kind=too-large",
                kind.unwrap_or("none")
            )));
        }
    }
    proc.wait()?;
    let setting = format!("shmmax set to {shmmax} (in a private IPC namespace)");
    over_the_limit_key_taken(run, &name, (shmmax, &setting), &payload)?;
    let lowered = limit_read_each_time(run, &namespace, &name, shmmax)?;
    let shmall = shmall_bounds_no_segment(run, &namespace, &name, (shmmax, &setting), &payload)?;
    let long = twenty_digit_limit(run, &namespace, &name, &payload)?;
    drop(namespace);
    Ok(format!(
        "with shmmax {shmmax}, a size of {shmmax} (id 1) was published and {over} was too-large, \
         also with the key taken; {lowered}; {shmall}; with shmmax set to {long} (20 digits, as the \
         default is), a size of exactly shmmax reached shmget()"
    ))
}

/// The limit read each time: one process (the program's `create` step) creates a segment of
/// exactly `shmmax` bytes, then, with `shmmax` lowered in between, another of the same size,
/// which is now too-large. Leaves `shmmax` as it found it.
fn limit_read_each_time(
    run: &mut Run,
    namespace: &PrivateIpc,
    name: &Name,
    shmmax: u64,
) -> Result<String, Fail> {
    let lowered = run.rng().random_range(shmmax / 2..shmmax);
    // Another id, so another key: the first segment's removal is not what the second awaits.
    let then_id = name.id % 255 + 1;
    let what = format!(
        "with shmmax set to {shmmax} (in a private IPC namespace), `sysv-shm create --size \
         {shmmax} --then-id {then_id}` (two Segment::create calls in one process)"
    );
    let mut proc = start_create_step(run, name, shmmax, Some(then_id), &what)?;
    as_expected(proc.recv_any()?, "create step", "created").map_err(with_context(&format!(
        "{what}, its first create, of exactly shmmax"
    )))?;
    let second = format!(
        "{what}, shmmax lowered to {lowered} after its first create had made and removed a \
         segment, its second create of {shmmax} bytes"
    );
    namespace.set("shmmax", lowered)?;
    proc.send("go", &[])?;
    let message = proc.recv_any().map_err(with_context(&second));
    namespace.set("shmmax", shmmax)?;
    let message = message?;
    proc.wait()?;
    let second_key = ftok(&name.path, then_id)?;
    [name.key, second_key]
        .into_iter()
        .filter_map(segment)
        .for_each(|s| rmid(s.id));
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("too-large")) => Ok(format!(
            "a second create in the same process was too-large once shmmax was lowered to \
             {lowered}"
        )),
        (said, kind) => {
            let judged = if said == "done" || kind == Some("shmget") {
                ", let through to shmget(), though a publisher started afresh refused a size \
                 over the limit as it then was: the process judged its second create by the \
                 limit it had read for its first (a limit kept from before); read \
                 /proc/sys/kernel/shmmax each time, an administrator may change it"
            } else {
                ", the lab wants too-large"
            };
            Err(Fail::failed(format!(
                "{second} said `{said}` (kind={}: {}){judged}",
                kind.unwrap_or("none"),
                message.get("error").unwrap_or("")
            )))
        }
    }
}

/// The limit read whole: with `shmmax` set to a number of 20 digits (as the kernel's default,
/// 18446744073692774399, is), a size of exactly `shmmax` is allowed and must reach `shmget()`,
/// which refuses it (`EINVAL`: more than a file may hold; `kind=shmget`, not `too-large`: that
/// is the publisher's own comparison, which a size of exactly `shmmax` passed already). Returns
/// the limit tried.
fn twenty_digit_limit(
    run: &mut Run,
    namespace: &PrivateIpc,
    name: &Name,
    payload: &[u8],
) -> Result<u64, Fail> {
    // Below the default, so that the size's pages do not wrap around; shmall back to its
    // default, so that the kernel's answer is its own EINVAL (more than a file may hold).
    let default = u64::MAX - (1 << 24);
    let shmmax = run
        .rng()
        .random_range(10_000_000_000_000_000_000u64..=default - (1 << 16));
    namespace.set("shmall", default)?;
    namespace.set("shmmax", shmmax)?;
    let what = format!(
        "with shmmax set to {shmmax} (20 digits, as the kernel's default is; in a private IPC \
         namespace) and a size of exactly {shmmax}"
    );
    // Whether its shmget() ran tells the kernel's EINVAL taken for too-large from a refusal
    // of its own.
    let (mut proc, message, shmget_ran) =
        answer_watching_shmget(run, name, (shmmax, 7), payload, &what)?;
    proc.wait()?;
    segment(name.key).into_iter().for_each(|s| rmid(s.id));
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("shmget")) => Ok(shmmax),
        ("failed", Some("too-large")) => {
            let error = message.get("error").unwrap_or("");
            let own_refusal = |l: u64| {
                (shmget_ran == Some(false) && l == shmmax).then(|| {
                    format!(
                        "its own message names the limit as {l}, shmmax itself, which the size \
                         does not exceed, and it never called shmget() (the grader watched): \
                         it refused the size by a check of its own that a size of exactly \
                         shmmax fails, such as a conversion to a narrower or signed type \
                         (isize, i64, u32); only the comparison size > shmmax is TooLarge, and \
                         a size within it goes to shmget() as it is"
                    )
                })
            };
            // A limit at the top of a narrower type: shmmax saturated into it.
            let clamped = |l: u64| {
                [
                    (i64::MAX as u64, "i64::MAX (isize::MAX)"),
                    (u32::MAX as u64, "u32::MAX"),
                    (i32::MAX as u64, "i32::MAX"),
                ]
                .into_iter()
                .find(|&(top, _)| top == l && l < shmmax)
                .map(|(_, name)| {
                    format!(
                        "the limit it used is {l}, exactly {name}: shmmax, an unsigned 64-bit \
                         number, was clamped to (or saturated in) a narrower type on its way; \
                         keep it a u64 (the file's 20 digits parse as u64 only) and refuse only \
                         a size above it"
                    )
                })
            };
            let why = limit_of(error)
                .and_then(|l| {
                    digits_cut(l, shmmax)
                        .or(own_refusal(l))
                        .or(clamped(l))
                        .or(einval_taken(l, shmmax, shmmax))
                })
                .unwrap_or_else(|| {
                    "its limit is below shmmax as the file has it now: the file read in part, a \
                     value read earlier kept, or the number narrowed on its way; read \
                     /proc/sys/kernel/shmmax whole, each time, keep it a u64, and refuse only a \
                     size above it"
                        .to_string()
                });
            Err(Fail::failed(format!(
                "{what}, the publisher said kind=too-large ({error}): {why}"
            )))
        }
        (said, kind) => Err(Fail::failed(format!(
            "{what}, the publisher said `{said}` (kind={}: {}), the lab wants it let through to \
             shmget() (which refuses it: kind=shmget)",
            kind.unwrap_or("none"),
            message.get("error").unwrap_or("")
        ))),
    }
}

/// The limit a `TooLarge` message names (`... limit of N ...`).
fn limit_of(error: &str) -> Option<u64> {
    error
        .split("limit of ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
}

/// What [`below_the_limit`] calls a too-large whose message names `shmmax` itself as the limit,
/// for a size within it, where the kernel refuses such sizes (the machine's own `shmmax`).
const EINVAL_TAKEN: &str = "too-large (within the limit it named)";

/// Why a size of `size`, no more than the limit `l` the publisher's own message names (which is
/// `shmmax`), was too-large: not by its comparison with the limit, which the size passes, but
/// by `shmget()`'s refusal (`EINVAL`: the kernel will not make a segment that large) taken for
/// it.
fn einval_taken(l: u64, size: u64, shmmax: u64) -> Option<String> {
    (l == shmmax && size <= l).then(|| {
        format!(
            "its own message names the limit as {l}, shmmax itself, which the size does not \
             exceed: the refusal did not come from its comparison with shmmax but from \
             shmget(), which refuses a segment this large with EINVAL (more than a file may \
             hold): it takes shmget()'s EINVAL for TooLarge; TooLarge is only the comparison \
             with shmmax, before shmget(), and every shmget() error but EEXIST (EINVAL \
             included) is ShmError::Get (kind=shmget)"
        )
    })
}

/// Why a limit `l` that is the first digits of `shmmax` was taken for it: the file was read in
/// part.
fn digits_cut(l: u64, shmmax: u64) -> Option<String> {
    let (l, whole) = (l.to_string(), shmmax.to_string());
    (l.len() < whole.len() && whole.starts_with(&l)).then(|| {
        format!(
            "it compared the size with {l}, the first {} of the {} digits of shmmax \
             ({whole}): it read /proc/sys/kernel/shmmax only in part (one read() into a buffer \
             too small for the number: a u64 takes up to 20 decimal digits and a newline, not 8 \
             bytes); read the whole file (read_to_string, or read() until it returns 0) and \
             parse that",
            l.len(),
            whole.len()
        )
    })
}

/// Starts publisher `n` with `size` and returns its first answer, with whether its `shmget()`
/// ran (seen, not changed; `None` when it could not be watched).
fn answer_watching_shmget(
    run: &mut Run,
    name: &Name,
    (size, n): (u64, u32),
    payload: &[u8],
    what: &str,
) -> Result<(crate::engine::Proc, ipc_labs_driver::Message, Option<bool>), Fail> {
    let mut proc = spawn_publisher(run, &name.path, name.id, size, n, payload)?;
    let seen = Tracer::attach(
        proc.pid.as_raw(),
        Call::any(libc::SYS_shmget),
        Action::Report,
    )?;
    proc.send("go", &[])?;
    let message = proc.recv_any().map_err(with_context(what))?;
    let shmget_ran = match seen {
        Some(mut seen) => Some(seen.failed_the_call()?),
        None => None,
    };
    Ok((proc, message, shmget_ran))
}

/// The size is judged before `shmget()`: one past the limit is too-large even when a segment
/// has the key already (`shmget()` reports a taken key before it looks at the size).
fn over_the_limit_key_taken(
    run: &mut Run,
    name: &Name,
    (shmmax, setting): (u64, &str),
    payload: &[u8],
) -> Result<(), Fail> {
    let Some(over) = shmmax.checked_add(1) else {
        return Ok(());
    };
    let _planted = Planted::new(run, name.key, 64, &[])?;
    let what =
        format!("with {setting}, a segment already at the key and a size of {over} (shmmax + 1)");
    let mut proc = start_publisher(run, (&name.path, name.id, over), 5, payload)?;
    let message = proc.recv_any().map_err(with_context(&what))?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("too-large")) => {}
        ("failed", Some("exists")) => {
            proc.wait()?;
            return Err(Fail::failed(format!(
                "{what}, the publisher said kind=exists, the lab wants too-large (with the key \
                 free it said too-large): it learned that the key was taken before it compared the \
                 size with shmmax, or it never compares it and leaves the size to shmget(), \
                 which reports a taken key before it looks at the size; compare the size with \
                 shmmax first, before shmget()"
            )));
        }
        (said, kind) => {
            return Err(Fail::failed(format!(
                "{what}, the publisher said `{said}` (kind={}), the lab wants `failed` with \
                 kind=too-large",
                kind.unwrap_or("none")
            )));
        }
    }
    proc.wait()?;
    Ok(())
}

/// `shmall` (the total of all segments, in pages) bounds no single segment: with it lowered
/// below `shmmax`, a size one byte past it (and no more than `shmmax`) must reach `shmget()`,
/// which refuses it (`ENOSPC`: `kind=shmget`) or makes it.
fn shmall_bounds_no_segment(
    run: &mut Run,
    namespace: &PrivateIpc,
    name: &Name,
    (shmmax, setting): (u64, &str),
    payload: &[u8],
) -> Result<String, Fail> {
    // SAFETY: sysconf takes no pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let pages = run.rng().random_range(1..shmmax / page);
    namespace.set("shmall", pages)?;
    let size = pages * page + 1;
    let what = format!(
        "with {setting} and shmall lowered to {pages} pages ({} bytes), a size of {size} (one \
         byte past shmall's bytes, no more than shmmax)",
        pages * page
    );
    // Whether the publisher's shmget() ran tells a limit of its own below shmmax from the
    // kernel's refusal (ENOSPC) reported as too-large.
    let (mut proc, message, shmget_ran) =
        answer_watching_shmget(run, name, (size, 6), payload, &what)?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("shmget")) => proc.wait().map(drop)?,
        ("ready", _) => {
            proc.send("go", &[])?;
            expect(&mut proc, "publisher", "done")?;
            proc.send("exit", &[])?;
            proc.wait()?;
            segment(name.key).into_iter().for_each(|s| rmid(s.id));
        }
        ("failed", Some("too-large")) => {
            proc.wait()?;
            let error = message.get("error").unwrap_or("");
            let limit = error
                .split("limit of ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok());
            let reported = limit
                .map(|l| format!(" (it reported a limit of {l})"))
                .unwrap_or_default();
            let why = if shmget_ran == Some(true) {
                // Its own limit let the size through: the kernel refused it.
                return Err(Fail::failed(format!(
                    "{what}, the publisher said kind=too-large ({error}), though its shmget() \
                     ran (the grader saw the call), and the kernel can only have refused it \
                     with ENOSPC (the total past shmall: {size} bytes is within shmmax, and \
                     nothing else is in this IPC namespace){reported}: it takes shmget()'s \
                     ENOSPC for TooLarge; only a size above shmmax, judged before shmget(), \
                     is too-large, and every shmget() error but EEXIST is kind=shmget"
                )));
            } else if limit == Some(pages * page) {
                format!(
                    "it compared the size with {}, shmall times the page size, and never \
                     called shmget()",
                    pages * page
                )
            } else if shmget_ran == Some(false) {
                format!("it never called shmget(): its limit is below shmmax{reported}")
            } else {
                format!(
                    "its limit is below shmmax{reported}, or it takes shmget()'s ENOSPC for \
                     TooLarge (the grader may not trace it here, to see which)"
                )
            };
            return Err(Fail::failed(format!(
                "{what}, the publisher said kind=too-large ({error}): {why}; shmall is the total \
                 of all segments' pages, not a limit on one segment: only a size above shmmax \
                 is too large, and shmget() itself refuses a segment that would take the total \
                 past shmall (ENOSPC, kind=shmget)"
            )));
        }
        (said, kind) => {
            return Err(Fail::failed(format!(
                "{what}, the publisher said `{said}` (kind={}: {}), the lab wants it let \
                 through to shmget() (kind=shmget when the kernel refuses it)",
                kind.unwrap_or("none"),
                message.get("error").unwrap_or("")
            )));
        }
    }
    Ok(format!(
        "with shmall lowered to {pages} pages, a size of {size} reached shmget()"
    ))
}

/// Why a publisher refuses a size of exactly `shmmax`, from what it does with smaller ones:
/// `shmmax - 1` let through is a `>=` for `>`; refused too, with the page below let through, a
/// comparison of whole pages. Let through is `ready`, or `shmget` where the kernel refuses
/// segments that large (the machine's own shmmax).
fn below_the_limit(
    run: &mut Run,
    name: &Name,
    (shmmax, kernel_refuses): (u64, bool),
    payload: &[u8],
) -> Result<String, Fail> {
    let below = shmmax - 1;
    let page = shmmax / 4096 * 4096;
    let refusal = |run: &mut Run, size: u64, sequence: u32| -> Result<Option<String>, Fail> {
        let mut proc = start_publisher(run, (&name.path, name.id, size), sequence, payload)?;
        let message = proc.recv_any()?;
        if message.kind == "ready" {
            proc.send("go", &[])?;
            expect(&mut proc, "publisher", "done")?;
            proc.send("exit", &[])?;
            proc.wait()?;
            segment(name.key).into_iter().for_each(|s| rmid(s.id));
            return Ok(None);
        }
        proc.wait()?;
        Ok(match message.get("kind") {
            Some("shmget") => None,
            Some("too-large")
                if kernel_refuses
                    && limit_of(message.get("error").unwrap_or(""))
                        .and_then(|l| einval_taken(l, size, shmmax))
                        .is_some() =>
            {
                Some(EINVAL_TAKEN.to_string())
            }
            kind => Some(kind.unwrap_or("none").to_string()),
        })
    };
    let Some(kind) = refusal(run, below, 3)? else {
        return Ok(format!(
            "a size of {below} (shmmax - 1) was let through: a size equal to the limit is \
             allowed too: only more than shmmax is too large (size > max, not >=)"
        ));
    };
    if page >= below {
        return Ok(format!(
            "a size of {below} (shmmax - 1) was {kind} as well: its limit is below shmmax as it \
             is now, or it compares more than bytes (whole pages); read \
             /proc/sys/kernel/shmmax and refuse only a size above it"
        ));
    }
    Ok(match refusal(run, page, 4)? {
        None => format!(
            "a size of {below} (shmmax - 1) was {kind} as well, while {page}, the last whole \
             page below it, was let through: it compares whole pages (the size rounded up, or \
             shmmax rounded down); compare the sizes in bytes: only size > shmmax is too large"
        ),
        // Both within the limit the program named, where the kernel refuses sizes that
        // large: the refusals are shmget()'s.
        Some(other) if kind == EINVAL_TAKEN && other == EINVAL_TAKEN => format!(
            "sizes of {below} (shmmax - 1) and {page} (the last whole page below it) were \
             too-large as well, and for each {}",
            einval_taken(shmmax, page, shmmax).unwrap_or_default()
        ),
        Some(other) => format!(
            "sizes of {below} (shmmax - 1) and {page} were refused as well (kind={kind}, \
             kind={other}): it compares the size with a limit below shmmax; read \
             /proc/sys/kernel/shmmax and refuse only a size above it"
        ),
    })
}

/// The limit as the machine has it: shmmax itself is allowed (the kernel may still refuse a
/// segment that large: kind=shmget), shmmax + 1 is too-large.
fn machine_limit(run: &mut Run, payload: &[u8]) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    let shmmax: u64 = std::fs::read_to_string("/proc/sys/kernel/shmmax")?
        .trim()
        .parse()
        .map_err(|e| Fail::Grader(format!("shmmax: {e}")))?;
    let mut proc = start_publisher(run, (&name.path, name.id, shmmax), 1, payload)?;
    let message = proc.recv_any()?;
    let at_limit = format!("with a size of exactly shmmax ({shmmax})");
    match (message.kind.as_str(), message.get("kind")) {
        ("ready", _) => {
            proc.send("go", &[])?;
            expect(&mut proc, "publisher", "done")?;
            proc.send("exit", &[])?;
            proc.wait()?;
            if let Some(made) = segment(name.key) {
                rmid(made.id);
            }
        }
        ("failed", Some("shmget")) => {
            proc.wait()?;
        }
        ("failed", Some("too-large")) => {
            proc.wait()?;
            let cut =
                limit_of(message.get("error").unwrap_or("")).and_then(|l| digits_cut(l, shmmax));
            let why = match cut {
                Some(cut) => cut,
                None => below_the_limit(run, &name, (shmmax, true), payload)?,
            };
            return Err(Fail::failed(format!(
                "{at_limit}, the publisher said kind=too-large: {why}"
            )));
        }
        (said, kind) => {
            return Err(Fail::failed(format!(
                "{at_limit}, the publisher said `{said}` (kind={}), the lab wants it tried \
                 (`ready`, or kind=shmget if the kernel refuses it)",
                kind.unwrap_or("none")
            )));
        }
    }
    let Some(over) = shmmax.checked_add(1) else {
        return Ok("a size of exactly shmmax was allowed".into());
    };
    let what = format!("size {over} (shmmax + 1)");
    let mut proc = start_publisher(run, (&name.path, name.id, over), 2, payload)?;
    let message = proc.recv_any()?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("too-large")) => {}
        ("failed", Some("shmget")) => {
            return Err(Fail::failed(format!(
                "with {what} the publisher got kind=shmget (the kernel refused it: {}), not \
                 too-large: compare the size with /proc/sys/kernel/shmmax before shmget()",
                message.get("error").unwrap_or("?")
            )));
        }
        (said, kind) => {
            return Err(Fail::failed(format!(
                "with {what} the publisher said `{said}` (kind={}), the lab wants `failed` with \
                 kind=too-large",
                kind.unwrap_or("none")
            )));
        }
    }
    proc.wait()?;
    let setting = format!("the machine's shmmax ({shmmax})");
    over_the_limit_key_taken(run, &name, (shmmax, &setting), payload)?;
    Ok(format!(
        "a size of exactly shmmax ({shmmax}) was allowed and shmmax + 1 was too-large, also \
         with the key taken"
    ))
}
