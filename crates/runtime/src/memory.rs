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
#![allow(unsafe_code)]

/// Free bytes kept at the top of a heap before it is trimmed.
pub const TRIM_THRESHOLD: usize = 256 << 20;
/// Blocks at least this large get their own mapping (returned to the system when freed).
pub const MMAP_THRESHOLD: usize = 32 << 20;

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
