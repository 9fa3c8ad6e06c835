//! The streaming canonicaliser: canonical JSON (rfcs/0002 §1.4) in one pass
//! over the body.
//!
//! The text is validated as `serde_json` validates a document it ignores
//! (its grammar and escapes; no nesting limit, no UTF-8 check) and copied to
//! the output in runs: whatever the canonical form keeps as written (numbers,
//! literals, punctuation, strings without escapes) is copied a run at a time,
//! so a compact, sorted body is validated and copied in one piece. Where the
//! canonical form differs from the text, the run is cut: whitespace is left
//! out, a string with escapes is re-escaped, an ignored path is left out or
//! nulled. Each object's members are written where they come and moved into
//! key order when it closes, if they are not in order already.
//!
//! Nothing is allocated per value: the bookkeeping (open containers, member
//! ranges, decoded keys that held escapes, ignore-path states) lives in
//! buffers a thread reuses from one request to the next. Nesting is an
//! explicit stack, never recursion, so no document can exhaust the stack.
//!
//! A document nested deeper than [`JSON_DEPTH_MAX`] is not
//! canonicalized (its body is raw): each open container costs a frame.
//!
//! It writes what a value tree wrote (parse, remove paths, write sorted),
//! byte for byte: `tests/it/identity.rs` compares the two on generated
//! documents (the tree's writer is kept in `tests/it/identity/reference.rs`).

use std::cell::RefCell;
use std::cmp::Ordering;

use super::{JSON_DEPTH_MAX, Segment, decode_string};

/// A decoded key: `text[start..end]` (a key without escapes) or
/// `arena[start..end]`.
#[derive(Clone, Copy, Debug)]
struct Key {
    start: usize,
    end: usize,
    in_arena: bool,
}

/// A kept member, written at `out[start..end]` (`"key":value`); `end`
/// is set when its value has been read.
#[derive(Clone, Copy, Debug)]
struct Member {
    key: Key,
    start: usize,
    end: usize,
}

/// What becomes of the item being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Keep,
    /// An object member named by a path's last segment: left out.
    Remove,
    /// An array element named by a path's last segment: `null`.
    Null,
}

/// An open object or array. Output positions are those of the output
/// as it will be once the pending run is copied.
#[derive(Clone, Copy, Debug)]
struct Frame {
    object: bool,
    /// An array emptied by a path whose last segment is `*`.
    clear: bool,
    /// Output position just after the opening bracket.
    content: usize,
    /// This object's kept members are `members[members..]`.
    members: usize,
    /// Arena length when the object opened.
    arena: usize,
    /// Its ignore-path states: `states[states.0..states.1]`.
    states: (usize, usize),
    /// Elements read (array) or members kept (object).
    count: usize,
    /// The current item: output position of its comma (or of its
    /// start, when it has none), of its start, its fate. (A member's
    /// key is in its `Member`, pushed when the key is read.)
    item_at: usize,
    item_start: usize,
    item_fate: Fate,
}

#[derive(Default)]
struct Scratch {
    frames: Vec<Frame>,
    members: Vec<Member>,
    /// Decoded keys that held escapes.
    arena: Vec<u8>,
    /// (path, segment): the segment of that path that applies to the
    /// children of a container (or to the root value).
    states: Vec<(usize, usize)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Appends the canonical form of `text` to `out` and returns `true`; or
/// leaves `out` as it was and returns `false` when `text` is not one
/// JSON document or holds a key that does not decode to UTF-8.
pub fn write(text: &[u8], paths: &[Vec<Segment>], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.reserve(text.len());
    let written = SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => run(text, paths, out, &mut scratch),
        Err(_) => run(text, paths, out, &mut Scratch::default()),
    });
    if written.is_none() {
        out.truncate(start);
    }
    written.is_some()
}

fn run(
    text: &[u8],
    paths: &[Vec<Segment>],
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) -> Option<()> {
    scratch.frames.clear();
    scratch.members.clear();
    scratch.arena.clear();
    scratch.states.clear();
    scratch.states.extend(
        paths
            .iter()
            .enumerate()
            .filter(|(_, path)| !path.is_empty())
            .map(|(p, _)| (p, 0)),
    );
    let written = Canonicalizer {
        text,
        at: 0,
        run: 0,
        paths,
        out,
        s: scratch,
    }
    .document();
    // A deep or wide document does not leave its memory on the thread.
    const KEEP: usize = 1024;
    if scratch.frames.capacity() > KEEP {
        scratch.frames = Vec::new();
    }
    if scratch.members.capacity() > KEEP {
        scratch.members = Vec::new();
    }
    if scratch.arena.capacity() > 16 * KEEP {
        scratch.arena = Vec::new();
    }
    if scratch.states.capacity() > KEEP {
        scratch.states = Vec::new();
    }
    written
}

