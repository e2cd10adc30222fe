//! Names far from the usual ones: valid names around and past `PATH_MAX` (the name rule has no
//! length limit, only `shm_open()` may find a name too long), and bad names whose first
//! character takes more than one byte (the rule is about characters: still kind=bad-name).

use super::create_failures::expect_kind;
use super::errors::{first_message, release};
use super::segment::dev_shm;
use crate::engine::{Fail, Proc, Run};

/// Valid names of `PATH_MAX` - 1, `PATH_MAX` and `PATH_MAX` + 1 bytes, and one of 20000:
/// `shm_open()` finds each too long (`ENAMETOOLONG`), kind=shm-open; a length limit of the
/// name check's own (at `PATH_MAX`, or anywhere else) makes one of them kind=bad-name.
pub(super) fn long_names_reach_shm_open(run: &mut Run) -> Result<(), Fail> {
    let base = run.ipc_name("long");
    let path_max = libc::PATH_MAX as usize;
    for length in [path_max - 1, path_max, path_max + 1, 20_000] {
        let name = format!("{base}-{}", "x".repeat(length - base.len() - 1));
        let mut proc = run.spawn(&["--name", name.as_str(), "--work", "1"])?;
        let message = first_message(&mut proc)?;
        let what = format!(
            "SharedBank::create() of a valid name of {length} bytes ('/' and {} characters, \
             none of them '/'; PATH_MAX is {path_max})",
            length - 1
        );
        let judged = if message.get("kind") == Some("bad-name") {
            // Its error would quote the whole name: thousands of characters.
            Err(Fail::failed(format!(
                "{what} failed with kind=bad-name: the name rule has no length limit of \
                 its own (BadName is only for a name that is not '/' followed by at least one \
                 character, none of them '/'), so a check that refuses long names up front \
                 (at PATH_MAX, NAME_MAX or any other length) gives the wrong kind; hand the \
                 name to shm_open(), whose ENAMETOOLONG is BankError::Open (kind=shm-open)"
            )))
        } else {
            expect_kind(
                &message,
                "shm-open",
                &what,
                "the name is valid and shm_open() fails (ENAMETOOLONG), which is \
                 BankError::Open",
            )
        };
        if judged.is_err() {
            proc.kill_tree();
            let _ = std::fs::remove_file(dev_shm(&name));
            return judged;
        }
        release(&mut proc)?;
    }
    Ok(())
}

/// Bad names (no '/' first) whose first character is 2, 3 and 4 bytes long, alone or with
/// more after it: each is kind=bad-name, the program going on to report it. A check that
/// slices the name at byte 1 (`split_at(1)`, `&name[..1]`) panics on them.
pub(super) fn wide_first_characters_are_bad_names(run: &mut Run) -> Result<(), Fail> {
    let bare = run.ipc_name("wide");
    let bare = bare.trim_start_matches('/');
    let names = [
        format!("\u{e4}{bare}"),
        format!("\u{20ac}{bare}"),
        format!("\u{1f600}{bare}"),
        format!("\u{e4}/{bare}"),
        "\u{e4}".to_string(),
    ];
    for name in &names {
        let mut proc = run.spawn(&["--name", name.as_str(), "--work", "1"])?;
        let judged = match first_message(&mut proc) {
            Ok(message) => expect_kind(
                &message,
                "bad-name",
                &format!("SharedBank::create({name:?})"),
                "a name is a '/' followed by at least one character, none of them '/'; this \
                 one starts with another character, so it is BankError::BadName",
            ),
            Err(Fail::Failed(ended) | Fail::Crashed(ended)) => {
                Err(crashed_on_wide_name(&proc, name, &ended))
            }
            Err(other) => Err(other),
        };
        if judged.is_err() {
            proc.kill_tree();
            let _ = std::fs::remove_file(dev_shm(&format!("/{name}")));
            return judged;
        }
        release(&mut proc)?;
    }
    Ok(())
}

fn crashed_on_wide_name(proc: &Proc, name: &str, ended: &str) -> Fail {
    let first = name.chars().next().map_or(0, char::len_utf8);
    let stderr = proc.stderr.lock().map(|c| c.text()).unwrap_or_default();
    let boundary = if stderr.contains("char boundary") {
        " (its panic says the byte index is not a char boundary)"
    } else {
        ""
    };
    Fail::failed(format!(
        "SharedBank::create({name:?}) did not return BankError::BadName: {ended}; the name's \
         first character is {first} bytes long, and the name check cut it at a byte that is \
         not a character boundary{boundary} (split_at(1), &name[..1] or &name[1..] before \
         knowing the first character is '/'); check the name by characters (strip_prefix('/'), \
         starts_with('/')), so that every bad name is BadName and none is a crash"
    ))
}
