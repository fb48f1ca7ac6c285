//! Apache Mesos's v1 HTTP APIs on the wire: the messages of `mesos.v1`, `mesos.v1.scheduler`, `mesos.v1.master` and
//! `mesos.v1.agent` (generated from `proto/mesos/v1/`, Mesos 1.x's names and numbers), their two encodings, the
//! RecordIO framing of event streams, and the conversions to and from [`crate::model`].
//!
//! # Layout
//! - [`v1`]: the generated messages (`v1::scheduler::Call`, `v1::master::Event`, ...).
//! - [`codec`]: [`codec::Format`] (JSON or protobuf, from `Content-Type`/`Accept`) and [`codec::decode`] /
//!   [`codec::encode`] of any [`codec::V1Message`]: one code path for both encodings, so a JSON body and a protobuf
//!   body become the same value. The JSON is Mesos's: proto field names, enums by name, `bytes` in base64, 64-bit
//!   integers as numbers, unset fields left out; unknown JSON fields are ignored and missing required fields
//!   refused, as Mesos's parser does.
//! - [`recordio`]: `<length>\n<record>` framing for the SUBSCRIBE streams, an encoder and an incremental decoder with
//!   a length cap (what a Rust client of the operator stream reads with).
//! - `convert`: `model` ⇄ `v1`. Model → v1 is infallible; v1 → model fails with a [`crate::ConvertError`] naming
//!   the field.
//!
//! A client of the operator event stream reads chunks, feeds them to a [`recordio::Decoder`], and decodes each
//! record with `codec::decode::<v1::master::Event>(record, format)`.

pub mod codec;
mod convert;
pub mod recordio;

pub use convert::*;

/// Generated code for Mesos's v1 packages (nested as the packages are, so their cross-references resolve).
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("mesos.v1");

    pub mod scheduler {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mesos.v1.scheduler");
    }
    pub mod master {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mesos.v1.master");
    }
    pub mod agent {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mesos.v1.agent");
    }
}
