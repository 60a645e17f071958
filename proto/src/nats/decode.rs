//! The decoders: bytes from a socket in, one operation out.
//!
//! Framing follows nats-server 2.9.10's parser (`server/parser.go`): verbs are matched
//! case-insensitively byte by byte (so `PX` is refused as soon as the `X` arrives), verbs with
//! arguments need a space or tab after them, `PING`/`PONG`/`+OK` ignore anything up to the
//! newline, `CONNECT`/`INFO` need no space, a line ends at `\n` with an optional `\r` before
//! it, arguments are split on spaces and tabs, sizes are 1–9 decimal digits, and a payload
//! must be followed by exactly `\r\n`.
//!
//! Bounds: the argument part of a control line (after the verb and its blanks) may be at most
//! [`Limits::max_control_line`] bytes — checked on every call, also while the line is still
//! incomplete, so an endless line is refused after `max_control_line` bytes. A PUB/HPUB/MSG/
//! HMSG size is compared with [`Limits::max_payload`] as soon as its control line is complete,
//! before a single payload byte must be buffered.
//!
//! Entry points: [`decode_client_op`] and [`decode_server_op`]; for a connection,
//! [`decode_client_op_reusing`] (a repeated subject shared through [`LastSubject`]) and
//! [`peek_repeated_pub`] (where a repeated PUB's payload lies, for a session that stores it
//! without the `Pub`: held to the decoder by a property test).

use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::error::DecodeError;
use super::ops::{ClientOp, Connect, Info, Msg, Pub, ReplySubject, ServerOp, Sub, Unsub};
use super::subject;

/// nats-server's default `max_control_line`.
pub const DEFAULT_MAX_CONTROL_LINE: usize = 4096;
/// nats-server's default `max_payload` (1 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// Size limits the decoder enforces before buffering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest allowed control-line argument part, in bytes (nats-server: 4096).
    pub max_control_line: usize,
    /// Largest allowed payload (HPUB/HMSG: headers + body), in bytes (nats-server: 1 MiB).
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Connect,
    Pub,
    Hpub,
    Sub,
    Unsub,
    Ping,
    Pong,
    Info,
    Msg,
    Hmsg,
    Ok,
    Err,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Args {
    /// A blank must follow the verb.
    Required,
    /// Anything may follow the verb (CONNECT{...} is fine).
    Optional,
    /// Everything up to the newline is ignored.
    Ignored,
}

impl Verb {
    fn args(self) -> Args {
        match self {
            Verb::Connect | Verb::Info => Args::Optional,
            Verb::Ping | Verb::Pong | Verb::Ok => Args::Ignored,
            _ => Args::Required,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Verb::Connect => "CONNECT",
            Verb::Pub => "PUB",
            Verb::Hpub => "HPUB",
            Verb::Sub => "SUB",
            Verb::Unsub => "UNSUB",
            Verb::Ping => "PING",
            Verb::Pong => "PONG",
            Verb::Info => "INFO",
            Verb::Msg => "MSG",
            Verb::Hmsg => "HMSG",
            Verb::Ok => "+OK",
            Verb::Err => "-ERR",
        }
    }
}

/// Verbs a server accepts from a client (INFO and +OK are accepted and ignored, -ERR closes).
const FROM_CLIENT: &[Verb] = &[
    Verb::Connect,
    Verb::Pub,
    Verb::Hpub,
    Verb::Sub,
    Verb::Unsub,
    Verb::Ping,
    Verb::Pong,
    Verb::Info,
    Verb::Ok,
    Verb::Err,
];

/// Verbs a client accepts from a server.
const FROM_SERVER: &[Verb] = &[
    Verb::Info,
    Verb::Msg,
    Verb::Hmsg,
    Verb::Ping,
    Verb::Pong,
    Verb::Ok,
    Verb::Err,
];

fn unknown(buf: &[u8], offset: usize) -> DecodeError {
    DecodeError::UnknownOperation {
        offset,
        snippet: String::from_utf8_lossy(&buf[..buf.len().min(32)]).into_owned(),
    }
}

