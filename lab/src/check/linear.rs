//! Linearizability of each instance's history as a register.
//!
//! Each key is one register holding `Option<u64>`, initially `None`: a `Register` writes
//! `Some(generation)`, a `Cancel` writes `None`, and an answered `ReadLinearizable` observed a
//! value. Linearizability is compositional (P-compositionality), so every key is checked alone.
//!
//! The search is Wing & Gong's, with Lowe's cache of explored states (as in Knossos and
//! Porcupine): a depth-first search over the invoke and complete events of the answered ops in
//! real-time order, where an op may be linearized once every op that completed before it was
//! invoked has been, and where a (linearized set, register value) pair that was already explored
//! is not explored again.
//!
//! Writes with an unknown outcome have no completion: they may take effect once at any time after
//! their invocation, or never. Searching them like the others makes the search exponential in
//! their number, since every subset of them that was overwritten unread is a distinct state, so
//! two reductions keep it polynomial in practice, both exact:
//! - an unknown write is only ever placed immediately before a read that sees its value (in any
//!   linearization, an unknown write followed by a write can be dropped, and one followed by a
//!   read is followed by a read of its value), and among pending unknown writes of the same value
//!   only the earliest invoked is tried (they are interchangeable from then on);
//! - a state is also pruned when one with the same answered ops, the same value and a subset of
//!   its unknown writes was already explored: having fewer unknown writes spent can only allow
//!   more. Each state tries the moves that spend no unknown write before those that do, so that
//!   the cheaper states tend to come first and the costlier ones are pruned, rather than the
//!   other way round (which would explore the same states again).
//!
//! The search is bounded per key: a key that needs more steps is reported as unknown.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::{Kind, Micros, Op, Outcome};

/// Search steps spent on one key before its verdict is "unknown": enough for histories far
/// longer and more concurrent than a run produces, small enough that a pathological key costs
/// seconds, not hours, and bounds the memory of the cache of explored states.
const BUDGET: u64 = 2_000_000;

/// One key whose history is not linearizable.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The instance (`APP/ID`).
    pub key: String,
    /// the key's ops that were checked, in invoke order
    pub ops: Vec<Op>,
    /// a one-line reason, e.g. which read could not be placed
    pub reason: String,
}

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Keys searched (those with at least one answered linearizable read), including the
    /// unknown ones: the keys that passed are `keys_checked - unknown_keys - violations`.
    pub keys_checked: usize,
    /// Answered linearizable reads on the keys searched.
    pub reads_checked: usize,
    /// Keys whose search ran out of budget: neither a pass nor a violation.
    pub unknown_keys: Vec<String>,
    /// Keys whose history is not linearizable, in key order.
    pub violations: Vec<Violation>,
}

/// Checks every key of `ops` that has at least one `ReadLinearizable`.
pub fn check(ops: &[Op]) -> Report {
    check_with_budget(ops, BUDGET)
}

/// [`check`] with at most `budget` search steps per key.
fn check_with_budget(ops: &[Op], budget: u64) -> Report {
    let mut by_key: BTreeMap<&str, Vec<(&Op, Action)>> = BTreeMap::new();
    for op in ops {
        if let Some(action) = Action::of(op) {
            by_key.entry(op.key.as_str()).or_default().push((op, action));
        }
    }
    let mut report = Report::default();
    for (key, mut key_ops) in by_key {
        let reads = key_ops.iter().filter(|(_, action)| matches!(action, Action::Read(_))).count();
        // A history of writes alone is linearizable in any order.
        if reads == 0 {
            continue;
        }
        report.keys_checked += 1;
        report.reads_checked += reads;
        key_ops.sort_by_key(|(op, _)| op.invoke);
        match check_key(&key_ops, budget) {
            Verdict::Linearizable => {}
            Verdict::Unknown => report.unknown_keys.push(key.to_string()),
            Verdict::Violation(reason) => report.violations.push(Violation {
                key: key.to_string(),
                ops: key_ops.iter().map(|(op, _)| (*op).clone()).collect(),
                reason,
            }),
        }
    }
    report
}

/// What an op does to its register, for the ops that can matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Write(Option<u64>),
    Read(Option<u64>),
}

