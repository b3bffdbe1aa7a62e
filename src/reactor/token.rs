//! Token layout: `slot | generation << 24 | side << 63`, with the listener and
//! the waker reserved at the top of the range (their slot bits are all ones,
//! above `slab::MAX_SLOTS`). Pooled servers not lent to a client live in a
//! second slab; their tokens (and deadline entries) carry `LINK` in the
//! generation field, above every real generation (`GEN_MASK`). A client
//! connection's outbound cancel socket (`query_timeout`) has the client's
//! slot and generation with `LINK` *and* the server side bit, a combination
//! no link token has.

use crate::conn::Side;
use mio::Token;

pub const LISTENER: Token = Token(usize::MAX);
pub const WAKER: Token = Token(usize::MAX - 1);
pub const TLS_LISTENER: Token = Token(usize::MAX - 2);

const SLOT_BITS: u32 = 24;
const SLOT_MASK: usize = (1 << SLOT_BITS) - 1;
/// Generations use 38 of the 39 bits between the slot and the side bit.
pub const GEN_MASK: u64 = (1 << 38) - 1;
/// The 39th bit: the token names a pooled server in the links slab.
pub const LINK: u64 = 1 << 38;

pub fn encode(slot: usize, generation: u64, side: Side) -> Token {
    let side_bit = match side {
        Side::Client => 0usize,
        Side::Server => 1usize << 63,
    };
    Token((slot & SLOT_MASK) | (((generation & GEN_MASK) as usize) << SLOT_BITS) | side_bit)
}

/// The token of a pooled server in the links slab.
pub fn encode_link(slot: usize, generation: u64) -> Token {
    Token((slot & SLOT_MASK) | ((((generation & GEN_MASK) | LINK) as usize) << SLOT_BITS))
}

/// The token of the cancel socket of client connection (`slot`, `generation`).
pub fn encode_cancel(slot: usize, generation: u64) -> Token {
    Token(encode_link(slot, generation).0 | (1usize << 63))
}

/// (slot, generation, side); a links-slab token has `LINK` set in the
/// generation (and the client side); a cancel socket's has `LINK` and the
/// server side.
pub fn decode(t: Token) -> (usize, u64, Side) {
    let slot = t.0 & SLOT_MASK;
    let generation = ((t.0 >> SLOT_BITS) as u64) & (GEN_MASK | LINK);
    let side = if t.0 >> 63 == 1 {
        Side::Server
    } else {
        Side::Client
    };
    (slot, generation, side)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_reserved() {
        for (slot, g, side) in [
            (0, 0, Side::Client),
            (12345, 77, Side::Server),
            (crate::reactor::slab::MAX_SLOTS - 1, GEN_MASK, Side::Client),
            (crate::reactor::slab::MAX_SLOTS - 1, GEN_MASK, Side::Server),
        ] {
            let t = encode(slot, g, side);
            assert_eq!(decode(t), (slot, g, side));
            assert_ne!(t, LISTENER);
            assert_ne!(t, WAKER);
            assert_ne!(t, TLS_LISTENER);
            let l = encode_link(slot, g);
            assert_eq!(decode(l), (slot, g | LINK, Side::Client));
            assert_ne!(l, t);
            let c = encode_cancel(slot, g);
            assert_eq!(decode(c), (slot, g | LINK, Side::Server));
            assert_ne!(c, l);
            assert_ne!(c, encode(slot, g, Side::Server));
            assert_ne!(c, LISTENER);
            assert_ne!(c, WAKER);
            assert_ne!(c, TLS_LISTENER);
        }
    }
}
