//! What the other layers reason about: names, labels and annotations, the
//! inputs the builders take, validation, and status computation. Pure: no
//! client, no I/O, nothing else of this crate.

pub mod backup;
pub mod cached;
pub mod flags;
pub mod guard;
pub mod hash;
pub mod image_ref;
pub mod images;
pub mod inputs;
pub mod names;
pub mod network;
pub mod nodes;
pub mod placement;
pub mod pool_status;
pub mod readable;
pub mod settings;
pub mod status;
pub mod upgrade;
pub mod validate;
