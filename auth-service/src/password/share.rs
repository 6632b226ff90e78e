//! Each client's share of the hashing admission: one client may hold at most `per_client` of the
//! admission slots (workers plus queue) at once, so a burst from one client is refused at its
//! share and leaves the rest for everyone else.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use crate::throttle::Client;

#[derive(Debug)]
pub(super) struct ClientShare {
    per_client: usize,
    /// Slots held per client; a client holding none has no entry, so the map is bounded by the
    /// number of admission slots.
    held: Mutex<HashMap<Client, usize>>,
}

/// One slot of one client's share, given back when dropped.
#[derive(Debug)]
pub(super) struct Held {
    share: Arc<ClientShare>,
    client: Client,
}

impl ClientShare {
    pub(super) fn new(per_client: usize) -> Self {
        Self {
            per_client: per_client.max(1),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `client`, unless it holds its whole share already.
    pub(super) fn try_hold(self: &Arc<Self>, client: Client) -> Option<Held> {
        // The critical sections cannot panic, so a poisoned lock still holds consistent counts.
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(client).or_insert(0);
        if *count >= self.per_client {
            return None;
        }
        *count += 1;
        Some(Held {
            share: self.clone(),
            client,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self
            .share
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_its_share_and_gets_it_back() {
        let share = Arc::new(ClientShare::new(2));
        let a = Client::of("203.0.113.1".parse().unwrap());
        let b = Client::of("203.0.113.2".parse().unwrap());
        let first = share.try_hold(a).unwrap();
        let _second = share.try_hold(a).unwrap();
        assert!(share.try_hold(a).is_none());
        assert!(share.try_hold(b).is_some());
        drop(first);
        assert!(share.try_hold(a).is_some());
    }

    #[test]
    fn a_client_holding_nothing_leaves_no_entry() {
        let share = Arc::new(ClientShare::new(1));
        let a = Client::of("203.0.113.1".parse().unwrap());
        drop(share.try_hold(a));
        assert!(share.held.lock().unwrap().is_empty());
    }
}
