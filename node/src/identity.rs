//! Identities derived from a username and password, never stored.
//!
//! argon2id(password, salt = H(label, normalised username)) gives a master secret; HKDF splits
//! it into independent seeds: one seeds a ChaCha20 RNG that generates the RSA key pair (so the
//! same credentials give the same identity on any machine), one encrypts this node's local
//! settings. The node's libp2p key is not derived: each data dir makes its own
//! ([`crate::net::load_or_create_peer_key`]), so one identity on two machines is two peers.
//!
//! The `rsa` crate only generates the key pair (its prime search is what makes the identity
//! deterministic, so it is pinned). Every operation with the keys runs on AWS-LC: RSA-PSS
//! (SHA-256, 32-byte salt) and RSA-OAEP (SHA-256, MGF1-SHA-256), with AWS-LC's blinded,
//! constant-time private-key code and its own OS-seeded RNG for salts and padding.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::rsa::{
    KeyPair as LcKeyPair, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PSS_2048_8192_SHA256, RSA_PSS_SHA256};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::PrivateKey as RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};

use crate::crypto::{self, CryptoError, SecretKey};

/// Version label bound into every derivation; bump it to change every identity on purpose.
const SALT_LABEL: &str = "cryptchat/identity-salt/v1";
const HKDF_SALT: &[u8] = b"cryptchat/identity/v1";
const MIN_USERNAME: usize = 1;
const MAX_USERNAME: usize = 64;
/// Minimum zxcvbn score (0..=4). The public key acts as a password hash anyone can attack
/// offline, so passwords must resist offline guessing, not just online attempts.
const MIN_PASSWORD_SCORE: zxcvbn::Score = zxcvbn::Score::Three;
const CONTACT_PREFIX: &str = "cc1:";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "password too weak ({why}): anyone can try guesses against your public key offline; \
         use a longer passphrase, e.g. four or more random words"
    )]
    WeakPassword { why: String },
    #[error(
        "username must be {MIN_USERNAME} to {MAX_USERNAME} characters without control or bidirectional formatting characters or ':'"
    )]
    BadUsername,
    #[error("RSA key size {0} is not allowed: choose 2048, 3072 or 4096")]
    BadKeySize(usize),
    #[error("RSA key generation failed: {0}")]
    KeyGen(String),
    #[error("not a valid contact code: {0}")]
    BadContactCode(String),
    #[error("not a valid public key: {0}")]
    BadPublicKey(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("could not unwrap the message key: not addressed to this identity or tampered")]
    Unwrap,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// RSA modulus sizes on offer; nothing below 2048 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeySize {
    #[default]
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeySize {
    pub fn bits(self) -> usize {
        match self {
            KeySize::Rsa2048 => 2048,
            KeySize::Rsa3072 => 3072,
            KeySize::Rsa4096 => 4096,
        }
    }

    pub fn from_bits(bits: usize) -> Result<Self, IdentityError> {
        match bits {
            2048 => Ok(KeySize::Rsa2048),
            3072 => Ok(KeySize::Rsa3072),
            4096 => Ok(KeySize::Rsa4096),
            other => Err(IdentityError::BadKeySize(other)),
        }
    }
}

/// A user id: SHA-256 of the DER-encoded public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(pub [u8; 32]);

impl UserId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short, human-comparable form: the first 8 bytes in groups of four hex digits.
    pub fn short(&self) -> String {
        let h = hex::encode(&self.0[..8]);
        h.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("-")
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(UserId(v.try_into().ok()?))
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.short())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Someone's public identity: what a contact code carries and envelopes are verified against.
/// Cheap to clone; parsed keys are shared through a small cache, because contact codes,
/// first entries and receipts carry keys again and again, and parsing an RSA key costs more
/// than verifying with it.
#[derive(Clone)]
pub struct PublicIdentity(Arc<PublicInner>);

struct PublicInner {
    verifier: ParsedPublicKey,
    encryptor: OaepPublicEncryptingKey,
    der: Vec<u8>,
    id: UserId,
}

