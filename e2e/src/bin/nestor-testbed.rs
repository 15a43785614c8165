//! `nestor-testbed up [DIR]` starts a test bed and prints its kubeconfig;
//! `nestor-testbed down [DIR]` stops it by the PIDs it recorded.

use anyhow::{bail, Result};
use nestor_e2e::process::Lifetime;
use nestor_e2e::TestBed;
use std::path::PathBuf;

fn default_dir() -> PathBuf {
    std::env::var_os("NESTOR_TESTBED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("nestor-testbed"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.get(1).map(PathBuf::from).unwrap_or_else(default_dir);
    match args.first().map(String::as_str) {
        Some("up") => {
            if dir.join("pids").exists() {
                bail!("a test bed is already recorded in {}; run `nestor-testbed down` first", dir.display());
            }
            let bed = TestBed::start(&dir, Lifetime::Detached).await?;
            println!("{}", bed.kubeconfig.display());
            bed.detach();
            Ok(())
        }
        Some("down") => {
            let n = TestBed::stop_recorded(&dir)?;
            eprintln!("nestor-testbed: stopped {n} processes and removed {}", dir.display());
            Ok(())
        }
        _ => bail!("usage: nestor-testbed up|down [DIR]"),
    }
}