/// Matches the verb at the start of `buf`: `Ok(None)` while it could still become one.
fn match_verb(buf: &[u8], table: &[Verb]) -> Result<Option<(Verb, usize)>, DecodeError> {
    let mut partial = false;
    let mut best_prefix = 0;
    for &verb in table {
        let name = verb.name().as_bytes();
        let n = name.len().min(buf.len());
        let common = buf[..n]
            .iter()
            .zip(name)
            .take_while(|(a, b)| a.eq_ignore_ascii_case(b))
            .count();
        if common == name.len() {
            return Ok(Some((verb, name.len())));
        }
        if common == buf.len() {
            partial = true;
        }
        best_prefix = best_prefix.max(common);
    }
    if partial {
        Ok(None)
    } else {
        Err(unknown(buf, best_prefix))
    }
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A complete control line: the verb, its argument bytes, and where the line ends.
struct Line {
    verb: Verb,
    arg_start: usize,
    arg_end: usize,
    /// Index just past the `\n`.
    next: usize,
}

fn read_line(buf: &[u8], table: &[Verb], limits: &Limits) -> Result<Option<Line>, DecodeError> {
    let Some((verb, vlen)) = match_verb(buf, table)? else {
        return Ok(None);
    };
    if verb.args() == Args::Required {
        match buf.get(vlen) {
            None => return Ok(None),
            Some(&b) if is_blank(b) => {}
            Some(_) => return Err(unknown(buf, vlen)),
        }
    }
    let mcl = limits.max_control_line;
    let mut start = vlen;
    if verb.args() != Args::Ignored {
        while start < buf.len() && is_blank(buf[start]) {
            start += 1;
        }
    }
    // Our own bound on the blank run (nats-server skips blanks without buffering them).
    if start - vlen > mcl {
        return Err(DecodeError::MaxControlLine {
            len: start - vlen,
            max: mcl,
        });
    }
    // One byte of slack so a line just over the limit reports its exact length.
    let window_end = buf.len().min(start.saturating_add(mcl).saturating_add(3));
    let Some(nl) = buf[start..window_end].iter().position(|&b| b == b'\n') else {
        let mut seen = buf.len() - start;
        if buf.last() == Some(&b'\r') {
            seen -= 1;
        }
        if seen > mcl {
            return Err(DecodeError::MaxControlLine {
                len: seen,
                max: mcl,
            });
        }
        return Ok(None);
    };
    let nl = start + nl;
    let mut end = nl;
    if end > start && buf[end - 1] == b'\r' {
        end -= 1;
    }
    if end - start > mcl {
        return Err(DecodeError::MaxControlLine {
            len: end - start,
            max: mcl,
        });
    }
    Ok(Some(Line {
        verb,
        arg_start: start,
        arg_end: end,
        next: nl + 1,
    }))
}

/// Spreads a byte over the 8 bytes of a word.
const fn spread(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// The high bit of each byte of `w` (little-endian: byte `i` is bits `8i..8i+8`) that is
/// below `0x21`: blanks, `\n` and the other control bytes (exact per byte, no carries between
/// bytes). A candidate is looked at byte by byte; any other byte is part of an argument.
fn control_bytes(w: u64) -> u64 {
    const LOW7: u64 = spread(0x7f);
    !(((w & LOW7) + spread(0x80 - 0x21)) | w) & spread(0x80)
}

/// A PUB/HPUB control line found in one pass ([`scan_pub_line`]): the line and its
/// arguments, exactly as [`read_line`] and [`split_pub_args`] would find them.
struct PubLine<'a> {
    line: Line,
    args: ArgList<'a>,
}

/// The hot path of a publisher's connection: a complete PUB/HPUB line within the limits,
/// scanned once — the newline found and the arguments split in the same pass, 8 bytes at a
/// time while no byte below `0x21` comes. `None` for anything else (another verb, an
/// incomplete or overlong line, no blank after the verb): the general path then decides,
/// with the same result and errors as before. The line is never read past
/// `2 * max_control_line + 2` bytes after the verb (the longest line the checks accept).
fn scan_pub_line<'a>(buf: &'a [u8], limits: &Limits) -> Option<PubLine<'a>> {
    let (verb, vlen) = if buf.get(..3)?.eq_ignore_ascii_case(b"PUB") {
        (Verb::Pub, 3)
    } else if buf.get(..4)?.eq_ignore_ascii_case(b"HPUB") {
        (Verb::Hpub, 4)
    } else {
        return None;
    };
    if !is_blank(*buf.get(vlen)?) {
        return None;
    }
    let mcl = limits.max_control_line;
    let limit = buf
        .len()
        .min(vlen.saturating_add(mcl.saturating_mul(2)).saturating_add(2));
    let mut ranges = [(0usize, 0usize); ArgList::MAX + 1];
    let mut count = 0usize;
    // Start of the argument being read, if one is.
    let mut open: Option<usize> = None;
    // Start of the last argument closed.
    let mut last_start = 0;
    let mut i = vlen;
    let nl = 'scan: loop {
        if i >= limit {
            return None;
        }
        // Eight bytes at a time; the last few padded with a byte that is no candidate.
        let word = match buf[i..limit].first_chunk::<8>() {
            Some(word) => *word,
            None => {
                let mut word = [b'x'; 8];
                let rest = &buf[i..limit];
                word[..rest.len()].copy_from_slice(rest);
                word
            }
        };
        let end = limit.min(i + 8);
        let mut found = control_bytes(u64::from_le_bytes(word));
        // The first byte of this word not looked at yet.
        let mut from = i;
        while found != 0 {
            let at = i + found.trailing_zeros() as usize / 8;
            found &= found - 1;
            if at > from {
                open.get_or_insert(from);
            }
            from = at + 1;
            match buf[at] {
                b' ' | b'\t' | b'\n' => {
                    if let Some(start) = open.take() {
                        if let Some(range) = ranges.get_mut(count) {
                            *range = (start, at);
                        }
                        count += 1;
                        last_start = start;
                    }
                    if buf[at] == b'\n' {
                        break 'scan at;
                    }
                }
                _ => {
                    open.get_or_insert(at);
                }
            }
        }
        if end > from {
            open.get_or_insert(from);
        }
        i = end;
    };
    // As `read_line`: the argument part starts at the first byte after the blanks.
    let start = if count > 0 { ranges[0].0 } else { nl };
    let mut end = nl;
    if end > start && buf[end - 1] == b'\r' {
        end -= 1;
        // The CR belongs to the line's end, not to the last argument (which ends at the LF):
        // that argument loses it, or is gone if it was the CR alone.
        if last_start == end {
            count -= 1;
        } else if let Some(last) = ranges.get_mut(count - 1) {
            last.1 = end;
        }
    }
    if start - vlen > mcl || end - start > mcl {
        return None;
    }
    let mut args = ArgList {
        args: [&[]; ArgList::MAX + 1],
        len: count.min(ArgList::MAX + 1),
    };
    for (arg, &(from, to)) in args.args.iter_mut().zip(&ranges[..args.len]) {
        *arg = &buf[from..to];
    }
    Some(PubLine {
        line: Line {
            verb,
            arg_start: start,
            arg_end: end,
            next: nl + 1,
        },
        args,
    })
}

/// Where the subject of `PUB <subject>` starts.
const REPEATED_SUBJECT: usize = b"PUB ".len();

