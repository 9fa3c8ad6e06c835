//! Chains: the link that goes into each fingerprint so that identical requests
//! replay in recorded order (rfcs/0002). Chain state is per session.
//!
//! CONTRACT (skeleton — the identity helper replaces bodies, keeps the API).

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

/// One session's chain state. Not synchronized: the session holds it under
/// its own lock, so sessions never contend with each other.
#[derive(Debug, Default)]
pub struct ChainState {
    _private: (),
}

impl ChainState {
    pub fn new(mode: ChainMode) -> ChainState {
        let _ = mode;
        todo!()
    }

    /// Computes the step for a request with this canonical form, without
    /// advancing the chain.
    pub fn peek(&self, canonical: &[u8]) -> ChainStep {
        let _ = canonical;
        todo!()
    }

    /// Advances the chain past `step` (the request was served or recorded).
    pub fn commit(&mut self, step: &ChainStep) {
        let _ = step;
        todo!()
    }

    /// Back to the head: the session can be served again from the start.
    pub fn reset(&mut self) {
        todo!()
    }
}
