//! Bounds-checked cursor over one message body: the only code in pgvpd that
//! slices bytes received from a peer.
//!
//! Owns: `Reader`, a rustls-style reader with `take`, fixed-width big-endian
//! integers, `cstr` (NUL search bounded by the buffer), `rest` and `finish`
//! (which rejects trailing data).
//! Must not: allocate, panic, or compute an offset without `checked_add`.
//! Invariants: `pos <= buf.len()` at all times; every returned slice borrows
//! from the input; on `Err` the cursor has not moved.

use super::ProtoError;

/// A cursor over `buf`. Each accessor either consumes exactly the bytes of
/// its field or returns an error naming the field (`what`) and consumes nothing.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The next `n` bytes. `ProtoError::Short(what)` if fewer remain.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtoError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(ProtoError::Short(what))?;
        let s = self.buf.get(self.pos..end).ok_or(ProtoError::Short(what))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ProtoError> {
        let s = self.take(N, what)?;
        <[u8; N]>::try_from(s).map_err(|_| ProtoError::Short(what))
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, ProtoError> {
        Ok(u8::from_be_bytes(self.array::<1>(what)?))
    }

    pub fn u16_be(&mut self, what: &'static str) -> Result<u16, ProtoError> {
        Ok(u16::from_be_bytes(self.array::<2>(what)?))
    }

    pub fn i16_be(&mut self, what: &'static str) -> Result<i16, ProtoError> {
        Ok(i16::from_be_bytes(self.array::<2>(what)?))
    }

    pub fn i32_be(&mut self, what: &'static str) -> Result<i32, ProtoError> {
        Ok(i32::from_be_bytes(self.array::<4>(what)?))
    }

    /// The bytes before the next NUL; the NUL is consumed but not returned.
    /// `ProtoError::MissingNul(what)` if no NUL remains.
    pub fn cstr(&mut self, what: &'static str) -> Result<&'a [u8], ProtoError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtoError::MissingNul(what))?;
        let s = rest.get(..n).ok_or(ProtoError::MissingNul(what))?;
        let end = n
            .checked_add(1)
            .and_then(|n1| self.pos.checked_add(n1))
            .ok_or(ProtoError::MissingNul(what))?;
        self.pos = end;
        Ok(s)
    }

    /// Everything not consumed yet (possibly empty); the reader is then empty.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        s
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Ends decoding: `ProtoError::TrailingData(what)` if any byte is left.
    pub fn finish(self, what: &'static str) -> Result<(), ProtoError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::TrailingData(what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_short() {
        let buf = [0x01, 0xff, 0xfe, 0x00, 0x00, 0x01, 0x00];
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8("a"), Ok(1));
        assert_eq!(r.i16_be("b"), Ok(-2));
        assert_eq!(r.remaining(), 4);
        assert_eq!(r.i32_be("c"), Ok(256));
        assert!(r.is_empty());
        assert_eq!(r.u8("d"), Err(ProtoError::Short("d")));
        assert_eq!(r.clone().finish("m"), Ok(()));

        let mut r = Reader::new(&[0xff, 0xfe]);
        assert_eq!(r.u16_be("u"), Ok(0xfffe));
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.i32_be("x"), Err(ProtoError::Short("x")));
        // a failed read does not move the cursor
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.finish("m"), Err(ProtoError::TrailingData("m")));
    }

    #[test]
    fn take_overflow_and_bounds() {
        let buf = [1u8, 2, 3];
        let mut r = Reader::new(&buf);
        assert_eq!(r.take(1, "t"), Ok(&[1u8][..]));
        assert_eq!(r.take(usize::MAX, "t"), Err(ProtoError::Short("t")));
        assert_eq!(r.take(3, "t"), Err(ProtoError::Short("t")));
        assert_eq!(r.take(2, "t"), Ok(&[2u8, 3][..]));
        assert_eq!(r.take(0, "t"), Ok(&[][..]));
    }

    #[test]
    fn cstr_cases() {
        let mut r = Reader::new(b"ab\0\0cd");
        assert_eq!(r.cstr("s"), Ok(&b"ab"[..]));
        assert_eq!(r.cstr("s"), Ok(&b""[..]));
        assert_eq!(r.cstr("s"), Err(ProtoError::MissingNul("s")));
        assert_eq!(r.rest(), b"cd");
        assert_eq!(r.rest(), b"");
        assert_eq!(r.cstr("s"), Err(ProtoError::MissingNul("s")));
    }
}
