//! The error paths, each error asserted by its kind: bad names (for create and open), a size of
//! 0, a name that exists (an object, a 0-byte one, a link), accesses at and past the end, names
//! that do not exist, an empty object. Creates that fail half-way are in `failed_creates`.

use std::os::unix::fs::MetadataExt;

use ipc_labs_driver::Message;

use crate::engine::{Fail, Proc, Run};

use super::driver::{
    CREATOR, OPENER, Table, await_answer, await_answer_watching, is_refusal, refused, said, start,
};
use super::probes::{
    dev_shm, exists, object_bytes, plant_dangling_link, plant_link, plant_object, plant_sparse,
    runnable_ns,
};

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
        let first = await_answer(&mut proc, who, &format!("given the name {name:.40}"), None)?;
        answers.push((proc, first));
    }
    Ok(answers)
}

pub fn invalid_names(run: &mut Run) -> Result<String, Fail> {
    // Built from handed-out names, so that whatever a lax program creates is audited.
    let plain = run.ipc_name("noslash");
    let double = run.ipc_name("double");
    let nested = run.ipc_name("dir");
    let one_past = run.ipc_name("long");
    let wide = run.ipc_name("wide");
    let edge = run.ipc_name("edge");
    // Characters of two bytes each: at most 255 characters, but more than 255 bytes.
    let wide_chars = 250 - wide.len();
    let wide_name = format!("{wide}{}", "é".repeat(wide_chars));
    let bad = [
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
    ];
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
    // Any bytes but '/' may follow the slash: a space, punctuation, characters of 2 and 3
    // bytes (well under 255 bytes in all).
    let odd = format!("{} a+b:c,d=é数据!", run.ipc_name("odd"));
    let mut planted = Vec::new();
    for (_, target, _) in &cases {
        planted.push(plant_object(run, target, &[0u8; 64])?);
    }
    let opened: Vec<String> = cases.iter().map(|(asked, _, _)| asked.clone()).collect();
    // None of these depends on another: all start at once, and are judged in order.
    let creating = start_all(run, &names, Some(64), CREATOR)?;
    let opening = start_all(run, &opened, None, OPENER)?;
    let mut zero_proc = start(run, &zero_bad, Some(0), CREATOR)?;
    let mut odd_proc = start(run, &odd, Some(64), CREATOR)?;
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
    for ((asked, target, what), (mut proc, answer)) in cases.iter().zip(answers) {
        if is_refusal(&answer, "bad-name") {
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

    let what =
        format!("creating a table named {odd:?} (a space, punctuation, 2- and 3-byte characters)");
    let answer = await_answer(&mut odd_proc, CREATOR, &what, None)?;
    if is_refusal(&answer, "bad-name") {
        return Err(Fail::failed(format!(
            "{what}, the program said {}: a name is '/' then 1 or more bytes, any but '/', at \
             most 255 bytes in all; no character set is asked for, so check only the slashes \
             and the length",
            said(&answer)
        )));
    }
    let mut odd_table = super::driver::mapped(odd_proc, answer, &odd, CREATOR)?;
    let mut odd_opener = start(run, &odd, None, OPENER)?;
    let answer = await_answer(&mut odd_opener, OPENER, &format!("opening {odd:?}"), None)?;
    if is_refusal(&answer, "bad-name") {
        return Err(Fail::failed(format!(
            "opening {odd:?}, which the creator had created, the program said {}: open() \
             must accept every name create() accepts ('/' then any bytes but '/', at most 255)",
            said(&answer)
        )));
    }
    let odd_opened = super::driver::mapped(odd_opener, answer, &odd, OPENER)?;
    odd_table.unlink()?;
    odd_opened.close()?;
    odd_table.close()?;
    Ok(
        "bad names (no leading slash, two leading slashes, a second slash, '/' alone, 256 \
        bytes, 250 characters in more than 255 bytes) were refused by create, the first two by \
        open too, a bad name with size 0 too; a 255-byte name, and one with a space, \
        punctuation and multi-byte characters, worked"
            .into(),
    )
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

/// An access the program must refuse, or accept.
#[derive(Clone, Copy, PartialEq)]
enum Op {
    Read,
    Write,
}

impl Op {
    fn doing(self) -> &'static str {
        match self {
            Op::Read => "reading",
            Op::Write => "writing",
        }
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Asks `table` to read or write `len` bytes at `offset`.
fn access(
    run: &mut Run,
    table: &mut Table,
    op: Op,
    offset: usize,
    len: usize,
) -> Result<Message, Fail> {
    let fields = match op {
        Op::Write => {
            let data = run.random_bytes(len);
            table.write_fields(run, offset, &data)?
        }
        Op::Read => table.read_fields(run, offset, len).0,
    };
    table.command(&fields)
}

/// Past the end of a `size`-byte table, `op` must be refused; when it is not, probes farther
/// out to say which bound the program checks.
fn past_the_end(run: &mut Run, table: &mut Table, op: Op, size: usize) -> Result<(), Fail> {
    let doing = op.doing();
    let other = if op == Op::Read {
        " (write() refused the same accesses)"
    } else {
        ""
    };
    let answer = access(run, table, op, size - 1, 2)?;
    if answer.kind == "done" {
        let cause = match access(run, table, op, size + 903, 8) {
            Ok(far) if is_refusal(&far, "out-of-range") => format!(
                "it refused 8 bytes at offset {}: offset + len must not pass the size; it \
                 checked only the start, or let the end go one past the size",
                size + 903
            ),
            Ok(_) => match access(run, table, op, 8191, 2) {
                Ok(page) if is_refusal(&page, "out-of-range") => format!(
                    "it refused only 2 bytes at offset 8191, across the end of its mapping: it \
                     checks against the mapping's whole pages (8192 bytes), not the table's \
                     {size} bytes"
                ),
                Ok(_) => format!(
                    "it even said `done` to 2 bytes at offset 8191, across the end of its \
                     mapping: {doing} checks no range; refuse the whole access with \
                     OutOfRange, do not copy what exists"
                ),
                Err(fail) => format!(
                    "with 2 bytes at offset 8191, across the end of its mapping, it then \
                     crashed ({}): {doing} checks no range",
                    fail.message().lines().next().unwrap_or("")
                ),
            },
            Err(fail) => format!(
                "with 8 bytes at offset {} it then crashed ({}): it checks no range",
                size + 903,
                fail.message().lines().next().unwrap_or("")
            ),
        };
        return Err(Fail::failed(format!(
            "{doing} 2 bytes at offset {} of a {size}-byte table, the program said `done`, not \
             `failed` with kind=out-of-range{other}; {cause}",
            size - 1
        )));
    }
    refused(
        &answer,
        "out-of-range",
        &format!(
            "{doing} 2 bytes at offset {} of a {size}-byte table",
            size - 1
        ),
        "check the range (offset + len <= size) before touching the mapping",
    )?;
    // Neither of the two bounds a program may plausibly use: past the table's end, inside its
    // mapping's last page.
    let answer = access(run, table, op, size + 903, 8)?;
    refused(
        &answer,
        "out-of-range",
        &format!(
            "{doing} 8 bytes at offset {} of a {size}-byte table, inside its mapping's last page",
            size + 903
        ),
        "the mapping is whole pages, but only the table's bytes are yours: check offset + len \
         against the table's size",
    )?;
    let len = if op == Op::Read { 4 } else { 2 };
    let answer = access(run, table, op, usize::MAX - 1, len).map_err(|fail| match fail {
        Fail::Crashed(message) => Fail::Crashed(format!(
            "{doing} {len} bytes at offset usize::MAX - 1: offset + len overflowed usize, while \
             the plain accesses past the end were refused; compute the end with checked_add \
             ({message})"
        )),
        other => other,
    })?;
    refused(
        &answer,
        "out-of-range",
        &format!("{doing} {len} bytes at offset usize::MAX - 1"),
        "offset + len overflows and wraps around to a small number, which passes the range \
         check (the plain accesses past the end were refused): compute the end with checked_add",
    )
}

pub fn typed_errors(run: &mut Run) -> Result<String, Fail> {
    let size = 4097;
    let empty = run.ipc_name("empty");
    let name = run.ipc_name("table");
    let path = dev_shm(&name).display().to_string();
    // An object another program made, and a name taken by something that cannot be opened as
    // a table (only O_EXCL still says it exists).
    let existing = run.ipc_name("existing");
    let theirs = run.random_bytes(3000);
    let object = plant_object(run, &existing, &theirs)?;
    let occupied = run.ipc_name("occupied");
    let ours = run.random_bytes(100);
    let occupant = plant_object(run, &occupied, &ours)?;
    let taken = run.ipc_name("taken");
    let link = plant_dangling_link(&taken)?;
    // A 0-byte object: what another creator leaves between its shm_open() and its ftruncate().
    // The grader keeps it open, to see whether a create unlinks or replaces it.
    let hollow = run.ipc_name("hollow");
    let hollow_object = plant_object(run, &hollow, &[])?;
    let hollow_held = std::fs::File::open(dev_shm(&hollow))?;
    // Six creates that do not depend on each other start at once.
    let mut zero = start(run, &empty, Some(0), CREATOR)?;
    // Size 0 under a taken name: only a size checked before shm_open() says zero-size here.
    let mut zero_taken = start(run, &occupied, Some(0), CREATOR)?;
    let mut first = start(run, &name, Some(size), CREATOR)?;
    let mut again = start(run, &existing, Some(8000), "a second creator")?;
    let mut linked = start(run, &taken, Some(64), "a creator")?;
    let mut over_hollow = start(run, &hollow, Some(64), "a creator")?;

    let answer = await_answer(&mut zero, CREATOR, "creating a 0-byte table", None)?;
    refused(
        &answer,
        "zero-size",
        "creating a 0-byte table",
        "reject size 0 before shm_open()",
    )?;
    if exists(&empty) {
        return Err(Fail::failed(format!(
            "creating a 0-byte table said kind=zero-size, but left {} behind: check the size \
             before shm_open(), so that a refused create leaves nothing",
            dev_shm(&empty).display()
        )));
    }
    zero.wait()?;
    let answer = await_answer(
        &mut zero_taken,
        CREATOR,
        "creating a 0-byte table under a name that exists",
        None,
    )?;
    if is_refusal(&answer, "exists") {
        return Err(Fail::failed(format!(
            "creating a 0-byte table under {occupied}, a name another program's object has, \
             the program said kind=exists, not kind=zero-size: only shm_open() reports EEXIST, \
             so it called shm_open() before looking at the size; reject size 0 first (and a \
             refused create then makes and removes nothing)"
        )));
    }
    refused(
        &answer,
        "zero-size",
        "creating a 0-byte table under a name that exists",
        "reject size 0 before shm_open()",
    )?;
    if object_bytes(&occupied, 0, ours.len() + 1).is_some()
        || object_bytes(&occupied, 0, ours.len()).as_deref() != Some(&ours[..])
    {
        return Err(Fail::failed(format!(
            "a 0-byte create under {occupied}, which another program had made, was refused \
             with kind=zero-size, but the object is gone or changed: the create touched it \
             (shm_open(), ftruncate() or shm_unlink()) before it looked at the size; reject \
             size 0 before shm_open()"
        )));
    }
    zero_taken.wait()?;
    drop(occupant);

    let answer = await_answer(
        &mut again,
        "a second creator",
        &format!("creating {existing}"),
        None,
    )?;
    refused(
        &answer,
        "exists",
        "creating a table whose name exists",
        "use O_CREAT | O_EXCL and map EEXIST to TableError::Exists",
    )?;
    let kept = std::fs::metadata(dev_shm(&existing)).map(|m| m.len()).ok();
    if kept != Some(theirs.len() as u64)
        || object_bytes(&existing, 0, theirs.len()).as_deref() != Some(&theirs[..])
    {
        let what = match kept {
            None => "removed it".to_string(),
            Some(len) if len != theirs.len() as u64 => format!("resized it to {len} bytes"),
            Some(_) => "changed its bytes".to_string(),
        };
        return Err(Fail::failed(format!(
            "creating {existing}, which another program had made, was refused with kind=exists, \
             but the create {what}: a create that fails must not touch an object it did not \
             create (no ftruncate, no write, no shm_unlink after EEXIST)"
        )));
    }
    again.wait()?;
    drop(object);

    let answer = await_answer(&mut linked, "a creator", &format!("creating {taken}"), None)?;
    if !is_refusal(&answer, "exists") {
        let followed = exists(&format!("{taken}-nowhere"));
        let how = if followed {
            "it created the file the link points to: create with O_CREAT | O_EXCL, which \
             refuses every name that exists"
        } else {
            "the create does not rely on O_EXCL: shm_open(O_CREAT | O_EXCL) fails with EEXIST \
             for every name that exists, this one too; looking first (an open or a stat) and \
             then creating without O_EXCL gives another answer here, and lets two creators \
             racing for one name both succeed"
        };
        return Err(Fail::failed(format!(
            "{} is taken (by a symbolic link the grader put there, to nothing), yet creating a \
             table under that name, the program said {}, not `failed` with kind=exists: {how}",
            dev_shm(&taken).display(),
            said(&answer)
        )));
    }
    linked.wait()?;
    drop(link);

    let answer = await_answer(
        &mut over_hollow,
        "a creator",
        &format!("creating {hollow}, the name of a 0-byte object"),
        None,
    )?;
    left_alone(&answer, &hollow, &hollow_held)?;
    over_hollow.wait()?;
    drop(hollow_object);

    let answer = await_answer(&mut first, CREATOR, &format!("creating {name}"), None)?;
    let mut creator = super::driver::mapped(first, answer, &name, CREATOR)?;
    // The last byte is the table's: offset + len may equal the size.
    let last = run.random_bytes(1);
    let fields = creator.write_fields(run, size - 1, &last)?;
    let answer = creator.command(&fields)?;
    if answer.kind != "done" {
        return Err(Fail::failed(format!(
            "writing the last byte of a {size}-byte table (1 byte at offset {}), the program \
             said {}: offset + len may equal the size",
            size - 1,
            said(&answer)
        )));
    }
    let answer = access(run, &mut creator, Op::Read, size - 2, 2)?;
    if answer.kind != "done" {
        return Err(Fail::failed(format!(
            "reading the last 2 bytes of a {size}-byte table (offset {}), the program said {}: \
             offset + len may equal the size",
            size - 2,
            said(&answer)
        )));
    }

    past_the_end(run, &mut creator, Op::Write, size)?;
    let now = object_bytes(&name, size - 1, 1);
    if now.as_deref() != Some(&last[..]) {
        return Err(Fail::failed(format!(
            "a write of 2 bytes at offset {} was refused, but the table's last byte changed in \
             {path}: check the whole range before copying anything",
            size - 1
        )));
    }
    past_the_end(run, &mut creator, Op::Read, size)?;
    // Nothing at the very end: the empty range ends at the size, so it is inside.
    for op in [Op::Write, Op::Read] {
        let answer = access(run, &mut creator, op, size, 0)?;
        if answer.kind != "done" {
            return Err(Fail::failed(format!(
                "{} 0 bytes at offset {size} of a {size}-byte table, the program said {}: \
                 offset + len may equal the size, and here it does",
                capitalized(op.doing()),
                said(&answer)
            )));
        }
    }
    // One past the very end, and far past: 0 bytes there are outside, like any others.
    for op in [Op::Write, Op::Read] {
        for offset in [size + 1, size + 903] {
            let answer = access(run, &mut creator, op, offset, 0)?;
            refused(
                &answer,
                "out-of-range",
                &format!(
                    "{} 0 bytes at offset {offset} of a {size}-byte table (0 bytes at {size} were \
                     accepted)",
                    capitalized(op.doing())
                ),
                "an access of 0 bytes is inside only if it starts at most at the size: offset + \
                 len must not pass the size, whatever len is; do not let an empty access through \
                 before the range check",
            )?;
        }
    }

    creator.unlink()?;
    creator.close()?;
    Ok(
        "size 0, a taken name (an object, a link) and accesses past the end were typed errors \
        that changed nothing; the last byte was the table's"
            .into(),
    )
}

/// Fails unless a create under `name`, where the grader had put a 0-byte object it still holds
/// (`held`), said `exists` and left that object as it was: still linked at the name, 0 bytes.
fn left_alone(answer: &Message, name: &str, held: &std::fs::File) -> Result<(), Fail> {
    let path = dev_shm(name);
    let ours = held.metadata()?;
    let at_name = std::fs::symlink_metadata(&path).ok();
    let replaced = at_name.as_ref().is_some_and(|m| m.ino() != ours.ino());
    let done = if ours.nlink() == 0 {
        if replaced {
            "unlinked that object and created a new one in its place"
        } else {
            "unlinked that object"
        }
    } else if ours.len() != 0 {
        "gave that object a size (it opened it without O_EXCL, or after a look)"
    } else {
        ""
    };
    let told = format!(
        "{} held a 0-byte object the grader had put there (as another creator leaves it \
         between its shm_open() and its ftruncate()); creating a table under that name",
        path.display()
    );
    if !done.is_empty() {
        return Err(Fail::failed(format!(
            "{told}, the program said {} and {done}: a name that exists is `exists`, whatever the size of its object; \
             a 0-byte object is no leftover to reclaim, its creator may be about to size it; a \
             create must not touch an object it did not create",
            said(answer)
        )));
    }
    refused(
        answer,
        "exists",
        &told,
        "use O_CREAT | O_EXCL and map EEXIST to TableError::Exists, whatever the size of the \
         object that has the name",
    )
}

pub fn open_errors(run: &mut Run) -> Result<String, Fail> {
    let missing = run.ipc_name("missing");
    let missing_path = dev_shm(&missing).display().to_string();
    // What a creator stopped between shm_open() and ftruncate() leaves: a 0-byte object.
    let empty = run.ipc_name("empty");
    let empty_path = dev_shm(&empty).display().to_string();
    let planted = plant_object(run, &empty, &[])?;
    // A link to an object: shm_open() refuses it, a program that opens the path maps the object.
    let linked = run.ipc_name("linked");
    let behind = format!("{linked}-behind");
    let behind_bytes = run.random_bytes(64);
    let behind_object = plant_object(run, &behind, &behind_bytes)?;
    let link = plant_link(&linked, &behind)?;
    // An object the program's 4 GiB of address space cannot map: open() fails in mmap(), and
    // must leave it where it is (open never removes anything).
    let vast = run.ipc_name("vast");
    let vast_len = (4u64 << 30) + 4096;
    let vast_object = plant_sparse(run, &vast, vast_len)?;
    // A name refused before any system call: how long starting and answering takes the
    // program, in this run.
    let baseline_name = run.ipc_name("baseline").trim_start_matches('/').to_string();
    // The opens do not depend on each other: they start at once.
    let mut lost = start(run, &missing, None, OPENER)?;
    let mut hollow = start(run, &empty, None, OPENER)?;
    let mut through = start(run, &linked, None, OPENER)?;
    let mut baseline = start(run, &baseline_name, None, OPENER)?;
    let mut unmappable = start(run, &vast, None, OPENER)?;
    // How long each was runnable, read at every look while the grader waits for any of them
    // (the engine reaps a process soon after it exits).
    let pids = [
        baseline.pid.as_raw(),
        lost.pid.as_raw(),
        hollow.pid.as_raw(),
    ];
    let mut runnable = [0u64; 3];
    let mut look = || {
        for (most, pid) in runnable.iter_mut().zip(pids) {
            *most = (*most).max(runnable_ns(pid));
        }
    };
    let what = "given a name without a slash";
    await_answer_watching(&mut baseline, OPENER, what, None, &mut look)?;
    baseline.wait()?;

    let answer = await_answer_watching(
        &mut lost,
        OPENER,
        &format!("opening {missing}, which does not exist"),
        Some("not-found when shm_open() fails with ENOENT"),
        &mut look,
    )?;
    if exists(&missing) {
        return Err(Fail::failed(format!(
            "opening {missing}, which did not exist, the program said {} and {missing_path} \
             exists now: open() created it; open with O_RDWR alone, no O_CREAT (ENOENT is \
             NotFound)",
            said(&answer)
        )));
    }
    refused(
        &answer,
        "not-found",
        &format!("opening {missing}, which does not exist"),
        "shm_open() fails with ENOENT for a name that does not exist, which is \
         TableError::NotFound",
    )?;
    lost.wait()?;

    let what = "opening a 0-byte object (as a creator leaves it before its ftruncate())";
    let due = Some("empty when fstat() says 0 bytes");
    let answer = await_answer_watching(&mut hollow, OPENER, what, due, &mut look)?;
    refused(
        &answer,
        "empty",
        what,
        "fstat() says 0 bytes: return TableError::Empty (mmap() cannot map nothing)",
    )?;
    let [baseline_ns, lost_ns, hollow_ns] = runnable;
    at_once(
        lost_ns,
        baseline_ns,
        "opening a name that does not exist",
        "not-found",
        "for the name to appear",
    )?;
    at_once(
        hollow_ns,
        baseline_ns,
        "opening a 0-byte object",
        "empty",
        "for the object to be given a size",
    )?;
    match std::fs::metadata(&empty_path).map(|m| m.len()) {
        Ok(0) => {}
        Ok(len) => {
            return Err(Fail::failed(format!(
                "opening the 0-byte object {empty_path} was refused, but it is {len} bytes now: \
                 open() must not size an object; that is the creator's ftruncate()"
            )));
        }
        Err(_) => {
            return Err(Fail::failed(format!(
                "opening the 0-byte object {empty_path} was refused, but the object is gone: \
                 open() must not unlink a name it did not create"
            )));
        }
    }
    hollow.wait()?;
    drop(planted);

    let what = format!(
        "opening {linked}, a symbolic link the grader put in /dev/shm to the object {behind}"
    );
    let answer = await_answer(&mut through, OPENER, &what, None)?;
    if answer.kind == "mapped" {
        return Err(Fail::failed(format!(
            "{what}, the program mapped the object behind the link: it opened {} as a path, \
             which follows links; shm_open() never follows one (O_NOFOLLOW: ELOOP, \
             kind=shm-open): open the object with shm_open(name, O_RDWR), not by its path",
            dev_shm(&linked).display()
        )));
    }
    refused(
        &answer,
        "shm-open",
        &what,
        "shm_open() refuses a symbolic link (ELOOP), which is TableError::Open",
    )?;
    through.wait()?;
    drop(link);
    drop(behind_object);

    let vast_path = dev_shm(&vast);
    let what = format!(
        "opening {vast}, an object of {vast_len} bytes the grader made (more than the program's \
         4 GiB of address space can map)"
    );
    let answer = await_answer(&mut unmappable, OPENER, &what, None)?;
    let left = std::fs::metadata(&vast_path).map(|m| m.len()).ok();
    if left != Some(vast_len) {
        let done = match left {
            None => "it is gone".to_string(),
            Some(len) => format!("it is {len} bytes now"),
        };
        return Err(Fail::failed(format!(
            "{what}, the program said {}, and {done}: open() never removes or changes an \
             object, even when it cannot map it (only create() unlinks, the name it has just \
             made, when a later step fails)",
            said(&answer)
        )));
    }
    refused(
        &answer,
        "mmap",
        &what,
        "fstat() gives its size, mmap() of that size fails: TableError::Map",
    )?;
    unmappable.wait()?;
    drop(vast_object);
    Ok(
        "a name that does not exist was not-found and stayed so; a 0-byte object was empty, \
        both at once; a link in /dev/shm was not followed; an object too big to map was mmap, \
        and stayed"
            .into(),
    )
}

/// Far longer runnable than starting and answering takes: what a loop adds that does not
/// sleep (a 10 ms wait seen asleep is caught by the looks of `await_answer`).
const BUSY_NS: u64 = 150_000_000;

/// Fails if an opener that answered `kind` was runnable (`spent`) far longer than the program
/// that answered a bad name at once (`baseline_ns`, started with it): it looped before
/// answering, as if waiting for what `awaited` names.
fn at_once(
    spent: u64,
    baseline_ns: u64,
    what: &str,
    kind: &str,
    awaited: &str,
) -> Result<(), Fail> {
    if spent <= baseline_ns + BUSY_NS || spent <= 2 * baseline_ns {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{what}, the opener answered kind={kind}, but only after {} ms runnable (on a CPU or \
         waiting for one, never asleep), where a run started with it that refused a bad name \
         took {} ms: it loops (busy-waits) before it answers, as if waiting {awaited}; \
         nothing in this lab waits: one shm_open() and one fstat(), then the answer",
        spent / 1_000_000,
        baseline_ns / 1_000_000
    )))
}
