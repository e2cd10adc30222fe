//! A side whose peer is gone unlinks nothing: the parent unlinked both names once both sides
//! held the handoff, and from then on they belong to nobody. In the runs where the grader kills
//! one side (`peer_gone.rs`), it makes objects of its own under the unlinked names first; they
//! must still be there, as it made them, once the survivor has reported kind=peer-gone and the
//! parent has closed the handoff.

use super::handover::Handover;
use super::planted::{PLANTED_VALUE, Planted};
use super::probe;
use crate::engine::Fail;

/// The grader's objects under the names of a run in which it kills the `victim`.
pub(super) struct OthersObjects {
    planted: Vec<(String, Planted)>,
    mechanism: &'static str,
    situation: String,
    survivor: &'static str,
    /// What had become of them when the survivor reported kind=peer-gone.
    at_report: Vec<String>,
}

impl OthersObjects {
    /// Plants them, at `ready` (the names unlinked); `None` if a name is still there, which
    /// names-unlinked judges.
    pub(super) fn plant(
        handover: &Handover,
        victim: &str,
        survivor: &'static str,
        at: &str,
    ) -> Result<Option<OthersObjects>, Fail> {
        if handover.names.iter().any(|name| probe::name_exists(name)) {
            return Ok(None);
        }
        let planted = handover
            .names
            .iter()
            .map(|name| {
                Planted::with_value(handover.mechanism, name, PLANTED_VALUE)
                    .map(|plant| (name.clone(), plant))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(OthersObjects {
            planted,
            mechanism: handover.mechanism,
            situation: format!(
                "once both names were unlinked (the parent said ready), the grader made {} of \
                 its own under the same names, then killed the {victim} before record {at}",
                handover.mechanism
            ),
            survivor,
            at_report: Vec::new(),
        }))
    }

    fn changed(&self) -> Vec<String> {
        self.planted
            .iter()
            .filter_map(|(name, plant)| plant.changed().map(|what| format!("{name} {what}")))
            .collect()
    }

    /// Notes what the survivor had removed by its report of kind=peer-gone.
    pub(super) fn survivor_reported(&mut self) {
        self.at_report = self.changed();
    }

    /// At `ended` (the parent has closed the handoff): the objects must be as the grader made
    /// them.
    pub(super) fn judge(&self) -> Result<(), Fail> {
        let (situation, survivor) = (&self.situation, self.survivor);
        if !self.at_report.is_empty() {
            return Err(Fail::failed(format!(
                "{situation}; by the time the {survivor} had given up with kind=peer-gone, {}: \
                 the program removed objects another program had made under them ({}): either \
                 the {survivor}, its peer gone, unlinked the names again, or something removes \
                 objects it did not make (a sweep of /dev/shm for old or unused ones; those \
                 were dated a day back). Names are removed only in Handoff::unlink(), once, \
                 and only the two create() made; put() and take() return PeerGone and remove \
                 nothing, not even to clean up after a crash",
                self.at_report.join(", "),
                self.mechanism
            )));
        }
        let at_end = self.changed();
        if !at_end.is_empty() {
            return Err(Fail::failed(format!(
                "{situation}; the {survivor} gave up with kind=peer-gone, but by the time the \
                 parent had closed the handoff, {}: the program removed objects that were not \
                 its own. Names are removed only in Handoff::unlink(), once; close() closes both \
                 signals and unmaps the slot, and unlinks nothing",
                at_end.join(", ")
            )));
        }
        Ok(())
    }
}
