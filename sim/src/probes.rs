//! What a probe of a machine is and what it gathers: its record, the tracing consumer built
//! from a spec (trace events with fetched values, per the shared trace semantics), and its
//! aggregations (latency and value histograms), whose memory grows with the number of
//! probes, never with the number of hits. The machine side (resolving specs, registering,
//! reading fetched memory) is [`crate::attach`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ruprobes::{abi, Consumer, ConsumerId, UserRegs};
use ruprobes_trace::{FetchArg, FetchType, ProbeKind, Source};
use serde::Serialize;

use crate::trace::{Fetched, Loc, SiteEvent, SiteKind, TraceSink, Value};

/// The handle of a probe added to a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProbeId(pub usize);

/// Items handed from probe handlers to the machine, which looks after every trap: whether
/// there are any is one atomic load, not a lock.
#[derive(Debug)]
struct Queue<T> {
    any: AtomicBool,
    items: Mutex<Vec<T>>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            any: AtomicBool::new(false),
            items: Mutex::new(Vec::new()),
        }
    }
}

impl<T> Queue<T> {
    fn push(&self, item: T) {
        let mut items = lock(&self.items);
        items.push(item);
        self.any.store(true, Ordering::Release);
    }

    fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    fn take(&self) -> Vec<T> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut items = lock(&self.items);
        self.any.store(false, Ordering::Release);
        std::mem::take(&mut *items)
    }
}

/// Queue of probes to unregister, for handlers that cannot reach the machine: push ids,
/// and the machine unregisters them right after the trap that queued them.
#[derive(Clone, Debug, Default)]
pub struct UnregisterQueue(Arc<Queue<ProbeId>>);

impl UnregisterQueue {
    /// Asks the machine to unregister `id` once the current trap is handled.
    pub fn push(&self, id: ProbeId) {
        self.0.push(id);
    }

    pub(crate) fn take(&self) -> Vec<ProbeId> {
        self.0.take()
    }
}

/// Hit counters of one probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Times the probed instruction was hit.
    pub hits: u64,
    /// Times return handlers ran.
    pub returns: u64,
    /// Returns missed beyond the return-depth limit.
    pub missed: u64,
}

impl From<ruprobes::ProbeStats> for Stats {
    fn from(s: ruprobes::ProbeStats) -> Self {
        Stats {
            hits: s.hits,
            returns: s.returns,
            missed: s.missed,
        }
    }
}

/// How a histogram buckets its values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// Bucket `i` counts values `v` with `2^(i-1) <= v < 2^i` (bucket 0: v = 0).
    #[default]
    Log2,
    /// Buckets of `step` from `min` to `max`, with one below `min` and one at `max` and up.
    Linear {
        /// The lowest bucket's start.
        min: u64,
        /// The end of the last regular bucket.
        max: u64,
        /// The bucket width (> 0).
        step: u64,
    },
}

/// A histogram of unsigned values (signed values count as their two's complement).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Histogram {
    /// How values are bucketed.
    pub scale: Scale,
    /// Counts per bucket; trailing empty buckets are omitted.
    pub buckets: Vec<u64>,
}

impl Histogram {
    /// An empty histogram of this scale.
    pub fn new(scale: Scale) -> Self {
        Histogram {
            scale,
            buckets: Vec::new(),
        }
    }

    fn bucket(&self, value: u64) -> usize {
        match self.scale {
            Scale::Log2 => (u64::BITS - value.leading_zeros()) as usize,
            Scale::Linear { min, max, step } => {
                if value < min {
                    0
                } else if value >= max {
                    ((max - min).div_ceil(step) + 1) as usize
                } else {
                    ((value - min) / step + 1) as usize
                }
            }
        }
    }

