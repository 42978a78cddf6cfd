//! `snapfs fsck`: the check (with a progress bar on a terminal) or the repair, and its
//! report.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// fsck's progress bar (indicatif draws nothing when stderr is not a terminal).
struct FsckBar(indicatif::ProgressBar, std::time::Instant);

impl FsckBar {
    fn new() -> FsckBar {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "checking trees {bar:30} {pos}/{len} [{elapsed}] {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        FsckBar(bar, std::time::Instant::now())
    }
}

impl crate::fsck::Progress for FsckBar {
    fn start(&self, trees: u64) {
        self.0.set_length(trees);
        self.0.tick();
    }

    fn tree_done(&self, entries: u64) {
        self.0.inc(1);
        let secs = self.1.elapsed().as_secs_f64().max(1e-3);
        self.0
            .set_message(format!("{entries} entries, {:.0}/s", entries as f64 / secs));
    }
}

pub(super) fn fsck(store: &Path, repair: bool) -> Result<()> {
    // A check of a store on object storage reads it as a reader: it must not take the store
    // over from the host writing it. A repair writes, so it does.
    let reader = !repair && crate::storedir::is_remote(store);
    let st = crate::storedir::open_store_with(store, reader)?;
    let mut tightened = Vec::new();
    if repair {
        let changed = crate::perms::tighten(store)
            .with_context(|| format!("cannot make {} owner-only", store.display()))?;
        if !changed.is_empty() {
            tightened.push(format!(
                "store permissions: {} files or directories made owner-only",
                changed.len()
            ));
        }
    }
    let mut report = if repair {
        crate::fsck::repair(&st)?
    } else {
        let bar = FsckBar::new();
        let r = crate::fsck::check_with(&st, &bar);
        bar.0.finish_and_clear();
        r?
    };
    report.repaired.splice(0..0, tightened);
    let loose = crate::perms::find_loose(store)
        .with_context(|| format!("cannot read the modes of {}", store.display()))?;
    if !loose.is_empty() {
        report.problems.insert(
            0,
            format!(
                "store permissions: {}; the store must be owner-only (`snapfs fsck --repair` \
                 or the next daemon start tightens it)",
                crate::perms::describe(&loose)
            ),
        );
    }
    for line in &report.repaired {
        println!("repaired: {line}");
    }
    for p in &report.problems {
        println!("problem: {p}");
    }
    println!(
        "{}: {} views, {} entries, {} versions checked, {} problems{}",
        store.display(),
        report.views,
        report.inodes,
        report.versions,
        report.problems.len(),
        if repair {
            format!(" left after {} repairs", report.repaired.len())
        } else {
            String::new()
        }
    );
    if report.problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} problems found in {}",
            report.problems.len(),
            store.display()
        )
    }
}
