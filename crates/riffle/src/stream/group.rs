use std::sync::Arc;

use super::consumer::{Consumer, Handler, Stopper};
use crate::actor::Supervision;
use crate::error::Result;
use crate::log::{ConsumerConfig, Log, TopicPartition};

/// N consumer actors of one group in this process (the chapter's
/// `n_consumers`). Other processes using the same group id share the same
/// partitions with them.
pub struct ConsumerGroup {
    stopper: Stopper,
    members: Vec<Consumer>,
}

impl ConsumerGroup {
    /// Starts `n` members named `<client_id>-<i>`; `factory(i)` builds the
    /// handler of member `i` (again after a restart).
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
        let stopper = Stopper::new();
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let mut cfg = config.clone();
            cfg.client_id = format!("{}-{i}", config.client_id);
            let mut f = factory.clone();
            members.push(Consumer::spawn_with(
                log.clone(),
                cfg,
                stopper.clone(),
                Supervision::default(),
                move || f(i),
            )?);
        }
        Ok(Self { stopper, members })
    }

    pub fn members(&self) -> &[Consumer] {
        &self.members
    }

    /// Each member's name and current partitions.
    pub fn assignments(&self) -> Vec<(String, Vec<TopicPartition>)> {
        self.members
            .iter()
            .map(|m| (m.name().to_owned(), m.stats().assignment()))
            .collect()
    }

    /// A stopper that stops every member.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Stops every member and waits for all; returns the first error.
    pub fn stop(self) -> Result<()> {
        self.stopper.stop();
        let mut first = Ok(());
        for m in self.members {
            let r = m.join();
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}
