//! Connection slots with generations. A token carries the slot index and the
//! generation it was issued for; an event for a freed (or reused) slot has a
//! stale generation and is dropped (mio warns of spurious events, and one
//! batch may hold events for a slot closed earlier in the batch).

/// Slot indexes fit in 24 bits of a token, below the slot bits of the
/// three reserved tokens (`0xFFFFFD..=0xFFFFFF`), so no token of a slot can
/// equal one of them whatever its generation and flags.
pub const MAX_SLOTS: usize = (1 << 24) - 3;

struct Entry<T> {
    generation: u64,
    value: Option<T>,
}

pub struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value`; returns its slot and generation, or `None` when full.
    pub fn insert(&mut self, value: T) -> Option<(usize, u64)> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                if self.entries.len() >= MAX_SLOTS {
                    return None;
                }
                self.entries.push(Entry {
                    generation: 0,
                    value: None,
                });
                self.entries.len() - 1
            }
        };
        let e = self.entries.get_mut(slot)?;
        e.value = Some(value);
        self.len += 1;
        Some((slot, e.generation))
    }

    pub fn get_mut(&mut self, slot: usize, generation: u64) -> Option<&mut T> {
        let e = self.entries.get_mut(slot)?;
        if e.generation == generation {
            e.value.as_mut()
        } else {
            None
        }
    }

    pub fn get(&self, slot: usize, generation: u64) -> Option<&T> {
        let e = self.entries.get(slot)?;
        if e.generation == generation {
            e.value.as_ref()
        } else {
            None
        }
    }

    /// The current generation of `slot` (of its value if occupied).
    pub fn generation(&self, slot: usize) -> u64 {
        self.entries.get(slot).map_or(0, |e| e.generation)
    }

    /// Frees the slot; its generation advances so old tokens go stale.
    pub fn remove(&mut self, slot: usize) -> Option<T> {
        let e = self.entries.get_mut(slot)?;
        let v = e.value.take()?;
        e.generation = e.generation.wrapping_add(1) & super::token::GEN_MASK;
        self.free.push(slot);
        self.len -= 1;
        Some(v)
    }

    /// Slots currently holding a value, with their generations.
    pub fn occupied(&self) -> Vec<(usize, u64)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.value.is_some())
            .map(|(i, e)| (i, e.generation))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_generation_is_rejected() {
        let mut s = Slab::default();
        let (a, ga) = s.insert("a").unwrap();
        assert_eq!(s.get_mut(a, ga).copied(), Some("a"));
        assert_eq!(s.remove(a), Some("a"));
        let (b, gb) = s.insert("b").unwrap();
        assert_eq!(a, b, "slot reused");
        assert_ne!(ga, gb);
        assert_eq!(s.get_mut(a, ga), None, "old token is stale");
        assert_eq!(s.get(b, gb).copied(), Some("b"));
        assert_eq!(s.len(), 1);
        assert_eq!(s.remove(a), Some("b"));
        assert_eq!(s.remove(a), None);
        assert!(s.is_empty());
    }
}
