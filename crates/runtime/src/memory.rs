//! How the process's allocator returns memory to the system.
//!
//! glibc's malloc gives the top of a heap back to the kernel as soon as more than
//! `M_TRIM_THRESHOLD` bytes are free there, and adjusts the threshold for `mmap`-served
//! blocks as it goes. A stream process frees a batch's worth of records (librdkafka's
//! fetched messages and per-message operations, decoded values, encoded outputs) every
//! commit interval and allocates the next batch right after, so with the defaults it hands
//! the same pages back and faults them in again on every batch: measured on the whole
//! topology, page faults and heap growth were a fifth of the patronage aggregator's and the
//! sink's CPU. Fixed thresholds keep up to [`TRIM_THRESHOLD`] free at the top of each heap,
//! and serve only blocks from [`MMAP_THRESHOLD`] up with their own mappings.
//!
//! mimalloc asks the kernel for transparent huge pages on its arenas (`MADV_HUGEPAGE`), so
//! the first touch of a fresh 4 KiB has the kernel zero a whole 2 MiB page, and every purge
//! of freed memory (a second after it is freed) splits one; the next batch faults it in and
//! zeroes it again. Zeroing huge pages was 10 % of the sink's CPU at half load and
//! lengthened the approval's burst (docs/benchmarks.md), so [`configure`] turns transparent
//! huge pages off for the process, as latency-bound servers (Redis, MongoDB) advise;
//! `HABITAT_TRANSPARENT_HUGE_PAGES=on` leaves them to the kernel's and allocator's defaults.
#![allow(unsafe_code)]

/// Free bytes kept at the top of a heap before it is trimmed.
pub const TRIM_THRESHOLD: usize = 256 << 20;
/// Blocks at least this large get their own mapping (returned to the system when freed).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// The variable that keeps transparent huge pages (`on`); anything else, or unset, turns
/// them off for the process.
pub const HUGE_PAGES_VARIABLE: &str = "HABITAT_TRANSPARENT_HUGE_PAGES";

/// How a program's memory is managed: [`retain_freed_memory`] and
/// [`no_transparent_huge_pages`] (unless [`HUGE_PAGES_VARIABLE`] is `on`). Call once at
/// the start of `main`, before other threads run.
pub fn configure() {
    retain_freed_memory();
    if std::env::var(HUGE_PAGES_VARIABLE).as_deref() != Ok("on") {
        no_transparent_huge_pages();
    }
}

/// Turns transparent huge pages off for the whole process (its memory map, at every later
/// page fault, whoever asked for them). Elsewhere than Linux this does nothing.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE sets a flag of the calling process's memory map and
        // reads no memory of ours; a refusal (old kernel) leaves the default in place.
        if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "Transparent huge pages stay as the kernel set them."
            );
        }
    }
}

/// Whether transparent huge pages are off for this process.
pub fn transparent_huge_pages_disabled() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_GET_THP_DISABLE only returns the flag.
        unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Sets the allocator's thresholds; call once at start, before other threads run.
/// Elsewhere than glibc this does nothing.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let settings = [
            (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        ];
        for (parameter, value) in settings {
            let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
            // SAFETY: mallopt only sets allocator parameters; both are valid for glibc,
            // and a refusal (return 0) leaves the default in place.
            if unsafe { libc::mallopt(parameter, value) } == 0 {
                tracing::debug!(parameter, value, "The allocator refused a setting.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn configuring_turns_huge_pages_off_for_the_process() {
        // The variable is not set in the test environment: the default applies.
        assert_ne!(std::env::var(HUGE_PAGES_VARIABLE).as_deref(), Ok("on"));
        configure();
        assert!(transparent_huge_pages_disabled());
        // The kernel's own view, where it shows one (`THP_enabled`, Linux 5.0 and later).
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
        }
    }
}
