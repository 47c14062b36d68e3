//! Progress of transfers: counters a caller reads while an export or upload runs, and the byte count
//! people read in progress lines and summaries.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters a caller can read while a transfer runs (for progress lines).
#[derive(Debug, Default)]
pub struct TransferProgress {
    /// Bytes moved over the network (compressed, as stored).
    pub transferred: AtomicU64,
    /// The expected total of `transferred`, when known (0 = unknown).
    pub expected: AtomicU64,
    /// Uncompressed bytes written or read locally.
    pub local_bytes: AtomicU64,
    /// CSV records seen.
    pub rows: AtomicU64,
}

impl TransferProgress {
    pub fn reset(&self, expected: u64) {
        self.transferred.store(0, Ordering::Relaxed);
        self.expected.store(expected, Ordering::Relaxed);
        self.local_bytes.store(0, Ordering::Relaxed);
        self.rows.store(0, Ordering::Relaxed);
    }
}

/// `1234567` → `1.2 MB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(human_bytes(5_000_000_000_000_000), "5000.0 TB");
    }
}