    /// Counts one value.
    pub fn add(&mut self, value: u64) {
        let i = self.bucket(value);
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, 0);
        }
        self.buckets[i] += 1;
    }

    /// The value range `[lo, hi)` of bucket `i`.
    pub fn range(&self, i: usize) -> (u64, u64) {
        match self.scale {
            Scale::Log2 => match i {
                0 => (0, 1),
                _ => (1 << (i - 1), 1u64.checked_shl(i as u32).unwrap_or(u64::MAX)),
            },
            Scale::Linear { min, max, step } => {
                let last = (max - min).div_ceil(step) + 1;
                match i as u64 {
                    0 => (0, min),
                    n if n >= last => (max, u64::MAX),
                    n => {
                        let lo = min + (n - 1) * step;
                        (lo, (lo + step).min(max))
                    }
                }
            }
        }
    }

    /// Total number of values.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Function latency of a return probe, in instructions from entry to return, per thread.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    /// Pending calls per thread: (sp at entry, instruction count at entry).
    stacks: HashMap<usize, Vec<(usize, u64)>>,
    pub(crate) histogram: Histogram,
}

impl Latency {
    fn enter(&mut self, tid: usize, sp: usize, now: u64) {
        self.stacks.entry(tid).or_default().push((sp, now));
    }

    /// Matches the return with the call made at the same stack depth; calls deeper than it
    /// (skipped by a longjmp, or missed beyond the depth limit) are dropped.
    fn exit(&mut self, tid: usize, sp: usize, now: u64) {
        let Some(stack) = self.stacks.get_mut(&tid) else {
            return;
        };
        while let Some(&(entry_sp, start)) = stack.last() {
            stack.pop();
            if entry_sp >= sp {
                if entry_sp == sp {
                    self.histogram.add(now.saturating_sub(start));
                }
                return;
            }
        }
    }
}

/// What a probe gathers besides its trace events.
#[derive(Debug, Default)]
pub(crate) struct Aggregate {
    /// Entry-to-return latency (return probes).
    pub(crate) latency: Option<Latency>,
    /// The first fetched value of each event (with `--hist`/`--lhist`).
    pub(crate) values: Option<Histogram>,
}

/// What a probe of a machine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeRole {
    /// `uprobe:` — traces hits (and post-steps when asked).
    Entry,
    /// `uretprobe:` — traces returns and measures latency.
    Return,
    /// A consumer given by the caller ([`Machine::register`]).
    ///
    /// [`Machine::register`]: crate::machine::Machine::register
    Custom,
}

/// One probe of a machine, as reported after a run.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    /// Its handle.
    pub id: ProbeId,
    /// The spec it came from (or `0xADDR` for [`Machine::register`]).
    ///
    /// [`Machine::register`]: crate::machine::Machine::register
    pub spec: String,
    /// The program path it is keyed by.
    pub path: String,
    /// The probed address.
    pub addr: u64,
    /// The probed address as traces print it (`fib+0x4`).
    pub location: String,
    /// The function the address falls in, if any.
    pub function: Option<String>,
    /// Its kind.
    pub role: ProbeRole,
    /// Counters (of every consumer at this address together).
    pub stats: Stats,
    /// Entry-to-return latency in instructions, for return probes.
    pub latency: Option<Histogram>,
    /// The label of the fetched value that [`values`](Self::values) counts.
    pub value_label: Option<String>,
    /// The histogram of the probe's first fetched value (with `--hist`/`--lhist`).
    pub values: Option<Histogram>,
}

/// How the tracing probes of a machine behave (the CLI's options). The default is the
/// shared trace semantics of the scenarios: post events on, no filter, log2 latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceOptions {
    /// Trace a `post` event after each probed instruction of an entry probe.
    pub post: bool,
    /// Only hits and returns of this process count (events and aggregations).
    pub pid: Option<u64>,
    /// Only hits and returns of this thread count (events and aggregations).
    pub tid: Option<u64>,
    /// The scale of latency histograms.
    pub latency_scale: Scale,
    /// Make a histogram of each probe's first fetched value, of this scale.
    pub value_histogram: Option<Scale>,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            post: true,
            pid: None,
            tid: None,
            latency_scale: Scale::Log2,
            value_histogram: None,
        }
    }
}

impl TraceOptions {
    fn wants(&self, pid: usize, tid: usize) -> bool {
        self.pid.is_none_or(|p| p == pid as u64) && self.tid.is_none_or(|t| t == tid as u64)
    }
}

