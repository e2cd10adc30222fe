//! `run_server()` called a second time in one process (main.rs's `--runs 2`): each call is a
//! server of its own, which serves until its own signal and counts from zero. State kept from
//! the first call (a stopping flag, counts or connections in `static`s) shows only here.

use ipc_labs_driver::Message;
use rand::RngExt;

use super::programs::{Server, spawn_server};
use super::protocol::{closed_after, frame, read_response, verify};
use super::{OP_ECHO, Transport};
use crate::engine::{Fail, Run};

/// What every message of this stage says of the setting.
const SETTING: &str = "in the second run_server() of one process (main.rs `server --runs 2`: the \
                       first run had served its clients, stopped on SIGTERM and returned)";

/// The server of `--runs 2`: a client with a few calls and the stop in each run; the second
/// run's client must be answered and its `done` count that run alone.
pub fn second_run(run: &mut Run) -> Result<String, Fail> {
    let path = run.path("again.sock");
    let at = [
        "--runs".to_string(),
        "2".into(),
        "--unix".into(),
        path.display().to_string(),
    ];
    let (proc, ready) = spawn_server(run, &at)?;
    let first = Server::ready(run, proc, ready, Transport::Unix, path)?;
    let first_calls = run.rng().random_range(2..=5);
    calls(run, &first, first_calls, "the first run")?;
    let (first_done, second) = first.stop_then_again(run)?;
    let second_calls = run.rng().random_range(2..=5);
    calls(run, &second, second_calls, "the second run").map_err(|fail| match fail {
        Fail::Failed(why) => Fail::failed(format!(
            "{SETTING}, {why}. The first run answered the same calls: state kept from the first \
             run is the likely cause (a stopping flag, counts or connections in `static`s, set \
             by the first run and never reset). Keep a server's state in the call of \
             run_server (an Arc shared by its threads), so that each call starts afresh"
        )),
        other => other,
    })?;
    // stop() pings first: one more client, one more request.
    let done = second.stop()?;
    let counted =
        |message: &Message, field: &str| message.get(field).and_then(|v| v.parse::<u64>().ok());
    let expected = [("clients", 2), ("requests", second_calls as u64 + 1)];
    for (field, want) in expected {
        let got = counted(&done, field);
        if got == Some(want) {
            continue;
        }
        let before = counted(&first_done, field).unwrap_or(0);
        let carried = got == Some(want + before);
        return Err(Fail::failed(format!(
            "{SETTING}, the server's `done` says {field}={}, after one client with \
             {second_calls} calls and the grader's last call: {want} in that run{}. Each call \
             of run_server is a server of its own, whose ServerStats start at zero: keep them in \
             the call (an Arc shared by its threads), not in a `static`",
            done.get(field).unwrap_or("nothing"),
            if carried {
                format!(", plus the first run's {before}: the counts were kept from the first run")
            } else {
                String::new()
            }
        )));
    }
    Ok(format!(
        "run_server() called again in the same process served and counted afresh ({second_calls} \
         calls)"
    ))
}

/// One client of `server` making `count` echo calls, then closing between frames.
fn calls(run: &mut Run, server: &Server, count: usize, which: &str) -> Result<(), Fail> {
    let mut conn = server.connect()?;
    for call in 0..count {
        let len = run.rng().random_range(1..300);
        let payload = run.random_bytes(len);
        conn.send(&frame(OP_ECHO, &payload), call)?;
        let got = read_response(&mut conn).map_err(|e| {
            closed_after(&conn, call, Some(OP_ECHO)).unwrap_or_else(|| {
                Fail::failed(format!(
                    "{which}'s client got no response to its call {} ({e}){}",
                    call + 1,
                    server.alive_note()
                ))
            })
        })?;
        verify(got, OP_ECHO, &payload, &format!("{which}'s client"))?;
    }
    Ok(())
}
