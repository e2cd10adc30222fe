//! The checks of every lab, one module per lab; each defines `pub static LAB: Lab`. The build
//! script finds the modules, so adding a lab adds a file here and touches no list.

use crate::engine::Lab;

include!(concat!(env!("OUT_DIR"), "/labs.rs"));

/// Every lab, in course order.
pub fn all() -> Vec<&'static Lab> {
    let mut labs = MODULES.to_vec();
    labs.sort_by_key(|lab| lab.number);
    labs
}

/// The lab called `slug`.
pub fn find(slug: &str) -> Option<&'static Lab> {
    MODULES.iter().copied().find(|lab| lab.slug == slug)
}

#[cfg(test)]
mod tests {
    /// Checks whose failure message already says all a hint would: none so far.
    const SELF_EXPLAINING: &[&str] = &[];

    #[test]
    fn every_check_has_a_hint_that_points_into_its_handout() {
        let workspace = crate::workspace_root().expect("the tests run in a workspace");
        for lab in super::all() {
            let handout = format!("docs/labs/{:02}-{}.md", lab.number, lab.slug);
            for check in lab.checks {
                let name = format!("{}/{}", lab.slug, check.name);
                match check.hint {
                    None => assert!(
                        SELF_EXPLAINING.contains(&name.as_str()),
                        "{name} has no hint and is not on the list of self-explaining checks"
                    ),
                    Some(hint) => {
                        assert!(hint.contains(&handout), "{name}'s hint names no {handout}");
                        assert!(workspace.join(&handout).is_file(), "{handout} is missing");
                    }
                }
            }
        }
    }
}
