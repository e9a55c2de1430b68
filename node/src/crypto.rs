//! Thin wrappers over audited RustCrypto primitives, so the rest of the crate never touches
//! nonces, key lengths or parameter choices directly. Nothing here is home-made cryptography.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand::TryRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A 32-byte symmetric key that is wiped from memory when dropped.
pub type SecretKey = Zeroizing<[u8; 32]>;

/// AES-GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;

/// argon2id parameters for identities and room passwords: 64 MiB, 3 passes, 4 lanes
/// (documented in docs/security.md; changing them changes every identity).
pub const ARGON2_M_KIB: u32 = 64 * 1024;
/// argon2id passes.
pub const ARGON2_T: u32 = 3;
/// argon2id lanes.
pub const ARGON2_P: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("decryption failed: wrong key or tampered data")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
    #[error("the operating system's random number generator failed: {0}")]
    Rng(String),
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// SHA-256 over length-prefixed parts, so that ("ab","c") and ("a","bc") never collide.
pub fn sha256_framed(label: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((label.len() as u32).to_be_bytes());
    h.update(label.as_bytes());
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// HKDF-SHA256 expansion of `ikm` into a 32-byte key bound to `info`.
pub fn hkdf32(salt: &[u8], ikm: &[u8], info: &str) -> SecretKey {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    hk.expand(info.as_bytes(), out.as_mut())
        .unwrap_or_else(|_| unreachable!("32-byte HKDF output is always valid"));
    out
}

/// argon2id with the documented parameters.
pub fn argon2id(password: &[u8], salt: &[u8]) -> Result<SecretKey, CryptoError> {
    argon2id_with(password, salt, ARGON2_M_KIB, ARGON2_T, ARGON2_P)
}

/// argon2id with explicit parameters (benchmarks and tests of the parameter choice).
pub fn argon2id_with(
    password: &[u8],
    salt: &[u8],
    m_kib: u32,
    t: u32,
    p: u32,
) -> Result<SecretKey, CryptoError> {
    let params =
        argon2::Params::new(m_kib, t, p, Some(32)).map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(password, salt, out.as_mut())
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(out)
}

/// Fills `buf` from the operating system's RNG (never the seeded identity RNG).
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .map_err(|e| CryptoError::Rng(e.to_string()))
}

/// A fresh random 32-byte key from the OS RNG.
pub fn random_key() -> Result<SecretKey, CryptoError> {
    let mut k = Zeroizing::new([0u8; 32]);
    fill_random(k.as_mut())?;
    Ok(k)
}

/// AES-256-GCM encryption with a fresh random nonce; returns (nonce, ciphertext||tag).
pub fn seal(
    key: &[u8; 32],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; NONCE_LEN], Vec<u8>), CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let ct = seal_with_nonce(key, &nonce, aad, plaintext)?;
    Ok((nonce, ct))
}

/// AES-256-GCM encryption with a caller-chosen nonce (the caller guarantees uniqueness).
pub fn seal_with_nonce(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .encrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Encrypt)
}

/// AES-256-GCM decryption; fails on a wrong key, nonce, AAD or any tampering.
pub fn open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Decrypt)
}

/// Seals a small value for local storage: nonce || ciphertext.
pub fn seal_blob(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (nonce, ct) = seal(key, aad, plaintext)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens a value sealed by [`seal_blob`].
pub fn open_blob(
    key: &[u8; 32],
    aad: &[u8],
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if blob.len() < NONCE_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, ct) = blob.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Decrypt)?;
    open(key, &nonce, aad, ct)
}

/// Constant-time equality for secrets, tags and fingerprints.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let key = random_key().unwrap();
        let (nonce, mut ct) = seal(&key, b"header", b"hello").unwrap();
        assert_eq!(&open(&key, &nonce, b"header", &ct).unwrap()[..], b"hello");
        assert!(open(&key, &nonce, b"other", &ct).is_err());
        ct[0] ^= 1;
        assert!(open(&key, &nonce, b"header", &ct).is_err());
    }

    #[test]
    fn nonces_are_fresh() {
        let key = random_key().unwrap();
        let (n1, c1) = seal(&key, b"", b"same").unwrap();
        let (n2, c2) = seal(&key, b"", b"same").unwrap();
        assert_ne!(n1, n2);
        assert_ne!(c1, c2);
    }

    #[test]
    fn framing_separates_parts() {
        assert_ne!(
            sha256_framed("l", &[b"ab", b"c"]),
            sha256_framed("l", &[b"a", b"bc"])
        );
    }

    #[test]
    fn blob_roundtrip() {
        let key = random_key().unwrap();
        let b = seal_blob(&key, b"k", b"v").unwrap();
        assert_eq!(&open_blob(&key, b"k", &b).unwrap()[..], b"v");
        assert!(open_blob(&key, b"k", &b[..5]).is_err());
    }
}