/// Parsed keys by user id; cleared when it grows past this many entries.
const KEY_CACHE_MAX: usize = 4096;

fn key_cache() -> &'static Mutex<HashMap<UserId, PublicIdentity>> {
    static CACHE: OnceLock<Mutex<HashMap<UserId, PublicIdentity>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

impl PublicIdentity {
    /// Parses a DER (SubjectPublicKeyInfo) RSA key, refusing sizes outside 2048..=4096 bits.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        // The id is the hash of these exact bytes, so a cache hit is the same key.
        let id = UserId(crypto::sha256(&[der]));
        if let Some(hit) = key_cache().lock().ok().and_then(|c| c.get(&id).cloned()) {
            return Ok(hit);
        }
        let parsed = Self::parse(der)?;
        if let Ok(mut c) = key_cache().lock() {
            if c.len() >= KEY_CACHE_MAX {
                c.clear();
            }
            c.insert(id, parsed.clone());
        }
        Ok(parsed)
    }

    fn parse(der: &[u8]) -> Result<Self, IdentityError> {
        let bad = |why: &str| IdentityError::BadPublicKey(why.to_string());
        // SubjectPublicKeyInfo only: the id hashes these bytes, so one key has one encoding.
        let key = PublicEncryptingKey::from_der(der).map_err(|_| bad("not an RSA public key"))?;
        let bits = key.key_size_bits();
        if !(2048..=4096).contains(&bits) {
            return Err(bad(&format!("{bits}-bit modulus is outside 2048..=4096")));
        }
        let verifier = ParsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, der)
            .map_err(|_| bad("not an RSA public key"))?;
        let encryptor = OaepPublicEncryptingKey::new(key).map_err(|_| bad("unusable for OAEP"))?;
        Ok(PublicIdentity(Arc::new(PublicInner {
            verifier,
            encryptor,
            der: der.to_vec(),
            id: UserId(crypto::sha256(&[der])),
        })))
    }

    pub fn id(&self) -> UserId {
        self.0.id
    }

    pub fn der(&self) -> &[u8] {
        &self.0.der
    }

    /// Verifies an RSA-PSS (SHA-256) signature over `msg`.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        self.0.verifier.verify_sig(msg, signature).is_ok()
    }

    /// Wraps a content key for this identity with RSA-OAEP (SHA-256).
    pub fn wrap_key(&self, key: &[u8; 32]) -> Result<Vec<u8>, IdentityError> {
        let mut out = vec![0u8; self.0.encryptor.ciphertext_size()];
        let n = self
            .0
            .encryptor
            .encrypt(&OAEP_SHA256_MGF1SHA256, key, &mut out, None)
            .map_err(|_| IdentityError::Sign("RSA-OAEP encryption failed".into()))?
            .len();
        out.truncate(n);
        Ok(out)
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicIdentity({})", self.0.id.short())
    }
}

/// A contact code: a username plus public key, printable so people can paste it to each other.
#[derive(Clone, Debug)]
pub struct ContactCode {
    pub username: String,
    pub identity: PublicIdentity,
}