struct Canonicalizer<'t, 'o> {
    text: &'t [u8],
    /// Next byte to read.
    at: usize,
    /// Start of the pending run: `text[run..at]` is output not yet
    /// copied.
    run: usize,
    paths: &'t [Vec<Segment>],
    out: &'o mut Vec<u8>,
    s: &'o mut Scratch,
}

/// A string token: `text[start..end]`, quotes included.
struct Token {
    start: usize,
    end: usize,
    escaped: bool,
    non_ascii: bool,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Bytes of `chunk` (little-endian) that are exactly `byte`: the lowest
/// flagged byte is exact, higher ones may be false.
#[inline(always)]
fn has_byte(chunk: u64, byte: u8) -> u64 {
    let x = chunk ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

#[inline(always)]
fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

impl Canonicalizer<'_, '_> {
    /// The output position `text[at]` will have.
    #[inline(always)]
    fn pos(&self) -> usize {
        self.out.len() + (self.at - self.run)
    }

    /// Copies the pending run.
    #[inline]
    fn flush(&mut self) {
        self.out.extend_from_slice(&self.text[self.run..self.at]);
        self.run = self.at;
    }

    /// Skips whitespace, which the output leaves out.
    #[inline(always)]
    fn skip_whitespace(&mut self) {
        if self.text.get(self.at).is_some_and(|&b| is_whitespace(b)) {
            self.flush();
            self.at += 1;
            while self.text.get(self.at).is_some_and(|&b| is_whitespace(b)) {
                self.at += 1;
            }
            self.run = self.at;
        }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn document(&mut self) -> Option<()> {
        'value: loop {
            self.skip_whitespace();
            match self.peek()? {
                b'{' => {
                    self.at += 1;
                    self.open(true)?;
                    self.skip_whitespace();
                    if self.peek() == Some(b'}') {
                        self.at += 1;
                        self.close_object();
                    } else {
                        self.member()?;
                        continue 'value;
                    }
                }
                b'[' => {
                    self.at += 1;
                    self.open(false)?;
                    self.skip_whitespace();
                    if self.peek() == Some(b']') {
                        self.at += 1;
                        self.close_array();
                    } else {
                        self.element();
                        continue 'value;
                    }
                }
                b'"' => {
                    let token = self.string()?;
                    if token.escaped {
                        self.rewrite_string(&token, None);
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // A value ended: a scalar, or a container just closed.
            loop {
                let Some(object) = self.s.frames.last().map(|f| f.object) else {
                    self.flush();
                    self.skip_whitespace();
                    return (self.at == self.text.len()).then_some(());
                };
                self.finish_item();
                self.skip_whitespace();
                match self.peek()? {
                    b',' => {
                        self.comma(object);
                        if object {
                            self.member()?;
                        } else {
                            self.element();
                        }
                        continue 'value;
                    }
                    b'}' if object => {
                        self.at += 1;
                        self.close_object();
                    }
                    b']' if !object => {
                        self.at += 1;
                        self.close_array();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// Opens a container (its bracket just read) whose ignore-path
    /// states were pushed last; `None` past [`JSON_DEPTH_MAX`].
    fn open(&mut self, object: bool) -> Option<()> {
        if self.s.frames.len() >= JSON_DEPTH_MAX {
            return None;
        }
        let states_start = self.s.frames.last().map_or(0, |parent| parent.states.1);
        let states = (states_start, self.s.states.len());
        // `*` as the last segment empties an array.
        let clear = !object
            && self.s.states[states.0..states.1]
                .iter()
                .any(|&(p, seg)| seg + 1 == self.paths[p].len() && self.paths[p][seg].star);
        let content = self.pos();
        self.s.frames.push(Frame {
            object,
            clear,
            content,
            members: self.s.members.len(),
            arena: self.s.arena.len(),
            states,
            count: 0,
            item_at: content,
            item_start: content,
            item_fate: Fate::Keep,
        });
        Some(())
    }

    /// A comma between items (at `at`): kept unless nothing precedes it
    /// in the output (the members before it were all left out) or the
    /// array is being emptied.
    #[inline]
    fn comma(&mut self, object: bool) {
        let Some(frame) = self.s.frames.last_mut() else {
            return;
        };
        let item_at = self.out.len() + (self.at - self.run);
        self.at += 1;
        if frame.count == 0 && object || frame.clear {
            self.out
                .extend_from_slice(&self.text[self.run..self.at - 1]);
            self.run = self.at;
        }
        frame.item_at = item_at;
    }

    /// Reads a member's key and colon; its value comes next.
    fn member(&mut self) -> Option<()> {
        self.skip_whitespace();
        let item_start = self.pos();
        if self.peek()? != b'"' {
            return None;
        }
        let token = self.string()?;
        let key = if token.escaped {
            let start = self.s.arena.len();
            self.rewrite_string(&token, Some(()))?;
            Key {
                start,
                end: self.s.arena.len(),
                in_arena: true,
            }
        } else {
            if token.non_ascii
                && std::str::from_utf8(&self.text[token.start + 1..token.end - 1]).is_err()
            {
                return None;
            }
            Key {
                start: token.start + 1,
                end: token.end - 1,
                in_arena: false,
            }
        };
        self.skip_whitespace();
        if self.peek()? != b':' {
            return None;
        }
        self.at += 1;
        let frame = self.s.frames.last()?;
        let mut fate = Fate::Keep;
        if frame.states.0 != frame.states.1 {
            let states = frame.states;
            let key_bytes = key_bytes(self.text, &self.s.arena, key);
            for i in states.0..states.1 {
                let (p, seg) = self.s.states[i];
                let segment = &self.paths[p][seg];
                if segment.star || *segment.key == *key_bytes {
                    if seg + 1 == self.paths[p].len() {
                        fate = Fate::Remove;
                    } else {
                        self.s.states.push((p, seg + 1));
                    }
                }
            }
        }
        if fate == Fate::Keep {
            self.s.members.push(Member {
                key,
                start: item_start,
                end: item_start,
            });
        }
        let frame = self.s.frames.last_mut()?;
        if frame.count == 0 {
            frame.item_at = item_start;
        }
        frame.item_start = item_start;
        frame.item_fate = fate;
        Some(())
    }

    /// An element comes next.
    fn element(&mut self) {
        self.skip_whitespace();
        let item_start = self.pos();
        let Some(frame) = self.s.frames.last_mut() else {
            return;
        };
        let mut fate = Fate::Keep;
        if frame.states.0 != frame.states.1 && !frame.clear {
            let (states, index) = (frame.states, frame.count);
            for i in states.0..states.1 {
                let (p, seg) = self.s.states[i];
                let segment = &self.paths[p][seg];
                if segment.star || segment.index == Some(index) {
                    if seg + 1 == self.paths[p].len() {
                        // (`*` last: the array is emptied, see `open`.)
                        fate = Fate::Null;
                    } else {
                        self.s.states.push((p, seg + 1));
                    }
                }
            }
        }
        let Some(frame) = self.s.frames.last_mut() else {
            return;
        };
        frame.item_start = item_start;
        frame.item_fate = fate;
    }

    /// The current item of the last frame has been read.
    #[inline]
    fn finish_item(&mut self) {
        let end = self.pos();
        let Some(frame) = self.s.frames.last_mut() else {
            return;
        };
        self.s.states.truncate(frame.states.1);
        if frame.object {
            if frame.item_fate == Fate::Remove {
                self.out.extend_from_slice(&self.text[self.run..self.at]);
                self.run = self.at;
                self.out.truncate(frame.item_at);
                return;
            }
            // Its member is the last one: those of objects inside it
            // went when they closed.
            if let Some(member) = self.s.members.last_mut() {
                member.end = end;
            }
        } else if frame.clear {
            self.out.extend_from_slice(&self.text[self.run..self.at]);
            self.run = self.at;
            self.out.truncate(frame.content);
        } else if frame.item_fate == Fate::Null {
            self.out.extend_from_slice(&self.text[self.run..self.at]);
            self.run = self.at;
            self.out.truncate(frame.item_start);
            self.out.extend_from_slice(b"null");
        }
        frame.count += 1;
    }

    /// Closes the last frame, an object (its `}` just read): members in
    /// key order.
    fn close_object(&mut self) {
        let Some(frame) = self.s.frames.pop() else {
            return;
        };
        let Scratch {
            members,
            arena,
            states,
            ..
        } = &mut *self.s;
        let text = self.text;
        let key = |m: &Member| key_bytes(text, arena, m.key);
        let own = &mut members[frame.members..];
        if own
            .windows(2)
            .any(|w| compare(key(&w[0]), key(&w[1])) == Ordering::Greater)
        {
            // The `}` is copied with the next run.
            self.at -= 1;
            self.out.extend_from_slice(&self.text[self.run..self.at]);
            self.run = self.at;
            self.at += 1;
            // Stable: duplicate keys keep their order.
            own.sort_by(|a, b| compare(key(a), key(b)));
            let out = &mut *self.out;
            let tail = out.len();
            for (i, member) in own.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_within(member.start..member.end);
            }
            out.copy_within(tail.., frame.content);
            out.truncate(frame.content + (out.len() - tail));
        }
        members.truncate(frame.members);
        arena.truncate(frame.arena);
        states.truncate(frame.states.0);
    }

    /// Closes the last frame, an array (its `]` just read).
    fn close_array(&mut self) {
        let Some(frame) = self.s.frames.pop() else {
            return;
        };
        self.s.states.truncate(frame.states.0);
    }

    /// Reads a string token (at its opening quote), as serde_json checks
    /// one it ignores: no control byte, valid escapes, any other byte.
    #[inline(always)]
    fn string(&mut self) -> Option<Token> {
        let text = self.text;
        let start = self.at;
        let mut at = start + 1;
        let mut escaped = false;
        let mut high = 0u64;
        loop {
            // Eight bytes at a time to the next quote, backslash or
            // control byte.
            while let Some(chunk) = text.get(at..at + 8) {
                let chunk = u64::from_le_bytes(chunk.try_into().ok()?);
                let stop = has_byte(chunk, b'"')
                    | has_byte(chunk, b'\\')
                    | (chunk.wrapping_sub(ONES * 0x20) & !chunk & HIGHS);
                if stop == 0 {
                    high |= chunk;
                    at += 8;
                } else {
                    // (Bytes past the stop may set `high` for nothing:
                    // it only asks for a UTF-8 check.)
                    high |= chunk;
                    at += stop.trailing_zeros() as usize / 8;
                    break;
                }
            }
            let b = *text.get(at)?;
            match b {
                b'"' => {
                    at += 1;
                    self.at = at;
                    return Some(Token {
                        start,
                        end: at,
                        escaped,
                        non_ascii: high & HIGHS != 0,
                    });
                }
                b'\\' => {
                    escaped = true;
                    match *text.get(at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                        b'u' => {
                            let hex = text.get(at + 2..at + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            at += 6;
                        }
                        _ => return None,
                    }
                }
                0..0x20 => return None,
                _ => {
                    high |= u64::from(b);
                    at += 1;
                }
            }
        }
    }

    /// A string with escapes (just read): re-escaped the way serde_json
    /// writes it. A value that does not decode stays as written; a key
    /// (`key` given) that does not decode fails the document, and one
    /// that does is also put in the arena.
    #[cold]
    fn rewrite_string(&mut self, token: &Token, key: Option<()>) -> Option<()> {
        let raw = &self.text[token.start..token.end];
        let decoded = decode_string(raw);
        let Some(decoded) = decoded else {
            return if key.is_some() { None } else { Some(()) };
        };
        self.out
            .extend_from_slice(&self.text[self.run..token.start]);
        self.run = token.end;
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *self.out, decoded.as_ref());
        if key.is_some() {
            self.s.arena.extend_from_slice(decoded.as_bytes());
        }
        Some(())
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if !self.text[self.at..].starts_with(word) {
            return None;
        }
        self.at += word.len();
        Some(())
    }

    /// A number, as JSON's grammar has it (kept as written).
    #[inline]
    fn number(&mut self) -> Option<()> {
        let text = self.text;
        let mut at = self.at;
        let digits = |mut at: usize| {
            while text.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            at
        };
        if text[at] == b'-' {
            at += 1;
        }
        match *text.get(at)? {
            b'0' => at += 1,
            b'1'..=b'9' => at = digits(at + 1),
            _ => return None,
        }
        if text.get(at) == Some(&b'.') {
            let after = digits(at + 1);
            if after == at + 1 {
                return None;
            }
            at = after;
        }
        if let Some(b'e' | b'E') = text.get(at) {
            at += 1;
            if let Some(b'+' | b'-') = text.get(at) {
                at += 1;
            }
            let after = digits(at);
            if after == at {
                return None;
            }
            at = after;
        }
        // A digit after a leading zero (`01`) is caught by what follows
        // a value: only whitespace, `,`, `]`, `}` or the end may.
        self.at = at;
        Some(())
    }
}

#[inline(always)]
fn key_bytes<'a>(text: &'a [u8], arena: &'a [u8], key: Key) -> &'a [u8] {
    if key.in_arena {
        &arena[key.start..key.end]
    } else {
        &text[key.start..key.end]
    }
}

/// Bytewise order, inline: keys are short, a call to memcmp is not.
#[inline(always)]
fn compare(a: &[u8], b: &[u8]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}
