//! PostgreSQL v3 wire codec. PURE: no sockets, no files, no clock.
//!
//! Owns: framing (`frame`), the bounds-checked `Reader` (the only code that
//! slices peer bytes), typed decoding of the messages the proxy acts on
//! (`frontend`, `backend`) and encoders for what the proxy sends (`encode`).
//! Invariants: every length check happens in `frame::parse_frame` /
//! `frame::parse_header`; nothing here panics on any input.
//! See `docs/architecture.md`, section "Wire codec".
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod backend;
pub mod encode;
pub mod frame;
pub mod frontend;
pub mod reader;

use std::fmt;

/// Protocol version 3.0 (`3 << 16`).
pub const PROTOCOL_3_0: i32 = 196_608;
/// Protocol version 3.2 (PostgreSQL 18, variable-length cancel keys).
pub const PROTOCOL_3_2: i32 = 196_610;
/// Startup-family request codes.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Cancel key length bounds: 4 bytes in protocol 3.0; protocol 3.2
/// (PostgreSQL 18) allows up to 256 bytes (BackendKeyData, CancelRequest).
pub const MIN_CANCEL_KEY_LEN: usize = 4;
pub const MAX_CANCEL_KEY_LEN: usize = 256;

/// Message tags, named after the protocol documentation.
pub mod tag {
    // backend
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const ERROR_RESPONSE: u8 = b'E';
    /// Reply to FunctionCall (`F`, legal from the client), e.g. libpq's `lo_*`.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const NO_DATA: u8 = b'n';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
    // frontend
    pub const BIND: u8 = b'B';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PARSE: u8 = b'P';
    pub const PASSWORD_MESSAGE: u8 = b'p';
    pub const QUERY: u8 = b'Q';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';
}

/// Which framing rules apply to the bytes being parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramePhase {
    /// Untagged startup family: `int32 len, int32 code, ...` (client only).
    Startup,
    /// Tagged client messages while authenticating (only `p` is legal).
    ClientAuth,
    /// Tagged client messages after authentication.
    Client,
    /// Tagged server messages before AuthenticationOk.
    ServerAuth,
    /// Tagged server messages after AuthenticationOk.
    Server,
}

impl FramePhase {
    pub const ALL: [FramePhase; 5] = [
        FramePhase::Startup,
        FramePhase::ClientAuth,
        FramePhase::Client,
        FramePhase::ServerAuth,
        FramePhase::Server,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            FramePhase::Startup => "startup",
            FramePhase::ClientAuth => "client_auth",
            FramePhase::Client => "client",
            FramePhase::ServerAuth => "server_auth",
            FramePhase::Server => "server",
        }
    }
}

/// Size limits applied by framing. Every default has its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest startup packet, as PostgreSQL's `MAX_STARTUP_PACKET_LENGTH` (10 000).
    pub startup_max: usize,
    /// Largest authentication message from either peer (password, SASL
    /// exchanges, Authentication*). PostgreSQL caps SASL messages well below this.
    pub auth_msg_max: usize,
    /// Largest message the proxy must hold whole to inspect (ErrorResponse,
    /// ParameterStatus, DataRow of the injection check...). At most a ring's capacity.
    pub inspect_max: usize,
    /// Largest message forwarded by length without inspection (PgBouncer's
    /// `max_packet_size` default is 2 GiB; PostgreSQL caps a message at 1 GiB).
    pub max_packet_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            startup_max: 10_000,
            auth_msg_max: 8 * 1024,
            inspect_max: crate::buf::RING_CAPACITY,
            max_packet_size: 1 << 30,
        }
    }
}

/// A framing or decoding error. `Copy`, never allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// The body is shorter than a field needs; the text names the field.
    Short(&'static str),
    /// A length field is below its minimum (or negative).
    BadLength { tag: u8, len: i32 },
    /// A length field exceeds the cap for this tag in this phase.
    TooLong { tag: u8, len: usize, max: usize },
    /// A C string has no terminating NUL; the text names the field.
    MissingNul(&'static str),
    /// Bytes remain after the last field; the text names the message.
    TrailingData(&'static str),
    /// A tag that is not legal in this phase.
    UnexpectedTag { phase: FramePhase, tag: u8 },
    /// A startup packet whose code is not a known request or protocol 3.x.
    BadStartupCode(i32),
    /// A field value outside its domain; the text names the field.
    BadValue(&'static str),
    /// An encoder was asked to write a C string containing NUL, or a length overflowed.
    Encode(&'static str),
    /// Valid protocol the proxy does not support in this mode.
    Unsupported(&'static str),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProtoError::Short(w) => write!(f, "message too short: {w}"),
            ProtoError::BadLength { tag, len } => {
                write!(f, "invalid length {len} for message {}", TagDisplay(tag))
            }
            ProtoError::TooLong { tag, len, max } => write!(
                f,
                "message {} of {len} bytes exceeds the limit of {max}",
                TagDisplay(tag)
            ),
            ProtoError::MissingNul(w) => write!(f, "missing string terminator in {w}"),
            ProtoError::TrailingData(w) => write!(f, "trailing data after {w}"),
            ProtoError::UnexpectedTag { phase, tag } => write!(
                f,
                "unexpected message {} in {} phase",
                TagDisplay(tag),
                phase.as_str()
            ),
            ProtoError::BadStartupCode(c) => write!(f, "unsupported startup code {c}"),
            ProtoError::BadValue(w) => write!(f, "invalid value for {w}"),
            ProtoError::Encode(w) => write!(f, "cannot encode {w}"),
            ProtoError::Unsupported(w) => write!(f, "{w} are not supported"),
        }
    }
}

/// Prints a tag as `'Q'` when printable, else as `0x1f`. Tag 0 is "startup".
pub struct TagDisplay(pub u8);

impl fmt::Display for TagDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("startup"),
            t if t.is_ascii_graphic() => write!(f, "'{}'", t as char),
            t => write!(f, "0x{t:02x}"),
        }
    }
}