impl ContactCode {
    pub fn encode(&self) -> String {
        use base64::Engine;
        let mut raw = vec![1u8, self.username.len() as u8];
        raw.extend_from_slice(self.username.as_bytes());
        raw.extend_from_slice(self.identity.der());
        format!(
            "{CONTACT_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        )
    }

    pub fn decode(code: &str) -> Result<Self, IdentityError> {
        use base64::Engine;
        let bad = |why: &str| IdentityError::BadContactCode(why.to_string());
        let body = code
            .trim()
            .strip_prefix(CONTACT_PREFIX)
            .ok_or_else(|| bad("it should start with 'cc1:'"))?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| bad("not base64url"))?;
        let (&version, rest) = raw.split_first().ok_or_else(|| bad("empty"))?;
        if version != 1 {
            return Err(bad("unknown version"));
        }
        let (&len, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        if rest.len() < len as usize {
            return Err(bad("truncated"));
        }
        let (name, der) = rest.split_at(len as usize);
        let username = std::str::from_utf8(name).map_err(|_| bad("username is not UTF-8"))?;
        let username = normalise_username(username).map_err(|_| bad("bad username"))?;
        let identity = PublicIdentity::from_der(der)?;
        Ok(ContactCode { username, identity })
    }
}

/// The full identity of the local user. Lives only in memory.
pub struct Identity {
    username: String,
    /// The private key, held once as a signer and once as a decryptor.
    signer: LcKeyPair,
    decryptor: OaepPrivateDecryptingKey,
    public: PublicIdentity,
    local_key: SecretKey,
    /// HMAC key by which the machines of one user know each other (see
    /// [`Identity::machine_tag`]).
    machine_key: aws_lc_rs::hmac::Key,
}

/// Trims, lower-cases and [canonicalises](crate::chars::canonical) a username so that
/// "Alice " and "alice" are the same identity, and "José" is one however its "é" was typed.
pub fn normalise_username(username: &str) -> Result<String, IdentityError> {
    let u = crate::chars::folded(username.trim());
    let n = u.chars().count();
    if !(MIN_USERNAME..=MAX_USERNAME).contains(&n)
        || u.len() > 255
        || u.chars().any(|c| crate::chars::is_deceptive(c) || c == ':')
    {
        return Err(IdentityError::BadUsername);
    }
    Ok(u)
}

/// Refuses passwords an offline attacker could guess.
pub fn check_password_strength(username: &str, password: &str) -> Result<(), IdentityError> {
    let entropy = zxcvbn::zxcvbn(password, &[username, "cryptchat"]);
    if entropy.score() < MIN_PASSWORD_SCORE {
        let why = entropy
            .feedback()
            .and_then(|f| f.warning().map(|w| w.to_string()))
            .unwrap_or_else(|| "too easy to guess".to_string());
        return Err(IdentityError::WeakPassword { why });
    }
    Ok(())
}

impl Identity {
    /// Derives the identity (slow on purpose: argon2id with 64 MiB, then RSA generation).
    /// Refuses weak passwords.
    pub fn derive(username: &str, password: &str, size: KeySize) -> Result<Self, IdentityError> {
        let username = normalise_username(username)?;
        check_password_strength(&username, password)?;
        Self::derive_unchecked(&username, password, size)
    }

    /// Derivation without the strength check: for tests and benchmarks with fixed identities.
    pub fn derive_unchecked(
        username: &str,
        password: &str,
        size: KeySize,
    ) -> Result<Self, IdentityError> {
        let username = normalise_username(username)?;
        let salt = crypto::sha256_framed(SALT_LABEL, &[username.as_bytes()]);
        // Zeroed when dropped, like the caller's copy.
        let password = zeroize::Zeroizing::new(crate::chars::canonical(password).into_owned());
        let master = crypto::argon2id(password.as_bytes(), &salt)?;
        Self::from_master(&username, &master, size)
    }

    /// Builds the identity from an already stretched master secret (also used by netsim to
    /// cache identities per run).
    pub fn from_master(
        username: &str,
        master: &[u8; 32],
        size: KeySize,
    ) -> Result<Self, IdentityError> {
        let username = normalise_username(username)?;
        let rsa_seed = crypto::hkdf32(HKDF_SALT, master, "rsa-seed");
        let local_key = crypto::hkdf32(HKDF_SALT, master, "local-storage");
        let machine_key = crypto::hkdf32(HKDF_SALT, master, "machine-tag");
        let machine_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &*machine_key);

