//! The metadata stand-in: what a cloud's metadata service is to its
//! machines, for the tests that check pods cannot reach it.

use super::config::{NodeFiles, write};
use super::netns::in_netns;
use super::settings::setting;
use crate::process::{Lifetime, Proc, spawn};
use anyhow::Result;
use std::path::Path;

/// The metadata stand-in: busybox's httpd on the link-local address of the
/// test bed's metadata namespace, which pods reach only through the
/// machine's routing, like a cloud's metadata service.
pub(super) fn start_metadata(files: &NodeFiles, lifetime: Lifetime) -> Result<Proc> {
    let root = files.dir.join("metadata");
    std::fs::create_dir_all(&root)?;
    write(&root.join("index.html"), "nestor-testbed metadata\n")?;
    let address = format!("{}:{}", setting("METADATA_IP"), setting("METADATA_PORT"));
    let (program, args) = in_netns(
        setting("METADATA_NETNS"),
        Path::new("/bin/busybox"),
        &[
            "httpd",
            "-f",
            "-p",
            &address,
            "-h",
            &root.display().to_string(),
        ]
        .map(String::from),
    );
    spawn(
        "metadata",
        &program,
        &args,
        &[],
        &files.log("metadata"),
        lifetime,
    )
}
