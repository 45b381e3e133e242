//! A decision's two large columns (the observation and the memory before the step: about
//! 2.4 MB and 0.4 MB of JSON at 1,000 hosts and 10,000 VMs) kept LZ4-compressed. Their JSON
//! repeats every field name once per VM and per host, which is most of its bytes; LZ4 takes
//! that out (measured: the observation to a fifth, the memory to two fifths, 2.86 MB to
//! 0.67 MB in all) at a few milliseconds a decision, and reading one back
//! (an export, a replay) gets the very JSON that was written. The `decision.packed` column
//! says which rows are (rows from schema 4 and before are plain text).
//!
//! Layout: the JSON's length as a little-endian u32, then LZ4's block format of it.

/// The most a packed column may unpack to: far above a real decision (tens of MB at the
/// simulator's limits), low enough that a damaged length cannot ask for gigabytes.
const MAX_UNPACKED: usize = 1 << 30;

/// `json`, packed.
pub fn pack(json: &str) -> Vec<u8> {
    let len = u32::try_from(json.len()).unwrap_or(u32::MAX);
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(&lz4_flex::block::compress(json.as_bytes()));
    out
}

/// The JSON text `bytes` packs.
///
/// # Errors
/// A message saying why the bytes are not a packed column.
pub fn unpack(bytes: &[u8]) -> Result<String, String> {
    let (len, body) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| "a packed column shorter than its length".to_string())?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_UNPACKED {
        return Err(format!(
            "a packed column of {len} bytes, over {MAX_UNPACKED}"
        ));
    }
    let raw =
        lz4_flex::block::decompress(body, len).map_err(|e| format!("a packed column: {e}"))?;
    String::from_utf8(raw).map_err(|e| format!("a packed column that is not UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_unpacks_to_what_was_packed_and_damage_is_refused() {
        let json =
            serde_json::json!({"vms": vec![serde_json::json!({"name": "vm", "vcpus": 2}); 500]})
                .to_string();
        let packed = pack(&json);
        assert!(
            packed.len() * 10 < json.len(),
            "{} of {}",
            packed.len(),
            json.len()
        );
        assert_eq!(unpack(&packed).as_deref(), Ok(json.as_str()));
        assert!(unpack(&packed[..3]).is_err());
        assert!(unpack(&packed[..packed.len() / 2]).is_err());
        let mut huge = packed.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(unpack(&huge).is_err_and(|e| e.contains("over")));
    }
}
