//! The observer's rounds: every node's full registry read at one moment (the round's ops
//! share an invoke time).

use std::collections::BTreeMap;

use crate::history::{Kind, Micros, Op, Outcome};
use crate::workload::OBSERVER;

/// One round in which every node answered.
pub struct Round<'a> {
    pub invoke: Micros,
    /// When the last node's answer arrived.
    pub complete: Micros,
    /// One full listing per node.
    pub listings: Vec<&'a Op>,
}

/// The rounds of `ops` in which all `nodes` nodes answered, in time order.
pub fn complete_rounds(ops: &[Op], nodes: usize) -> Vec<Round<'_>> {
    let mut by_invoke: BTreeMap<Micros, Vec<&Op>> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.process == OBSERVER && o.kind == Kind::ReadAll) {
        by_invoke.entry(op.invoke).or_default().push(op);
    }
    by_invoke
        .into_iter()
        .filter(|(_, l)| l.len() == nodes && l.iter().all(|o| o.outcome == Outcome::Ok))
        .map(|(invoke, listings)| Round {
            invoke,
            complete: listings.iter().map(|o| o.complete).max().unwrap_or(invoke),
            listings,
        })
        .collect()
}
