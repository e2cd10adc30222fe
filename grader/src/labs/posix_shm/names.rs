//! Names: the bad ones, refused by create and by open before `shm_open()` (and before the
//! size), and the unusual good ones, accepted.

use ipc_labs_driver::Message;

use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Proc, Run, force};

use super::driver::{CREATOR, OPENER, await_answer, is_refusal, said, start, start_stopped};
use super::probes::{dev_shm, exists, plant_object};

/// A name the program must refuse, and what is wrong with it.
struct BadName {
    name: String,
    what: String,
    /// Why, in the advice, when the program took it.
    why: &'static str,
    /// The name glibc's shm_open() would give the object, if it takes this one at all.
    lands: Option<String>,
}

/// Starts one program per name at once (they do not depend on each other).
fn start_all(
    run: &mut Run,
    names: &[String],
    create: Option<usize>,
    who: &'static str,
) -> Result<Vec<Proc>, Fail> {
    names
        .iter()
        .map(|name| start(run, name, create, who))
        .collect()
}

/// The first answer of each program, in order.
fn first_answers(
    procs: Vec<Proc>,
    names: &[String],
    who: &'static str,
) -> Result<Vec<(Proc, Message)>, Fail> {
    let mut answers = Vec::new();
    for (mut proc, name) in procs.into_iter().zip(names) {
        let first = await_answer(&mut proc, who, &format!("given the name {name:.40}"), None)
            .map_err(|fail| crashed_on(fail, name))?;
        answers.push((proc, first));
    }
    Ok(answers)
}

/// A crash on `name` named: a name is refused (`BadName`) or used, never a panic.
fn crashed_on(fail: Fail, name: &str) -> Fail {
    let Fail::Crashed(message) = fail else {
        return fail;
    };
    let wide_first = name.chars().next().is_some_and(|c| c.len_utf8() > 1);
    let cause = if wide_first {
        format!(
            "; its first character, {:?}, is more than one byte long: a byte index or slice \
             of the name that ends inside it (such as &name[..1]) panics; compare bytes or use \
             name.strip_prefix('/')",
            name.chars().next().unwrap_or_default()
        )
    } else {
        String::new()
    };
    Fail::Crashed(format!(
        "given the name {name:.40?}, the program crashed ({message}), where it must say \
         `failed` with kind=bad-name or use the name: check_name() refuses a name it cannot \
         take (BadName), whatever its bytes{cause}"
    ))
}

/// Every kind of bad name, under names handed out with `suffix` (so that whatever a lax
/// program creates is audited).
fn bad_names(run: &mut Run, suffix: &str) -> Vec<BadName> {
    let plain = run.ipc_name(&format!("noslash{suffix}"));
    let double = run.ipc_name(&format!("double{suffix}"));
    let nested = run.ipc_name(&format!("dir{suffix}"));
    let trailing = run.ipc_name(&format!("trailing{suffix}"));
    let one_past = run.ipc_name(&format!("long{suffix}"));
    let wide = run.ipc_name(&format!("wide{suffix}"));
    let wide_first = run.ipc_name(&format!("wide-first{suffix}"));
    let spaced = run.ipc_name(&format!("spaced{suffix}"));
    // Characters of two bytes each: at most 255 characters, but more than 255 bytes.
    let wide_chars = 250 - wide.len();
    let wide_name = format!("{wide}{}", "é".repeat(wide_chars));
    vec![
        BadName {
            name: plain.trim_start_matches('/').to_string(),
            what: "no leading slash".into(),
            why: "check_name() must refuse it (glibc's shm_open() quietly puts the slash back)",
            lands: Some(plain.clone()),
        },
        BadName {
            name: format!("/{double}"),
            what: "two leading slashes".into(),
            why: "only the first character may be '/' (glibc's shm_open() strips every leading \
                  slash): strip one, then refuse any other",
            lands: Some(double.clone()),
        },
        BadName {
            name: format!("{nested}/table"),
            what: "a second slash".into(),
            why: "no '/' may follow the first",
            lands: None,
        },
        BadName {
            name: format!("{trailing}/"),
            what: "a trailing slash".into(),
            why: "no '/' may follow the first, at the end neither: a trailing slash does not \
                  name the same object here, as it may a directory; refuse any '/' after the \
                  first byte, wherever it is",
            lands: None,
        },
        BadName {
            name: "/".into(),
            what: "nothing after the slash".into(),
            why: "at least one character must follow the '/'",
            lands: None,
        },
        BadName {
            name: format!("{one_past}{}", "x".repeat(256 - one_past.len())),
            what: "256 bytes, one more than MAX_NAME_LEN".into(),
            why: "MAX_NAME_LEN (255) counts the whole name, the leading slash included",
            lands: Some(format!("{one_past}{}", "x".repeat(256 - one_past.len()))),
        },
        BadName {
            what: format!(
                "{} characters but {} bytes",
                wide_name.chars().count(),
                wide_name.len()
            ),
            name: wide_name,
            why: "the limit is in bytes (name.len()), not in characters: 'é' is 2 bytes",
            lands: None,
        },
        // Its first character takes 2 bytes; the slash after it makes glibc refuse it too, so
        // a lax program creates nothing the grader cannot claim.
        BadName {
            name: format!("é{wide_first}"),
            what: "a 2-byte first character and no leading slash".into(),
            why: "a name starts with '/', the byte; look at the name's first byte, whatever \
                  character it begins",
            lands: None,
        },
        BadName {
            name: format!(" {spaced}"),
            what: "a space before the slash".into(),
            why: "the name is taken as given, its space included: it does not start with '/' \
                  (trimming it names another object)",
            lands: Some(spaced.clone()),
        },
    ]
}

