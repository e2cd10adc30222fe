//! The order checks are taken in: the longest first, as the last grading measured them, so that
//! no long check starts last while the other workers sit idle.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::model::Check;

/// How long each check (`lab/check`) took when last graded, in milliseconds.
pub struct Durations {
    path: PathBuf,
    millis: BTreeMap<String, u64>,
}

impl Durations {
    /// The durations kept in `log_dir`; none if it holds none or they cannot be read (the order
    /// is then the report's, and no result depends on it).
    pub fn read(log_dir: &Path) -> Durations {
        let path = log_dir.join("durations.json");
        let millis = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Durations { path, millis }
    }

    /// The key that sorts checks into the order they are taken in: exclusive checks first (one
    /// taken later would wait for the checks beside it to end, the other workers idle behind
    /// it), then the longest first; a check never measured counts as the longest.
    pub fn sort_key(&self, lab: &str, check: &Check) -> (bool, Reverse<u64>) {
        let millis = self.millis.get(&key(lab, check.name)).copied();
        (!check.exclusive, Reverse(millis.unwrap_or(u64::MAX)))
    }

    /// Records what this grading measured and keeps it for the next. A failure to write loses
    /// only the order.
    pub fn record(mut self, measured: impl IntoIterator<Item = (String, u64)>) {
        self.millis.extend(measured);
        let Ok(json) = serde_json::to_vec(&self.millis) else {
            return;
        };
        // Written beside, then renamed: a grading running at the same time (another thread of
        // the tests, say) reads either file whole.
        let Some(dir) = self.path.parent() else {
            return;
        };
        if let Ok(mut partial) = tempfile::NamedTempFile::new_in(dir)
            && partial.write_all(&json).is_ok()
        {
            let _ = partial.persist(&self.path);
        }
    }
}

/// How a check is named in the durations file.
pub fn key(lab: &str, check: &str) -> String {
    format!("{lab}/{check}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn check(name: &'static str, exclusive: bool) -> Check {
        Check {
            name,
            points: 1,
            timeout: Duration::from_secs(1),
            description: "",
            exclusive,
            hint: None,
            run: |_| Ok(String::new()),
        }
    }

    #[test]
    fn exclusive_first_then_longest_then_never_measured_before_measured() {
        let dir = tempfile::tempdir().unwrap();
        Durations::read(dir.path()).record([(key("lab", "short"), 10), (key("lab", "long"), 900)]);
        let durations = Durations::read(dir.path());
        let checks = [
            check("short", false),
            check("new", false),
            check("long", false),
            check("timed", true),
        ];
        let mut order: Vec<&Check> = checks.iter().collect();
        order.sort_by_key(|c| durations.sort_key("lab", c));
        let names: Vec<&str> = order.iter().map(|c| c.name).collect();
        assert_eq!(names, ["timed", "new", "long", "short"]);
    }

    #[test]
    fn an_unreadable_file_gives_the_report_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("durations.json"), "not json").unwrap();
        let durations = Durations::read(dir.path());
        assert_eq!(
            durations.sort_key("lab", &check("a", false)),
            durations.sort_key("lab", &check("b", false))
        );
    }
}