        let keygen = |e: &dyn fmt::Display| IdentityError::KeyGen(e.to_string());
        let mut rng = ChaCha20Rng::from_seed(*rsa_seed);
        let private = RsaPrivateKey::new(&mut rng, size.bits()).map_err(|e| keygen(&e))?;
        let der = private
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| keygen(&e))?;
        let public = PublicIdentity::parse(der.as_bytes())?;
        // Handed to AWS-LC as PKCS#8; the document is zeroed when dropped, and so is `private`.
        let pkcs8 = private.to_pkcs8_der().map_err(|e| keygen(&e))?;
        let signer = LcKeyPair::from_pkcs8(pkcs8.as_bytes()).map_err(|e| keygen(&e))?;
        let decryptor = PrivateDecryptingKey::from_pkcs8(pkcs8.as_bytes())
            .map_err(|e| keygen(&e))
            .and_then(|k| OaepPrivateDecryptingKey::new(k).map_err(|e| keygen(&e)))?;
        let identity = Identity {
            username,
            signer,
            decryptor,
            public,
            local_key,
            machine_key,
        };
        // AWS-LC readies a private key on its first signature (about 30 ms against 0.3 ms for
        // the next ones): here, where deriving the key takes seconds anyway, rather than in
        // the user's first message (in netsim, that one message made a third of the 40-node
        // run's slowest 1% of deliveries).
        identity.sign(b"cryptchat key warm-up")?;
        Ok(identity)
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn id(&self) -> UserId {
        self.public.id()
    }

    pub fn public(&self) -> &PublicIdentity {
        &self.public
    }

    pub fn contact_code(&self) -> ContactCode {
        ContactCode {
            username: self.username.clone(),
            identity: self.public.clone(),
        }
    }

    /// Key that seals this node's local settings (room secrets, contacts) at rest.
    pub fn local_key(&self) -> &[u8; 32] {
        &self.local_key
    }

