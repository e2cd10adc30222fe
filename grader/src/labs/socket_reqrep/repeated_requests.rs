//! Repeated requests to a peer that runs the lab's own program: each must be sent again, small
//! or large, also when the client has had an answer to the same request before (the grader
//! answers in the server's place, with bytes of its own, so no remembered answer is right).

use super::protocol::op_name;
use crate::engine::Fail;

/// Appends each request again, in the same order: every one a repeat of an earlier one.
pub fn repeat_each(requests: &mut Vec<(u8, Vec<u8>)>) {
    let again = requests.clone();
    requests.extend(again);
}

/// The failure when the first request that did not come as it should is a repeat of an earlier
/// one that did: the client answered it without sending it.
pub fn repeat_not_sent(
    requests: &[(u8, Vec<u8>)],
    received: &[(u8, Vec<u8>)],
    answers_written: usize,
    situation: &str,
) -> Option<Fail> {
    // A client that ended early sent none of the rest: no repeat answered from memory.
    if answers_written < requests.len() {
        return None;
    }
    let i = (0..requests.len()).find(|&i| received.get(i) != Some(&requests[i]))?;
    let first = requests[..i].iter().position(|r| *r == requests[i])?;
    let (op, payload) = &requests[i];
    let came = match received.get(i) {
        Some(other) => match requests.iter().position(|r| r == other) {
            Some(k) => format!("request {k} came in its place"),
            None => "other bytes came in its place".into(),
        },
        None => "nothing came after it".into(),
    };
    Some(Fail::failed(format!(
        "{situation}: request {i} (op {}, {} payload bytes), the same as request {first}, never \
         came over the socket ({came}), though the client wrote an answer to every call: it \
         answered the repeat from what it remembered of request {first} (a cache of answers, \
         kept for its own program's server, or for large payloads). Client::call sends every \
         request over the socket and returns the response that came, repeats too, whoever the \
         peer is: a server may answer the same request otherwise the next time (these answers \
         were the grader's random bytes)",
        op_name(*op),
        payload.len()
    )))
}
