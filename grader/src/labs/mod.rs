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