pub(crate) struct ProbeRecord {
    pub(crate) spec: String,
    pub(crate) path: String,
    pub(crate) addr: u64,
    pub(crate) location: Loc,
    pub(crate) role: ProbeRole,
    /// `None` once unregistered.
    pub(crate) consumer: Option<ConsumerId>,
    /// Counters frozen at unregistration.
    pub(crate) frozen: Option<Stats>,
    pub(crate) aggregate: Option<Arc<Mutex<Aggregate>>>,
    pub(crate) value_label: Option<String>,
}

impl ProbeRecord {
    /// The report of this record, with the given counters.
    pub(crate) fn report(&self, id: ProbeId, stats: Stats) -> ProbeReport {
        let aggregate = self.aggregate.as_ref().map(|a| lock(a));
        ProbeReport {
            id,
            spec: self.spec.clone(),
            path: self.path.clone(),
            addr: self.addr,
            location: self.location.to_string(),
            function: self
                .location
                .symbol
                .as_ref()
                .map(|(name, _)| name.to_string()),
            role: self.role,
            stats,
            latency: aggregate
                .as_ref()
                .and_then(|a| a.latency.as_ref().map(|l| l.histogram.clone())),
            value_label: self.value_label.clone(),
            values: aggregate.as_ref().and_then(|a| a.values.clone()),
        }
    }
}

/// A fetch argument of a probe, owned.
#[derive(Clone, Debug)]
pub(crate) struct Fetch {
    label: Arc<str>,
    source: Source,
    ty: FetchType,
}

impl From<FetchArg<'_>> for Fetch {
    fn from(arg: FetchArg<'_>) -> Self {
        Fetch {
            label: Arc::from(arg.label),
            source: arg.source,
            ty: arg.ty,
        }
    }
}

/// A register value typed as the spec asks.
pub(crate) fn typed_value(raw: u64, ty: FetchType) -> Value {
    let bits = |bytes: u8| u32::from(bytes) * 8;
    match ty {
        FetchType::Unsigned(n) => Value::Unsigned(mask(raw, bits(n))),
        FetchType::Hex(n) => Value::Hex(mask(raw, bits(n))),
        FetchType::Signed(n) => {
            let shift = 64 - bits(n);
            Value::Signed(((raw << shift) as i64) >> shift)
        }
        FetchType::Str => Value::Fault(raw), // replaced by the string once read
    }
}

fn mask(raw: u64, bits: u32) -> u64 {
    if bits >= 64 {
        raw
    } else {
        raw & ((1 << bits) - 1)
    }
}

/// Memory a handler asked for: read after its trap (handlers cannot reach memory). The
/// probed instruction has not changed memory by then: those that write memory run out of
/// line, after the trap.
#[derive(Debug)]
pub(crate) struct PendingRead {
    /// Which fetched value it fills.
    pub(crate) index: usize,
    pub(crate) addr: u64,
    pub(crate) ty: FetchType,
}

/// An event waiting for its memory reads.
pub(crate) struct PendingEvent {
    pub(crate) pid: u64,
    pub(crate) event: SiteEvent,
    pub(crate) fetched: Fetched,
    pub(crate) reads: Vec<PendingRead>,
    pub(crate) aggregate: Arc<Mutex<Aggregate>>,
}

/// Events whose fetched memory the machine reads after the trap.
#[derive(Clone, Default)]
pub(crate) struct FetchQueue(Arc<Queue<PendingEvent>>);

impl FetchQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn take(&self) -> Vec<PendingEvent> {
        self.0.take()
    }
}

/// Writes a finished event and counts its first value.
pub(crate) fn finish(
    sink: &TraceSink,
    event: SiteEvent,
    fetched: &Fetched,
    aggregate: &Mutex<Aggregate>,
) {
    if let Some(v) = fetched.first().and_then(|(_, v)| v.number()) {
        if let Some(values) = &mut lock(aggregate).values {
            values.add(v);
        }
    }
    sink.push_site(event, fetched);
}

