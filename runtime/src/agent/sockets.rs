//! `wasi:sockets`, present so ordinary guests instantiate, and denying every
//! call with `access-denied` (invariant 5: an agent's only I/O is the
//! kernel). No socket, datagram stream or name lookup can ever be created,
//! so the methods on those resources are unreachable; they trap if a
//! forged handle ever reached them.

use super::bindings::wasi::sockets::network::ErrorCode;

pub type SocketError = wasmtime_wasi::TrappableError<ErrorCode>;

/// The one network an agent is handed; it grants nothing.
pub struct Network;

/// Stands in for every socket-like resource. Never constructed.
pub enum NoSocket {}

pub(super) fn denied<T>() -> Result<T, SocketError> {
    Err(ErrorCode::AccessDenied.into())
}

mod host {
    use wasmtime::component::Resource;
    use wasmtime_wasi_io::poll::DynPollable;
    use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

    use super::super::bindings::wasi::sockets::{
        instance_network, ip_name_lookup, network, tcp, tcp_create_socket, udp, udp_create_socket,
    };
    use super::super::state::AgentState;
    use super::{denied, Network, NoSocket, SocketError};
    use network::{ErrorCode, IpAddressFamily, IpSocketAddress};

    type R<T> = Result<T, SocketError>;
    type W<T> = wasmtime::Result<T>;

    /// A method on a resource that cannot exist.
    fn none<T>(_: Resource<NoSocket>) -> R<T> {
        Err(SocketError::trap(wasmtime::format_err!(
            "no socket exists in a Nexus agent"
        )))
    }

    fn none_w<T>(_: Resource<NoSocket>) -> W<T> {
        Err(wasmtime::format_err!("no socket exists in a Nexus agent"))
    }

    impl network::Host for AgentState {
        fn convert_error_code(&mut self, err: SocketError) -> W<ErrorCode> {
            err.downcast()
        }
        async fn network_error_code(
            &mut self,
            _: Resource<wasmtime::Error>,
        ) -> W<Option<ErrorCode>> {
            Ok(None)
        }
    }

    impl network::HostNetwork for AgentState {
        async fn drop(&mut self, n: Resource<Network>) -> W<()> {
            self.table.delete(n)?;
            Ok(())
        }
    }

    impl instance_network::Host for AgentState {
        async fn instance_network(&mut self) -> W<Resource<Network>> {
            Ok(self.table.push(Network)?)
        }
    }

    impl tcp_create_socket::Host for AgentState {
        async fn create_tcp_socket(&mut self, _: IpAddressFamily) -> R<Resource<NoSocket>> {
            denied()
        }
    }

    impl udp_create_socket::Host for AgentState {
        async fn create_udp_socket(&mut self, _: IpAddressFamily) -> R<Resource<NoSocket>> {
            denied()
        }
    }

    impl ip_name_lookup::Host for AgentState {
        async fn resolve_addresses(
            &mut self,
            _: Resource<Network>,
            _: String,
        ) -> R<Resource<NoSocket>> {
            denied()
        }
    }

    impl ip_name_lookup::HostResolveAddressStream for AgentState {
        async fn resolve_next_address(
            &mut self,
            s: Resource<NoSocket>,
        ) -> R<Option<ip_name_lookup::IpAddress>> {
            none(s)
        }
        async fn subscribe(&mut self, s: Resource<NoSocket>) -> W<Resource<DynPollable>> {
            none_w(s)
        }
        async fn drop(&mut self, s: Resource<NoSocket>) -> W<()> {
            none_w(s)
        }
    }

    impl tcp::Host for AgentState {}

