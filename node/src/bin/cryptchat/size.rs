//! Sizes as people write and read them: `512K`, `4M`, `1.5G` on the command line, and
//! `4.0 MiB` in what is printed ([`human_size`], the node's own).

/// A size as a user writes it: bytes, or a number with K, M or G (KiB, MiB and GiB also
/// accepted; powers of 1,024).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}: use K, M or G")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a size: {s:?} (e.g. 4M, 512K, 1048576)"))?;
    let bytes = (value * scale as f64).round();
    if !(0.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("size out of range: {s:?}"));
    }
    Ok(bytes as u64)
}

pub(crate) use cryptchat::disk::human_size;

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_are_read_as_people_write_them() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("4 MiB"), Ok(4 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        for bad in ["4 parsecs", "M", "-1", "1.2.3K", ""] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
