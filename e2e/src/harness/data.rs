//! The tally of the tests that keep a tenant's data: every object a test
//! wrote and then counted again, and how many of them were lost. The run
//! ends with `data: N objects written, M lost`.

use std::sync::atomic::{AtomicUsize, Ordering};

static WRITTEN: AtomicUsize = AtomicUsize::new(0);
static LOST: AtomicUsize = AtomicUsize::new(0);

/// Records `written` objects a test wrote, of which `lost` were missing
/// when it counted them again.
pub fn record(written: usize, lost: usize) {
    WRITTEN.fetch_add(written, Ordering::SeqCst);
    LOST.fetch_add(lost, Ordering::SeqCst);
}

/// `data: N objects written, M lost`, once any test recorded some.
pub fn summary() -> Option<String> {
    let written = WRITTEN.load(Ordering::SeqCst);
    (written > 0).then(|| {
        format!(
            "data: {written} objects written, {} lost",
            LOST.load(Ordering::SeqCst)
        )
    })
}
