//! Snapshot streams of the service: send a snapshot of a container, receive one into a
//! container that is not mounted (`store/transfer.rs` does the work).

use std::io::{Read, Write};

use super::transfers::{Direction, Transfer};
use super::{mounts, Service, ServiceError, ServiceResult};
use crate::store::{ReceiveRecord, Received, ResumeToken, Sent};

impl Service {
    /// Writes snapshot `snapshot` of a container to `out`, full or incremental from `from`.
    pub fn send_snapshot(
        &self,
        id_or_name: &str,
        snapshot: &str,
        from: Option<&str>,
        out: &mut dyn Write,
    ) -> ServiceResult<Sent> {
        let c = self.container(id_or_name)?;
        let t = self.transfers.start(Direction::Send, &c.name, snapshot);
        Ok(self
            .store
            .send_with(&c.id, snapshot, from, out, &t.transfer.progress)?)
    }

    /// The rest of a cut stream, as the receiver's resume token describes it.
    pub fn send_resumed(
        &self,
        id_or_name: &str,
        token: &str,
        out: &mut dyn Write,
    ) -> ServiceResult<Sent> {
        let c = self.container(id_or_name)?;
        let token = ResumeToken::decode(token)?;
        let t = self
            .transfers
            .start(Direction::Send, &c.name, &token.snapshot);
        Ok(self
            .store
            .send_resumed(&c.id, &token, out, &t.transfer.progress)?)
    }

    /// The cut receive into `name` waiting to be resumed.
    pub fn receive_state(&self, name: &str) -> ServiceResult<ReceiveRecord> {
        match self.store.receive_into(name)? {
            Some((_, rec)) => Ok(rec),
            None => Err(ServiceError::NotFound(format!(
                "no receive into container {name:?} waits to be resumed"
            ))),
        }
    }

    /// Drops the cut receive into `name`.
    pub fn abort_receive(&self, name: &str) -> ServiceResult<ReceiveRecord> {
        Ok(self.store.abort_receive(name)?)
    }

    /// The snapshot streams going in and out now, oldest first.
    pub fn transfers(&self) -> Vec<std::sync::Arc<Transfer>> {
        self.transfers.list()
    }

    /// Receives a stream into container `name` (see `Store::receive`). A mounted target is
    /// refused: its live tree would change under the mount. The mounts lock is held from the
    /// last check to the end of the commit, so the container is not mounted meanwhile.
    pub fn receive_snapshot(
        &self,
        name: &str,
        rollback: bool,
        input: &mut dyn Read,
    ) -> ServiceResult<Received> {
        let mounted = |id: &crate::ids::ContainerId, m: &std::collections::HashMap<_, _>| -> bool {
            m.contains_key(id)
        };
        if let Some(c) = self.store.container_by_name(name)? {
            let mut m = self.mounts.lock();
            mounts::reap_locked(&mut m);
            if mounted(&c.id, &m) {
                return Err(ServiceError::Conflict(format!(
                    "container {name:?} is mounted: stop it first (its live tree would change under the mount)"
                )));
            }
        }
        let mut held = None;
        let t = self.transfers.start(Direction::Receive, name, "");
        let r = self.store.receive_with(
            input,
            name,
            rollback,
            &t.transfer.progress,
            &mut |target: Option<&crate::ids::ContainerId>| {
                let mut m = self.mounts.lock();
                mounts::reap_locked(&mut m);
                if target.is_some_and(|id| mounted(id, &m)) {
                    return Err(crate::store::StoreError::Conflict(format!(
                        "container {name:?} was mounted during the receive: stop it and receive again"
                    )));
                }
                held = Some(m);
                Ok(())
            },
        );
        drop(held);
        Ok(r?)
    }
}
