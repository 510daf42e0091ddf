//! Host bindings generated from `wit/` for what Nexus implements itself:
//! `wasi:filesystem`, `nexus:kernel/pipe` and `nexus:kernel/timer` on the
//! kernel, `wasi:clocks/monotonic-clock` on the kernel's timer driver,
//! `wasi:sockets` denying every call, `wasi:http` as the kernel's egress, and
//! `nexus:kernel/identity`. The
//! `wasi:io` and `wasi:clocks` types are wasmtime-wasi's own, so streams and
//! pollables interoperate with the rest of its implementation.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "nexus:kernel/filesystem-host",
    imports: {
        "wasi:filesystem/types.[method]descriptor.read-via-stream": trappable,
        "wasi:filesystem/types.[method]descriptor.write-via-stream": trappable,
        "wasi:filesystem/types.[method]descriptor.append-via-stream": trappable,
        "wasi:filesystem/types.[drop]descriptor": trappable,
        "wasi:filesystem/types.[drop]directory-entry-stream": trappable,
        "wasi:filesystem/types.filesystem-error-code": trappable,
        "wasi:filesystem/preopens.get-directories": trappable,
        "nexus:kernel/identity.whoami": trappable,
        default: async | trappable,
    },
    trappable_error_type: {
        "wasi:io/streams.stream-error" => wasmtime_wasi_io::streams::StreamError,
        "wasi:filesystem/types.error-code" => crate::agent::fs::FsError,
        "wasi:sockets/network.error-code" => crate::agent::sockets::SocketError,
        "wasi:http/types.error-code" => crate::agent::http::HttpError,
        "wasi:http/types.header-error" => crate::agent::http::HeaderError,
    },
    with: {
        "wasi:io/poll": wasmtime_wasi_io::bindings::wasi::io::poll,
        "wasi:io/streams": wasmtime_wasi_io::bindings::wasi::io::streams,
        "wasi:io/error": wasmtime_wasi_io::bindings::wasi::io::error,
        "wasi:clocks/wall-clock": wasmtime_wasi::p2::bindings::clocks::wall_clock,
        "wasi:filesystem/types.descriptor": crate::agent::fs::Descriptor,
        "wasi:filesystem/types.directory-entry-stream": crate::agent::fs::DirStream,
        "nexus:kernel/pipe.pipe-end": crate::agent::pipe::PipeEndResource,
        "nexus:kernel/timer.interval": crate::agent::timer::Interval,
        "wasi:sockets/network.network": crate::agent::sockets::Network,
        "wasi:sockets/tcp.tcp-socket": crate::agent::sockets::NoSocket,
        "wasi:sockets/udp.udp-socket": crate::agent::sockets::NoSocket,
        "wasi:sockets/udp.incoming-datagram-stream": crate::agent::sockets::NoSocket,
        "wasi:sockets/udp.outgoing-datagram-stream": crate::agent::sockets::NoSocket,
        "wasi:sockets/ip-name-lookup.resolve-address-stream": crate::agent::sockets::NoSocket,
        "wasi:http/types.fields": crate::agent::http::Fields,
        "wasi:http/types.outgoing-request": crate::agent::http::OutgoingRequest,
        "wasi:http/types.request-options": crate::agent::http::RequestOptions,
        "wasi:http/types.outgoing-response": crate::agent::http::OutgoingResponse,
        "wasi:http/types.outgoing-body": crate::agent::http::OutgoingBody,
        "wasi:http/types.incoming-request": crate::agent::http::NoHttp,
        "wasi:http/types.response-outparam": crate::agent::http::NoHttp,
        "wasi:http/types.incoming-response": crate::agent::http::IncomingResponse,
        "wasi:http/types.incoming-body": crate::agent::http::IncomingBody,
        "wasi:http/types.future-trailers": crate::agent::http::FutureTrailers,
        "wasi:http/types.future-incoming-response": crate::agent::http::FutureResponse,
    },
});
