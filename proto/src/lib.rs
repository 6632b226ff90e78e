//! Generated code for the project's gRPC APIs; one module per protobuf package, nothing hand-written.

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("auth.v1");
    }
}

pub mod person {
    pub mod v1 {
        tonic::include_proto!("person.v1");
    }
}

/// The encoded `FileDescriptorSet` of every package above, for server reflection and for tests
/// that walk each service's methods.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
