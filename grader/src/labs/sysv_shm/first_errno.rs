//! The errno an error carries: that of the call that failed. A clean-up call made after the
//! failure (the removal of a segment whose `shmat()` failed) sets errno too, so a program that
//! reads errno only after its clean-up reports the clean-up's errno as the failure's.

use crate::engine::Fail;

use super::injected::{Injected, Then};

/// With the failing call of `case` followed by its clean-up made to fail too (with another
/// errno), the program reported the right kind: its error must not carry the clean-up's errno
/// instead of the failure's. An error that names neither is not judged (its text is the
/// program's).
pub fn first_errno_kept(
    case: &Injected,
    (context, what): (&str, &str),
    message: &ipc_labs_driver::Message,
) -> Result<(), Fail> {
    let Then::Fail(_, second, _) = case.then else {
        return Ok(());
    };
    let first = nix::errno::Errno::from_raw(case.errno);
    let second = nix::errno::Errno::from_raw(second);
    let error = message.get("error").unwrap_or("");
    let names = |errno: nix::errno::Errno| error.contains(&format!("{errno:?}"));
    if names(first) || !names(second) {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{context}: the program said kind={}, but its error is `{error}`, which carries \
         {second:?}, the errno of {what}, not {first:?}, the errno of the call that failed: it \
         reads errno after its clean-up (Errno::last() once remove() has run), when the \
         clean-up's failure has replaced it; take errno right after the call that failed, \
         before any other call",
        case.kind
    )))
}
