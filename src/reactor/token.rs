//! Token layout: `slot | generation << 24 | side << 63`, with the listener and
//! the waker reserved at the top of the range (their slot bits are all ones,
//! above `slab::MAX_SLOTS`).

use crate::conn::Side;
use mio::Token;

pub const LISTENER: Token = Token(usize::MAX);
pub const WAKER: Token = Token(usize::MAX - 1);
pub const TLS_LISTENER: Token = Token(usize::MAX - 2);

const SLOT_BITS: u32 = 24;
const SLOT_MASK: usize = (1 << SLOT_BITS) - 1;
/// Generations use the 39 bits between the slot and the side bit.
pub const GEN_MASK: u64 = (1 << 39) - 1;

pub fn encode(slot: usize, generation: u64, side: Side) -> Token {
    let side_bit = match side {
        Side::Client => 0usize,
        Side::Server => 1usize << 63,
    };
    Token((slot & SLOT_MASK) | (((generation & GEN_MASK) as usize) << SLOT_BITS) | side_bit)
}

pub fn decode(t: Token) -> (usize, u64, Side) {
    let slot = t.0 & SLOT_MASK;
    let generation = ((t.0 >> SLOT_BITS) as u64) & GEN_MASK;
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
            ((1 << 24) - 3, GEN_MASK, Side::Client),
        ] {
            let t = encode(slot, g, side);
            assert_eq!(decode(t), (slot, g, side));
            assert_ne!(t, LISTENER);
            assert_ne!(t, WAKER);
            assert_ne!(t, TLS_LISTENER);
        }
    }
}
