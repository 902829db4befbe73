use std::sync::{Arc, Mutex, MutexGuard};

use super::consumer::{Consumer, Deferring, Handler, Stopper};
use crate::actor::Supervision;
use crate::error::Result;
use crate::log::{ConsumerConfig, Log, TopicPartition};

/// Starts member `i` with the given stopper.
type Spawn = Box<dyn FnMut(usize, Stopper) -> Result<Consumer> + Send>;

/// N consumer actors of one group in this process (the chapter's
/// `n_consumers`). Other processes using the same group id share the same
/// partitions with them.
///
/// Members can be added and the last one removed while the group runs (to
/// follow the load); each has a stopper of its own, a child of the group's,
/// so that removing one stops it alone while stopping the group stops all.
pub struct ConsumerGroup {
    stopper: Stopper,
    members: Mutex<Vec<Consumer>>,
    spawn: Mutex<Spawn>,
}

impl ConsumerGroup {
    /// Starts `n` members named `<client_id>-<i>` (static members named
    /// `<instance>-<i>` when the config names an instance); `factory(i)` builds the
    /// handler of member `i` (again after a restart, and when a member `i`
    /// is added later).
    pub fn spawn<H, F>(
        log: Arc<dyn Log>,
        config: &ConsumerConfig,
        n: usize,
        factory: F,
    ) -> Result<Self>
    where
        H: Handler,
        F: FnMut(usize) -> H + Send + Clone + 'static,
    {
        Self::start(config, n, move |cfg, stopper, i| {
            let mut f = factory.clone();
            Consumer::spawn_with(
                log.clone(),
                cfg,
                stopper,
                Supervision::default(),
                move || f(i),
            )
        })
    }

    /// [`ConsumerGroup::spawn`] for handlers that finish records later and
    /// report their progress themselves (the runtime's apps).
    pub fn spawn_deferring<H, F>(
        log: Arc<dyn Log>,
        config: &ConsumerConfig,
        n: usize,
        factory: F,
    ) -> Result<Self>
    where
        H: Deferring,
        F: FnMut(usize) -> H + Send + Clone + 'static,
    {
        Self::start(config, n, move |cfg, stopper, i| {
            let mut f = factory.clone();
            Consumer::spawn_deferring(
                log.clone(),
                cfg,
                stopper,
                Supervision::default(),
                move || f(i),
            )
        })
    }

    /// Starts `n` members with `spawn(config, stopper, i)`.
    fn start(
        config: &ConsumerConfig,
        n: usize,
        mut spawn: impl FnMut(ConsumerConfig, Stopper, usize) -> Result<Consumer> + Send + 'static,
    ) -> Result<Self> {
        let config = config.clone();
        let spawn: Spawn = Box::new(move |i, stopper| {
            let mut cfg = config.clone();
            cfg.client_id = format!("{}-{i}", config.client_id);
            // Each member is an instance of its own: the process's name and
            // the member's number, the same again after a restart.
            cfg.instance = config.instance.as_ref().map(|id| format!("{id}-{i}"));
            spawn(cfg, stopper, i)
        });
        let group = Self {
            stopper: Stopper::new(),
            members: Mutex::new(Vec::with_capacity(n)),
            spawn: Mutex::new(spawn),
        };
        for _ in 0..n {
            group.add()?;
        }
        Ok(group)
    }

    /// The members, in the order they were started.
    pub fn members(&self) -> MutexGuard<'_, Vec<Consumer>> {
        self.members.lock().unwrap()
    }

    /// How many members run.
    pub fn len(&self) -> usize {
        self.members().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts one more member; the group rebalances to give it partitions.
    /// Returns the new member count.
    pub fn add(&self) -> Result<usize> {
        let mut members = self.members();
        let i = members.len();
        let consumer = (self.spawn.lock().unwrap())(i, self.stopper.child())?;
        members.push(consumer);
        Ok(members.len())
    }

    /// Stops the most recently started member and waits for it: it finishes
    /// the records in hand, commits and leaves the group, so its partitions
    /// go to the other members (of this process or others) at once. Returns
    /// the new member count; removing from an empty group does nothing.
    pub fn remove_last(&self) -> Result<usize> {
        // Not joined under the lock: stopping takes a commit and a
        // rebalance, during which assignments should stay readable.
        let (last, left) = {
            let mut members = self.members();
            (members.pop(), members.len())
        };
        if let Some(m) = last {
            m.stop();
            m.join()?;
        }
        Ok(left)
    }

    /// Each member's name and current partitions.
    pub fn assignments(&self) -> Vec<(String, Vec<TopicPartition>)> {
        self.members()
            .iter()
            .map(|m| (m.name().to_owned(), m.stats().assignment()))
            .collect()
    }

    /// A stopper that stops every member, including members added later.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Stops every member and waits for all; returns the first error.
    pub fn stop(self) -> Result<()> {
        self.stopper.stop();
        let mut first = Ok(());
        for m in self.members.into_inner().unwrap() {
            let r = m.join();
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}