    /// A tag that tells another machine of this user that the peer `peer` (a libp2p peer
    /// id's bytes) is one of its own: HMAC-SHA-256 under a key derived from the identity.
    /// To anyone else it is 32 opaque bytes, bound to that peer id, so it neither links
    /// two peers of one user nor can be replayed by another peer.
    pub fn machine_tag(&self, peer: &[u8]) -> [u8; 32] {
        let tag = aws_lc_rs::hmac::sign(&self.machine_key, peer);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `tag` is [`Identity::machine_tag`] of `peer` under our identity (checked
    /// in constant time).
    pub fn is_own_machine(&self, peer: &[u8], tag: &[u8]) -> bool {
        aws_lc_rs::hmac::verify(&self.machine_key, peer, tag).is_ok()
    }

    /// RSA-PSS (SHA-256) signature with a fresh random salt.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let mut sig = vec![0u8; self.signer.public_modulus_len()];
        self.signer
            .sign(
                &RSA_PSS_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                msg,
                &mut sig,
            )
            .map_err(|_| IdentityError::Sign("RSA-PSS signing failed".into()))?;
        Ok(sig)
    }

    /// Unwraps a content key wrapped for us with RSA-OAEP.
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<SecretKey, IdentityError> {
        let mut buf = zeroize::Zeroizing::new(vec![0u8; self.decryptor.min_output_size()]);
        let plain = self
            .decryptor
            .decrypt(&OAEP_SHA256_MGF1SHA256, wrapped, &mut buf, None)
            .map_err(|_| IdentityError::Unwrap)?;
        let key: [u8; 32] = (&*plain).try_into().map_err(|_| IdentityError::Unwrap)?;
        Ok(zeroize::Zeroizing::new(key))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        write!(f, "Identity({}, {})", self.username, self.id().short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed test identity. Its fingerprint is pinned: if this test fails after a dependency
    /// update, that update changes every user's identity and must not ship as is.
    const PINNED_USER: &str = "pinned-test-user";
    const PINNED_PASSWORD: &str = "correct horse battery staple 1984";
    const PINNED_FINGERPRINT: &str =
        "14fb2d0e5f3f87704c5c71b345122ff2fc34c9bddb9a4c72e7196f1ac04863fc";

    #[test]
    fn derivation_is_deterministic_and_pinned() {
        let a = Identity::derive(PINNED_USER, PINNED_PASSWORD, KeySize::Rsa2048).unwrap();
        let b = Identity::derive(" Pinned-Test-User ", PINNED_PASSWORD, KeySize::Rsa2048).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.local_key(), b.local_key());
        assert_eq!(a.id().to_hex(), PINNED_FINGERPRINT);
    }

    #[test]
    fn usernames_are_trimmed_lower_cased_and_plain() {
        assert_eq!(normalise_username(" Alice ").unwrap(), "alice");
        for bad in ["", "a:b", "bob\nalice", "bob\u{1b}[2J", "bob\u{202E}ecila"] {
            assert!(normalise_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_username_and_password_typed_with_other_accent_characters_are_one_identity() {
        assert_eq!(normalise_username("JOSE\u{301}").unwrap(), "jos\u{e9}");
        // A normalised name is its own normal form: receivers check authors' names so.
        for name in [
            "\u{130}STANBUL",
            "\u{3a3}\u{391}\u{3a3}",
            "A\u{30a}NGSTR\u{d6}M",
            "\u{1100}\u{1161}",
        ] {
            let once = normalise_username(name).unwrap();
            assert_eq!(normalise_username(&once).unwrap(), once, "{name}");
        }
        let a = Identity::derive_unchecked("Jos\u{e9}", "d\u{e9}j\u{e0} vu 1989", KeySize::Rsa2048)
            .unwrap();
        let b = Identity::derive_unchecked(
            "JOSE\u{301}",
            "de\u{301}ja\u{300} vu 1989",
            KeySize::Rsa2048,
        )
        .unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.local_key(), b.local_key());
        assert_eq!(b.username(), "jos\u{e9}");
    }

    #[test]
    fn different_password_gives_different_identity() {
        let a = Identity::derive_unchecked("u", "first passphrase here", KeySize::Rsa2048).unwrap();
        let b =
            Identity::derive_unchecked("u", "second passphrase here", KeySize::Rsa2048).unwrap();
        assert_ne!(a.id(), b.id());
        assert_ne!(a.local_key(), b.local_key());
    }

    #[test]
    fn weak_passwords_are_refused() {
        for weak in ["password", "123456", "alice2024", "qwertyuiop"] {
            let err = Identity::derive("alice", weak, KeySize::Rsa2048).unwrap_err();
            assert!(matches!(err, IdentityError::WeakPassword { .. }), "{weak}");
            assert!(err.to_string().contains("too weak"));
        }
        // The username itself is not a good password either.
        assert!(check_password_strength("correcthorsebattery", "correcthorsebattery").is_err());
        assert!(check_password_strength("alice", "violet tugboat meander 77 quasar").is_ok());
    }

    #[test]
    fn sign_verify_wrap_unwrap() {
        let a = Identity::derive_unchecked("a", "pw-a for tests only", KeySize::Rsa2048).unwrap();
        let b = Identity::derive_unchecked("b", "pw-b for tests only", KeySize::Rsa2048).unwrap();
        let sig = a.sign(b"msg").unwrap();
        assert!(a.public().verify(b"msg", &sig));
        assert!(!a.public().verify(b"msG", &sig));
        assert!(!b.public().verify(b"msg", &sig));
        assert!(!a.public().verify(b"msg", &sig[1..]));
        // PSS signatures are randomised: a fresh salt each time, not the seeded RNG.
        assert_ne!(sig, a.sign(b"msg").unwrap());

        let k = [7u8; 32];
        let w = b.public().wrap_key(&k).unwrap();
        assert_eq!(*b.unwrap_key(&w).unwrap(), k);
        assert!(a.unwrap_key(&w).is_err());
    }

    #[test]
    fn only_the_same_identity_knows_its_machines_by_their_tag() {
        let master = [4u8; 32];
        let desk = Identity::from_master("a", &master, KeySize::Rsa2048).unwrap();
        let laptop = Identity::from_master("a", &master, KeySize::Rsa2048).unwrap();
        let other = Identity::from_master("b", &[5u8; 32], KeySize::Rsa2048).unwrap();
        let tag = desk.machine_tag(b"desk peer");
        assert!(laptop.is_own_machine(b"desk peer", &tag));
        // Bound to the peer it names: another peer cannot pass it off as its own.
        assert!(!laptop.is_own_machine(b"someone else", &tag));
        assert!(!other.is_own_machine(b"desk peer", &tag));
        assert_ne!(other.machine_tag(b"desk peer"), tag);
        assert!(!laptop.is_own_machine(b"desk peer", &tag[..31]));
        assert!(!laptop.is_own_machine(b"desk peer", &[]));
    }

    #[test]
    fn garbage_never_unwraps() {
        let a = Identity::derive_unchecked("a", "pw-a for tests only", KeySize::Rsa2048).unwrap();
        let w = a.public().wrap_key(&[9u8; 32]).unwrap();
        assert!(a.unwrap_key(&w[1..]).is_err());
        assert!(a.unwrap_key(&[]).is_err());
        let mut flipped = w.clone();
        flipped[100] ^= 1;
        assert!(a.unwrap_key(&flipped).is_err());
        // A wrapped key of another length is refused too.
        let mut out = vec![0u8; 256];
        let n = a
            .public()
            .0
            .encryptor
            .encrypt(&OAEP_SHA256_MGF1SHA256, &[1u8; 16], &mut out, None)
            .unwrap()
            .len();
        assert!(a.unwrap_key(&out[..n]).is_err());
    }

    /// Envelopes signed and keys wrapped by earlier versions (with the `rsa` crate) stay
    /// readable: same PSS salt length, same OAEP hash and MGF.
    #[test]
    fn interoperates_with_the_rsa_crate() {
        use rsa::signature::{RandomizedSigner, SignatureEncoding};
        use rsa::traits::RandomizedEncryptor;
        let master = [3u8; 32];
        let a = Identity::from_master("a", &master, KeySize::Rsa2048).unwrap();
        // The same key, rebuilt the way `from_master` builds it.
        let seed = crypto::hkdf32(HKDF_SALT, &master, "rsa-seed");
        let private = RsaPrivateKey::new(&mut ChaCha20Rng::from_seed(*seed), 2048).unwrap();
        let old_signer = rsa::pss::SigningKey::<sha2::Sha256>::new(private.clone());
        let sig = old_signer
            .try_sign_with_rng(&mut rand::rngs::SysRng, b"old envelope")
            .unwrap()
            .to_vec();
        assert!(a.public().verify(b"old envelope", &sig));
        let wrapped = rsa::oaep::EncryptingKey::<sha2::Sha256>::new(private.to_public_key())
            .encrypt_with_rng(&mut rand::rngs::SysRng, &[5u8; 32])
            .unwrap();
        assert_eq!(*a.unwrap_key(&wrapped).unwrap(), [5u8; 32]);
        // And the other way round.
        use rsa::signature::Verifier;
        let new_sig = a.sign(b"new envelope").unwrap();
        let old_verifier = rsa::pss::VerifyingKey::<sha2::Sha256>::new(private.to_public_key());
        let parsed = rsa::pss::Signature::try_from(new_sig.as_slice()).unwrap();
        assert!(old_verifier.verify(b"new envelope", &parsed).is_ok());
    }

    #[test]
    fn contact_code_roundtrip_and_garbage() {
        let a =
            Identity::derive_unchecked("Alice", "pw-a for tests only", KeySize::Rsa2048).unwrap();
        let code = a.contact_code().encode();
        let back = ContactCode::decode(&code).unwrap();
        assert_eq!(back.username, "alice");
        assert_eq!(back.identity.id(), a.id());
        for bad in ["", "cc1:", "cc1:!!!", "xx:abc", &code[..code.len() - 10]] {
            assert!(ContactCode::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn small_keys_are_refused() {
        assert!(KeySize::from_bits(1024).is_err());
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let small = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let der = small.to_public_key().to_public_key_der().unwrap();
        assert!(PublicIdentity::from_der(der.as_bytes()).is_err());
    }
}
