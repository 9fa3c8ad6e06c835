//! Lookup: an identified request's session → chain step → index probe.
//!
//! Takes the request's [`Session`], its canonical form hashed beforehand
//! ([`HashedCanonical`]) and whether the client asked for a chain reset;
//! returns a [`Lookup`]: the recorded answer's location, a miss, or a chain
//! run past what was recorded. Record mode looks nothing up; it takes the
//! step only ([`take_step`]). Nothing here fails: a recording that cannot be
//! refreshed is logged, and what was open is used.
//!
//! The session's chain lock is held from peek to commit, so that concurrent
//! identical requests take successive positions, and never across an
//! await. The canonical form (often kilobytes) is hashed before the lock is
//! taken: under it, only the link is looked up and one SHA-256 block (the
//! link) added. Many clients share the default session of a fixture server,
//! and they all queue on that lock.

use super::session::Session;
use crate::chain::{ChainStep, HashedCanonical};
use crate::recording::{ReadBackend, RecordLocation, Recording};
use crate::session_name::SessionName;
use std::path::Path;

/// Which mode looks up, and so when the chain advances.
#[derive(Clone, Copy, Debug)]
pub enum Policy<'a> {
    /// The chain advances on a hit only: a miss does not use up a position.
    Replay,
    /// Every request takes its step (a miss is recorded at it), and records
    /// appended since the session opened, by this process or another, are
    /// looked for before a miss is declared.
    RecordMissing {
        recording_dir: &'a Path,
        session: &'a SessionName,
        backend: ReadBackend,
    },
}

/// What the recording holds for one request at its chain position.
#[derive(Clone, Copy)]
pub enum Lookup<'s> {
    /// Recorded: the answer is at `location`. The chain took the step.
    Hit {
        step: ChainStep,
        recording: &'s Recording,
        location: RecordLocation,
    },
    /// Not recorded at this position (nor at an earlier one), or the session
    /// has no recording.
    Miss {
        step: ChainStep,
        recording: Option<&'s Recording>,
    },
    /// Recorded fewer times than asked: the chain ran past the recording.
    /// `last` is the last recorded answer (the step's link).
    Exhausted {
        step: ChainStep,
        recording: &'s Recording,
        last: RecordLocation,
    },
}

impl<'s> Lookup<'s> {
    pub fn step(&self) -> &ChainStep {
        match self {
            Lookup::Hit { step, .. }
            | Lookup::Miss { step, .. }
            | Lookup::Exhausted { step, .. } => step,
        }
    }

    /// The session's recording, if it has one.
    pub fn recording(&self) -> Option<&'s Recording> {
        match *self {
            Lookup::Hit { recording, .. } | Lookup::Exhausted { recording, .. } => Some(recording),
            Lookup::Miss { recording, .. } => recording,
        }
    }
}

/// The lookup stage of replay and record-missing.
pub fn lookup<'s>(
    session: &'s Session,
    hashed: &HashedCanonical,
    reset: bool,
    policy: Policy<'_>,
) -> Lookup<'s> {
    let (step, recording, hit) = {
        let mut chain = session.chain.lock().unwrap_or_else(|p| p.into_inner());
        if reset {
            chain.reset();
        }
        let step = chain.peek_hashed(hashed);
        let mut recording = session.recording();
        if let Policy::RecordMissing {
            recording_dir,
            session: name,
            backend,
        } = policy
            && recording.is_none_or(|r| r.lookup(&step.fingerprint).is_none())
        {
            // Records appended since the session was opened must be found too.
            recording = session.reload(name.recording_path(recording_dir), backend);
        }
        let hit = recording.and_then(|r| r.lookup(&step.fingerprint));
        // record-missing records a miss: that takes the chain step too.
        if hit.is_some() || matches!(policy, Policy::RecordMissing { .. }) {
            chain.commit(&step);
        }
        (step, recording, hit)
    };
    let Some(recording) = recording else {
        return Lookup::Miss {
            step,
            recording: None,
        };
    };
    if let Some(location) = hit {
        return Lookup::Hit {
            step,
            recording,
            location,
        };
    }
    // Recorded at the position before, not at this one.
    let last = (step.position > 0)
        .then(|| recording.lookup(&step.link))
        .flatten();
    match last {
        Some(last) => Lookup::Exhausted {
            step,
            recording,
            last,
        },
        None => Lookup::Miss {
            step,
            recording: Some(recording),
        },
    }
}

