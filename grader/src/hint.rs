//! `cargo grade hint LAB/CHECK`: a check's hint, on demand.

use crate::engine::CLEANUP_CHECK;

/// Why no hint could be looked up.
#[derive(Debug, thiserror::Error)]
pub enum HintError {
    #[error("`{0}` names no check: name one as LAB/CHECK (cargo grade --list shows them)")]
    NoCheck(String),
    #[error(transparent)]
    Unknown(#[from] crate::cli::SelectionError),
}

/// The hint of the check `word` (`pipe-echo/echo-16-mib`), or what to read instead when it has
/// none.
pub fn lookup(word: &str) -> Result<String, HintError> {
    let Some((slug, name)) = word.split_once('/') else {
        return Err(HintError::NoCheck(word.into()));
    };
    let plans = crate::cli::plan(&[word.to_string()])?;
    let lab = plans[0].lab;
    if name == CLEANUP_CHECK && lab.cleanup_points > 0 {
        return Ok(format!(
            "{slug}/{CLEANUP_CHECK} has no hint: its message lists each IPC object left behind \
             and the check that left it; the handout's rubric says who removes what"
        ));
    }
    let check = lab
        .checks
        .iter()
        .find(|c| c.name == name)
        .expect("plan() found the check");
    Ok(match check.hint {
        Some(hint) => format!("{slug}/{name}: {hint}"),
        None => format!("{slug}/{name} has no hint: its failure message says what to fix"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_without_a_check_is_a_typed_error() {
        assert!(matches!(lookup("pipe-echo"), Err(HintError::NoCheck(_))));
        assert!(matches!(lookup("nope/x"), Err(HintError::Unknown(_))));
        assert!(matches!(
            lookup("pipe-echo/nope"),
            Err(HintError::Unknown(_))
        ));
    }
}