impl Action {
    /// `None` for the ops the checker ignores: ones that certainly had no effect, reads that
    /// observed nothing, kinds that are not linearizable register operations, and malformed
    /// entries (a register without a generation, an answered read without a value).
    fn of(op: &Op) -> Option<Action> {
        match op.kind {
            Kind::Register if op.outcome != Outcome::Fail => op.value.map(|g| Action::Write(Some(g))),
            Kind::Cancel if op.outcome != Outcome::Fail => Some(Action::Write(None)),
            Kind::ReadLinearizable if op.outcome == Outcome::Ok => op.seen.map(Action::Read),
            _ => None,
        }
    }
}

/// The outcome of one key's search.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Linearizable,
    Unknown,
    Violation(String),
}

/// Checks one key's ops, given in invoke order.
fn check_key(ops: &[(&Op, Action)], budget: u64) -> Verdict {
    // Cheap, and names the culprit more plainly than a failed search would.
    let written: HashSet<Option<u64>> = ops
        .iter()
        .filter_map(|(_, action)| match action {
            Action::Write(value) => Some(*value),
            Action::Read(_) => None,
        })
        .chain([None])
        .collect();
    for (op, action) in ops {
        if let Action::Read(seen) = action {
            if !written.contains(seen) {
                return Verdict::Violation(format!("the {} saw a value that no write of this key wrote", describe(op)));
            }
        }
    }
    Search::new(ops).run(budget)
}

/// "linearizable read that saw generation 1 by process 3 on node 1 over [30, 40] µs", for
/// reasons.
fn describe(op: &Op) -> String {
    let what = match op.kind {
        Kind::Register => match op.value {
            Some(g) => format!("register of generation {g}"),
            None => "register".to_string(),
        },
        Kind::Cancel => "cancel".to_string(),
        Kind::ReadLinearizable => match op.seen {
            Some(Some(g)) => format!("linearizable read that saw generation {g}"),
            Some(None) => "linearizable read that saw it absent".to_string(),
            None => "linearizable read".to_string(),
        },
        kind => format!("{kind:?}"),
    };
    let complete = match op.outcome {
        Outcome::Unknown => "?".to_string(),
        Outcome::Ok | Outcome::Fail => op.complete.to_string(),
    };
    format!("{what} by process {} on node {} over [{}, {complete}] µs", op.process, op.node, op.invoke)
}

/// End of the event list.
const NIL: usize = usize::MAX;
/// The sentinel before the first event.
const HEAD: usize = 0;

/// An answered op's invocation or completion.
#[derive(Debug, Clone, Copy)]
struct Event {
    op: usize,
    call: bool,
    time: Micros,
    /// The op's other event.
    partner: usize,
}

/// A linearization step that can be undone.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// The call event of the answered op linearized.
    call: usize,
    /// The register's value before the step.
    before: Option<u64>,
    /// The unknown write linearized just before the op, if any.
    via: Option<usize>,
}

/// A fixed-size set of small integers.
#[derive(Debug, Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn is_subset_of(&self, other: &[u64]) -> bool {
        self.0.iter().zip(other).all(|(a, b)| a & !b == 0)
    }

    /// The same set, canonically and compactly: answered ops are numbered in completion order,
    /// so the linearized ones are a long run of ones followed by a few scattered bits, stored as
    /// the run's length in words and then (index, word) for each non-zero word after it. Keeps
    /// the cache linear rather than quadratic in the history's length.
    fn compress(&self) -> Box<[u64]> {
        let full = self.0.iter().take_while(|&&w| w == u64::MAX).count();
        let mut out = vec![full as u64];
        for (i, &w) in self.0.iter().enumerate().skip(full) {
            if w != 0 {
                out.extend([i as u64, w]);
            }
        }
        out.into_boxed_slice()
    }
}

/// The register's value and the answered ops linearized (compressed).
type Answered = (Option<u64>, Box<[u64]>);

/// The explored states: for each value and answered ops, the minimal sets of unknown writes
/// spent.
#[derive(Debug, Default)]
struct Explored(HashMap<Answered, Vec<Bits>>);

impl Explored {
    /// Records a state; false when it, or one that allows at least as much (the same answered
    /// ops and value with a subset of its unknown writes spent), was already explored.
    fn visit(&mut self, value: Option<u64>, answered: &Bits, unknown: &Bits) -> bool {
        let minimal = self.0.entry((value, answered.compress())).or_default();
        if minimal.iter().any(|spent| spent.is_subset_of(&unknown.0)) {
            return false;
        }
        minimal.retain(|spent| !unknown.is_subset_of(&spent.0));
        minimal.push(unknown.clone());
        true
    }
}

