//! Direct routing (`--direct`): a [`DirectClient`] behind the queue/flush/recv interface,
//! one request at a time.

use std::collections::VecDeque;

use super::conn::{Done, Kind, OpError};
use crate::direct::DirectClient;

/// A [`DirectClient`] behind the queue/flush/recv interface.
pub(super) struct DirectConn {
    pub(super) client: DirectClient,
    pub(super) queued: VecDeque<(Vec<u8>, Option<Vec<u8>>)>,
}

impl DirectConn {
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
