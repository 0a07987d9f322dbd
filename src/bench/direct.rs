//! Direct routing (`--direct`): a [`DirectClient`] behind the queue/flush/recv interface.
//! A flush serves the queued batch with [`DirectClient::execute`] (one write per slave,
//! many requests in flight); the replies are then taken in order.

use std::collections::VecDeque;

use super::conn::{Cmd, Done, Kind, OpError};
use crate::client::ClientError;
use crate::direct::{DirectClient, DirectOp, DirectReply};

/// A [`DirectClient`] behind the queue/flush/recv interface.
pub(super) struct DirectConn {
    pub(super) client: DirectClient,
    /// Requests queued since the last flush: key, and the value of a set.
    pub(super) queued: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Outcomes of the last flushed batch not yet taken.
    pub(super) answered: VecDeque<Result<DirectReply, ClientError>>,
}

impl DirectConn {
    /// A connection over `client`, nothing queued.
    pub(super) fn new(client: DirectClient) -> DirectConn {
        DirectConn {
            client,
            queued: Vec::new(),
            answered: VecDeque::new(),
        }
    }

    /// Keeps a get or a set for the next [`DirectConn::flush`]; any other request is
    /// refused (the run allows only `--workload get-set` with `--direct`).
    pub(super) fn queue(&mut self, cmd: Cmd<'_>) -> Result<(), OpError> {
        self.queued.push(match cmd {
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

    /// Serves the queued batch; its outcomes wait for [`DirectConn::recv`].
    pub(super) fn flush(&mut self) {
        let queued = std::mem::take(&mut self.queued);
        let batch: Vec<DirectOp<'_>> = queued
            .iter()
            .map(|(key, value)| match value {
                None => DirectOp::Get(key),
                Some(value) => DirectOp::Put {
                    key,
                    value,
                    flags: 0,
                },
            })
            .collect();
        self.answered.extend(self.client.execute(&batch));
    }

    pub(super) fn recv(&mut self, kind: Kind, out: Option<&mut Vec<u8>>) -> Result<Done, OpError> {
        let Some(answer) = self.answered.pop_front() else {
            return Err(OpError::Broken("no request queued".into()));
        };
        match (kind, answer?) {
            (Kind::Get, DirectReply::Value(Some(found))) => {
                if let Some(out) = out {
                    *out = found.value;
                }
                Ok(Done::Hit)
            }
            (Kind::Get, DirectReply::Value(None)) => Ok(Done::Miss),
            (Kind::Set, DirectReply::Stored(_)) => Ok(Done::Stored),
            _ => Err(OpError::Broken(
                "reply asked for another kind of request".into(),
            )),
        }
    }
}