/// What the tracing consumers of a machine share.
#[derive(Clone)]
pub(crate) struct Tracer {
    pub(crate) sink: TraceSink,
    pub(crate) clock: Arc<AtomicU64>,
    pub(crate) fetches: FetchQueue,
    pub(crate) options: TraceOptions,
}

impl Tracer {
    /// Fetches the values of `args`: registers now, memory queued for after the trap.
    /// Delivers the event (or queues it).
    fn deliver(
        &self,
        regs: &dyn UserRegs,
        pid: usize,
        event: SiteEvent,
        args: &[Fetch],
        aggregate: &Arc<Mutex<Aggregate>>,
    ) {
        if args.is_empty() {
            return self.sink.push_site(event, &[]);
        }
        let mut fetched = Vec::with_capacity(args.len());
        let mut reads = Vec::new();
        for (index, arg) in args.iter().enumerate() {
            let reg = |n: u8| regs.reg(usize::from(n)) as u64;
            let value = match arg.source {
                Source::Reg(n) => typed_value(reg(n), arg.ty),
                Source::Retval => typed_value(reg(abi::A0 as u8), arg.ty),
                Source::Mem { base, off } => {
                    let addr = reg(base).wrapping_add_signed(off);
                    reads.push(PendingRead {
                        index,
                        addr,
                        ty: arg.ty,
                    });
                    Value::Fault(addr)
                }
            };
            // A register's string is the memory it points to.
            if arg.ty == FetchType::Str && !matches!(arg.source, Source::Mem { .. }) {
                if let Value::Fault(addr) = value {
                    reads.push(PendingRead {
                        index,
                        addr,
                        ty: FetchType::Str,
                    });
                }
            }
            fetched.push((arg.label.clone(), value));
        }
        if reads.is_empty() {
            finish(&self.sink, event, &fetched, aggregate);
        } else {
            self.fetches.0.push(PendingEvent {
                pid: pid as u64,
                event,
                fetched,
                reads,
                aggregate: aggregate.clone(),
            });
        }
    }