/// For `buf` starting `PUB <last>`: the index just past `last`, and the index by which the
/// line's CR must come (its argument part may not run past `max_control_line` bytes). `None`
/// for anything else. Shared by [`repeat_pub_line`] and [`peek_repeated_pub`].
#[inline]
fn after_repeated_subject(buf: &[u8], limits: &Limits, last: &[u8]) -> Option<(usize, usize)> {
    let mcl = limits.max_control_line;
    if last.is_empty() || mcl == 0 || !buf.starts_with(b"PUB ") {
        return None;
    }
    if !buf[REPEATED_SUBJECT..].starts_with(last) {
        return None;
    }
    let end = REPEATED_SUBJECT + last.len();
    Some((end, buf.len().min(REPEATED_SUBJECT + mcl + 1)))
}

/// The hot path of a device that repeats itself: `PUB <the last PUB's subject> [reply] <size>`
/// and CRLF, one space between the words. The subject is compared with the last one (one
/// `memcmp`) instead of scanned, and only the words after it are read. `None` for anything
/// else, [`scan_pub_line`] and the general path then decide; where this finds a line, it is
/// the line and the arguments they would find (a property test holds it to that).
fn repeat_pub_line<'a>(buf: &'a [u8], limits: &Limits, last: &[u8]) -> Option<PubLine<'a>> {
    let (mut i, limit) = after_repeated_subject(buf, limits, last)?;
    let mut args = ArgList {
        args: [&[]; ArgList::MAX + 1],
        len: 1,
    };
    args.args[0] = &buf[REPEATED_SUBJECT..i];
    // Each word after the subject: one space, then bytes above 0x20 up to a space or CRLF.
    let cr = loop {
        if buf.get(i) != Some(&b' ') || args.len == 3 {
            return None;
        }
        let from = i + 1;
        let len = buf.get(from..limit)?.iter().position(|&b| b <= b' ')?;
        if len == 0 {
            return None;
        }
        i = from + len;
        args.args[args.len] = &buf[from..i];
        args.len += 1;
        if buf[i] == b'\r' {
            break i;
        }
    };
    if buf.get(cr + 1) != Some(&b'\n') {
        return None;
    }
    Some(PubLine {
        line: Line {
            verb: Verb::Pub,
            arg_start: REPEATED_SUBJECT,
            arg_end: cr,
            next: cr + 2,
        },
        args,
    })
}

/// Arguments an op line is split into, without allocating (a PUB is split per message).
/// Every op takes at most [`ArgList::MAX`] arguments; a line with more keeps one more than
/// that, so it still matches no accepted form and is refused as before.
struct ArgList<'a> {
    args: [&'a [u8]; ArgList::MAX + 1],
    len: usize,
}

impl<'a> ArgList<'a> {
    /// The most arguments any op takes (HMSG with a reply subject).
    const MAX: usize = 5;

    fn split(arg: &'a [u8], separator: impl Fn(u8) -> bool) -> ArgList<'a> {
        let mut list = ArgList {
            args: [&[]; ArgList::MAX + 1],
            len: 0,
        };
        for a in arg.split(|&b| separator(b)).filter(|a| !a.is_empty()) {
            if list.len == list.args.len() {
                break;
            }
            list.args[list.len] = a;
            list.len += 1;
        }
        list
    }

    fn as_slice(&self) -> &[&'a [u8]] {
        &self.args[..self.len]
    }
}

/// Splits on spaces and tabs (PUB/HPUB in nats-server).
fn split_pub_args(arg: &[u8]) -> ArgList<'_> {
    ArgList::split(arg, is_blank)
}

/// Splits on spaces, tabs, CR and LF (nats-server's `splitArg`: SUB, UNSUB, MSG, HMSG).
fn split_args(arg: &[u8]) -> ArgList<'_> {
    ArgList::split(arg, |b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// nats-server's `parseSize`: 1 to 9 ASCII digits, else `None`.
fn parse_size(d: &[u8]) -> Option<usize> {
    if d.is_empty() || d.len() > 9 {
        return None;
    }
    d.iter().try_fold(0usize, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + usize::from(b - b'0'))
    })
}

fn text(b: &[u8], verb: Verb) -> Result<String, DecodeError> {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| DecodeError::NotUtf8 { verb: verb.name() })
}

/// [`text`] as a shared string, in one allocation.
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Sizes of a payload-carrying op: (header bytes, total bytes). The usual case is inlined
/// into the decoder; a refusal is worked out by [`payload_size_error`], off the hot path.
#[inline]
fn payload_sizes(
    verb: Verb,
    arg: &[u8],
    hdr_arg: Option<&[u8]>,
    size_arg: &[u8],
    limits: &Limits,
) -> Result<(usize, usize), DecodeError> {
    let hdr = match hdr_arg {
        Some(h) => parse_size(h),
        None => Some(0),
    };
    if let (Some(hdr), Some(total)) = (hdr, parse_size(size_arg))
        && hdr <= total
        && total <= limits.max_payload
    {
        return Ok((hdr, total));
    }
    Err(payload_size_error(verb, arg, hdr_arg, size_arg, limits))
}

/// Why [`payload_sizes`] refused: the first of a bad header size, a bad total size, headers
/// larger than the total, a total over `max_payload`.
#[cold]
fn payload_size_error(
    verb: Verb,
    arg: &[u8],
    hdr_arg: Option<&[u8]>,
    size_arg: &[u8],
    limits: &Limits,
) -> DecodeError {
    let name = verb.name();
    let bad_size = || DecodeError::BadSize {
        verb: name,
        line: lossy(arg),
    };
    let hdr = match hdr_arg {
        Some(h) => match parse_size(h) {
            Some(hdr) => hdr,
            None => return bad_size(),
        },
        None => 0,
    };
    let Some(total) = parse_size(size_arg) else {
        return bad_size();
    };
    if hdr > total {
        return DecodeError::HeaderLargerThanTotal {
            verb: name,
            header: hdr,
            total,
        };
    }
    DecodeError::MaxPayload {
        verb: name,
        size: total,
        max: limits.max_payload,
    }
}

