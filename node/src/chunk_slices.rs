//! Files' chunks cut to fit DHT records, so a small file travels with its author's mailbox
//! (see [`crate::mailbox`]): a direct message with a photo, sent to a contact who is
//! offline by an author who then goes offline too, can still be fetched.
//!
//! A sealed chunk (up to [`MAX_SEALED_CHUNK`]) is cut into slices of [`SLICE`] bytes, each
//! a record under a key derived from the chunk's name and the slice's index. Chunks are
//! ciphertext already, named by their hash: a slice needs no sealing of its own, and a
//! chunk put together from slices is kept only if its hash is its name, so whoever can
//! put records under those keys can withhold a chunk but not change it. The keys say
//! nothing to a DHT node that does not know the chunk's name, which only the file's
//! readers learn.

use std::collections::BTreeMap;

use crate::crypto;
use crate::files::{ChunkId, MAX_SEALED_CHUNK};

/// Files up to this size go in the DHT with the mailbox that carries their message.
pub const MAX_FILE: u64 = 1024 * 1024;
/// Bytes of a sealed chunk one slice carries: a record's value stays under
/// [`crate::mailbox::MAX_RECORD`].
pub const SLICE: usize = 60 * 1024;
/// Slices of the largest chunk.
pub const MAX_SLICES: usize = MAX_SEALED_CHUNK.div_ceil(SLICE);

const KEY_LABEL: &str = "cryptchat/chunk-slice/v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SliceError {
    #[error("chunk slice is malformed: {0}")]
    Malformed(&'static str),
}

/// The DHT record key of slice `index` of chunk `chunk`.
pub fn key(chunk: &ChunkId, index: u8) -> [u8; 32] {
    crypto::sha256_framed(KEY_LABEL, &[chunk, &[index]])
}

/// A sealed chunk's slices (a sealed chunk is never empty: it has a tag), as record values:
/// the slice count, then the bytes.
pub fn cut(sealed: &[u8]) -> Vec<Vec<u8>> {
    let count = sealed.len().div_ceil(SLICE) as u8;
    sealed
        .chunks(SLICE)
        .map(|part| [&[count][..], part].concat())
        .collect()
}

/// A chunk's slices as they are found, until they make the whole chunk.
#[derive(Debug, Default)]
pub struct Slices {
    count: Option<u8>,
    parts: BTreeMap<u8, Vec<u8>>,
}

impl Slices {
    /// Takes the value found for slice `index`. Returns how many slices the chunk has, as
    /// the slice says; an error for a value that cannot be a slice of any chunk.
    pub fn add(&mut self, index: u8, value: &[u8]) -> Result<u8, SliceError> {
        let (&count, bytes) = value.split_first().ok_or(SliceError::Malformed("empty"))?;
        if count == 0 || usize::from(count) > MAX_SLICES || index >= count {
            return Err(SliceError::Malformed("bad slice count"));
        }
        let last = index + 1 == count;
        if bytes.is_empty() || bytes.len() > SLICE || (!last && bytes.len() != SLICE) {
            return Err(SliceError::Malformed("bad slice length"));
        }
        if self.count.is_some_and(|c| c != count) {
            return Err(SliceError::Malformed("slices disagree on their count"));
        }
        self.count = Some(count);
        self.parts.insert(index, bytes.to_vec());
        Ok(count)
    }

    /// The chunk, once every slice is in (still to be checked against its name).
    pub fn assembled(&self) -> Option<Vec<u8>> {
        let count = self.count?;
        (self.parts.len() == usize::from(count))
            .then(|| self.parts.values().flatten().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(values: &[Vec<u8>], order: impl IntoIterator<Item = usize>) -> Option<Vec<u8>> {
        let mut slices = Slices::default();
        for i in order {
            slices.add(i as u8, &values[i]).unwrap();
        }
        slices.assembled()
    }

    #[test]
    fn a_chunk_comes_back_from_its_slices_in_any_order() {
        let sealed: Vec<u8> = (0..MAX_SEALED_CHUNK).map(|i| (i % 251) as u8).collect();
        let values = cut(&sealed);
        assert_eq!(values.len(), MAX_SLICES);
        assert!(values.iter().all(|v| v.len() <= crate::mailbox::MAX_RECORD));
        assert_eq!(gather(&values, [4, 0, 2, 1, 3]), Some(sealed.clone()));
        assert_eq!(gather(&values, [0, 1, 2, 3]), None, "one slice short");
        // A small chunk is one slice.
        let small = cut(b"small chunk");
        assert_eq!(small.len(), 1);
        assert_eq!(gather(&small, [0]), Some(b"small chunk".to_vec()));
    }

    #[test]
    fn slices_have_keys_of_their_own() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_ne!(key(&a, 0), key(&a, 1));
        assert_ne!(key(&a, 0), key(&b, 0));
        assert_ne!(key(&a, 0), a, "the key is not the chunk's name");
    }

    #[test]
    fn what_cannot_be_a_slice_is_refused() {
        let values = cut(&vec![7u8; 2 * SLICE + 10]);
        let malformed = |index: u8, value: &[u8]| Slices::default().add(index, value).is_err();
        assert!(malformed(0, &[]));
        assert!(malformed(0, &[0, 1, 2]), "no slices");
        assert!(malformed(3, &values[0]), "past the count");
        assert!(
            malformed(0, &[MAX_SLICES as u8 + 1, 1]),
            "more than a chunk has"
        );
        assert!(
            malformed(0, &values[0][..100]),
            "a short slice before the last"
        );
        assert!(malformed(2, &[3]), "an empty last slice");
        // Slices that disagree on their count are not put together.
        let mut slices = Slices::default();
        slices.add(0, &values[0]).unwrap();
        assert!(slices.add(1, &[2, 9]).is_err());
        assert_eq!(slices.add(1, &values[1]), Ok(3));
    }
}
