//! Serves meta commands through the router. To be written.

use super::Coordinator;
use crate::meta::MetaCommand;

/// Serves one meta command, appending its reply to `out`.
pub(super) fn execute(_coordinator: &Coordinator, command: MetaCommand, out: &mut Vec<u8>) {
    match command {
        MetaCommand::Noop => out.extend_from_slice(b"MN\r\n"),
    }
}
