//! `nestor-testbed up [--node] [DIR]` starts a test bed (with `--node`, a
//! real node, CoreDNS and a volume provisioner too) and prints its
//! kubeconfig; `nestor-testbed down [DIR]` stops it by the PIDs it recorded
//! and removes what its node made. `nestor-testbed provisioner KUBECONFIG
//! DIR` is the volume provisioner the node mode runs.

use anyhow::{Result, bail};
use nestor_e2e::TestBed;
use nestor_e2e::process::Lifetime;
use nestor_e2e::testbed::TestBedOptions;
use std::path::PathBuf;

fn default_dir() -> PathBuf {
    std::env::var_os("NESTOR_TESTBED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("nestor-testbed"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let with_node = args.iter().any(|a| a == "--node");
    args.retain(|a| a != "--node");
    if args.first().map(String::as_str) == Some("provisioner") {
        let [_, kubeconfig, dir] = args.as_slice() else {
            bail!("usage: nestor-testbed provisioner KUBECONFIG DIR")
        };
        let client = nestor_e2e::testbed::client_for(std::path::Path::new(kubeconfig)).await?;
        return nestor_e2e::provisioner::run(client, PathBuf::from(dir)).await;
    }
    let dir = args.get(1).map(PathBuf::from).unwrap_or_else(default_dir);
    match args.first().map(String::as_str) {
        Some("up") => {
            if dir.join("pids").exists() {
                bail!(
                    "a test bed is already recorded in {}; run `nestor-testbed down` first",
                    dir.display()
                );
            }
            let options = TestBedOptions {
                node: with_node.then(std::env::current_exe).transpose()?,
                ..Default::default()
            };
            let bed = TestBed::start(&dir, Lifetime::Detached, &options).await?;
            println!("{}", bed.kubeconfig.display());
            bed.detach();
            Ok(())
        }
        Some("down") => {
            let n = TestBed::stop_recorded(&dir)?;
            eprintln!(
                "nestor-testbed: stopped {n} processes and removed {}",
                dir.display()
            );
            Ok(())
        }
        _ => bail!(
            "usage: nestor-testbed up [--node] [DIR] | down [DIR] | provisioner KUBECONFIG DIR"
        ),
    }
}
