//! A cache within a byte budget that drops what was least recently needed. Use is counted in rounds:
//! whoever fills it starts a round ([`ByteLru::next_round`]) and marks what it needs now
//! ([`ByteLru::touch`]); an entry needed in the current round is never dropped, so what is on screen
//! stays even when it alone is over the budget, and nothing is computed again only to be dropped.

use std::collections::HashMap;
use std::hash::Hash;

struct Slot<V> {
    value: V,
    bytes: usize,
    round: u64,
}

pub struct ByteLru<K, V> {
    map: HashMap<K, Slot<V>>,
    budget: usize,
    bytes: usize,
    round: u64,
}

impl<K: Hash + Eq + Clone, V> ByteLru<K, V> {
    pub fn new(budget: usize) -> Self {
        ByteLru {
            map: HashMap::new(),
            budget,
            bytes: 0,
            round: 0,
        }
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|s| &s.value)
    }

    pub fn contains_key(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entries' bytes, as given to [`ByteLru::insert`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Start a round of use: entries touched or inserted from now on are the newest.
    pub fn next_round(&mut self) {
        self.round += 1;
    }

    /// Mark `k` as needed in this round; whether it is cached.
    pub fn touch(&mut self, k: &K) -> bool {
        match self.map.get_mut(k) {
            Some(s) => {
                s.round = self.round;
                true
            }
            None => false,
        }
    }

    /// Keep `value` (about `bytes` bytes) as needed in this round, then drop the entries needed
    /// longest ago, oldest first, until the cache is within its budget or only this round's are left.
    pub fn insert(&mut self, k: K, value: V, bytes: usize) {
        let round = self.round;
        if let Some(old) = self.map.insert(
            k,
            Slot {
                value,
                bytes,
                round,
            },
        ) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        if self.bytes <= self.budget {
            return;
        }
        let mut old: Vec<(u64, K)> = self
            .map
            .iter()
            .filter(|(_, s)| s.round < round)
            .map(|(k, s)| (s.round, k.clone()))
            .collect();
        old.sort_by_key(|o| o.0);
        for (_, k) in old {
            if self.bytes <= self.budget {
                break;
            }
            if let Some(s) = self.map.remove(&k) {
                self.bytes -= s.bytes;
            }
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_needed_go_first_and_this_rounds_stay() {
        let mut c = ByteLru::new(100);
        for k in 0..4 {
            c.next_round();
            c.insert(k, k, 30);
        }
        // 120 bytes > 100: the oldest (0) went
        assert_eq!((c.len(), c.bytes()), (3, 90));
        assert!(!c.contains_key(&0));
        // needing 1 again makes 2 the oldest
        c.next_round();
        assert!(c.touch(&1) && !c.touch(&0));
        c.insert(4, 4, 30);
        assert!(c.contains_key(&1) && !c.contains_key(&2));
        assert_eq!(c.get(&4), Some(&4));
        // what one round needs is kept even over the budget
        c.next_round();
        for k in [1, 3, 4] {
            c.touch(&k);
        }
        c.insert(5, 5, 200);
        assert_eq!((c.len(), c.bytes()), (4, 290));
        // the next round drops them as soon as they are no longer needed
        c.next_round();
        c.touch(&5);
        c.insert(6, 6, 10);
        assert_eq!((c.len(), c.bytes()), (2, 210));
        // replacing an entry counts its new size only
        c.insert(6, 7, 20);
        assert_eq!((c.get(&6), c.bytes()), (Some(&7), 220));
        c.clear();
        assert!(c.is_empty() && c.bytes() == 0);
    }
}