    /// The consumer of a spec'd probe at `loc`, and what it aggregates.
    pub(crate) fn consumer(
        &self,
        kind: ProbeKind,
        loc: Loc,
        args: Vec<Fetch>,
    ) -> (Consumer, ProbeRole, Arc<Mutex<Aggregate>>) {
        let options = self.options;
        // Whether its events feed a histogram of values: else a quiet sink can drop them
        // before they are built.
        let counts_values = options.value_histogram.is_some() && !args.is_empty();
        let aggregate = Arc::new(Mutex::new(Aggregate {
            latency: (kind == ProbeKind::Return).then(|| Latency {
                stacks: HashMap::new(),
                histogram: Histogram::new(options.latency_scale),
            }),
            values: options
                .value_histogram
                .filter(|_| !args.is_empty())
                .map(Histogram::new),
        }));
        let site = self.sink.site(loc);
        let event = move |kind, pid: usize, tid: usize, values| SiteEvent {
            site,
            kind,
            pid: pid as u64,
            tid: tid as u64,
            values,
        };
        match kind {
            ProbeKind::Entry => {
                let (tracer, agg) = (self.clone(), aggregate.clone());
                let mut consumer = Consumer::new().on_entry(move |regs, hit| {
                    if !options.wants(hit.pid, hit.tid)
                        || (!counts_values && tracer.sink.drop_if_quiet())
                    {
                        return;
                    }
                    let args01 = [regs.reg(abi::A0) as u64, regs.reg(abi::A0 + 1) as u64];
                    let hit_event = event(SiteKind::Hit, hit.pid, hit.tid, args01);
                    tracer.deliver(regs, hit.pid, hit_event, &args, &agg);
                });
                if options.post {
                    let sink = self.sink.clone();
                    consumer = consumer.on_post(move |regs, hit| {
                        if !options.wants(hit.pid, hit.tid) {
                            return;
                        }
                        let next = [regs.pc() as u64, 0];
                        sink.push_site(event(SiteKind::Post, hit.pid, hit.tid, next), &[]);
                    });
                }
                (consumer, ProbeRole::Entry, aggregate)
            }
            ProbeKind::Return => {
                let (on_entry, on_return) = (aggregate.clone(), aggregate.clone());
                let (clock_in, tracer) = (self.clock.clone(), self.clone());
                let consumer = Consumer::new()
                    .on_entry(move |regs, hit| {
                        if !options.wants(hit.pid, hit.tid) {
                            return;
                        }
                        let now = clock_in.load(Ordering::Relaxed);
                        if let Some(latency) = &mut lock(&on_entry).latency {
                            latency.enter(hit.tid, regs.reg(abi::SP), now);
                        }
                    })
                    .on_return(move |regs, ret| {
                        if !options.wants(ret.pid, ret.tid) {
                            return;
                        }
                        let now = tracer.clock.load(Ordering::Relaxed);
                        if let Some(latency) = &mut lock(&on_return).latency {
                            latency.exit(ret.tid, regs.reg(abi::SP), now);
                        }
                        if !counts_values && tracer.sink.drop_if_quiet() {
                            return;
                        }
                        let value = [regs.reg(abi::A0) as u64, 0];
                        let ret_event = event(SiteKind::Return, ret.pid, ret.tid, value);
                        tracer.deliver(regs, ret.pid, ret_event, &args, &on_return);
                    });
                (consumer, ProbeRole::Return, aggregate)
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_log2() {
        let mut h = Histogram::default();
        for v in [0, 1, 2, 3, 4, 7, 8, 1000] {
            h.add(v);
        }
        assert_eq!(h.buckets, [1, 1, 2, 2, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(h.range(0), (0, 1));
        assert_eq!(h.range(3), (4, 8));
        assert_eq!(h.range(10), (512, 1024));
        assert_eq!(h.range(64), (1 << 63, u64::MAX));
        assert_eq!(h.count(), 8);
    }

    #[test]
    fn linear_histogram_has_under_and_overflow_buckets() {
        let mut h = Histogram::new(Scale::Linear {
            min: 10,
            max: 35,
            step: 10,
        });
        for v in [0, 9, 10, 19, 20, 34, 35, 1000] {
            h.add(v);
        }
        // [0,10) [10,20) [20,30) [30,35) [35,..)
        assert_eq!(h.buckets, [2, 2, 1, 1, 2]);
        assert_eq!(h.range(0), (0, 10));
        assert_eq!(h.range(1), (10, 20));
        assert_eq!(h.range(3), (30, 35));
        assert_eq!(h.range(4), (35, u64::MAX));
    }

    #[test]
    fn fetched_registers_follow_their_type() {
        assert_eq!(
            typed_value(0xffff_ffff_ffff_fffe, FetchType::Signed(4)),
            Value::Signed(-2)
        );
        assert_eq!(
            typed_value(0x1234, FetchType::Unsigned(1)),
            Value::Unsigned(0x34)
        );
        assert_eq!(typed_value(0x1234, FetchType::Hex(2)), Value::Hex(0x1234));
        assert_eq!(
            typed_value(u64::MAX, FetchType::Hex(8)),
            Value::Hex(u64::MAX)
        );
    }

    #[test]
    fn latency_matches_returns_by_stack_depth() {
        let mut l = Latency::default();
        // Nested calls: outer at sp 1000, inner at sp 900.
        l.enter(1, 1000, 10);
        l.enter(1, 900, 20);
        l.exit(1, 900, 25);
        l.exit(1, 1000, 40);
        assert_eq!(l.histogram.count(), 2);
        // A longjmp skips the inner return: the outer return drops the inner call.
        l.enter(1, 1000, 100);
        l.enter(1, 900, 110);
        l.enter(1, 800, 120);
        l.exit(1, 1000, 164);
        assert_eq!(l.histogram.count(), 3);
        assert_eq!(
            l.histogram.buckets[7], 1,
            "64 instructions: bucket [64, 128)"
        );
        assert!(l.stacks[&1].is_empty());
        // A return on another thread, or with no matching call, counts nothing.
        l.exit(2, 1000, 200);
        l.enter(1, 700, 300);
        l.exit(1, 750, 310);
        assert_eq!(l.histogram.count(), 3);
    }
}
