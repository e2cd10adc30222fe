//! What a function of the API returned, read by kind from the program's report, and whether a
//! second `exchange()` was refused as it must be.

use super::session::Done;
use crate::engine::Fail;

/// Whether a second `exchange()` (`--twice`) was refused as it must be, whatever the first one
/// returned.
pub fn refused_again(done: &Done) -> Result<(), Fail> {
    let again = done.again.as_deref().unwrap_or("?");
    if Returned::parse(again) == Returned::AlreadyExchanged {
        return Ok(());
    }
    // The first call succeeded, and the second returned an echo: the write end was closed and
    // the child has exited, so nothing can have gone through the child the second time.
    if let (Returned::Ok(first), Returned::Ok(second)) =
        (Returned::parse(&done.exchange), Returned::parse(again))
        && second > 0
    {
        let same = if first == second {
            " (as long as the first)"
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "the first exchange() returned `{}`, and calling it a second time, with the same \
             input, returned `{again}`{same}, an echo that cannot have come through the child: \
             the first call closed the write end and the child has exited; the second answer \
             came from memory (an echo kept from the first call, or the input itself): a second \
             call must fail with AlreadyExchanged whatever the first returned, and send nothing",
            done.exchange
        )));
    }
    // An empty echo: the second call did not look at to_child. Anything else: it wrote again.
    if done.exchange.starts_with("ok") || Returned::parse(again) == Returned::Ok(0) {
        return Err(Fail::failed(format!(
            "calling exchange() a second time returned `{again}`: the first call closed the \
             write end, so a second call must fail with AlreadyExchanged (and send nothing)"
        )));
    }
    Err(Fail::failed(format!(
        "the first exchange() failed (`{}`), and calling it a second time returned `{again}`: \
         the first call takes the write end out of to_child and closes it whatever it returns, \
         an error too, so a second call must fail with AlreadyExchanged (and send nothing): \
         take the write end before anything can fail, and let it close when exchange() returns",
        done.exchange
    )))
}

/// What a function of the API returned, as `main.rs` reports it (`ok N` or `error` and the
/// error's text, which names its kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Returned {
    Ok(usize),
    Pipe(String),
    Fork(String),
    Write(String),
    Read(String),
    ShortEcho {
        sent: usize,
        echoed: usize,
    },
    AlreadyExchanged,
    Wait(String),
    ChildFailed,
    /// Anything else, as reported.
    Other(String),
}

impl Returned {
    pub fn parse(report: &str) -> Returned {
        if report == "ok" {
            return Returned::Ok(0);
        }
        if let Some(n) = report.strip_prefix("ok ") {
            return n
                .parse()
                .map_or(Returned::Other(report.into()), Returned::Ok);
        }
        let Some(error) = report.strip_prefix("error ") else {
            return Returned::Other(report.into());
        };
        let errno = |rest: &str| rest.split(':').next().unwrap_or("").trim().to_string();
        if let Some(rest) = error.strip_prefix("pipe() failed: ") {
            Returned::Pipe(errno(rest))
        } else if let Some(rest) = error.strip_prefix("fork() failed: ") {
            Returned::Fork(errno(rest))
        } else if let Some(rest) = error.strip_prefix("writing to a pipe failed: ") {
            Returned::Write(errno(rest))
        } else if let Some(rest) = error.strip_prefix("reading from a pipe failed: ") {
            Returned::Read(errno(rest))
        } else if let Some(rest) = error.strip_prefix("waitpid() failed: ") {
            Returned::Wait(errno(rest))
        } else if error.starts_with("exchange() was already called") {
            Returned::AlreadyExchanged
        } else if error.starts_with("the echo child did not exit with status 0") {
            Returned::ChildFailed
        } else if let Some(rest) = error.strip_prefix("the echo child sent back ") {
            let numbers: Vec<usize> = rest
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            match numbers[..] {
                [echoed, sent] => Returned::ShortEcho { sent, echoed },
                _ => Returned::Other(report.into()),
            }
        } else {
            Returned::Other(report.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_read_by_kind() {
        assert_eq!(Returned::parse("ok 12"), Returned::Ok(12));
        assert_eq!(
            Returned::parse("error writing to a pipe failed: EPIPE: Broken pipe"),
            Returned::Write("EPIPE".into())
        );
        assert_eq!(
            Returned::parse("error the echo child sent back 3 bytes, but it was sent 4"),
            Returned::ShortEcho { sent: 4, echoed: 3 }
        );
        assert_eq!(
            Returned::parse("error the echo child did not exit with status 0: Exited(1)"),
            Returned::ChildFailed
        );
        assert_eq!(
            Returned::parse("error pipe() failed: EMFILE: Too many open files"),
            Returned::Pipe("EMFILE".into())
        );
    }
}