/// Checks the payload and its `\r\n` are buffered; `Ok(false)` means wait for more.
fn payload_ready(buf: &[u8], verb: Verb, start: usize, size: usize) -> Result<bool, DecodeError> {
    let end = start + size;
    let bad = || DecodeError::BadPayloadTerminator {
        verb: verb.name(),
        size,
    };
    if let Some(&b) = buf.get(end)
        && b != b'\r'
    {
        return Err(bad());
    }
    if let Some(&b) = buf.get(end + 1)
        && b != b'\n'
    {
        return Err(bad());
    }
    Ok(buf.len() >= end + 2)
}

/// Parsed arguments of PUB/HPUB/MSG/HMSG before the payload is cut out.
struct PayloadArgs {
    subject: String,
    sid: Option<String>,
    reply: Option<String>,
    hdr: Option<usize>,
    total: usize,
}

/// Cuts a payload-carrying op (`hdr` header bytes of `total`) off `buf`: (headers, payload).
fn cut_payload(
    buf: &mut BytesMut,
    line: &Line,
    hdr: Option<usize>,
    total: usize,
) -> (Option<bytes::Bytes>, bytes::Bytes) {
    // The line and the CRLF after the payload are skipped, not cut: one reference to the read
    // buffer taken per op (a cut and a slice of it took two, and gave one back).
    buf.advance(line.next);
    let mut payload = buf.split_to(total).freeze();
    buf.advance(2);
    let headers = hdr.map(|h| payload.split_to(h));
    (headers, payload)
}

/// The subject of the last PUB/HPUB decoded on one connection. While the next PUB repeats it
/// (devices do), [`decode_client_op_reusing`] hands out the same shared `Arc<str>` again: no
/// allocation and no UTF-8 check per PUB, and the session can tell "same subject as the last
/// PUB" by pointer ([`Arc::ptr_eq`]) to reuse what it decided for it. Likewise the prefix
/// (up to the last `.`) of the last reply subject: a reply repeating it is a
/// [`ReplySubject`] sharing it, with only its last token copied.
#[derive(Debug, Clone, Default)]
pub struct LastSubject {
    subject: Option<Arc<str>>,
    reply_prefix: Option<Arc<str>>,
}

impl LastSubject {
    /// The last subject handed out, if any.
    pub fn get(&self) -> Option<&Arc<str>> {
        self.subject.as_ref()
    }

    fn reuse_or_decode(&mut self, raw: &[u8], verb: Verb) -> Result<Arc<str>, DecodeError> {
        if let Some(last) = &self.subject
            && last.as_bytes() == raw
        {
            return Ok(Arc::clone(last));
        }
        let subject: Arc<str> = std::str::from_utf8(raw)
            .map_err(|_| DecodeError::NotUtf8 { verb: verb.name() })?
            .into();
        self.subject = Some(Arc::clone(&subject));
        Ok(subject)
    }

    /// A reply subject: split after its last `.` when the last token fits inline, its prefix
    /// shared with the last reply's when it repeats (kept as the new one otherwise).
    fn reply(&mut self, raw: &[u8], verb: Verb) -> Result<ReplySubject, DecodeError> {
        let not_utf8 = || DecodeError::NotUtf8 { verb: verb.name() };
        if let Some(prefix) = &self.reply_prefix
            && let Some(last) = raw.strip_prefix(prefix.as_bytes())
            && last.len() <= ReplySubject::INLINE
            && !last.iter().any(|&b| b == b'.' || b == 0)
        {
            // The prefix is valid UTF-8 and ends at a `.`: the whole is valid iff the rest is.
            let last = std::str::from_utf8(last).map_err(|_| not_utf8())?;
            return Ok(ReplySubject::split_checked(Arc::clone(prefix), last));
        }
        let text = std::str::from_utf8(raw).map_err(|_| not_utf8())?;
        if let Some(dot) = raw.iter().rposition(|&b| b == b'.')
            && raw.len() - dot - 1 <= ReplySubject::INLINE
            && !raw[dot + 1..].contains(&0)
        {
            let prefix: Arc<str> = Arc::from(&text[..=dot]);
            let reply = ReplySubject::split_checked(Arc::clone(&prefix), &text[dot + 1..]);
            self.reply_prefix = Some(prefix);
            return Ok(reply);
        }
        Ok(ReplySubject::from(Arc::<str>::from(text)))
    }
}

enum Step<T> {
    Op(T),
    Skip,
}

