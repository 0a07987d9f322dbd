//! Direct routing (`--direct`): a [`DirectClient`] behind the queue/flush/recv interface,
//! one request at a time.

use std::collections::VecDeque;

use super::conn::{Cmd, Done, Kind, OpError};
use crate::direct::DirectClient;

/// A [`DirectClient`] behind the queue/flush/recv interface.
pub(super) struct DirectConn {
    pub(super) client: DirectClient,
    pub(super) queued: VecDeque<(Vec<u8>, Option<Vec<u8>>)>,
}

impl DirectConn {
    /// Keeps a get or a set for [`DirectConn::recv`]; any other request is refused (the
    /// run allows only `--workload get-set` with `--direct`).
    pub(super) fn queue(&mut self, cmd: Cmd<'_>) -> Result<(), OpError> {
        self.queued.push_back(match cmd {
            Cmd::Get(key) => (key.to_vec(), None),
            Cmd::Set(key, value) => (key.to_vec(), Some(value.to_vec())),
            other => {
                return Err(OpError::Broken(format!(
                    "direct routing sends gets and sets only, not {:?}",
                    other.kind()
                )));
            }
        });
        Ok(())
    }

    pub(super) fn recv(&mut self, kind: Kind, out: Option<&mut Vec<u8>>) -> Result<Done, OpError> {
        let Some((key, value)) = self.queued.pop_front() else {
            return Err(OpError::Broken("no request queued".into()));
        };
        match (kind, value) {
            (Kind::Get, None) => match self.client.get(&key)? {
                Some(found) => {
                    if let Some(out) = out {
                        *out = found.value;
                    }
                    Ok(Done::Hit)
                }
                None => Ok(Done::Miss),
            },
            (Kind::Set, Some(value)) => {
                self.client.put(&key, &value)?;
                Ok(Done::Stored)
            }
            _ => Err(OpError::Broken(
                "reply asked for another kind of request".into(),
            )),
        }
    }
}
