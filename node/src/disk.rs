//! Room on the disk that holds the journal.
//!
//! A write the disk refuses stops the node (see [`crate::journal::Journal::unwritable`]), so
//! what takes much room (a file shared, fetched or uploaded) is refused beforehand when it
//! would not leave [`SPARE`] free, and `status` says when the disk is nearly full.

use std::path::Path;

/// Kept free for the messages that go on arriving: a file that would leave less is refused.
pub const SPARE: u64 = 64 << 20;

/// A file of `size` bytes takes at most about this much in the journal: sealing adds a tag
/// per chunk, and the journal file grows by more than it needs at a time, a fetch's one
/// chunk per commit more than a share's (measured by `cargo bench --bench files`: 1.5 times
/// for the sharer, 1.7 for the fetcher; see docs/benchmarks.md, "Files").
pub fn stored_size(size: u64) -> u64 {
    size.saturating_mul(2)
}

/// A size as people read it: `512 B`, `4.0 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// Bytes free for this user on the file system that holds `path` (`None` where that cannot
/// be told).
#[cfg(unix)]
pub fn available(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` is written by statvfs
    // before it is read, only when the call succeeds.
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    #[allow(clippy::unnecessary_cast)] // u32 on some platforms, u64 on others
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(not(unix))]
pub fn available(_path: &Path) -> Option<u64> {
    None
}

/// Whether `bytes` more fit on the disk of `path` with [`SPARE`] left over: if not, the
/// bytes free. Where the room cannot be told, they fit.
pub fn fits(path: &Path, bytes: u64) -> Result<(), u64> {
    match available(path) {
        Some(free) if free < bytes.saturating_add(SPARE) => Err(free),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_on_a_disk_is_told_and_what_would_fill_it_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(dir.path()).expect("statvfs works here");
        assert!(free > 0);
        // (What is free changes as other processes write: it is only told, never exact.)
        assert!(matches!(fits(dir.path(), u64::MAX), Err(f) if f > 0));
        assert!(available(&dir.path().join("no such dir")).is_none());
        assert_eq!(stored_size(8 << 20), 16 << 20);
    }
}