fn decode_client_step(
    buf: &mut BytesMut,
    limits: &Limits,
    last: &mut LastSubject,
) -> Result<Option<Step<ClientOp>>, DecodeError> {
    // The last PUB's subject again, or a PUB/HPUB line scanned once; anything else (or an
    // unusual PUB line) the general way.
    let repeated = last
        .get()
        .and_then(|subject| repeat_pub_line(buf, limits, subject.as_bytes()));
    let repeats_last = repeated.is_some();
    let (line, pub_args) = match repeated.or_else(|| scan_pub_line(buf, limits)) {
        Some(scanned) => (scanned.line, Some(scanned.args)),
        None => match read_line(buf, FROM_CLIENT, limits)? {
            Some(line) => (line, None),
            None => return Ok(None),
        },
    };
    let arg = &buf[line.arg_start..line.arg_end];
    let verb = line.verb;
    let step = match verb {
        Verb::Ping => Step::Op(ClientOp::Ping),
        Verb::Pong => Step::Op(ClientOp::Pong),
        Verb::Ok => Step::Skip,
        Verb::Info => {
            // nats-server parses a client's INFO and ignores it; bad JSON closes silently.
            serde_json::from_slice::<serde::de::IgnoredAny>(arg).map_err(|e| {
                DecodeError::BadInfoJson {
                    reason: e.to_string(),
                }
            })?;
            Step::Skip
        }
        Verb::Err => {
            return Err(DecodeError::ClientSentErr {
                message: lossy(arg),
            });
        }
        Verb::Connect => {
            let c: Connect =
                serde_json::from_slice(arg).map_err(|e| DecodeError::BadConnectJson {
                    reason: e.to_string(),
                })?;
            if !(0..=1).contains(&c.protocol) {
                return Err(DecodeError::InvalidClientProtocol {
                    protocol: c.protocol,
                });
            }
            if c.no_responders && !c.headers {
                return Err(DecodeError::NoRespondersRequiresHeaders);
            }
            Step::Op(ClientOp::Connect(Box::new(c)))
        }
        Verb::Sub => {
            let args = split_args(arg);
            let (subj, queue, sid) = match args.as_slice() {
                [s, sid] => (*s, None, *sid),
                [s, q, sid] => (*s, Some(*q), *sid),
                _ => {
                    return Err(DecodeError::BadArguments {
                        verb: verb.name(),
                        line: lossy(arg),
                    });
                }
            };
            let subject = text(subj, verb)?;
            let queue_group = queue.map(|q| text(q, verb)).transpose()?;
            let sid = text(sid, verb)?;
            if subject::validate_subscribe(&subject).is_err() {
                // nats-server answers -ERR 'Invalid Subject' and keeps the connection.
                buf.advance(line.next);
                return Err(DecodeError::InvalidSubject { subject });
            }
            Step::Op(ClientOp::Sub(Sub {
                subject,
                queue_group,
                sid,
            }))
        }
        Verb::Unsub => {
            let args = split_args(arg);
            let (sid, max) = match args.as_slice() {
                [sid] => (*sid, None),
                [sid, max] => (*sid, parse_size(max).filter(|&m| m > 0)),
                _ => {
                    return Err(DecodeError::BadArguments {
                        verb: verb.name(),
                        line: lossy(arg),
                    });
                }
            };
            Step::Op(ClientOp::Unsub(Unsub {
                sid: text(sid, verb)?,
                max_msgs: max.map(|m| m as u64),
            }))
        }
        Verb::Pub | Verb::Hpub => {
            let args = pub_args.unwrap_or_else(|| split_pub_args(arg));
            let a = match (verb, args.as_slice()) {
                (Verb::Pub, [s, size]) => (*s, None, None, *size),
                (Verb::Pub, [s, r, size]) => (*s, Some(*r), None, *size),
                (Verb::Hpub, [s, h, size]) => (*s, None, Some(*h), *size),
                (Verb::Hpub, [s, r, h, size]) => (*s, Some(*r), Some(*h), *size),
                _ => {
                    return Err(DecodeError::BadArguments {
                        verb: verb.name(),
                        line: lossy(arg),
                    });
                }
            };
            let (hdr, total) = payload_sizes(verb, arg, a.2, a.3, limits)?;
            // Decoded before the payload is there, as before: errors come in the same order.
            let subject = match last.get() {
                Some(subject) if repeats_last => Arc::clone(subject),
                _ => last.reuse_or_decode(a.0, verb)?,
            };
            let reply = a.1.map(|r| last.reply(r, verb)).transpose()?;
            if !payload_ready(buf, verb, line.next, total)? {
                return Ok(None);
            }
            let (headers, payload) = cut_payload(buf, &line, a.2.map(|_| hdr), total);
            return Ok(Some(Step::Op(ClientOp::Pub(Pub {
                subject,
                reply,
                headers,
                payload,
            }))));
        }
        Verb::Msg | Verb::Hmsg => return Err(unknown(buf, 0)),
    };
    buf.advance(line.next);
    Ok(Some(step))
}

/// Where a PUB lies in a read buffer ([`peek_repeated_pub`]): its payload, and how many bytes
/// the whole op takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatedPub {
    /// The payload's bytes in the buffer.
    pub payload: std::ops::Range<usize>,
    /// The op's length: line, payload and CRLF.
    pub len: usize,
}

/// A `PUB <the last PUB's subject> <size>` (no reply subject), whole at the start of `buf`
/// and within `limits`: where its payload lies, without consuming, copying or sharing
/// anything. `None` for anything else, an incomplete PUB and every error included: decode
/// those with [`decode_client_op_reusing`].
///
/// Equivalence (tested): where this answers, [`decode_client_op_reusing`] with the same
/// `last` would give a `Pub` sharing `last`'s subject, with no reply and no headers, whose
/// payload is `buf[payload]`, having consumed `len` bytes and left `last` as it was. A
/// session that consumes `len` bytes itself (`BytesMut::advance`) has then decoded the PUB
/// without building it: per PUB, no reference count taken on the subject or the buffer.
///
/// It reads what [`repeat_pub_line`] reads, for the one form it answers: after the subject,
/// one blank, the size, CRLF. A reply subject, a second blank or a line past
/// `max_control_line` goes to the decoder. No argument list is built (this runs once per PUB
/// of a gateway's busiest connections).
pub fn peek_repeated_pub(buf: &[u8], limits: &Limits, last: &LastSubject) -> Option<RepeatedPub> {
    let (end, limit) = after_repeated_subject(buf, limits, last.get()?.as_bytes())?;
    if buf.get(end) != Some(&b' ') {
        return None;
    }
    // The size: bytes above 0x20 up to the CR.
    let from = end + 1;
    let len = buf.get(from..limit)?.iter().position(|&b| b <= b' ')?;
    let cr = from + len;
    if len == 0 || buf[cr] != b'\r' || buf.get(cr + 1) != Some(&b'\n') {
        return None;
    }
    let total = parse_size(&buf[from..cr]).filter(|&total| total <= limits.max_payload)?;
    let next = cr + 2;
    if !payload_ready(buf, Verb::Pub, next, total).ok()? {
        return None;
    }
    Some(RepeatedPub {
        payload: next..next + total,
        len: next + total + 2,
    })
}

