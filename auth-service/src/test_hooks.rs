//! Points where a test can hold a call, to make a race happen every time (the `test-util`
//! feature only; never in a release binary). A hold is keyed by something the test chose, so
//! other tests running at once pass straight through.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use tokio::sync::oneshot;

type Holds = BTreeMap<String, (oneshot::Sender<()>, oneshot::Receiver<()>)>;

static CLIENT_GRANTS: Mutex<Holds> = Mutex::new(BTreeMap::new());

fn holds() -> MutexGuard<'static, Holds> {
    CLIENT_GRANTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A held client-credentials grant: [`Held::reached`] resolves once the grant for the account
/// has authenticated the client and read the account, and the grant goes on when `Held` is
/// released (or dropped).
pub struct Held {
    pub reached: oneshot::Receiver<()>,
    pub release: oneshot::Sender<()>,
}

/// Holds the next client-credentials grant of the service account named `name`, between its
/// reading the account and its signing the token.
pub fn hold_client_grant(name: &str) -> Held {
    let (reached_tx, reached) = oneshot::channel();
    let (release, release_rx) = oneshot::channel();
    holds().insert(name.to_owned(), (reached_tx, release_rx));
    Held { reached, release }
}

pub(crate) async fn client_grant(name: &str) {
    let hold = holds().remove(name);
    if let Some((reached, release)) = hold {
        let _ = reached.send(());
        let _ = release.await;
    }
}