/// Record mode's step: taken whatever the recording holds (record answers
/// nothing from it).
pub fn take_step(session: &Session, hashed: &HashedCanonical, reset: bool) -> ChainStep {
    let mut chain = session.chain.lock().unwrap_or_else(|p| p.into_inner());
    if reset {
        chain.reset();
    }
    let step = chain.peek_hashed(hashed);
    chain.commit(&step);
    step
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ChainMode;
    use crate::interaction::{
        BodyChunk, Exchange, Fingerprint, Interaction, RecordedRequest, RecordedResponse,
    };
    use crate::recording::{Durability, RecordingWriter};
    use bytes::Bytes;

    /// An interaction answering `canonical` at `step`, its body `body`.
    fn interaction(canonical: &[u8], step: &ChainStep, body: &'static [u8]) -> Interaction {
        Interaction {
            fingerprint: step.fingerprint,
            chain_link: step.link,
            canonical: Bytes::copy_from_slice(canonical),
            endpoint: 0,
            recorded_at_unix_us: 0,
            request: RecordedRequest {
                method: Bytes::from_static(b"GET"),
                target: Bytes::from_static(b"/"),
                headers: Vec::new(),
                body: Bytes::new(),
                trailers: Vec::new(),
            },
            exchange: Exchange::Http(RecordedResponse {
                status: 200,
                headers: Vec::new(),
                chunks: vec![BodyChunk {
                    offset_us: 0,
                    data: Bytes::from_static(body),
                }],
                original_encoding: Bytes::new(),
                ..RecordedResponse::default()
            }),
        }
    }

    /// A session whose recording answers `a` twice (bodies `a1`, `a2`) and
    /// `b` once.
    fn session(dir: &Path) -> Session {
        let path = dir.join("s.ouli");
        let mut writer = RecordingWriter::create(&path, Durability::None).unwrap();
        let steps = crate::chain::steps_for(ChainMode::Request, [&b"a"[..], b"a", b"b"]);
        for ((canonical, body), step) in [(&b"a"[..], &b"a1"[..]), (b"a", b"a2"), (b"b", b"b1")]
            .into_iter()
            .zip(&steps)
        {
            writer.append(&interaction(canonical, step, body)).unwrap();
        }
        writer.finish().unwrap();
        let recording = Recording::open(&path, ReadBackend::Mmap).unwrap();
        Session::new(Some(recording), ChainMode::Request)
    }

    fn body_at(recording: &Recording, location: RecordLocation) -> Bytes {
        let view = recording.read(location).unwrap();
        view.response_chunks().map(|(_, data)| data).next().unwrap()
    }

    #[test]
    fn two_identical_requests_take_successive_positions_then_exhaust() {
        let dir = tempfile::tempdir().unwrap();
        let session = session(dir.path());
        let a = HashedCanonical::new(b"a");
        let mut bodies = Vec::new();
        for position in 0..2u32 {
            let Lookup::Hit {
                step,
                recording,
                location,
            } = lookup(&session, &a, false, Policy::Replay)
            else {
                panic!("position {position} of `a` is recorded");
            };
            assert_eq!(step.position, position);
            bodies.push(body_at(recording, location));
        }
        assert_eq!(bodies, [&b"a1"[..], b"a2"]);
        let Lookup::Exhausted {
            step,
            recording,
            last,
        } = lookup(&session, &a, false, Policy::Replay)
        else {
            panic!("a third `a` runs past the recording");
        };
        assert_eq!(step.position, 2);
        assert_eq!(body_at(recording, last), &b"a2"[..]);
        // Replay's miss takes no step: the same request is exhausted again.
        assert!(matches!(
            lookup(&session, &a, false, Policy::Replay),
            Lookup::Exhausted { .. }
        ));
        // A reset goes back to the head.
        assert!(matches!(
            lookup(&session, &a, true, Policy::Replay),
            Lookup::Hit { step, .. } if step.position == 0
        ));
    }

    #[test]
    fn an_unrecorded_request_misses_and_the_chain_stays() {
        let dir = tempfile::tempdir().unwrap();
        let session = session(dir.path());
        let c = HashedCanonical::new(b"c");
        let Lookup::Miss { step, recording } = lookup(&session, &c, false, Policy::Replay) else {
            panic!("`c` is not recorded");
        };
        assert!(recording.is_some());
        assert_eq!(step.position, 0);
        assert_eq!(step.link, Fingerprint::CHAIN_HEAD);
        // The miss did not advance `b`'s chain either: it is still a hit.
        let b = HashedCanonical::new(b"b");
        assert!(matches!(
            lookup(&session, &b, false, Policy::Replay),
            Lookup::Hit { .. }
        ));
        // No recording at all: a miss, which names none.
        let empty = Session::new(None, ChainMode::Request);
        assert!(matches!(
            lookup(&empty, &b, false, Policy::Replay),
            Lookup::Miss {
                recording: None,
                ..
            }
        ));
    }

    #[test]
    fn record_missing_takes_the_step_of_a_miss_and_record_takes_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let session = session(dir.path());
        let name = SessionName::parse_bytes(b"s").unwrap();
        let policy = Policy::RecordMissing {
            recording_dir: dir.path(),
            session: &name,
            backend: ReadBackend::Mmap,
        };
        let c = HashedCanonical::new(b"c");
        assert!(matches!(
            lookup(&session, &c, false, policy),
            Lookup::Miss { step, .. } if step.position == 0
        ));
        assert!(matches!(
            lookup(&session, &c, false, policy),
            Lookup::Miss { step, .. } if step.position == 1
        ));
        let fresh = Session::new(None, ChainMode::Request);
        let first = take_step(&fresh, &c, false);
        let second = take_step(&fresh, &c, false);
        assert_eq!((first.position, second.position), (0, 1));
        assert_eq!(second.link, first.fingerprint);
        assert_eq!(take_step(&fresh, &c, true), first);
    }
}