pub fn invalid_names(run: &mut Run) -> Result<String, Fail> {
    // Built from handed-out names, so that whatever a lax program creates is audited.
    let bad = bad_names(run, "");
    // open() checks the name as create() does: every bad name, under names of its own.
    let bad_opened = bad_names(run, "-o");
    let edge = run.ipc_name("edge");
    let longest = format!("{edge}{}", "x".repeat(255 - edge.len()));
    let mut names: Vec<String> = bad.iter().map(|b| b.name.clone()).collect();
    names.push(longest.clone());
    // open() must refuse such names too, even where glibc would find an object: the grader puts
    // one where a lax shm_open() would look.
    let plain_open = run.ipc_name("noslash-open");
    let double_open = run.ipc_name("double-open");
    let cases = [
        (
            plain_open.trim_start_matches('/').to_string(),
            plain_open.clone(),
            "no leading slash",
        ),
        (
            format!("/{double_open}"),
            double_open.clone(),
            "two leading slashes",
        ),
    ];
    // A bad name with size 0: the name is checked first, so it is bad-name, not zero-size.
    let zero_named = run.ipc_name("zero-noslash");
    let zero_bad = zero_named.trim_start_matches('/').to_string();
    // With size 0 too, the bad names glibc's shm_open() refuses itself (EINVAL): only a name
    // check of the program's own, made before the size, says bad-name for them.
    let zero_nested = format!("{}/table", run.ipc_name("zero-dir"));
    let zero_trailing = format!("{}/", run.ipc_name("zero-trailing"));
    let zero_glibc_refuses = [
        ("/".to_string(), "nothing after the slash"),
        (zero_nested, "a second slash"),
        (zero_trailing, "a trailing slash"),
    ];
    // Any bytes but '/' may follow the slash: every ASCII byte but NUL (no C string holds it)
    // and '/' (control characters, a backslash and the other punctuation included), characters
    // of 2 and 3 bytes, whitespace at the end (well under 255 bytes).
    let every_ascii: String = (1u8..=0x7f)
        .filter(|&byte| byte != b'/')
        .map(char::from)
        .collect();
    let odd = format!("{} a+b:c,d=é数据{every_ascii}\t ", run.ipc_name("odd"));
    let mut planted = Vec::new();
    for (_, target, _) in &cases {
        planted.push(plant_object(run, target, &[0u8; 64])?);
    }
    let opened: Vec<String> = cases.iter().map(|(asked, _, _)| asked.clone()).collect();
    // None of these depends on another: all start at once, and are judged in order.
    let creating = start_all(run, &names, Some(64), CREATOR)?;
    let bad_opened_names: Vec<String> = bad_opened.iter().map(|b| b.name.clone()).collect();
    let opening_bad = start_all(run, &bad_opened_names, None, OPENER)?;
    // Each opener traced from its start: the openat() its shm_open() would make of the object
    // the grader planted is reported if it is made (the name is checked first: it must not be).
    let mut opening = Vec::new();
    let mut open_tracers = Vec::new();
    for (asked, target, _) in &cases {
        let proc = start_stopped(run, asked, None, OPENER)?;
        let pid = proc.pid.as_raw();
        open_tracers.push(Tracer::attach(
            pid,
            Call::opening(&dev_shm(target)),
            Action::Report,
        )?);
        force::resume(pid)?;
        opening.push(proc);
    }
    // Names with nothing wrong but a look: '/.' and '/..' are '/' and 1 or 2 bytes, no other
    // '/': valid by the rule, so they reach shm_open() (which refuses them, or finds the
    // directory): any answer but bad-name.
    let mut dot_create = start(run, "/.", Some(64), CREATOR)?;
    let mut dot_open = start(run, "/..", None, OPENER)?;
    let mut zero_proc = start(run, &zero_bad, Some(0), CREATOR)?;
    let mut zero_procs = Vec::new();
    for (name, _) in &zero_glibc_refuses {
        zero_procs.push(start(run, name, Some(0), CREATOR)?);
    }
    // The empty name: no first byte to look at.
    let mut empty_proc = start(run, "", Some(64), CREATOR)?;
    let odd_proc = start(run, &odd, Some(64), CREATOR)?;
    let blank = run.blank_ipc_name("b");
    let blank_proc = start(run, &blank, Some(64), CREATOR)?;
    let mut answers = first_answers(creating, &names, CREATOR)?;
    let (edge_proc, edge_answer) = answers.pop().expect("the longest name's answer");
    for (case, (mut proc, answer)) in bad.iter().zip(answers) {
        judge_bad_name(case, &answer, "create")?;
        proc.wait()?;
    }
    if is_refusal(&edge_answer, "bad-name") {
        return Err(Fail::failed(
            "a name of exactly 255 bytes (the slash included) was refused: names of up to \
             MAX_NAME_LEN (255) bytes are valid; the limit counts the name's bytes, the slash \
             included and no terminating NUL: refuse only name.len() > MAX_NAME_LEN",
        ));
    }
    let mut longest_table = super::driver::mapped(edge_proc, edge_answer, &longest, CREATOR)?;
    longest_table.unlink()?;
    longest_table.close()?;

    let answers = first_answers(opening, &opened, OPENER)?;
    for (((asked, target, what), (mut proc, answer)), tracer) in
        cases.iter().zip(answers).zip(open_tracers)
    {
        if is_refusal(&answer, "bad-name") {
            let opened_it = match tracer {
                Some(mut tracer) => tracer.failed_the_call()?,
                None => false,
            };
            if opened_it {
                proc.kill_tree();
                return Err(Fail::failed(format!(
                    "open() of a name with {what} ({asked:.40}) said kind=bad-name, but before \
                     that answer it had opened {} (the grader traced it from its start and saw \
                     the openat() that glibc's shm_open() makes for that name): it calls \
                     shm_open() first and checks the name afterwards; open() checks the name \
                     (check_name) before any shm_open(), so a bad name reaches no system call",
                    dev_shm(target).display()
                )));
            }
            proc.wait()?;
            continue;
        }
        let took = if answer.kind == "mapped" {
            format!("mapped {}", dev_shm(target).display())
        } else {
            format!("said {}", said(&answer))
        };
        return Err(Fail::failed(format!(
            "open() of a name with {what} ({asked:.40}) {took}, not `failed` with \
             kind=bad-name; create() refused such a name, so open() must check it too \
             (check_name) before shm_open()"
        )));
    }
    let answers = first_answers(opening_bad, &bad_opened_names, OPENER)?;
    for (case, (mut proc, answer)) in bad_opened.iter().zip(answers) {
        judge_bad_name(case, &answer, "open")?;
        proc.wait()?;
    }
    drop(planted);

    let what =
        format!("creating a table of size 0 under a name with no leading slash ({zero_bad:.40})");
    let answer = await_answer(&mut zero_proc, CREATOR, &what, None)?;
    if is_refusal(&answer, "zero-size") {
        return Err(Fail::failed(format!(
            "{what}, the program said kind=zero-size, not kind=bad-name: create() checks the \
             name first, then the size (a bad name is bad-name whatever the size)"
        )));
    }
    judge_bad_name(
        &BadName {
            name: zero_bad.clone(),
            what: "no leading slash (and size 0)".into(),
            why: "check_name() must refuse it, before the size is looked at",
            lands: Some(zero_named.clone()),
        },
        &answer,
        "create",
    )?;
    zero_proc.wait()?;
    for ((name, what), mut proc) in zero_glibc_refuses.iter().zip(zero_procs) {
        let asked = format!("creating a table of size 0 named {name:?} ({what})");
        let answer = await_answer(&mut proc, CREATOR, &asked, None)?;
        if is_refusal(&answer, "zero-size") {
            return Err(Fail::failed(format!(
                "{asked}, the program said kind=zero-size, not kind=bad-name, while a name \
                 with no leading slash and size 0 was bad-name: its name check accepts a name \
                 with {what} (given a size, its shm_open() refuses it, EINVAL, and that hides \
                 it; size 0, looked at between the name check and shm_open(), shows it): \
                 check_name() itself must refuse the name, before the size and before \
                 shm_open(): '/', then at least one character, and no other '/'"
            )));
        }
        judge_bad_name(
            &BadName {
                name: name.clone(),
                what: format!("{what} (and size 0)"),
                why: "check_name() must refuse it, before the size is looked at",
                lands: None,
            },
            &answer,
            "create",
        )?;
        proc.wait()?;
    }

    let asked = "creating a table with the empty name \"\"";
    let answer =
        await_answer(&mut empty_proc, CREATOR, asked, None).map_err(|fail| match fail {
            Fail::Crashed(message) => Fail::Crashed(format!(
                "{asked}, the program crashed ({message}), where it must say `failed` with \
             kind=bad-name: a name of 0 bytes has no leading slash, nor any first byte to \
             look at; check_name() must refuse it (BadName) before it reads any byte of it"
            )),
            other => other,
        })?;
    judge_bad_name(
        &BadName {
            name: String::new(),
            what: "no byte at all".into(),
            why: "a name is '/' then at least one character",
            lands: None,
        },
        &answer,
        "create",
    )?;
    empty_proc.wait()?;

    for (proc, who, op, name) in [
        (&mut dot_create, CREATOR, "creating a table", "/."),
        (&mut dot_open, OPENER, "opening", "/.."),
    ] {
        let what = format!("{op} named {name:?}");
        let answer = await_answer(proc, who, &what, None)?;
        if is_refusal(&answer, "bad-name") {
            return Err(Fail::failed(format!(
                "{what}, the program said {}: {name:?} is '/' then {} byte(s), none of them \
                 '/': valid by the name rule, so it goes to shm_open(), whose answer (glibc \
                 refuses '.' and '..' with EINVAL, and /dev/shm/{} is a directory that exists) \
                 is the one to report (kind=shm-open or exists); check_name() checks only the \
                 slashes and the length, it refuses no name for what its bytes are",
                said(&answer),
                name.len() - 1,
                &name[1..]
            )));
        }
        if answer.kind == "mapped" {
            return Err(Fail::failed(format!(
                "{what}, the program said `mapped`: shm_open() cannot open {name:?} (glibc \
                 refuses it, EINVAL); its answer is the one to report"
            )));
        }
        proc.wait()?;
    }
    judge_good_name(
        run,
        odd_proc,
        &odd,
        "every ASCII byte but NUL and '/', a backslash included, and 2- and 3-byte characters",
        "no character set is asked for, control characters included",
    )?;
    judge_good_name(
        run,
        blank_proc,
        &blank,
        "'/' and then only spaces and tabs",
        "whitespace is bytes like any other: a name of blanks after the slash is not empty \
         (trimmed, it would be); take the name as given",
    )?;
    Ok(
        "bad names (no leading slash, two leading slashes, a second slash, a trailing slash, \
        '/' alone, 256 bytes, 250 characters in more than 255 bytes, the empty name, a 2-byte first \
        character, a space before the slash) were refused by create, \
        and by open (the first two with no shm_open() of them), bad names with size 0 too; a \
        255-byte name, one with every ASCII byte but NUL and '/', multi-byte characters and \
        whitespace at its end, and one of blanks only, worked; '/.' \
        and '/..' reached shm_open()"
            .into(),
    )
}