/// The search over one key's history.
struct Search<'a> {
    ops: &'a [(&'a Op, Action)],
    /// Sorted by time, invocations before completions at equal times (so ops that touch are
    /// concurrent, which never makes a correct history fail); index 0 is the sentinel.
    events: Vec<Event>,
    /// The doubly linked list of events not yet linearized (indices into `events`).
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per op: its bit in `answered` (in completion order) or in `unknown` (in invoke order).
    bit: Vec<usize>,
    /// Unknown writes by value, in invoke order.
    pending: HashMap<Option<u64>, Vec<usize>>,
    answered: Bits,
    unknown: Bits,
    value: Option<u64>,
    stack: Vec<Frame>,
    explored: Explored,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [(&'a Op, Action)]) -> Self {
        let mut order: Vec<(Micros, bool, usize)> = Vec::new();
        let mut bit = vec![0; ops.len()];
        let mut pending: HashMap<Option<u64>, Vec<usize>> = HashMap::new();
        let mut unknowns = 0;
        for (i, (op, action)) in ops.iter().enumerate() {
            if op.outcome == Outcome::Ok {
                // A clock step backwards must not put a completion before its invocation.
                order.push((op.invoke, false, i));
                order.push((op.complete.max(op.invoke), true, i));
            } else if let Action::Write(value) = action {
                bit[i] = unknowns;
                unknowns += 1;
                pending.entry(*value).or_default().push(i);
            }
        }
        order.sort_unstable();

        let mut events = Vec::with_capacity(order.len() + 1);
        events.push(Event { op: NIL, call: false, time: 0, partner: NIL });
        let mut call_of = vec![NIL; ops.len()];
        let mut answered = 0;
        for (time, is_return, op) in order {
            let index = events.len();
            let partner = if is_return {
                bit[op] = answered;
                answered += 1;
                events[call_of[op]].partner = index;
                call_of[op]
            } else {
                call_of[op] = index;
                NIL
            };
            events.push(Event { op, call: !is_return, time, partner });
        }
        let len = events.len();
        let next = (1..=len).map(|i| if i == len { NIL } else { i }).collect();
        let prev = (0..len).map(|i| if i == 0 { NIL } else { i - 1 }).collect();

        Search {
            ops,
            events,
            next,
            prev,
            bit,
            pending,
            answered: Bits::new(answered),
            unknown: Bits::new(unknowns),
            value: None,
            stack: Vec::new(),
            explored: Explored::default(),
        }
    }

    fn run(mut self, budget: u64) -> Verdict {
        let mut entry = self.next[HEAD];
        // Each state's moves are scanned twice: first those that spend no unknown write, then
        // those that do. Reaching a state with fewer unknown writes spent first lets the cache
        // prune the same state reached later with more, instead of exploring it all again.
        let mut spending = false;
        let mut steps: u64 = 0;
        // The latest completion the search was stuck at: the op to blame in the reason.
        let mut furthest: Option<usize> = None;
        loop {
            // Every call's completion follows it in the list, so the scan only runs off the end
            // when the list is empty: every answered op is linearized.
            if entry == NIL {
                return Verdict::Linearizable;
            }
            steps += 1;
            if steps > budget {
                return Verdict::Unknown;
            }
            let event = self.events[entry];
            if !event.call && !spending {
                spending = true;
                entry = self.next[HEAD];
                continue;
            }
            if !event.call {
                // An op completed without being linearized: undo the last step and try the
                // alternatives after it.
                furthest = furthest.max(Some(entry));
                let Some(frame) = self.stack.pop() else {
                    return Verdict::Violation(self.reason(furthest));
                };
                self.value = frame.before;
                self.answered.clear(self.bit[self.events[frame.call].op]);
                if let Some(u) = frame.via {
                    self.unknown.clear(self.bit[u]);
                }
                self.unlift(frame.call);
                spending = frame.via.is_some();
                entry = self.next[frame.call];
                continue;
            }
            if let Some((after, via)) = self.step(entry, spending) {
                self.answered.set(self.bit[event.op]);
                if let Some(u) = via {
                    self.unknown.set(self.bit[u]);
                }
                if self.explored.visit(after, &self.answered, &self.unknown) {
                    self.stack.push(Frame { call: entry, before: self.value, via });
                    self.value = after;
                    self.lift(entry);
                    spending = false;
                    entry = self.next[HEAD];
                    continue;
                }
                self.answered.clear(self.bit[event.op]);
                if let Some(u) = via {
                    self.unknown.clear(self.bit[u]);
                }
            }
            entry = self.next[entry];
        }
    }

    /// Whether the op invoked at `call` can be linearized now, by itself or (when `spending`)
    /// just after an unknown write: the value after it, and that unknown write.
    fn step(&self, call: usize, spending: bool) -> Option<(Option<u64>, Option<usize>)> {
        match (self.ops[self.events[call].op].1, spending) {
            (Action::Write(value), false) => Some((value, None)),
            (Action::Read(seen), false) => (seen == self.value).then_some((seen, None)),
            // A write needs no unknown write before it, and neither does a read of the value
            // the register already holds.
            (Action::Write(_), true) => None,
            (Action::Read(seen), true) if seen == self.value => None,
            (Action::Read(seen), true) => {
                // Pending unknown writes of one value are interchangeable once invoked, so only
                // the earliest invoked is tried.
                let first = self.pending.get(&seen)?.iter().copied().find(|&u| !self.unknown.contains(self.bit[u]))?;
                (self.ops[first].0.invoke <= self.first_completion(call)).then_some((seen, Some(first)))
            }
        }
    }

    /// The time of the first completion after `entry`: nothing can be linearized later than it
    /// until that op is.
    fn first_completion(&self, mut entry: usize) -> Micros {
        while entry != NIL && self.events[entry].call {
            entry = self.next[entry];
        }
        if entry == NIL {
            Micros::MAX
        } else {
            self.events[entry].time
        }
    }

    /// Takes an op's two events out of the list.
    fn lift(&mut self, call: usize) {
        for e in [call, self.events[call].partner] {
            let (p, n) = (self.prev[e], self.next[e]);
            self.next[p] = n;
            if n != NIL {
                self.prev[n] = p;
            }
        }
    }

    /// Puts back what `lift` took out, in reverse order (the removed events kept their links).
    fn unlift(&mut self, call: usize) {
        for e in [self.events[call].partner, call] {
            let (p, n) = (self.prev[e], self.next[e]);
            self.next[p] = e;
            if n != NIL {
                self.prev[n] = e;
            }
        }
    }

    fn reason(&self, furthest: Option<usize>) -> String {
        let n = self.ops.len();
        match furthest {
            Some(e) => format!(
                "no order of the key's {n} ops consistent with real time can place the {}",
                describe(self.ops[self.events[e].op].0)
            ),
            None => format!("no order of the key's {n} ops consistent with real time exists"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "APP/1";

    fn op(process: u32, kind: Kind, invoke: Micros, complete: Micros) -> Op {
        Op {
            process,
            node: 0,
            kind,
            key: KEY.to_string(),
            value: None,
            seen: None,
            listed: Vec::new(),
            invoke,
            complete,
            outcome: Outcome::Ok,
            status: 200,
        }
    }

    fn reg(process: u32, generation: u64, invoke: Micros, complete: Micros) -> Op {
        Op { value: Some(generation), ..op(process, Kind::Register, invoke, complete) }
    }

    fn cancel(process: u32, invoke: Micros, complete: Micros) -> Op {
        op(process, Kind::Cancel, invoke, complete)
    }

    fn read(process: u32, seen: Option<u64>, invoke: Micros, complete: Micros) -> Op {
        Op { seen: Some(seen), ..op(process, Kind::ReadLinearizable, invoke, complete) }
    }

    fn unknown(op: Op) -> Op {
        Op { outcome: Outcome::Unknown, status: 0, ..op }
    }

    fn failed(op: Op) -> Op {
        Op { outcome: Outcome::Fail, status: 503, ..op }
    }

    fn assert_passes(ops: &[Op]) {
        let report = check(ops);
        assert_eq!(report.violations, Vec::new(), "{ops:#?}");
        assert!(report.unknown_keys.is_empty(), "{report:?}");
        assert_eq!(report.keys_checked, 1);
    }

    fn assert_fails(ops: &[Op]) -> Violation {
        let report = check(ops);
        assert!(report.unknown_keys.is_empty(), "{report:?}");
        assert_eq!(report.violations.len(), 1, "{ops:#?}");
        report.violations[0].clone()
    }

    #[test]
    fn sequential_write_then_read_passes() {
        let ops = [reg(0, 1, 0, 10), read(1, Some(1), 20, 30)];
        let report = check(&ops);
        assert_eq!(
            report,
            Report { keys_checked: 1, reads_checked: 1, unknown_keys: Vec::new(), violations: Vec::new() }
        );
    }

    #[test]
    fn read_before_any_write_sees_absent() {
        assert_passes(&[read(1, None, 0, 5), reg(0, 1, 10, 20)]);
    }

    #[test]
    fn concurrent_read_sees_old_or_new_value() {
        for seen in [1, 2] {
            assert_passes(&[reg(0, 1, 0, 10), reg(0, 2, 20, 60), read(1, Some(seen), 30, 40)]);
        }
        // Both values by two readers, old first then new, while the write is in flight.
        assert_passes(&[reg(0, 1, 0, 10), reg(0, 2, 20, 100), read(1, Some(1), 30, 40), read(2, Some(2), 50, 60)]);
    }

    #[test]
    fn touching_ops_count_as_concurrent() {
        assert_passes(&[reg(0, 1, 0, 10), read(1, None, 10, 20)]);
    }

    #[test]
    fn unknown_write_may_take_effect_late() {
        assert_passes(&[
            reg(0, 1, 0, 10),
            unknown(reg(0, 2, 20, 30)),
            read(1, Some(1), 40, 50),
            read(1, Some(2), 100, 110),
            read(2, Some(2), 120, 130),
        ]);
    }

    #[test]
    fn unknown_write_may_never_take_effect() {
        assert_passes(&[
            reg(0, 1, 0, 10),
            unknown(reg(0, 2, 20, 30)),
            read(1, Some(1), 40, 50),
            read(1, Some(1), 100, 110),
        ]);
    }

    #[test]
    fn unknown_write_takes_effect_at_most_once() {
        let v = assert_fails(&[
            unknown(reg(0, 2, 0, 10)),
            read(1, Some(2), 20, 30),
            reg(0, 1, 40, 50),
            read(1, Some(2), 60, 70),
        ]);
        assert!(v.reason.contains("[60, 70]"), "{}", v.reason);
    }

    #[test]
    fn unknown_write_cannot_be_seen_before_its_invocation() {
        assert_fails(&[read(1, Some(2), 0, 10), unknown(reg(0, 2, 20, 30))]);
    }

    #[test]
    fn cancel_then_read_of_absent_passes() {
        assert_passes(&[reg(0, 1, 0, 10), cancel(0, 20, 30), read(1, None, 40, 50)]);
    }

    #[test]
    fn repeated_values_pass() {
        assert_passes(&[
            reg(0, 1, 0, 10),
            read(1, Some(1), 12, 18),
            reg(0, 2, 20, 30),
            read(1, Some(2), 32, 38),
            reg(0, 1, 40, 50),
            read(1, Some(1), 60, 70),
            unknown(reg(0, 1, 80, 90)),
            cancel(0, 100, 110),
            read(1, None, 120, 130),
            read(1, Some(1), 140, 150),
        ]);
    }

    #[test]
    fn failed_ops_and_other_kinds_are_ignored() {
        let mut stale = read(1, Some(1), 40, 50);
        stale.kind = Kind::Read;
        assert_passes(&[
            reg(0, 1, 0, 10),
            reg(0, 2, 20, 30),
            failed(reg(0, 3, 32, 35)),
            stale,
            failed(read(1, Some(1), 40, 50)),
            unknown(read(1, Some(7), 40, 50)),
            read(1, Some(2), 60, 70),
        ]);
        let report = check(&[reg(0, 1, 0, 10), failed(read(1, Some(1), 20, 30))]);
        assert_eq!(report, Report::default());
    }

    #[test]
    fn stale_read_fails() {
        let ops = [reg(0, 1, 0, 10), reg(0, 2, 20, 30), read(1, Some(1), 40, 50)];
        let v = assert_fails(&ops);
        assert_eq!(v.key, KEY);
        assert_eq!(v.ops, ops.to_vec());
        assert!(v.reason.contains("saw generation 1"), "{}", v.reason);
        assert!(v.reason.contains("[40, 50]"), "{}", v.reason);
    }

    #[test]
    fn read_of_a_value_never_written_fails() {
        let v = assert_fails(&[reg(0, 1, 0, 10), read(1, Some(7), 20, 30)]);
        assert!(v.reason.contains("no write"), "{}", v.reason);
    }

    #[test]
    fn read_of_a_failed_write_fails() {
        assert_fails(&[reg(0, 1, 0, 10), failed(reg(0, 2, 20, 30)), read(1, Some(2), 40, 50)]);
    }

    #[test]
    fn new_then_old_inversion_fails() {
        let v = assert_fails(&[reg(0, 1, 0, 5), reg(1, 2, 0, 100), read(2, Some(2), 10, 20), read(3, Some(1), 30, 40)]);
        assert!(v.reason.contains("process 3"), "{}", v.reason);
    }

    #[test]
    fn read_of_absent_without_cancel_fails() {
        assert_fails(&[reg(0, 1, 0, 10), read(1, None, 20, 30)]);
    }

    #[test]
    fn keys_are_checked_alone() {
        let mut other = [reg(0, 5, 0, 10), read(1, Some(5), 20, 30), reg(0, 6, 40, 50)];
        for op in &mut other {
            op.key = "APP/2".to_string();
        }
        let mut writes_only = reg(0, 9, 0, 10);
        writes_only.key = "APP/3".to_string();
        let mut ops = vec![reg(0, 1, 0, 10), reg(0, 2, 20, 30), read(1, Some(1), 40, 50)];
        ops.extend(other);
        ops.push(writes_only);
        let report = check(&ops);
        assert_eq!(report.keys_checked, 2);
        assert_eq!(report.reads_checked, 2);
        assert_eq!(report.violations.len(), 1);
        assert_eq!(report.violations[0].key, KEY);
        assert_eq!(report.violations[0].ops.len(), 3);
    }

    #[test]
    fn tiny_budget_gives_unknown_not_a_verdict() {
        let passing = [reg(0, 1, 0, 10), reg(0, 2, 20, 30), read(1, Some(2), 40, 50)];
        let failing = [reg(0, 1, 0, 10), reg(0, 2, 20, 30), read(1, Some(1), 40, 50)];
        for ops in [passing, failing] {
            let report = check_with_budget(&ops, 2);
            assert_eq!(report.unknown_keys, vec![KEY.to_string()]);
            assert!(report.violations.is_empty());
            assert_eq!(report.keys_checked, 1);
        }
    }

    /// xorshift64*: reproducible without seeding a library generator.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// A linearizable history: `processes` clients each sending one op at a time, each op
    /// taking effect at a random point within its span (an unknown write: at a random point
    /// after its invocation, or never), reads seeing what that order gives.
    fn random_history(seed: u64, processes: u32, len: usize, max_span: u64, values: Option<u64>) -> Vec<Op> {
        let mut rng = Rng(seed | 1);
        let mut clock = vec![0; processes as usize];
        let mut ops = Vec::with_capacity(len);
        let mut effect = Vec::with_capacity(len);
        for i in 0..len {
            let p = (0..clock.len()).min_by_key(|&p| clock[p]).unwrap_or(0);
            let invoke = clock[p] + rng.below(5);
            let complete = invoke + 1 + rng.below(max_span);
            clock[p] = complete;
            let process = p as u32;
            let at = invoke + rng.below(complete - invoke + 1);
            let (op, at) = match rng.below(10) {
                0..=4 => (read(process, None, invoke, complete), Some(at)),
                5..=7 => (reg(process, values.map_or(i as u64, |k| rng.below(k)), invoke, complete), Some(at)),
                8 => (cancel(process, invoke, complete), Some(at)),
                _ => {
                    let late = (rng.below(2) == 0).then(|| invoke + rng.below(4 * max_span));
                    let write = if rng.below(3) == 0 {
                        cancel(process, invoke, complete)
                    } else {
                        reg(process, values.map_or(i as u64, |k| rng.below(k)), invoke, complete)
                    };
                    (unknown(write), late)
                }
            };
            ops.push(op);
            if let Some(at) = at {
                effect.push((at, i));
            }
        }
        effect.sort_unstable();
        let mut value = None;
        for (_, i) in effect {
            match ops[i].kind {
                Kind::Register => value = ops[i].value,
                Kind::Cancel => value = None,
                _ => ops[i].seen = Some(value),
            }
        }
        ops
    }

    #[test]
    fn long_sequential_history_is_fast() {
        let mut ops = Vec::new();
        for i in 0..1000u64 {
            let t = i * 100;
            ops.push(reg(0, i % 3, t, t + 10));
            ops.push(read(1, Some(i % 3), t + 20, t + 30));
        }
        let report = check(&ops);
        assert_eq!(report.keys_checked, 1);
        assert_eq!(report.reads_checked, 1000);
        assert!(report.violations.is_empty() && report.unknown_keys.is_empty());

        // The same with a stale read at the very end: the search must backtrack through it all.
        let last = ops.len() - 1;
        ops[last].seen = Some(Some(1000 % 3));
        assert_fails(&ops);
    }

    #[test]
    fn concurrent_histories_pass_and_are_fast() {
        for seed in 0..20 {
            let ops = random_history(seed * 7919 + 1, 8, 200, 60, Some(4));
            let report = check(&ops);
            assert!(report.violations.is_empty(), "seed {seed}: {:?}", report.violations);
            assert!(report.unknown_keys.is_empty(), "seed {seed}");
        }
    }

    #[test]
    fn concurrent_history_with_a_stale_final_read_fails() {
        // Fresh generations, as the workload writes them: with a handful of values reused by
        // many unknown writes, proving a violation can take several times the budget.
        for seed in 0..3 {
            let mut ops = random_history(seed * 104_729 + 3, 8, 200, 60, None);
            let end = ops.iter().map(|op| op.complete).max().unwrap_or(0) + 10;
            // Written once, completed before all else; then a fresh value and a read of the old
            // one after everything answered has completed. Pending unknown writes can still
            // take effect, but none writes 998.
            ops.insert(0, reg(9, 998, 0, 1));
            ops.push(reg(9, 999, end, end + 10));
            ops.push(read(9, Some(998), end + 20, end + 30));
            let report = check(&ops);
            assert!(report.unknown_keys.is_empty(), "seed {seed}");
            assert_eq!(report.violations.len(), 1, "seed {seed}");
        }
    }

    /// Whether `ops` is linearizable, by trying every order of every subset of unknown writes.
    fn brute_force(ops: &[Op]) -> bool {
        fn search(ops: &[(&Op, Action)], done: &mut Vec<bool>, value: Option<u64>) -> bool {
            let remaining: Vec<usize> = (0..ops.len()).filter(|&i| !done[i]).collect();
            if remaining.iter().all(|&i| ops[i].0.outcome == Outcome::Unknown) {
                return true;
            }
            for &i in &remaining {
                let blocked = remaining.iter().any(|&j| {
                    ops[j].0.outcome == Outcome::Ok && ops[j].0.complete.max(ops[j].0.invoke) < ops[i].0.invoke
                });
                let after = match ops[i].1 {
                    Action::Write(v) => Some(v),
                    Action::Read(seen) => (seen == value).then_some(seen),
                };
                if let (false, Some(after)) = (blocked, after) {
                    done[i] = true;
                    let ok = search(ops, done, after);
                    done[i] = false;
                    if ok {
                        return true;
                    }
                }
            }
            false
        }
        let kept: Vec<(&Op, Action)> = ops.iter().filter_map(|op| Action::of(op).map(|a| (op, a))).collect();
        search(&kept, &mut vec![false; kept.len()], None)
    }

    #[test]
    fn agrees_with_brute_force_on_small_histories() {
        let mut violations = 0;
        for seed in 0..3000 {
            let mut rng = Rng(seed * 31 + 17);
            let mut ops = random_history(seed * 13 + 5, 3, 6, 20, Some(3));
            // Perturb reads so that about half of the histories are not linearizable.
            for op in &mut ops {
                if op.kind == Kind::ReadLinearizable && rng.below(3) == 0 {
                    op.seen = Some([None, Some(0), Some(1), Some(2)][rng.below(4) as usize]);
                }
                if rng.below(8) == 0 {
                    op.outcome = Outcome::Fail;
                }
            }
            let report = check(&ops);
            assert!(report.unknown_keys.is_empty());
            let expected = brute_force(&ops);
            assert_eq!(report.violations.is_empty(), expected, "seed {seed}: {ops:#?}");
            violations += usize::from(!expected);
        }
        assert!(violations > 300, "too few violations exercised: {violations}");
    }
}
