//! The fingerprint hash (rfcs/0002 §2): SHA-256 over a canonical form and
//! its chain link, the key a recording's index is probed with.

use crate::interaction::Fingerprint;
use sha2::{Digest, Sha256};

/// SHA-256 of the canonical form alone: the key under which `chain: request`
/// finds the previous occurrence of the same request.
pub fn canonical_hash(canonical: &[u8]) -> [u8; 32] {
    Sha256::digest(canonical).into()
}

/// SHA-256(canonical ‖ link).
pub fn fingerprint(canonical: &[u8], link: &Fingerprint) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(canonical);
    hasher.update(link.0);
    Fingerprint(hasher.finalize().into())
}

/// Both hashes with one pass over the canonical form: the SHA-256 state after
/// the canonical bytes is shared by the two.
pub fn canonical_and_fingerprint(canonical: &[u8], link: &Fingerprint) -> ([u8; 32], Fingerprint) {
    let mut hasher = Sha256::new();
    hasher.update(canonical);
    let with_link = hasher.clone().chain_update(link.0);
    (
        hasher.finalize().into(),
        Fingerprint(with_link.finalize().into()),
    )
}