/// The whole length (control line, payload and its CRLF) of the PUB or HPUB at the start of
/// `buf`, when its control line is there and its payload is not all there: what a connection
/// is still waiting for, so it can account for the bytes before they arrive. `None` for
/// anything else: another op, a whole PUB, an incomplete line, and every error (which
/// [`decode_client_op_reusing`] reports).
pub fn awaited_op_len(buf: &[u8], limits: &Limits) -> Option<usize> {
    let (line, args) = match scan_pub_line(buf, limits) {
        Some(scanned) => (scanned.line, scanned.args),
        None => {
            let line = read_line(buf, FROM_CLIENT, limits).ok()??;
            if !matches!(line.verb, Verb::Pub | Verb::Hpub) {
                return None;
            }
            let args = split_pub_args(&buf[line.arg_start..line.arg_end]);
            (line, args)
        }
    };
    let (hdr_arg, size_arg) = match (line.verb, args.as_slice()) {
        (Verb::Pub, [_, size] | [_, _, size]) => (None, *size),
        (Verb::Hpub, [_, hdr, size] | [_, _, hdr, size]) => (Some(*hdr), *size),
        _ => return None,
    };
    let arg = &buf[line.arg_start..line.arg_end];
    let (_, total) = payload_sizes(line.verb, arg, hdr_arg, size_arg, limits).ok()?;
    let len = line.next + total + 2;
    (buf.len() < len).then_some(len)
}

