//! One memcached binary-protocol connection on the coordinator port. To be written.

use std::net::{SocketAddr, TcpStream};

use super::Coordinator;

/// Serves the connection until the client quits or closes.
pub(super) fn serve(_coordinator: &Coordinator, _stream: TcpStream, _peer: SocketAddr) {}
