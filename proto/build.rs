//! Compiles `nexus/*.proto` with tonic-build, using the protoc binary that
//! `protoc-bin-vendored` ships, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; this only tells prost-build
    // which protoc to run.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("PROTOC", protoc)
    };
    let protos = ["nexus/transport.proto", "nexus/node.proto"];
    // File bytes travel as `Bytes`: a chunk is not copied into a fresh
    // vector on its way through.
    tonic_prost_build::configure()
        .bytes(".nexus.node.v1.DataChunk.data")
        .bytes(".nexus.node.v1.PutChunk.data")
        .compile_protos(&protos, &["."])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