/// Decodes one operation a client sent (the server side of a connection).
///
/// `Ok(None)`: need more bytes (nothing consumed). `Ok(Some(op))`: the op's bytes were
/// consumed. `Err(e)`: see [`DecodeError`]; unless `e.closes_connection()` the connection may
/// go on (the offending op was consumed). `INFO` and `+OK` from a client are consumed and
/// skipped, as nats-server does; `MSG`/`HMSG` from a client are unknown operations.
pub fn decode_client_op(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<ClientOp>, DecodeError> {
    decode_client_op_reusing(buf, limits, &mut LastSubject::default())
}

/// [`decode_client_op`] for a connection: a PUB/HPUB whose subject repeats the previous one
/// shares its `Arc<str>` ([`LastSubject`]).
pub fn decode_client_op_reusing(
    buf: &mut BytesMut,
    limits: &Limits,
    last: &mut LastSubject,
) -> Result<Option<ClientOp>, DecodeError> {
    loop {
        match decode_client_step(buf, limits, last)? {
            None => return Ok(None),
            Some(Step::Op(op)) => return Ok(Some(op)),
            Some(Step::Skip) => continue,
        }
    }
}

/// Decodes one operation a server sent (the client side of a connection).
///
/// Same contract as [`decode_client_op`]. `max_payload` also bounds MSG/HMSG here.
pub fn decode_server_op(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<ServerOp>, DecodeError> {
    let Some(line) = read_line(buf, FROM_SERVER, limits)? else {
        return Ok(None);
    };
    let arg = &buf[line.arg_start..line.arg_end];
    let verb = line.verb;
    let op = match verb {
        Verb::Ping => ServerOp::Ping,
        Verb::Pong => ServerOp::Pong,
        Verb::Ok => ServerOp::Ok,
        Verb::Err => {
            let t = lossy(arg);
            let t = t
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .map(str::to_owned)
                .unwrap_or(t);
            ServerOp::Err(t)
        }
        Verb::Info => {
            let i: Info = serde_json::from_slice(arg).map_err(|e| DecodeError::BadInfoJson {
                reason: e.to_string(),
            })?;
            ServerOp::Info(Box::new(i))
        }
        Verb::Msg | Verb::Hmsg => {
            let args = split_args(arg);
            let a = match (verb, args.as_slice()) {
                (Verb::Msg, [s, sid, size]) => (*s, *sid, None, None, *size),
                (Verb::Msg, [s, sid, r, size]) => (*s, *sid, Some(*r), None, *size),
                (Verb::Hmsg, [s, sid, h, size]) => (*s, *sid, None, Some(*h), *size),
                (Verb::Hmsg, [s, sid, r, h, size]) => (*s, *sid, Some(*r), Some(*h), *size),
                _ => {
                    return Err(DecodeError::BadArguments {
                        verb: verb.name(),
                        line: lossy(arg),
                    });
                }
            };
            let (hdr, total) = payload_sizes(verb, arg, a.3, a.4, limits)?;
            let pa = PayloadArgs {
                subject: text(a.0, verb)?,
                sid: Some(text(a.1, verb)?),
                reply: a.2.map(|r| text(r, verb)).transpose()?,
                hdr: a.3.map(|_| hdr),
                total,
            };
            if !payload_ready(buf, verb, line.next, total)? {
                return Ok(None);
            }
            let (headers, payload) = cut_payload(buf, &line, pa.hdr, pa.total);
            return Ok(Some(ServerOp::Msg(Msg {
                subject: pa.subject,
                sid: pa.sid.unwrap_or_default(),
                reply: pa.reply,
                headers,
                payload,
            })));
        }
        _ => return Err(unknown(buf, 0)),
    };
    buf.advance(line.next);
    Ok(Some(op))
}

#[cfg(test)]
mod tests {
    // Test helpers panic on purpose, like the tests themselves.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    /// A control line as (verb, argument start, argument end, next, arguments).
    type Found = (Verb, usize, usize, usize, Vec<Vec<u8>>);

    fn general(buf: &[u8], limits: &Limits) -> Result<Option<Found>, DecodeError> {
        Ok(read_line(buf, FROM_CLIENT, limits)?.map(|l| {
            let args = split_pub_args(&buf[l.arg_start..l.arg_end]);
            let args = args.as_slice().iter().map(|a| a.to_vec()).collect();
            (l.verb, l.arg_start, l.arg_end, l.next, args)
        }))
    }

    fn one_pass(buf: &[u8], limits: &Limits) -> Option<Found> {
        scan_pub_line(buf, limits).map(|s| {
            let args = s.args.as_slice().iter().map(|a| a.to_vec()).collect();
            let l = s.line;
            (l.verb, l.arg_start, l.arg_end, l.next, args)
        })
    }

    fn repeated(buf: &[u8], limits: &Limits, last: &[u8]) -> Option<Found> {
        repeat_pub_line(buf, limits, last).map(|s| {
            let args = s.args.as_slice().iter().map(|a| a.to_vec()).collect();
            let l = s.line;
            (l.verb, l.arg_start, l.arg_end, l.next, args)
        })
    }

    #[test]
    fn a_repeated_subject_is_compared_not_scanned() {
        let limits = Limits::default();
        let last = b"bench.sensor.temp";
        for (input, args) in [
            (
                &b"PUB bench.sensor.temp 200\r\nxx"[..],
                &[&b"bench.sensor.temp"[..], b"200"][..],
            ),
            (
                b"PUB bench.sensor.temp _INBOX.abc.7 12\r\n",
                &[b"bench.sensor.temp", b"_INBOX.abc.7", b"12"],
            ),
            (
                b"PUB bench.sensor.temp x\r\n",
                &[b"bench.sensor.temp", b"x"],
            ),
        ] {
            let found = repeated(input, &limits, last).expect("the repeat path takes it");
            assert_eq!(found.4, args, "{input:?}");
            assert_eq!(Ok(Some(found)), general(input, &limits), "{input:?}");
        }
        // Another subject (a longer one with the same start too), another form, or a line the
        // repeat path does not finish: the other paths decide.
        let short = Limits {
            max_control_line: 20,
            ..Limits::default()
        };
        for (input, limits) in [
            (&b"PUB bench.sensor.temperature 200\r\n"[..], &limits),
            (b"PUB bench.sensor.hum 200\r\n", &limits),
            (b"pub bench.sensor.temp 200\r\n", &limits),
            (b"PUB  bench.sensor.temp 200\r\n", &limits),
            (b"PUB bench.sensor.temp\t200\r\n", &limits),
            (b"PUB bench.sensor.temp  200\r\n", &limits),
            (b"PUB bench.sensor.temp 200 \r\n", &limits),
            (b"PUB bench.sensor.temp 200\n", &limits),
            (b"PUB bench.sensor.temp 200\r", &limits),
            (b"PUB bench.sensor.temp a b 200\r\n", &limits),
            (b"HPUB bench.sensor.temp 2 200\r\n", &limits),
            (b"PUB bench.sensor.temp 200\r\n", &short),
        ] {
            assert_eq!(repeated(input, limits, last), None, "{input:?}");
        }
    }

    #[test]
    fn the_one_pass_scan_takes_the_usual_lines() {
        let limits = Limits::default();
        for (input, args) in [
            (&b"PUB a 5\r\n"[..], &[&b"a"[..], b"5"][..]),
            (
                b"PUB bench.sensor.temperature 200\r\nxx",
                &[b"bench.sensor.temperature", b"200"],
            ),
            (
                b"pub\ta\t\t  reply.subject.long\t 12\n",
                &[b"a", b"reply.subject.long", b"12"],
            ),
            (b"HPUB s.t 22 33\r\n", &[b"s.t", b"22", b"33"]),
            (b"PUB a 5 \r\n", &[b"a", b"5"]),
            (b"PUB a 5\r\r\n", &[b"a", b"5\r"]),
            (b"PUB a\r5 \r \r\n", &[b"a\r5", b"\r"]),
            (b"PUB a\xff\x01\x7f 5\r\n", &[b"a\xff\x01\x7f", b"5"]),
            (b"PUB    \r\n", &[]),
            (
                b"PUB 1 2 3 4 5 6 7 8 9\r\n",
                &[b"1", b"2", b"3", b"4", b"5", b"6"],
            ),
        ] {
            let found = one_pass(input, &limits).expect("scanned in one pass");
            assert_eq!(found.4, args, "{input:?}");
            assert_eq!(Ok(Some(found)), general(input, &limits), "{input:?}");
        }
        // Left to the general path: incomplete, overlong, another verb, no blank after it.
        let short = Limits {
            max_control_line: 4,
            ..Limits::default()
        };
        for (input, limits) in [
            (&b"PUB a 5\r"[..], &limits),
            (b"PUB abcd 5\r\n", &short),
            (b"PUB      a 5\r\n", &short),
            (b"PING\r\n", &limits),
            (b"PUBX a 5\r\n", &limits),
            (b"PUB", &limits),
        ] {
            assert_eq!(one_pass(input, limits), None, "{input:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn the_one_pass_scan_agrees_with_the_general_path(
            verb in prop::sample::select(vec!["PUB", "pub", "HPUB", "hPuB", "PUBX", "PING", "SUB"]),
            body in prop::collection::vec(
                prop::sample::select(b" \t\r\n\x00\x0b\x1f\x20\x21\x7f\x80\xffab.+09".to_vec()),
                0..48,
            ),
            mcl in 1usize..30,
        ) {
            let mut buf = verb.as_bytes().to_vec();
            buf.extend_from_slice(&body);
            let limits = Limits { max_control_line: mcl, ..Limits::default() };
            if let Some(found) = one_pass(&buf, &limits) {
                prop_assert_eq!(general(&buf, &limits), Ok(Some(found)));
            }
        }

        #[test]
        fn control_bytes_marks_exactly_the_bytes_below_0x21(word in any::<u64>()) {
            let expected = word
                .to_le_bytes()
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b < 0x21)
                .fold(0u64, |m, (i, _)| m | 0x80 << (8 * i));
            prop_assert_eq!(control_bytes(word), expected);
        }
    }

    proptest! {
        // About one case in seventy is a well-formed repeat the fast path takes.
        #![proptest_config(ProptestConfig::with_cases(65536))]

        #[test]
        fn the_repeat_path_agrees_with_the_general_path(
            verb in prop::sample::select(vec!["PUB ", "PUB ", "PUB ", "PUB", "pub ", "HPUB "]),
            last in prop::collection::vec(
                prop::sample::select(b"\r\x01\x7f\xffab.>*".to_vec()),
                0..6,
            ),
            repeat in prop::sample::select(vec![true, true, true, false]),
            // Words with what comes before each, and the line's end: well-formed lines often.
            words in prop::collection::vec(
                (
                    prop::sample::select(vec![" ", " ", " ", " ", " ", "\t", "  ", ""]),
                    prop::sample::select(vec!["200", "_INBOX.x", "a", "\x7f", "\u{ff}", "", "\0", "\r"]),
                ),
                0..4,
            ),
            end in prop::sample::select(vec!["\r\n", "\r\n", "\r\n", "\n", "\r", "", " \r\n", "\r\r\n"]),
            mcl in prop::sample::select(vec![1usize, 3, 8, 12, 20, 4096]),
        ) {
            let mut buf = verb.as_bytes().to_vec();
            if repeat {
                buf.extend_from_slice(&last);
            }
            for (blank, word) in words {
                buf.extend_from_slice(blank.as_bytes());
                buf.extend_from_slice(word.as_bytes());
            }
            buf.extend_from_slice(end.as_bytes());
            let limits = Limits { max_control_line: mcl, ..Limits::default() };
            if let Some(found) = repeated(&buf, &limits, &last) {
                prop_assert_eq!(&found.4[0], &last);
                prop_assert_eq!(general(&buf, &limits), Ok(Some(found)));
            }
        }
    }

    /// Reply subjects from a few prefixes, with last tokens around the inline limit, some
    /// with no `.` at all, some with a NUL, some not UTF-8.
    fn reply_subject() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(vec![
                "_INBOX.a.",
                "_INBOX.a.",
                "_INBOX.b.",
                "_INBOX.a.x.",
                "",
                "\u{e9}.",
                "r.\u{ff}",
            ]),
            prop::collection::vec(prop::sample::select(b"abZ9-_.\0\xc3\xa9".to_vec()), 0..14),
        )
            .prop_map(|(prefix, last)| [prefix.as_bytes(), &last].concat())
    }

    proptest! {
        /// Whatever the replies before it, a decoded reply is its wire bytes exactly; it is
        /// kept split (prefix shared with the last reply's when that repeats) exactly when its
        /// last token fits inline, and refused exactly when it is not UTF-8.
        #[test]
        fn a_reply_decodes_to_its_exact_subject_whatever_came_before(
            replies in prop::collection::vec(reply_subject(), 1..12),
        ) {
            let mut last = LastSubject::default();
            let mut previous: Option<ReplySubject> = None;
            for raw in &replies {
                if raw.is_empty() {
                    continue;
                }
                let mut buf = BytesMut::new();
                buf.extend_from_slice(b"PUB s ");
                buf.extend_from_slice(raw);
                buf.extend_from_slice(b" 1\r\nx\r\n");
                let decoded = decode_client_op_reusing(&mut buf, &Limits::default(), &mut last);
                let Ok(text) = std::str::from_utf8(raw) else {
                    let refused = matches!(decoded, Err(DecodeError::NotUtf8 { .. }));
                    prop_assert!(refused, "{:?}", decoded);
                    continue;
                };
                let Ok(Some(ClientOp::Pub(p))) = decoded else {
                    return Err(TestCaseError::fail(format!("{decoded:?}")));
                };
                let reply = p.reply.expect("a reply");
                prop_assert_eq!(reply.to_string(), text);
                prop_assert!(reply == *text);
                prop_assert_eq!(reply.len(), text.len());
                prop_assert_eq!(&*reply.to_shared(), text);
                prop_assert_eq!(&*reply.to_text(), text);
                let (head, tail) = reply.parts();
                let dot = text.rfind('.');
                match dot {
                    Some(dot)
                        if text.len() - dot - 1 <= ReplySubject::INLINE
                            && !text[dot + 1..].contains('\0') =>
                    {
                        prop_assert_eq!((head, tail), text.split_at(dot + 1));
                    }
                    _ => prop_assert_eq!((head, tail), (text, "")),
                }
                if let Some(prev) = &previous {
                    let (prev_head, prev_tail) = prev.parts();
                    // Shared, not copied, while the prefix repeats.
                    if !tail.is_empty() && !prev_tail.is_empty() && prev_head == head {
                        prop_assert!(std::ptr::eq(prev_head, head));
                    }
                    prop_assert_eq!(*prev == reply, &*prev.to_text() == text);
                }
                previous = Some(reply);
            }
        }
    }
}