    impl tcp::HostTcpSocket for AgentState {
        async fn start_bind(
            &mut self,
            s: Resource<NoSocket>,
            _: Resource<Network>,
            _: IpSocketAddress,
        ) -> R<()> {
            none(s)
        }
        async fn finish_bind(&mut self, s: Resource<NoSocket>) -> R<()> {
            none(s)
        }
        async fn start_connect(
            &mut self,
            s: Resource<NoSocket>,
            _: Resource<Network>,
            _: IpSocketAddress,
        ) -> R<()> {
            none(s)
        }
        async fn finish_connect(
            &mut self,
            s: Resource<NoSocket>,
        ) -> R<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
            none(s)
        }
        async fn start_listen(&mut self, s: Resource<NoSocket>) -> R<()> {
            none(s)
        }
        async fn finish_listen(&mut self, s: Resource<NoSocket>) -> R<()> {
            none(s)
        }
        async fn accept(
            &mut self,
            s: Resource<NoSocket>,
        ) -> R<(
            Resource<NoSocket>,
            Resource<DynInputStream>,
            Resource<DynOutputStream>,
        )> {
            none(s)
        }
        async fn local_address(&mut self, s: Resource<NoSocket>) -> R<IpSocketAddress> {
            none(s)
        }
        async fn remote_address(&mut self, s: Resource<NoSocket>) -> R<IpSocketAddress> {
            none(s)
        }
        async fn is_listening(&mut self, s: Resource<NoSocket>) -> W<bool> {
            none_w(s)
        }
        async fn address_family(&mut self, s: Resource<NoSocket>) -> W<IpAddressFamily> {
            none_w(s)
        }
        async fn set_listen_backlog_size(&mut self, s: Resource<NoSocket>, _: u64) -> R<()> {
            none(s)
        }
        async fn keep_alive_enabled(&mut self, s: Resource<NoSocket>) -> R<bool> {
            none(s)
        }
        async fn set_keep_alive_enabled(&mut self, s: Resource<NoSocket>, _: bool) -> R<()> {
            none(s)
        }
        async fn keep_alive_idle_time(&mut self, s: Resource<NoSocket>) -> R<u64> {
            none(s)
        }
        async fn set_keep_alive_idle_time(&mut self, s: Resource<NoSocket>, _: u64) -> R<()> {
            none(s)
        }
        async fn keep_alive_interval(&mut self, s: Resource<NoSocket>) -> R<u64> {
            none(s)
        }
        async fn set_keep_alive_interval(&mut self, s: Resource<NoSocket>, _: u64) -> R<()> {
            none(s)
        }
        async fn keep_alive_count(&mut self, s: Resource<NoSocket>) -> R<u32> {
            none(s)
        }
        async fn set_keep_alive_count(&mut self, s: Resource<NoSocket>, _: u32) -> R<()> {
            none(s)
        }
        async fn hop_limit(&mut self, s: Resource<NoSocket>) -> R<u8> {
            none(s)
        }
        async fn set_hop_limit(&mut self, s: Resource<NoSocket>, _: u8) -> R<()> {
            none(s)
        }
        async fn receive_buffer_size(&mut self, s: Resource<NoSocket>) -> R<u64> {
            none(s)
        }
        async fn set_receive_buffer_size(&mut self, s: Resource<NoSocket>, _: u64) -> R<()> {
            none(s)
        }
        async fn send_buffer_size(&mut self, s: Resource<NoSocket>) -> R<u64> {
            none(s)
        }
        async fn set_send_buffer_size(&mut self, s: Resource<NoSocket>, _: u64) -> R<()> {
            none(s)
        }
        async fn subscribe(&mut self, s: Resource<NoSocket>) -> W<Resource<DynPollable>> {
            none_w(s)
        }
        async fn shutdown(&mut self, s: Resource<NoSocket>, _: tcp::ShutdownType) -> R<()> {
            none(s)
        }
        async fn drop(&mut self, s: Resource<NoSocket>) -> W<()> {
            none_w(s)
        }
    }

    impl udp::Host for AgentState {}

    impl udp::HostUdpSocket for AgentState {
        async fn start_bind(
            &mut self,
            s: Resource<NoSocket>,
            _: Resource<Network>,
            _: IpSocketAddress,
        ) -> R<()> {
            none(s)
        }
        async fn finish_bind(&mut self, s: Resource<NoSocket>) -> R<()> {
            none(s)
        }
        async fn stream(
            &mut self,
            s: Resource<NoSocket>,
            _: Option<IpSocketAddress>,
        ) -> R<(Resource<NoSocket>, Resource<NoSocket>)> {
            none(s)
        }
        async fn local_address(&mut self, s: Resource<NoSocket>) -> R<IpSocketAddress> {
            none(s)
        }
        async fn remote_address(&mut self, s: Resource<NoSocket>) -> R<IpSocketAddress> {
            none(s)
        }
        async fn address_family(&mut self, s: Resource<NoSocket>) -> W<IpAddressFamily> {
            none_w(s)
        }
        async fn unicast_hop_limit(&mut self, s: Resource<NoSocket>) -> R<u8> {
            none(s)
        }
        async fn set_unicast_hop_limit(&mut self, s: Resource<NoSocket>, _: u8) -> R<()> {
            none(s)
        }
        async fn receive_buffer_size(&mut self, s: Resource<NoSocket>) -> R<u64> {
            none(s)
        }
        async fn set_receive_buffer_size(&mut self, s: Resource<NoSocket>, _: u64) -> R<()> {
            none(s)
        }
        async fn send_buffer_size(&mut self, s: Resource<NoSocket>) -> R<u64> {
            none(s)
        }
        async fn set_send_buffer_size(&mut self, s: Resource<NoSocket>, _: u64) -> R<()> {
            none(s)
        }
        async fn subscribe(&mut self, s: Resource<NoSocket>) -> W<Resource<DynPollable>> {
            none_w(s)
        }
        async fn drop(&mut self, s: Resource<NoSocket>) -> W<()> {
            none_w(s)
        }
    }

    impl udp::HostIncomingDatagramStream for AgentState {
        async fn receive(
            &mut self,
            s: Resource<NoSocket>,
            _: u64,
        ) -> R<Vec<udp::IncomingDatagram>> {
            none(s)
        }
        async fn subscribe(&mut self, s: Resource<NoSocket>) -> W<Resource<DynPollable>> {
            none_w(s)
        }
        async fn drop(&mut self, s: Resource<NoSocket>) -> W<()> {
            none_w(s)
        }
    }

    impl udp::HostOutgoingDatagramStream for AgentState {
        async fn check_send(&mut self, s: Resource<NoSocket>) -> R<u64> {
            none(s)
        }
        async fn send(&mut self, s: Resource<NoSocket>, _: Vec<udp::OutgoingDatagram>) -> R<u64> {
            none(s)
        }
        async fn subscribe(&mut self, s: Resource<NoSocket>) -> W<Resource<DynPollable>> {
            none_w(s)
        }
        async fn drop(&mut self, s: Resource<NoSocket>) -> W<()> {
            none_w(s)
        }
    }
}