/// A valid name with unusual bytes: created under that very name, and opened.
fn judge_good_name(
    run: &mut Run,
    mut proc: Proc,
    name: &str,
    holds: &str,
    why: &str,
) -> Result<(), Fail> {
    let shown = shown(name);
    let what = format!("creating a table named {shown} ({holds})");
    let answer = await_answer(&mut proc, CREATOR, &what, None)?;
    if is_refusal(&answer, "bad-name") {
        return Err(Fail::failed(format!(
            "{what}, the program said {}: a name is '/' then 1 or more bytes, any but '/', at \
             most 255 bytes in all; {why}, so check only the slashes and the length",
            said(&answer)
        )));
    }
    let mut table = super::driver::mapped(proc, answer, name, CREATOR)?;
    if !exists(name) {
        let made = [name.trim_end(), name.trim()]
            .into_iter()
            .find(|made| *made != name && made.len() > 1 && exists(made))
            .map(|made| format!(", but {:?} does", dev_shm(made)))
            .unwrap_or_default();
        table.proc.kill_tree();
        return Err(Fail::failed(format!(
            "{what}, the program said `mapped`, yet no object in /dev/shm has that very \
             name{made}: the name is taken as given, its whitespace at either end included \
             (trimming it names another object)"
        )));
    }
    let mut opener = start(run, name, None, OPENER)?;
    let answer = await_answer(&mut opener, OPENER, &format!("opening {shown}"), None)?;
    if is_refusal(&answer, "bad-name") {
        return Err(Fail::failed(format!(
            "opening {shown}, which the creator had created, the program said {}: open() \
             must accept every name create() accepts ('/' then any bytes but '/', at most 255)",
            said(&answer)
        )));
    }
    let opened = super::driver::mapped(opener, answer, name, OPENER)?;
    table.unlink()?;
    opened.close()?;
    table.close()
}

