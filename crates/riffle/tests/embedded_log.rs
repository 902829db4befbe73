//! The log contract on the embedded backend.

mod conformance;

use std::sync::Arc;

use riffle::log::embedded::EmbeddedLog;
use riffle::log::Log;

fn log() -> Arc<dyn Log> {
    Arc::new(EmbeddedLog::new())
}

conformance_tests!(log());
