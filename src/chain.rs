//! Chains: the link that goes into each fingerprint so that identical requests
//! replay in recorded order (rfcs/0002). Chain state is per session.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::interaction::Fingerprint;

/// How a request's chain link is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChainMode {
    /// Link = fingerprint of the previous occurrence of the same canonical
    /// request in the session (or [`Fingerprint::CHAIN_HEAD`]).
    #[default]
    Request,
    /// Link = fingerprint of the previous request of the session, whatever it
    /// was (test-server's strict ordering).
    Session,
}

/// The next step of a chain, computed but not yet taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainStep {
    pub canonical_hash: [u8; 32],
    pub link: Fingerprint,
    pub fingerprint: Fingerprint,
    /// 0 for the first occurrence (request mode) / first request (session mode).
    pub position: u32,
}

/// A canonical form's SHA-256, with the hash state after its bytes kept:
/// SHA-256(canonical ‖ link) for any link then costs the link's block only
/// (`crate::fingerprint::canonical_and_fingerprint`, in two steps).
#[derive(Clone)]
pub struct HashedCanonical {
    after_canonical: Sha256,
    hash: [u8; 32],
}

impl HashedCanonical {
    pub fn new(canonical: &[u8]) -> HashedCanonical {
        let after_canonical = Sha256::new().chain_update(canonical);
        let hash = after_canonical.clone().finalize().into();
        HashedCanonical {
            after_canonical,
            hash,
        }
    }

    /// SHA-256 of the canonical form alone.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// SHA-256(canonical ‖ link): the fingerprint at that link.
    pub fn fingerprint(&self, link: &Fingerprint) -> Fingerprint {
        Fingerprint(
            self.after_canonical
                .clone()
                .chain_update(link.0)
                .finalize()
                .into(),
        )
    }
}

/// One session's chain state. Not synchronized: the session holds it under
/// its own lock, so sessions never contend with each other.
#[derive(Debug, Default)]
pub struct ChainState {
    mode: ChainMode,
    /// `chain: request`: canonical hash → (fingerprint of its last
    /// occurrence, occurrences so far).
    by_request: HashMap<[u8; 32], (Fingerprint, u32)>,
    /// `chain: session`: the session's last fingerprint and request count.
    last: Option<Fingerprint>,
    count: u32,
}

impl ChainState {
    pub fn new(mode: ChainMode) -> ChainState {
        ChainState {
            mode,
            ..ChainState::default()
        }
    }

    pub fn mode(&self) -> ChainMode {
        self.mode
    }

    /// Computes the step for a request with this canonical form, without
    /// advancing the chain.
    pub fn peek(&self, canonical: &[u8]) -> ChainStep {
        self.peek_hashed(&HashedCanonical::new(canonical))
    }

    /// [`Self::peek`] for a canonical form hashed beforehand: the caller
    /// hashes outside the session's lock, so that under it only the link is
    /// looked up and one SHA-256 block (the link) is added.
    pub fn peek_hashed(&self, hashed: &HashedCanonical) -> ChainStep {
        let (link, position) = match self.mode {
            ChainMode::Request => self
                .by_request
                .get(&hashed.hash)
                .map_or((Fingerprint::CHAIN_HEAD, 0), |&(fp, n)| (fp, n)),
            ChainMode::Session => (self.last.unwrap_or(Fingerprint::CHAIN_HEAD), self.count),
        };
        ChainStep {
            canonical_hash: hashed.hash,
            link,
            fingerprint: hashed.fingerprint(&link),
            position,
        }
    }

    /// Advances the chain past `step` (the request was served or recorded).
    pub fn commit(&mut self, step: &ChainStep) {
        match self.mode {
            ChainMode::Request => {
                self.by_request.insert(
                    step.canonical_hash,
                    (step.fingerprint, step.position.saturating_add(1)),
                );
            }
            ChainMode::Session => {
                self.last = Some(step.fingerprint);
                self.count = self.count.saturating_add(1);
            }
        }
    }

    /// How far the chain of a canonical form (by its SHA-256) has gone:
    /// its occurrences taken so far (`chain: request`), or the session's
    /// requests taken (`chain: session`, whatever the form).
    pub fn position_of(&self, canonical_hash: &[u8; 32]) -> u32 {
        match self.mode {
            ChainMode::Request => self.by_request.get(canonical_hash).map_or(0, |&(_, n)| n),
            ChainMode::Session => self.count,
        }
    }

    /// Back to the head: the session can be served again from the start.
    pub fn reset(&mut self) {
        self.by_request.clear();
        self.last = None;
        self.count = 0;
    }
}

/// Replays a sequence of canonical forms through a fresh chain: the steps a
/// session would take. Used to build chains for imported recordings.
pub fn steps_for<'a>(
    mode: ChainMode,
    canonicals: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<ChainStep> {
    let mut chain = ChainState::new(mode);
    canonicals
        .into_iter()
        .map(|canonical| {
            let step = chain.peek(canonical);
            chain.commit(&step);
            step
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::{canonical_hash, fingerprint};

    #[test]
    fn request_mode_links_identical_requests_only() {
        let mut chain = ChainState::new(ChainMode::Request);
        let a1 = chain.peek(b"a");
        chain.commit(&a1);
        let b1 = chain.peek(b"b");
        chain.commit(&b1);
        let a2 = chain.peek(b"a");
        assert_eq!(a1.link, Fingerprint::CHAIN_HEAD);
        assert_eq!(b1.link, Fingerprint::CHAIN_HEAD);
        assert_eq!(a2.link, a1.fingerprint);
        assert_eq!(a2.position, 1);
        assert_ne!(a1.fingerprint, a2.fingerprint);
        // Interleaving does not matter in request mode.
        let mut other = ChainState::new(ChainMode::Request);
        let x = other.peek(b"a");
        other.commit(&x);
        assert_eq!(other.peek(b"a").fingerprint, a2.fingerprint);
    }

    #[test]
    fn session_mode_links_to_the_previous_request() {
        let mut chain = ChainState::new(ChainMode::Session);
        let a = chain.peek(b"a");
        chain.commit(&a);
        let b = chain.peek(b"b");
        assert_eq!(b.link, a.fingerprint);
        assert_eq!(b.position, 1);
        assert_eq!(b.canonical_hash, canonical_hash(b"b"));
        assert_eq!(b.fingerprint, fingerprint(b"b", &a.fingerprint));
    }

    #[test]
    fn a_canonical_hashed_beforehand_gives_the_same_steps() {
        for mode in [ChainMode::Request, ChainMode::Session] {
            let mut chain = ChainState::new(mode);
            let first = chain.peek(b"a");
            chain.commit(&first);
            let hashed = HashedCanonical::new(b"a");
            assert_eq!(chain.peek_hashed(&hashed), chain.peek(b"a"));
            assert_eq!(hashed.hash(), &canonical_hash(b"a"));
            assert_eq!(
                hashed.fingerprint(&first.fingerprint),
                fingerprint(b"a", &first.fingerprint)
            );
        }
    }

    #[test]
    fn peek_does_not_advance_and_reset_goes_back_to_the_head() {
        let mut chain = ChainState::new(ChainMode::Request);
        let first = chain.peek(b"a");
        assert_eq!(chain.peek(b"a"), first);
        chain.commit(&first);
        assert_ne!(chain.peek(b"a"), first);
        chain.reset();
        assert_eq!(chain.peek(b"a"), first);
    }
}