/// A name for a message: quoted, its first 48 characters and its length when it is longer.
fn shown(name: &str) -> String {
    let head: String = name.chars().take(48).collect();
    if head.len() < name.len() {
        format!("{head:?}... ({} bytes)", name.len())
    } else {
        format!("{name:?}")
    }
}

fn judge_bad_name(case: &BadName, answer: &Message, op: &str) -> Result<(), Fail> {
    if is_refusal(answer, "bad-name") {
        return match case.lands.as_deref().filter(|&lands| exists(lands)) {
            Some(lands) => Err(Fail::failed(format!(
                "{op} refused a name with {} with kind=bad-name, but {} exists now: shm_open() \
                 ran before the name was checked; check it first, so that a refused create \
                 leaves nothing",
                case.what,
                dev_shm(lands).display()
            ))),
            None => Ok(()),
        };
    }
    let name = &case.name;
    let what = &case.what;
    if answer.kind == "mapped" {
        return Err(Fail::failed(format!(
            "{op} accepted a name with {what} ({name:.40}): {}",
            case.why
        )));
    }
    Err(Fail::failed(format!(
        "{op} of a name with {what} ({name:.40}): the program said {}, not `failed` with \
         kind=bad-name: it let the name reach shm_open(), but check_name() must refuse it \
         first: {}",
        said(answer),
        case.why
    )))
}
